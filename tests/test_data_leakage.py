"""Leakage probe (REFERENCE 1.1): 1-NN pixel matcher against train, checked against brute-force numpy."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from stillroom._io import StillroomError, sha256_bytes
from stillroom.data import leakage
from stillroom.data.index import IndexRow, load_index, write_index
from stillroom.data.leakage import leakage_probe, nearest_neighbour_probe, nearest_neighbours


def _bits(rng: np.random.Generator, n: int, side: int, p: float = 0.3) -> np.ndarray:
    return (rng.random((n, side, side)) < p).astype(np.uint8)


def _brute(train: np.ndarray, evals: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: full pairwise distance table, argmin (first index on ties)."""
    t = train.reshape(len(train), -1).astype(np.float64)
    e = evals.reshape(len(evals), -1).astype(np.float64)
    if metric == "hamming":
        table = (e[:, None, :] != t[None, :, :]).sum(-1)  # (M, N)
        idx = table.argmin(axis=1)
        return idx, table[np.arange(len(e)), idx] / t.shape[1]
    table = ((e[:, None, :] - t[None, :, :]) ** 2).sum(-1)
    idx = table.argmin(axis=1)
    return idx, np.abs(e - t[idx]).mean(axis=1) / 255.0


@pytest.mark.parametrize("chunks", [(1024, 8192), (2, 3)])
def test_hamming_matches_brute_force(monkeypatch: pytest.MonkeyPatch, chunks: tuple[int, int]) -> None:
    # Tiny chunks force the running minimum across train chunks, where the lowest-index tie rule can break.
    monkeypatch.setattr(leakage, "_EVAL_CHUNK", chunks[0])
    monkeypatch.setattr(leakage, "_TRAIN_CHUNK", chunks[1])
    rng = np.random.default_rng(1)
    train, evals = _bits(rng, 20, 4), _bits(rng, 9, 4)  # 16 bits: ties are common
    ref_idx, ref_dist = _brute(train, evals, "hamming")
    for tr, ev in [(train, evals), (train * 255, evals * 255), (train.astype(bool), evals.astype(bool))]:
        idx, dist = nearest_neighbours(tr, ev, binary=True)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_allclose(dist, ref_dist, rtol=0, atol=1e-12)


def test_grayscale_uses_euclidean_neighbour_and_reports_mad() -> None:
    rng = np.random.default_rng(2)
    train = rng.integers(0, 256, (30, 6, 6), dtype=np.uint8)
    evals = rng.integers(0, 256, (11, 6, 6), dtype=np.uint8)
    idx, dist = nearest_neighbours(train, evals, binary=False)
    ref_idx, ref_dist = _brute(train, evals, "l2")
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-12)


@pytest.mark.parametrize("binary", [True, False])
def test_copies_of_train_are_found_exactly(binary: bool) -> None:
    rng = np.random.default_rng(3)
    train = _bits(rng, 40, 12) if binary else rng.integers(0, 256, (40, 12, 12), dtype=np.uint8)
    train_y = np.arange(40) % 5
    pick = rng.choice(40, 15, replace=False)
    out = nearest_neighbour_probe(train, train_y, train[pick], train_y[pick], binary=binary)
    assert out["accuracy"] == 1.0 and out["n"] == 15
    assert out["mean_distance"] == 0.0
    assert all(v == 0.0 for v in out["distance_quantiles"].values())


def test_disjoint_random_images_score_near_chance() -> None:
    # Pure noise carries no label information, so each prediction is right with probability
    # sum_c p_train(c) p_eval(c) ~ 1/4, independently: accuracy ~ Binomial(n, 1/4) / n with sd sqrt(.25*.75/n).
    # n = 600 gives sd 0.018; 5 sd (0.09) makes a false failure astronomically unlikely, and the seed is fixed anyway.
    rng = np.random.default_rng(4)
    k, n = 4, 600
    train, evals = _bits(rng, 800, 16, 0.5), _bits(rng, n, 16, 0.5)
    out = nearest_neighbour_probe(train, rng.integers(0, k, 800), evals, rng.integers(0, k, n), binary=True)
    sd = (0.25 * 0.75 / n) ** 0.5
    assert abs(out["chance"] - 0.25) < 0.03
    assert abs(out["accuracy"] - out["chance"]) < 5 * sd
    # Random 256-bit vectors differ in ~50% of bits; the nearest of 800 is still far away (> 25%).
    assert out["distance_quantiles"]["p10"] > 0.25


def test_probe_rejects_bad_shapes() -> None:
    with pytest.raises(StillroomError, match="train_y"):
        nearest_neighbour_probe(np.zeros((3, 4)), np.zeros(2), np.zeros((1, 4)), np.zeros(1), binary=True)
    with pytest.raises(StillroomError, match="share one size"):
        nearest_neighbours(np.zeros((3, 4)), np.zeros((1, 5)), binary=True)
    empty = nearest_neighbour_probe(np.zeros((3, 4)), np.zeros(3), np.zeros((0, 4)), np.zeros(0), binary=True)
    assert empty["n"] == 0 and empty["accuracy"] is None


def _write_dataset(root, images: list[np.ndarray], labels: list[int], splits: list[str], kind: str) -> None:
    rows = []
    for i, (arr, y, s) in enumerate(zip(images, labels, splits, strict=True)):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        rel = f"images/{i:04d}.png"
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(buf.getvalue())
        rows.append(IndexRow(rel, y, f"c{y}", s, f"g{i}", sha256_bytes(buf.getvalue())))
    channels = 3 if images[0].ndim == 3 else 1
    classes = [f"c{c}" for c in range(max(labels) + 1)]
    write_index(root, rows, classes, {"kind": kind, "size": images[0].shape[0], "channels": channels})


def test_leakage_probe_on_an_index_with_copied_frames(tmp_path) -> None:
    rng = np.random.default_rng(5)
    # 128 px masks built from 8 px blocks, so the 64 px box downsample is exact and copies stay copies.
    base = [np.kron(_bits(rng, 1, 16)[0], np.ones((8, 8), np.uint8)) for _ in range(12)]
    masks = [np.where(b == 1, 0, 255).astype(np.uint8) for b in base]
    labels = [i % 3 for i in range(12)]
    images = masks + masks[:6]  # val/test are exact copies of the first six train images
    splits = ["train"] * 12 + ["val"] * 3 + ["test"] * 3
    _write_dataset(tmp_path, images, labels + labels[:6], splits, "silhouette")
    out = leakage_probe(load_index(tmp_path))
    assert out["resolution"] == 64
    assert out["distance"] == "fraction of differing pixels"
    assert out["train"]["n"] == 12 and out["val"]["n"] == 3 and out["test"]["n"] == 3
    assert out["test"]["accuracy"] == 1.0 and out["test"]["distance_quantiles"]["p50"] == 0.0
    assert "100.0% of test images" in out["summary"] and "near-copies" in out["summary"]


def test_leakage_probe_summary_says_generalization_for_unrelated_rgb(tmp_path) -> None:
    rng = np.random.default_rng(6)
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(60)]
    labels = [i % 4 for i in range(60)]
    splits = ["train"] * 40 + ["val"] * 10 + ["test"] * 10
    _write_dataset(tmp_path, images, labels, splits, "rgb")
    out = leakage_probe(load_index(tmp_path))
    assert out["resolution"] == 8
    assert out["distance"].startswith("mean absolute difference")
    assert out["test"]["accuracy"] < 0.5
    assert "generalization to unseen images" in out["summary"]
