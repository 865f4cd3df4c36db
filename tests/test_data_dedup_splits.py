"""Within-species deduplication and the split registry (REFERENCE 1.1)."""

from __future__ import annotations

import numpy as np
import pytest

from stillroom._io import StillroomError
from stillroom.data.dedup import dedup_masks
from stillroom.data.splits import SPLIT_METHODS, block_sizes, make_splits

# ----------------------------------------------------------------------------------------------- dedup


def _naive_dedup(masks: np.ndarray, threshold: float) -> list[int]:
    """Reference: pixel loops, no hashing, no packing."""
    obj = masks < 128
    limit = threshold * obj.shape[1] * obj.shape[2]
    distinct: list[int] = []
    for i in range(len(obj)):
        if not any(np.array_equal(obj[i], obj[j]) for j in distinct):
            distinct.append(i)
    kept: list[int] = []
    for i in distinct:
        if all(np.count_nonzero(obj[i] != obj[j]) >= limit for j in kept):
            kept.append(i)
    return kept


def _flip(mask: np.ndarray, pixels: list[tuple[int, int]]) -> np.ndarray:
    out = mask.copy()
    for r, c in pixels:
        out[r, c] = 255 - out[r, c]
    return out


def test_exact_duplicates_keep_first_occurrence():
    rng = np.random.default_rng(0)
    a, b, c = (np.where(rng.random((8, 8)) < 0.5, 0, 255).astype(np.uint8) for _ in range(3))
    masks = np.stack([a, b, a, c, b])
    np.testing.assert_array_equal(dedup_masks(masks, threshold=0.0), [0, 1, 3])


def test_near_duplicate_rule_is_strict_and_greedy():
    base = np.full((10, 10), 255, dtype=np.uint8)  # 100 pixels; threshold 0.05 -> drop when < 5 pixels differ
    x = base.copy()
    x[2:8, 2:8] = 0
    y = _flip(x, [(0, 0), (0, 1), (0, 2), (0, 3)])  # 4 from x: dropped
    z = _flip(y, [(9, 0), (9, 1), (9, 2), (9, 3)])  # 4 from y but 8 from x: kept, because y was not kept
    w = _flip(x, [(9, 9), (9, 8), (9, 7), (9, 6), (9, 5)])  # exactly 5 from x, 9 from z: kept (rule is strict <)
    masks = np.stack([x, y, z, w])
    np.testing.assert_array_equal(dedup_masks(masks, threshold=0.05), [0, 2, 3])


@pytest.mark.parametrize("threshold", [0.0, 0.01, 0.03, 0.1])
@pytest.mark.parametrize("size", [8, 13, 32])
def test_matches_naive_reference(threshold, size):
    rng = np.random.default_rng(size)
    base = np.where(rng.random((size, size)) < 0.4, 0, 255).astype(np.uint8)
    masks = []
    for _ in range(60):  # random walks around one mask: many exact and near duplicates
        m = masks[-1] if masks and rng.random() < 0.7 else base
        k = int(rng.integers(0, max(2, size * size // 20)))
        masks.append(_flip(m, [tuple(p) for p in rng.integers(0, size, (k, 2))]))
    masks = np.stack(masks)
    assert dedup_masks(masks, threshold).tolist() == _naive_dedup(masks, threshold)


def test_values_below_128_count_as_object():
    a = np.array([[[0, 255], [255, 255]], [[127, 128], [200, 255]]], dtype=np.uint8)  # same binarized mask
    np.testing.assert_array_equal(dedup_masks(a, 0.0), [0])


def test_dedup_edge_cases():
    assert dedup_masks(np.zeros((0, 4, 4), dtype=np.uint8)).tolist() == []
    with pytest.raises(StillroomError, match="shape"):
        dedup_masks(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(StillroomError, match="threshold"):
        dedup_masks(np.zeros((1, 4, 4), dtype=np.uint8), threshold=1.5)


# ----------------------------------------------------------------------------------------------- splits


def _toy(frames: dict[tuple[int, str], int], shuffle_seed: int | None = 1):
    """Per-sample arrays for animations {(label, view): n_frames}, rows optionally shuffled."""
    labels, groups, order, views = [], [], [], []
    for (label, view), n in frames.items():
        for k in range(n):
            labels.append(label)
            groups.append(f"{label:03d}/{view}")
            order.append(k)
            views.append(view)
    perm = np.arange(len(labels))
    if shuffle_seed is not None:
        perm = np.random.default_rng(shuffle_seed).permutation(len(labels))
    return (
        np.asarray(labels)[perm],
        [groups[i] for i in perm],
        np.asarray(order)[perm],
        [views[i] for i in perm],
    )


TOY = {(0, "front"): 20, (0, "back"): 11, (1, "front"): 3, (1, "back"): 7, (2, "front"): 2, (2, "back"): 2}


@pytest.mark.parametrize("method", SPLIT_METHODS.list())
def test_every_method_is_valid_and_deterministic(method):
    labels, groups, order, views = _toy(TOY)
    a = make_splits(method, labels, groups, order, views, seed=3)
    b = make_splits(method, labels, groups, order, views, seed=3)
    assert a.splits.shape == (len(labels),)
    assert set(a.splits) <= {"train", "val", "test"}
    np.testing.assert_array_equal(a.splits, b.splits)
    assert a.info["method"] == method and a.info["seed"] == 3
    for label in (0, 1):  # >= 3 samples and enough frames: train and val everywhere, test where the method allows
        present = set(a.splits[labels == label])
        assert {"train", "val"} <= present


@pytest.mark.parametrize("method", ["blocks", "random"])
def test_every_class_with_three_samples_reaches_every_split(method):
    labels, groups, order, views = _toy(TOY)
    res = make_splits(method, labels, groups, order, views, seed=0)
    for label in np.unique(labels):
        assert set(res.splits[labels == label]) == {"train", "val", "test"}, (method, label)


def test_blocks_are_contiguous_runs_in_frame_order():
    labels, groups, order, views = _toy(TOY)
    res = make_splits("blocks", labels, groups, order, views)
    rank = {"train": 0, "val": 1, "test": 2}
    for g in set(groups):
        idx = [i for i in range(len(groups)) if groups[i] == g]
        seq = [rank[res.splits[i]] for i in sorted(idx, key=lambda i: order[i])]
        assert seq == sorted(seq), g  # train block, then val, then test
        if len(idx) >= 3:
            assert set(seq) == {0, 1, 2}, g
    # 20 frames: 16/2/2 in that order.
    g0 = sorted((i for i in range(len(groups)) if groups[i] == "000/front"), key=lambda i: order[i])
    assert [res.splits[i] for i in g0] == ["train"] * 16 + ["val"] * 2 + ["test"] * 2


def test_blocks_concatenate_a_species_whose_animations_are_all_tiny():
    labels, groups, order, views = _toy({(0, "front"): 2, (0, "back"): 2, (1, "front"): 1, (1, "back"): 1})
    res = make_splits("blocks", labels, groups, order, views)
    assert set(res.splits[labels == 0]) == {"train", "val", "test"}
    assert (res.splits[labels == 1] == "train").all()
    assert res.info["concatenated_classes"] == [0]
    assert res.info["classes_train_only"] == [1]


def test_blocks_ignore_the_seed_random_uses_it():
    labels, groups, order, views = _toy(TOY)
    np.testing.assert_array_equal(
        make_splits("blocks", labels, groups, order, views, seed=0).splits,
        make_splits("blocks", labels, groups, order, views, seed=1).splits,
    )
    r0 = make_splits("random", labels, groups, order, views, seed=0)
    r1 = make_splits("random", labels, groups, order, views, seed=1)
    assert not np.array_equal(r0.splits, r1.splits)
    assert r0.info["leaky"] is True
    for label in np.unique(labels):  # stratified: per-class counts do not depend on the seed
        for s in ("train", "val", "test"):
            assert (r0.splits[labels == label] == s).sum() == (r1.splits[labels == label] == s).sum()


def test_cross_view_never_shares_an_animation_between_test_and_trainval():
    frames = dict(TOY)
    frames[(3, "front")] = 9  # single-view species
    frames[(4, "back")] = 6  # back only
    labels, groups, order, views = _toy(frames)
    res = make_splits("cross-view", labels, groups, order, views)
    test_groups = {g for g, s in zip(groups, res.splits, strict=True) if s == "test"}
    trainval_groups = {g for g, s in zip(groups, res.splits, strict=True) if s != "test"}
    assert not test_groups & trainval_groups
    assert test_groups == {"000/back", "001/back", "002/back"}
    assert res.info["classes_without_test"] == [3, 4]
    assert res.info["classes_without_front"] == [4]
    # front 20 frames: train block then val block, 90/10.
    g0 = sorted((i for i in range(len(groups)) if groups[i] == "000/front"), key=lambda i: order[i])
    assert [res.splits[i] for i in g0] == ["train"] * 18 + ["val"] * 2
    assert set(res.splits[labels == 4]) == {"train", "val"}


def test_block_sizes():
    assert block_sizes(10, (0.8, 0.1, 0.1)) == (8, 1, 1)
    assert block_sizes(3, (0.8, 0.1, 0.1)) == (1, 1, 1)
    assert block_sizes(4, (0.8, 0.1, 0.1)) == (2, 1, 1)
    assert block_sizes(2, (0.8, 0.1, 0.1)) == (2, 0, 0)
    assert block_sizes(25, (0.8, 0.1, 0.1)) == (19, 3, 3)  # 2.5 rounds half up
    assert block_sizes(4, (0.2, 0.4, 0.4)) == (1, 1, 2)
    assert block_sizes(2, (0.9, 0.1, 0.0)) == (1, 1, 0)
    for n in range(30):
        assert sum(block_sizes(n, (0.7, 0.2, 0.1))) == n


def test_make_splits_validates_inputs():
    labels, groups, order, views = _toy(TOY)
    with pytest.raises(StillroomError, match="known: blocks, cross-view, random"):
        make_splits("nope", labels, groups, order, views)
    with pytest.raises(StillroomError, match="groups"):
        make_splits("blocks", labels, groups[:-1], order, views)
    with pytest.raises(StillroomError, match="fractions"):
        make_splits("blocks", labels, groups, order, views, fractions=(0.5, 0.1, 0.1))
    with pytest.raises(StillroomError, match="labels"):
        make_splits("blocks", labels.astype(float), groups, order, views)
    with pytest.raises(StillroomError, match="views"):
        make_splits("cross-view", labels, groups, order, None)
