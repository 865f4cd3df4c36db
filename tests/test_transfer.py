"""KD transfer sets (issue 14 item 1): rows without a class that distilled students learn from through their
teachers' targets only (`stillroom data add-transfer`, ``data.transfer``)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from stillroom._io import StillroomError, sha256_bytes
from stillroom.config import config_from_dict
from stillroom.data.index import IGNORE_INDEX, TRANSFER, IndexRow, load_index, write_index
from stillroom.data.transfer import add_transfer_rows
from stillroom.distill.losses import build_loss
from stillroom.pipeline import train
from stillroom.softlabels.export import export_softlabels


@pytest.fixture(scope="module")
def transfer_index(shapes_index, ood_only, tmp_path_factory):
    """The shapes index + the rings and bars of ``ood_only`` (train and val splits) twice each as transfer rows."""
    out = tmp_path_factory.mktemp("tr") / "ix"
    return add_transfer_rows(shapes_index.root, ood_only.root, out, ("train", "val"), 2)


@pytest.fixture(scope="module")
def transfer_store(teacher_run, transfer_index, tmp_path_factory):
    return export_softlabels(teacher_run, transfer_index.root, tmp_path_factory.mktemp("trs") / "store")


def test_transfer_rows_keep_the_id_rows_and_carry_no_class(shapes_index, ood_only, transfer_index):
    ix = transfer_index
    n_id, taken = len(shapes_index), [r for r in ood_only.rows() if r.split in ("train", "val")]
    assert ix.paths[:n_id] == shapes_index.paths and np.array_equal(ix.labels[:n_id], shapes_index.labels)
    rows = ix.split_indices(TRANSFER)
    assert len(rows) == 2 * len(taken) and np.array_equal(rows, np.arange(n_id, len(ix)))
    assert set(ix.labels[rows].tolist()) == {-1} and {ix.label_names[i] for i in rows} == {"ood"}
    assert all(ix.groups[i].startswith("transfer/") for i in rows) and ix.paths[n_id].endswith("_r0.png")
    assert {ix.sha256[i] for i in rows} == {r.sha256 for r in taken}
    counts = ix.meta["counts"]
    assert counts["per_split"][TRANSFER] == len(rows)
    assert counts["classes_per_split"] == {"train": 4, "val": 4, "test": 4}
    assert TRANSFER not in shapes_index.meta["counts"]["per_split"]  # indexes without transfer rows are unchanged
    got = ix.recipe["transfer"]
    assert got["images"] == len(taken) and got["repeat"] == 2 and got["content_hash"] == ood_only.content_hash
    assert ix.recipe["mean"] == shapes_index.recipe["mean"]  # the teachers' normalization
    assert load_index(ix.root).index_hash == ix.index_hash


def test_add_transfer_refuses_leaks_mismatches_and_nothing(shapes_index, ood_only, transfer_index, tmp_path):
    with pytest.raises(StillroomError, match="identical to val/test images"):
        add_transfer_rows(shapes_index.root, shapes_index.root, tmp_path / "a")  # the ID val/test images themselves
    with pytest.raises(StillroomError, match="no rows in split"):
        add_transfer_rows(shapes_index.root, ood_only.root, tmp_path / "b", exclude_classes_of=ood_only.root)
    with pytest.raises(StillroomError, match="already has transfer rows"):
        add_transfer_rows(transfer_index.root, ood_only.root, tmp_path / "c")
    with pytest.raises(StillroomError, match="repeat must be"):
        add_transfer_rows(shapes_index.root, ood_only.root, tmp_path / "d", repeat=0)
    write_index(tmp_path / "big", ood_only.rows(), ood_only.classes, {**ood_only.recipe, "size": 64})
    with pytest.raises(StillroomError, match="recipe 'size'"):  # other pixels: another pipeline
        add_transfer_rows(shapes_index.root, tmp_path / "big", tmp_path / "e")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    "row, match",
    [
        (IndexRow("a.png", 0, "x", TRANSFER, "g", "0" * 64), "label must be -1"),
        (IndexRow("a.png", -1, "x", "train", "g", "0" * 64), "out of range"),
    ],
)
def test_index_rows_without_class_only_in_the_transfer_split(tmp_path, row, match):
    with pytest.raises(StillroomError, match=match):
        write_index(tmp_path, [row], ["x"], {"size": 8})


def test_cross_entropy_skips_rows_without_class_and_kd_reads_them():
    torch.manual_seed(0)
    s, t = torch.randn(6, 4), torch.randn(1, 6, 4)
    y = torch.tensor([0, 1, IGNORE_INDEX, 3, IGNORE_INDEX, 2])
    for name in ("kd", "luminet", "logit_mse"):
        loss = build_loss(name)
        assert loss.learns_unlabelled
        got = loss(s, t, y)
        ce = F.cross_entropy(s[y >= 0], y[y >= 0])
        scale = {"kd": 0.5, "logit_mse": 0.5, "luminet": 1.0}[name]
        torch.testing.assert_close(got["loss_ce"], scale * ce)
        t2 = t.clone()
        t2[0, 2, 0] += 3.0  # a row without class: its teacher target still counts
        assert not torch.allclose(loss(s, t2, y)["loss_kd"], got["loss_kd"])
    assert not build_loss("dkd").learns_unlabelled and not build_loss("ce").learns_unlabelled


def _cfg(tiny_config, index, name, loss="kd", store=None, **extra):
    loss_cfg = {"name": loss, "params": {}}
    raw = tiny_config(index.root, name, model="mobilenet_v3_small", epochs=1, loss=loss_cfg, **extra)
    if store is not None:
        raw["teachers"] = {"cached": [str(store.path)]}
    return config_from_dict(raw)


def test_a_distilled_student_learns_from_transfer_rows(transfer_index, transfer_store, tiny_config, tmp_path):
    n = len(transfer_index.split_indices(TRANSFER))
    on = train(_cfg(tiny_config, transfer_index, "on", store=transfer_store), tmp_path / "on")
    off = train(_cfg(tiny_config, transfer_index, "off", store=transfer_store, data={
        "index": str(transfer_index.root), "transfer": False}), tmp_path / "off")  # fmt: skip
    assert json.loads((on / "model.json").read_text())["transfer_rows"] == [n, n]
    assert json.loads((off / "model.json").read_text())["transfer_rows"] == [0, n]
    h_on, h_off = (json.loads((r / "state.json").read_text())["history"][0] for r in (on, off))
    assert 0.0 <= h_on["train_top1"] <= 1.0 and np.isfinite(h_on["loss_ce"]) and np.isfinite(h_on["loss_kd"])
    w_on, w_off = load_file(on / "last.safetensors"), load_file(off / "last.safetensors")
    assert any(not torch.equal(w_on[k], w_off[k]) for k in w_on if k in w_off and w_on[k].is_floating_point())


def test_transfer_rows_need_a_loss_that_learns_without_class(transfer_index, transfer_store, tiny_config, tmp_path):
    with pytest.raises(StillroomError, match="transfer rows .* have none"):
        train(_cfg(tiny_config, transfer_index, "dkd", loss="dkd", store=transfer_store), tmp_path / "dkd")
    run = train(_cfg(tiny_config, transfer_index, "ce", loss="ce"), tmp_path / "ce")  # no teacher: left out
    assert json.loads((run / "model.json").read_text())["transfer_rows"][0] == 0


def test_batches_of_transfer_rows_only_train_on_the_teacher_term(
    shapes_index, ood_only, teacher_run, tiny_config, tmp_path
):
    """Two labelled train rows among ~100 transfer rows: most batches hold no row with a class (their CE mean is
    0/0); the run trains on the KD term there and logs finite means over every row."""
    keep = shapes_index.split_indices("train")[:2]
    rows = [r for i, r in enumerate(shapes_index.rows()) if r.split != "train" or i in set(keep.tolist())]
    for r in rows:
        (tmp_path / "few" / r.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "few" / r.path).write_bytes((shapes_index.root / r.path).read_bytes())
    write_index(tmp_path / "few", rows, shapes_index.classes, shapes_index.recipe)
    ix = add_transfer_rows(tmp_path / "few", ood_only.root, tmp_path / "ix", repeat=2)
    store = export_softlabels(teacher_run, ix.root, tmp_path / "store")
    run = train(_cfg(tiny_config, ix, "few", store=store), tmp_path / "run")
    history = json.loads((run / "state.json").read_text())["history"]
    assert all(np.isfinite(h["loss_ce"]) and np.isfinite(h["loss_kd"]) and h["loss_kd"] > 0 for h in history)
    assert 0.0 <= history[0]["train_top1"] <= 1.0


def test_add_style_rows_are_labelled_train_rows(shapes_index, ood_only, tmp_path):
    """The labelled sibling (`stillroom data add-style`): rows of the served classes join train with their class
    (matched by name); other classes, leaks and a second addition are refused."""
    from stillroom.data.transfer import EXTRA_TRAIN, add_style_rows

    ix = add_style_rows(shapes_index.root, shapes_index.root, tmp_path / "s", ("train",), 2)
    n_id = len(shapes_index)
    taken = [r for r in shapes_index.rows() if r.split == "train"]
    assert ix.paths[:n_id] == shapes_index.paths and len(ix) == n_id + 2 * len(taken)
    added = np.arange(n_id, len(ix))
    assert {str(ix.splits[i]) for i in added} == {"train"} and all(ix.paths[i].startswith("extra/") for i in added)
    assert all(ix.groups[i].startswith("extra/") for i in added)
    by_sha = {r.sha256: r.label for r in taken}
    assert all(int(ix.labels[i]) == by_sha[ix.sha256[i]] for i in added)  # each copy keeps its class
    assert ix.recipe[EXTRA_TRAIN]["images"] == len(taken) and ix.recipe["mean"] == shapes_index.recipe["mean"]
    from stillroom.report.markdown import extra_train_note

    assert f"{len(taken)} drawings" in extra_train_note(ix.recipe) and extra_train_note(shapes_index.recipe) is None
    with pytest.raises(StillroomError, match="not classes of"):
        add_style_rows(shapes_index.root, ood_only.root, tmp_path / "a")
    with pytest.raises(StillroomError, match="identical to val/test images"):
        add_style_rows(shapes_index.root, shapes_index.root, tmp_path / "b", ("val",))
    with pytest.raises(StillroomError, match="already holds the drawings of"):  # the same source twice
        add_style_rows(ix.root, shapes_index.root, tmp_path / "c", ("train",))
    assert not any((tmp_path / d).exists() for d in "abc")
    both = add_transfer_rows(ix.root, ood_only.root, tmp_path / "d")  # a transfer set on top of a second style
    assert len(both.split_indices(TRANSFER)) > 0 and both.recipe[EXTRA_TRAIN] == ix.recipe[EXTRA_TRAIN]


def test_add_style_twice_adds_a_third_style_in_its_own_folder(shapes_index, tmp_path, class_subset):
    """Styles add up (`stillroom data add-style` on its own output): the second source's rows join train under
    ``extra2/`` (two style sets may name their files alike), every earlier row stays, and the recipe lists both."""
    from stillroom.data.transfer import EXTRA_TRAIN, add_style_rows, extra_train_sources
    from stillroom.report.markdown import extra_train_note

    # two "styles" of the same classes: the train rows, and the same images with one pixel flipped (other hashes)
    copy = class_subset(shapes_index, list(range(shapes_index.num_classes)), tmp_path / "other")
    rows = []
    for r in copy.rows():
        img = np.array(Image.open(copy.root / r.path))
        img[0, 0] = 255 - img[0, 0]
        Image.fromarray(img).save(copy.root / r.path)
        rows.append(dataclasses.replace(r, sha256=sha256_bytes((copy.root / r.path).read_bytes())))
    other = write_index(copy.root, rows, copy.classes, copy.recipe)
    one = add_style_rows(shapes_index.root, shapes_index.root, tmp_path / "one", ("train",), 2)
    two = add_style_rows(one.root, other.root, tmp_path / "two", ("train",), 1)
    n_one, n_train = len(one), len(shapes_index.split_indices("train"))
    assert two.paths[:n_one] == one.paths and list(two.labels[:n_one]) == list(one.labels)
    new = range(n_one, len(two))
    assert len(new) == n_train and all(two.paths[i].startswith("extra2/") for i in new)
    assert {str(two.splits[i]) for i in new} == {"train"}
    sources = extra_train_sources(two.recipe)
    assert [s["content_hash"] for s in sources] == [shapes_index.content_hash, other.content_hash]
    assert [s["repeat"] for s in sources] == [2, 1] and isinstance(one.recipe[EXTRA_TRAIN], dict)  # one: as before
    note = extra_train_note(two.recipe)
    assert "2 other styles" in note and note.count("drawings (") == 2
    assert extra_train_sources(shapes_index.recipe) == []
