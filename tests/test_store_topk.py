"""Top-k compressed soft-label stores: the k largest logits per row plus the rest's log-sum-exp.

Reconstruction puts r = lse_rest - log(K - k) on every non-top-k class, so softmax at T = 1 is exact on the top-k
classes and on the total rest mass (``stillroom.softlabels.store`` docstring); at T = 4 only an approximation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stillroom._io import StillroomError, sha256_bytes
from stillroom.data.index import IndexRow, write_index
from stillroom.distill.losses import build_loss
from stillroom.softlabels.check import require_aligned
from stillroom.softlabels.store import (
    SoftLabelStore,
    TopKLogits,
    reconstruct_topk,
    teacher_logits_for,
    topk_compress,
    write_store,
)

K = 151  # the flagship class count (Gen-1 species)
TEACHER = {"arch": "resnet18", "weights_sha256": "cd" * 32}
RECIPE = {"size": 64}


def _index(root, n: int = 64, k: int = K):
    classes = [f"c{j:03d}" for j in range(k)]
    rows = [
        IndexRow(
            path=f"img/{i:04d}.png",
            label=i % k,
            label_name=classes[i % k],
            split="train",
            group=str(i),
            sha256=sha256_bytes(f"{i}".encode()),
        )
        for i in range(n)
    ]
    return write_index(root, rows, classes, RECIPE)


def _peaked(n: int = 64, k: int = K, seed: int = 0, rest_std: float = 2.0) -> np.ndarray:
    """Teacher-like logits: a clear winner (+9), one confusable class (+5), the rest N(0, rest_std)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, rest_std, size=(n, k))
    rows = np.arange(n)
    z[rows, rows % k] += 9.0
    z[rows, rng.integers(0, k, n)] += 5.0
    return z.astype(np.float32)


@pytest.fixture
def index(tmp_path):
    return _index(tmp_path / "data")


def _softmax(z: np.ndarray, t: float = 1.0) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64) / t
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("k", [1, 5, 20, K - 1])
def test_reconstruction_exact_on_topk_and_rest_mass(tmp_path, index, k):
    logits = _peaked()
    store = write_store(tmp_path / "s", logits, index, TEACHER, RECIPE, topk=k)
    assert isinstance(store.logits, TopKLogits) and store.logits.shape == (64, K)
    rebuilt = store.logits[np.arange(64)]
    assert rebuilt.dtype == np.float32 and rebuilt.shape == (64, K)
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]  # (N, k)
    # the stored classes are the true top-k, largest first, with the exact float32 logits
    np.testing.assert_array_equal(store.logits.indices, top)
    np.testing.assert_array_equal(np.take_along_axis(rebuilt, top, 1), np.take_along_axis(logits, top, 1))
    rest = np.ones_like(logits, dtype=bool)
    np.put_along_axis(rest, top, False, axis=1)
    # every rest class holds the same logit, never above the smallest top-k logit: the top-k stay the top-k
    rest_vals = rebuilt[rest].reshape(64, K - k)
    assert (rest_vals == rest_vals[:, :1]).all()
    assert (rest_vals[:, 0] <= np.take_along_axis(logits, top, 1)[:, -1]).all()
    # at T = 1: the total rest probability and every top-k probability are the original ones
    p, q = _softmax(logits), _softmax(rebuilt)
    np.testing.assert_allclose(q[rest].reshape(64, -1).sum(1), p[rest].reshape(64, -1).sum(1), atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.take_along_axis(q, top, 1), np.take_along_axis(p, top, 1), atol=1e-6, rtol=0)


def test_rest_lse_is_accurate_when_topk_hold_almost_all_mass():
    # lse_all minus the top-k mass would cancel to nothing here; lse over the rest directly must not
    z = np.full((2, 10), -30.0)
    z[:, 0] = 30.0
    z[1, 5] = -20.0
    idx, vals, lse = topk_compress(z, 1, "float32")
    np.testing.assert_array_equal(idx[:, 0], [0, 0])
    want = [np.log(9) - 30.0, np.log(np.exp(-20.0) + 8 * np.exp(-30.0))]
    np.testing.assert_allclose(lse, want, rtol=1e-6)
    rebuilt = reconstruct_topk(idx, vals, lse, 10)
    np.testing.assert_allclose(np.exp(rebuilt[:, 1:].astype(np.float64)).sum(1), np.exp(want), rtol=1e-5)


def test_temperature_above_one_overestimates_rest_mass(index, tmp_path):
    """The documented approximation: at T > 1 the rest gets at least its original tempered mass."""
    logits = _peaked()
    rebuilt = write_store(tmp_path / "s", logits, index, TEACHER, RECIPE, topk=5).logits[:]
    top = np.argsort(-logits, axis=1)[:, :5]
    for t in (2.0, 4.0):
        p, q = _softmax(logits, t), _softmax(rebuilt, t)
        p_top, q_top = np.take_along_axis(p, top, 1), np.take_along_axis(q, top, 1)
        assert (1 - q_top.sum(1) >= 1 - p_top.sum(1) - 1e-12).all()
        # ratios among the top-k classes are exact at every T
        np.testing.assert_allclose(q_top / q_top[:, :1], p_top / p_top[:, :1], rtol=1e-5)


def test_kd_loss_close_for_a_peaked_teacher(tmp_path, index):
    """A confident teacher with a flat-ish rest (rest std 0.5): KD at T = 4 from top-10 within 2% of the full one.

    With a wide rest (std 2) the uniform rest is far off at T = 4; bench_topk.py measures that case too.
    """
    logits = _peaked(rest_std=0.5)
    full = write_store(tmp_path / "full", logits, index, TEACHER, RECIPE)
    comp = write_store(tmp_path / "top10", logits, index, TEACHER, RECIPE, topk=10)
    rows = torch.arange(64)
    student = torch.from_numpy(0.6 * logits + np.random.default_rng(1).normal(0, 1.5, logits.shape).astype(np.float32))
    target = rows % K
    # not exact even at T = 1: the rest's split among its classes is lost, only its total mass is kept
    for t, tol in ((1.0, 1e-3), (4.0, 0.02)):
        loss = build_loss("kd", kd_weight=1.0, temperature=t)
        a = loss(student, teacher_logits_for([full], rows), target)["loss_kd"]
        b = loss(student, teacher_logits_for([comp], rows), target)["loss_kd"]
        assert abs(float(b - a)) / float(a) < tol, (t, float(a), float(b))


def test_manifest_round_trip_and_old_manifests(tmp_path, index):
    store = write_store(tmp_path / "s", _peaked(), index, TEACHER, RECIPE, dtype="float16", topk=5)
    assert store.manifest["compression"] == {"kind": "topk", "k": 5, "index_dtype": "int16"}
    assert store.compression == {"kind": "topk", "k": 5, "index_dtype": "int16"}
    assert not (store.path / "logits.npy").exists()
    assert store.logits.values.dtype == np.float16 and store.logits.rest_lse.dtype == np.float32
    assert isinstance(store.logits.indices, np.memmap)  # streams: nothing is loaded until rows are indexed
    files = ("topk_indices.npy", "topk_values.npy", "topk_rest_lse.npy")
    assert store.manifest["logits_bytes"] == sum((store.path / f).stat().st_size for f in files)
    again = SoftLabelStore.open(store.path)
    np.testing.assert_array_equal(again.logits[[3, 1]], store.logits[[3, 1]])
    require_aligned([again], index)  # hashes and alignment checks are unchanged

    plain = write_store(tmp_path / "p", _peaked(), index, TEACHER, RECIPE)
    assert plain.compression == {"kind": "none"} and isinstance(plain.logits, np.memmap)
    manifest = json.loads((plain.path / "manifest.json").read_text())
    del manifest["compression"]  # a store written before compression existed
    (plain.path / "manifest.json").write_text(json.dumps(manifest))
    assert SoftLabelStore.open(plain.path).compression == {"kind": "none"}

    manifest = json.loads((store.path / "manifest.json").read_text())
    for bad, match in (({"kind": "zstd"}, "unknown compression"), ({"kind": "topk", "k": K}, "k must be")):
        (store.path / "manifest.json").write_text(json.dumps({**manifest, "compression": bad}))
        with pytest.raises(StillroomError, match=match):
            SoftLabelStore.open(store.path)


def test_topk_at_or_above_num_classes_rejected(tmp_path, index):
    for k in (K, K + 5, -1):
        with pytest.raises(StillroomError, match=r"topk must be in 1\.\.150"):
            write_store(tmp_path / "s", _peaked(), index, TEACHER, RECIPE, topk=k)
    assert write_store(tmp_path / "s", _peaked(), index, TEACHER, RECIPE, topk=0).compression["kind"] == "none"


def test_replay_store_topk_and_mixed_lookup(tmp_path, index):
    views = np.stack([_peaked(seed=s) for s in range(3)])  # (V, N, K)
    replay = {"augment": "silhouette", "augment_seed": 0}
    store = write_store(tmp_path / "r", views, index, TEACHER, RECIPE, replay=replay, topk=20)
    assert store.logits.shape == (3, 64, K) and store.views == 3
    rows, vdx = np.array([5, 7, 5]), np.array([2, 0, 1])
    got = teacher_logits_for([store], rows, vdx)[0].numpy()
    for b, (r, v) in enumerate(zip(rows, vdx, strict=True)):
        top = np.argsort(-views[v, r])[:20]
        np.testing.assert_array_equal(got[b, top], views[v, r, top])
    # a compressed store and a plain one of the same shape are looked up together
    plain = write_store(tmp_path / "p", views, index, TEACHER, RECIPE, replay=replay)
    both = teacher_logits_for([plain, store], rows, vdx)
    assert both.shape == (2, 3, K)
    with pytest.raises(IndexError, match="row"):
        store.logits[0, 1, 2]


def test_cli_export_has_topk():
    from stillroom.cli import app

    result = CliRunner().invoke(app, ["softlabels", "export", "--help"])
    assert result.exit_code == 0 and "--topk" in result.output


def untrained_run(run_dir, index, arch: str = "resnet18"):
    """A run directory with untrained weights, readable by ``load_run`` (enough for export plumbing and speed)."""
    from stillroom._io import atomic_write_json
    from stillroom.models.factory import create_model
    from stillroom.train.checkpoint import save_weights

    channels, size = int(index.recipe.get("channels", 1)), int(index.recipe["size"])
    torch.manual_seed(0)
    model = create_model(arch, channels, index.num_classes, size)
    run_dir.mkdir(parents=True)
    meta = {"arch": arch, "in_chans": channels, "num_classes": index.num_classes, "img_size": size}
    atomic_write_json(run_dir / "model.json", {**meta, "classes": index.classes, "recipe": index.recipe})
    save_weights(model.eval(), run_dir / "best.safetensors")
    return run_dir


def test_export_with_topk(shapes_index, tmp_path):
    from stillroom.softlabels.export import export_softlabels

    run = untrained_run(tmp_path / "run", shapes_index, "mobilenet_v3_small")
    full = export_softlabels(run, shapes_index.root, tmp_path / "full")
    top = export_softlabels(run, shapes_index.root, tmp_path / "top2", topk=2)
    assert top.compression == {"kind": "topk", "k": 2, "index_dtype": "int16"} and full.compression["kind"] == "none"
    rows = np.arange(len(shapes_index))
    p, q = _softmax(full.logits[rows]), _softmax(top.logits[rows])
    first = np.argmax(full.logits[rows], axis=1)
    np.testing.assert_allclose(q[rows, first], p[rows, first], atol=1e-6)
