"""Epoch orders (``train.sampling``): the seeded permutation and batches of classmates (``data.per_class``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stillroom._io import StillroomError
from stillroom.config import config_from_dict
from stillroom.train.sampling import ClassBatchSampler, GlobalBatchSampler


def _rows(seed: int = 0):
    """7 classes of 5-40 rows; class 0 and 3 with a rare second group (another artist's drawings), 6 rows without a
    class."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for c in range(7):
        n = int(rng.integers(5, 40))
        labels += [c] * n
        groups += [f"anim{c}/{i % 2}" for i in range(n)]
        if c in (0, 3):
            labels += [c] * 3
            groups += [f"extra/{c}"] * 3
    labels += [-1] * 6
    groups += ["transfer/x"] * 6
    perm = rng.permutation(len(labels))  # an index is sorted by class; the sampler must not rely on it
    return np.asarray(labels)[perm], np.asarray(groups)[perm]


@pytest.mark.parametrize("k", [2, 4])
def test_batches_are_runs_of_classmates_each_row_once(k):
    labels, groups = _rows()
    s = ClassBatchSampler(labels, groups, batch_size=8, per_class=k, seed=3)
    order = list(s)
    _, counts = np.unique(labels, return_counts=True)
    assert s.visited() == int((counts // k * k).sum()) and len(order) == len(s) == s.steps * 8
    assert len(set(order)) == len(order)  # no row twice in an epoch
    runs = np.asarray(order).reshape(-1, k)
    assert all(len(set(labels[r])) == 1 for r in runs)
    assert list(ClassBatchSampler(labels, groups, 8, k, seed=3)) == order  # seeded
    assert list(ClassBatchSampler(labels, groups, 8, k, seed=4)) != order


def test_rare_drawings_meet_their_classmates_of_other_groups():
    labels, groups = _rows(1)
    runs = np.asarray(ClassBatchSampler(labels, groups, batch_size=8, per_class=4, seed=0).order()).reshape(-1, 4)
    for c in (0, 3):
        for r in runs[labels[runs[:, 0]] == c]:
            if any(groups[r] == f"extra/{c}"):  # round-robin: a rare group's row never sits with itself alone
                assert len(set(groups[r])) >= 2
        # the three rare rows come in the first rounds, so none is left out with a class's remainder
        assert (groups[runs.reshape(-1)] == f"extra/{c}").sum() == 3


def test_shards_of_a_world_are_the_single_process_batches():
    labels, groups = _rows(2)
    full = np.asarray(list(ClassBatchSampler(labels, groups, 8, 2, seed=5))).reshape(-1, 8)
    shards = [list(ClassBatchSampler(labels, groups, 8, 2, seed=5, rank=r, world_size=2)) for r in range(2)]
    joined = np.concatenate([np.asarray(s).reshape(-1, 4) for s in shards], axis=1)
    assert np.array_equal(joined, full)
    assert len(list(GlobalBatchSampler(50, 8, 0))) == 48  # the default order keeps its contract


def test_bad_settings_are_refused_with_the_reason():
    labels, groups = _rows()
    with pytest.raises(StillroomError, match="per_class must be >= 2"):
        ClassBatchSampler(labels, groups, 8, 1, seed=0)
    with pytest.raises(StillroomError, match="batch_size 8 over 1 process.* not a multiple of data.per_class 3"):
        ClassBatchSampler(labels, groups, 8, 3, seed=0)
    with pytest.raises(StillroomError, match="batch_size 8 over 2 process.* not a multiple of data.per_class 8"):
        ClassBatchSampler(labels, groups, 8, 8, seed=0, world_size=2)
    with pytest.raises(StillroomError, match="fewer than one batch of 512"):
        ClassBatchSampler(labels, groups, 512, 2, seed=0)


def test_run_with_batches_of_classmates_trains_and_differs_from_the_random_order(shapes_index, tmp_path, tiny_config):
    from stillroom.pipeline import train

    raw = tiny_config(shapes_index.root, "pk", epochs=2)
    raw["loss"] = {"name": "supcon", "params": {"base": "ce", "weight": 1.0}}
    for bad in (1, 3):  # refused when the config is read, before any data is loaded
        with pytest.raises(StillroomError, match=f"data.per_class {bad}: must be 0 .random order. or >= 2 and divide"):
            config_from_dict({**raw, "data": {**raw["data"], "per_class": bad}})
    pk = train(config_from_dict({**raw, "data": {**raw["data"], "per_class": 4}}), tmp_path / "pk")
    plain = train(config_from_dict(raw), tmp_path / "plain")
    log = [json.loads(line) for line in (pk / "log.jsonl").read_text().splitlines()]
    assert all(r["loss_supcon"] > 0 for r in log) and log[-1]["train_top1"] > 0.4  # 4 classes
    wa, wb = load_file(pk / "final.safetensors"), load_file(plain / "final.safetensors")
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
