"""Soft-label store round trip, corruption errors, and the alignment gate (seed 001 §4.2, §7.3.3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stillroom._io import StillroomError, sha256_bytes
from stillroom.data.index import IndexRow, write_index
from stillroom.softlabels.check import check_alignment, require_aligned
from stillroom.softlabels.store import SoftLabelStore, teacher_logits_for, write_store

CLASSES = ["bulbasaur", "charmander", "squirtle"]
TEACHER = {"arch": "resnet18", "weights_sha256": "ab" * 32, "run": "runs/t0"}
RECIPE = {"size": 64, "padding": 0.2}


def _rows(n: int = 8) -> list[IndexRow]:
    return [
        IndexRow(
            path=f"img/{i:03d}.png",
            label=i % 3,
            label_name=CLASSES[i % 3],
            split=("train", "val", "test")[i % 3],
            group=f"{i % 3:03d}/front",
            sha256=sha256_bytes(f"image {i}".encode()),
        )
        for i in range(n)
    ]


def _index(root: Path, rows: list[IndexRow] | None = None):
    return write_index(root, rows if rows is not None else _rows(), CLASSES, RECIPE)


def _logits(n: int = 8, k: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, k)).astype(np.float32)


@pytest.fixture
def index(tmp_path):
    return _index(tmp_path / "data")


@pytest.fixture
def store(tmp_path, index):
    return write_store(tmp_path / "sl" / "t0", _logits(), index, TEACHER, RECIPE)


# --- store -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(tmp_path, index, dtype):
    logits = _logits()
    written = write_store(tmp_path / "store", logits, index, TEACHER, RECIPE, dtype=dtype)
    opened = SoftLabelStore.open(tmp_path / "store")
    assert isinstance(opened.logits, np.memmap) and opened.logits.dtype == np.dtype(dtype)
    np.testing.assert_allclose(opened.logits, logits, rtol=1e-3 if dtype == "float16" else 0)
    assert opened.paths == index.paths == written.paths
    m = opened.manifest
    assert m["format"] == "stillroom-softlabels/1" and m["temperature"] is None and m["dtype"] == dtype
    assert (m["index_hash"], m["labels_hash"], m["content_hash"]) == (
        index.index_hash,
        index.labels_hash,
        index.content_hash,
    )
    assert (m["num_samples"], m["num_classes"]) == (8, 3)
    assert m["teacher"] == TEACHER and m["preprocessing"] == RECIPE
    assert m["created"] and m["stillroom_version"]
    assert not [p for p in (tmp_path).iterdir() if p.name.startswith(".")], "temporary directories left behind"


def test_write_validates(tmp_path, index):
    out = tmp_path / "store"
    with pytest.raises(StillroomError, match=r"shape \(7, 3\).*8 rows, 3 classes"):
        write_store(out, _logits(n=7), index, TEACHER, RECIPE)
    with pytest.raises(StillroomError, match=r"shape \(8, 4\)"):
        write_store(out, _logits(k=4), index, TEACHER, RECIPE)
    bad = _logits()
    bad[5, 1] = np.nan
    with pytest.raises(StillroomError, match=r"row 5 \(img/005.png\) is not finite"):
        write_store(out, bad, index, TEACHER, RECIPE)
    big = _logits()
    big[2, 0] = 1e6
    with pytest.raises(StillroomError, match="overflows float16"):
        write_store(out, big, index, TEACHER, RECIPE, dtype="float16")
    with pytest.raises(StillroomError, match="dtype"):
        write_store(out, _logits(), index, TEACHER, RECIPE, dtype="float64")
    with pytest.raises(StillroomError, match="weights_sha256"):
        write_store(out, _logits(), index, {"arch": "resnet18"}, RECIPE)
    assert not out.exists()


def test_replaces_only_a_store(tmp_path, index, store):
    again = write_store(store.path, _logits(seed=1), index, TEACHER, RECIPE)
    np.testing.assert_array_equal(again.logits, _logits(seed=1))
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(StillroomError, match="not a soft-label store; refusing"):
        write_store(precious, _logits(), index, TEACHER, RECIPE)
    assert (precious / "notes.txt").read_text() == "keep me"


def _rewrite_manifest(store: SoftLabelStore, **changes) -> None:
    m = json.loads((store.path / "manifest.json").read_text())
    m.update(changes)
    (store.path / "manifest.json").write_text(json.dumps(m))


def test_open_errors_name_the_file(tmp_path, store):
    with pytest.raises(StillroomError, match="not a soft-label store directory"):
        SoftLabelStore.open(tmp_path / "nowhere")
    _rewrite_manifest(store, num_samples=9)
    with pytest.raises(StillroomError, match=r"logits.npy: shape \(8, 3\) but the manifest says \(9, 3\)"):
        SoftLabelStore.open(store.path)
    _rewrite_manifest(store, num_samples=8, format="torchdistill-cache")
    with pytest.raises(StillroomError, match=r"manifest.json: unknown format 'torchdistill-cache'"):
        SoftLabelStore.open(store.path)
    _rewrite_manifest(store, format="stillroom-softlabels/1")
    SoftLabelStore.open(store.path)

    (store.path / "paths.txt").write_text("".join(f"{p}\n" for p in reversed(store.paths)))
    with pytest.raises(StillroomError, match="paths.txt: does not hash to the manifest's index_hash"):
        SoftLabelStore.open(store.path)


def test_open_never_unpickles(tmp_path, index):
    s = write_store(tmp_path / "s", _logits(), index, TEACHER, RECIPE)
    np.save(s.path / "logits.npy", np.array([{"evil": 1}] * 8, dtype=object), allow_pickle=True)
    with pytest.raises(StillroomError, match="logits.npy: not a readable .npy array"):
        SoftLabelStore.open(s.path)
    (s.path / "logits.npy").write_bytes(b"PK\x03\x04 not an npy file at all")
    with pytest.raises(StillroomError, match="logits.npy: not a readable .npy array"):
        SoftLabelStore.open(s.path)
    (s.path / "logits.npy").unlink()
    with pytest.raises(StillroomError, match="logits.npy: missing"):
        SoftLabelStore.open(s.path)


def test_teacher_logits_for(tmp_path, index):
    a, b = _logits(seed=1), _logits(seed=2)
    stores = [
        write_store(tmp_path / "a", a, index, TEACHER, RECIPE),
        write_store(tmp_path / "b", b, index, TEACHER, RECIPE, dtype="float16"),
    ]
    rows = torch.tensor([7, 0, 3, 3])
    got = teacher_logits_for(stores, rows)
    assert got.shape == (2, 4, 3) and got.dtype == torch.float32
    np.testing.assert_array_equal(got[0].numpy(), a[[7, 0, 3, 3]])
    np.testing.assert_allclose(got[1].numpy(), b[[7, 0, 3, 3]], rtol=1e-3)
    np.testing.assert_array_equal(teacher_logits_for(stores, np.array([2])).numpy()[0], a[[2]])
    with pytest.raises(StillroomError, match=r"rows must be in 0..7"):
        teacher_logits_for(stores, torch.tensor([8]))


# --- alignment -------------------------------------------------------------------------------------------------


def test_aligned_stores_pass_and_write_report(tmp_path, index, store):
    other = write_store(tmp_path / "sl" / "t1", _logits(seed=3), index, TEACHER, RECIPE, dtype="float16")
    run = tmp_path / "run"
    run.mkdir()
    report = require_aligned([store, other], index, out_json=run)
    saved = json.loads((run / "alignment_check.json").read_text())
    assert saved["ok"] and report["ok"]
    for flag in ("len_equal", "hash_paths_equal", "labels_equal", "content_equal", "num_classes_equal"):
        assert saved[flag] is True
    assert saved["index"] == str(index.root) and saved["index_hash"] == index.index_hash
    assert [s["path"] for s in saved["stores"]] == [str(store.path), str(other.path)]
    assert all(s["ok"] and not s["problems"] and not s["first_mismatches"] for s in saved["stores"])


def _variant(tmp_path: Path, name: str, rows: list[IndexRow]):
    return _index(tmp_path / name, rows)


def test_shuffled_index_fails_naming_rows(tmp_path, store):
    rows = _rows()
    shuffled = _variant(tmp_path, "shuffled", [rows[i] for i in (1, 0, 2, 3, 4, 5, 7, 6)])
    out = tmp_path / "alignment_check.json"
    with pytest.raises(StillroomError) as err:
        require_aligned([store], shuffled, out_json=out)
    msg = str(err.value)
    assert str(store.path) in msg and "index_hash mismatch" in msg
    assert "row 0: index 'img/001.png' vs store 'img/000.png'" in msg
    assert "row 7: index 'img/006.png' vs store 'img/007.png'" in msg
    report = json.loads(out.read_text())  # written even though the check failed: the audit trail
    assert not report["ok"] and not report["hash_paths_equal"] and report["len_equal"]
    assert [m["row"] for m in report["stores"][0]["first_mismatches"]] == [0, 1, 6, 7]


def test_truncated_index_fails(tmp_path, store):
    truncated = _variant(tmp_path, "truncated", _rows()[:6])
    report = check_alignment([store], truncated)
    assert not report["ok"] and not report["len_equal"]
    assert report["stores"][0]["first_mismatches"] == [
        {"row": 6, "index_path": None, "store_path": "img/006.png"},
        {"row": 7, "index_path": None, "store_path": "img/007.png"},
    ]
    with pytest.raises(StillroomError, match=r"length mismatch: store has 8 rows, index 6[\s\S]*row 6: index None"):
        require_aligned([store], truncated)


def test_changed_labels_fail(tmp_path, store):
    rows = _rows()
    rows[4] = IndexRow(rows[4].path, 0, CLASSES[0], rows[4].split, rows[4].group, rows[4].sha256)
    relabelled = _variant(tmp_path, "relabelled", rows)
    report = check_alignment([store], relabelled)
    assert not report["ok"] and not report["labels_equal"] and report["hash_paths_equal"]
    with pytest.raises(StillroomError, match=r"t0: labels_hash mismatch \(labels differ\)"):
        require_aligned([store], relabelled)


def test_rebuilt_images_fail(tmp_path, store):
    rows = _rows()
    rows[2] = IndexRow(rows[2].path, rows[2].label, rows[2].label_name, rows[2].split, rows[2].group, "0" * 64)
    rebuilt = _variant(tmp_path, "rebuilt", rows)
    report = check_alignment([store], rebuilt)
    assert not report["ok"] and not report["content_equal"] and report["labels_equal"]
    with pytest.raises(StillroomError, match=r"content_hash mismatch \(image files differ"):
        require_aligned([store], rebuilt)


def test_one_bad_store_among_good_ones(tmp_path, index, store):
    other_index = _variant(tmp_path, "other", _rows()[::-1])
    stale = write_store(tmp_path / "sl" / "stale", _logits(), other_index, TEACHER, RECIPE)
    with pytest.raises(StillroomError) as err:
        require_aligned([store, stale], index)
    msg = str(err.value)
    assert str(stale.path) in msg and f"{store.path}:" not in msg
    report = check_alignment([store, str(stale.path), tmp_path / "missing"], index)
    assert [s["ok"] for s in report["stores"]] == [True, False, False]
    assert "not a soft-label store directory" in report["stores"][2]["problems"][0]
    with pytest.raises(StillroomError, match="no soft-label stores"):
        check_alignment([], index)


# --- logit values: non-finite or absurd logits fail the check and training --------------------------------------


def _poison(store_dir: Path, name: str, edits: dict) -> None:
    """Rewrite ``name`` (a .npy of the store) with ``edits`` {index: value} applied: a damaged or broken export."""
    arr = np.load(store_dir / name)
    for key, value in edits.items():
        arr[key] = value
    (store_dir / name).unlink()  # never write through a hard link
    np.save(store_dir / name, arr)


def test_write_refuses_absurd_logits(tmp_path, index):
    from stillroom.softlabels.store import MAX_ABS_LOGIT

    for value in (1e30, -2 * MAX_ABS_LOGIT):
        big = _logits()
        big[3, 2] = value
        with pytest.raises(StillroomError, match=r"row 3 \(img/003.png\) holds \|logit\|.* > 10000"):
            write_store(tmp_path / "s", big, index, TEACHER, RECIPE)
    ok = _logits()
    ok[3, 2] = MAX_ABS_LOGIT  # the bound itself is allowed
    write_store(tmp_path / "s", ok, index, TEACHER, RECIPE)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e30, -3e4])
def test_store_with_bad_logits_fails_the_check_naming_rows(tmp_path, index, store, value):
    _poison(store.path, "logits.npy", {(2, 1): value, (6, 0): value})
    out = tmp_path / "alignment_check.json"
    report = check_alignment([store.path], index)
    assert not report["ok"] and report["logits_in_range"] is False and report["len_equal"]
    entry = report["stores"][0]
    assert [r["row"] for r in entry["bad_logit_rows"]] == [2, 6]
    assert entry["bad_logit_rows"][0]["path"] == "img/002.png"
    with pytest.raises(StillroomError) as err:
        require_aligned([store.path], index, out_json=out)
    msg = str(err.value)
    assert str(store.path) in msg and "row 2 ('img/002.png')" in msg and "row 6 ('img/006.png')" in msg
    saved = json.loads(out.read_text())  # the audit trail says "not ok", never "ok"
    assert saved["ok"] is False and saved["logits_in_range"] is False


def test_clean_store_reports_logits_in_range(tmp_path, index, store):
    report = check_alignment([store], index)
    assert report["ok"] and report["logits_in_range"] is True and report["stores"][0]["bad_logit_rows"] == []


def test_topk_and_replay_stores_are_checked_too(tmp_path, index):
    from stillroom.softlabels.store import TOPK_REST, TOPK_VALUES

    top = write_store(tmp_path / "top", _logits(k=3), index, TEACHER, RECIPE, topk=1)
    _poison(top.path, TOPK_VALUES, {(4, 0): np.nan})
    _poison(top.path, TOPK_REST, {5: 1e30})
    entry = check_alignment([top.path], index)["stores"][0]
    assert not entry["ok"] and [r["row"] for r in entry["bad_logit_rows"]] == [4, 5]

    views = np.random.default_rng(0).normal(size=(2, 8, 3)).astype(np.float32)
    rep = write_store(tmp_path / "rep", views, index, TEACHER, RECIPE, replay={"augment": "none", "augment_seed": 0})
    _poison(rep.path, "logits.npy", {(1, 7, 2): np.inf})
    entry = check_alignment([rep.path], index)["stores"][0]
    assert not entry["ok"] and entry["bad_logit_rows"] == [{"row": 7, "view": 1, "path": "img/007.png", "value": "inf"}]
    assert "row 7 view 1 ('img/007.png'): inf" in "; ".join(entry["problems"])


def test_cached_teachers_refuse_a_store_with_bad_logits(tmp_path, index, store):
    from stillroom.distill.teachers import build_teachers

    _poison(store.path, "logits.npy", {(0, 0): np.nan})
    with pytest.raises(StillroomError, match=r"row 0 \('img/000.png'\): nan"):
        build_teachers([store.path], [], index, alignment_json=tmp_path / "a.json")
    assert json.loads((tmp_path / "a.json").read_text())["ok"] is False
