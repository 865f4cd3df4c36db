"""Precise BN: pooled population statistics, independent of row order (issue 13), weights untouched, and the guard
that flags eval-mode accuracy far below batch-statistics accuracy."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from stillroom.train.precise_bn import (
    bn_consistency,
    canonical_bn_rows,
    recompute_bn_on_rows,
    recompute_bn_stats,
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.01), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)
    )


def _deep(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8, momentum=0.01), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8, momentum=0.01), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, num_classes),
    )  # fmt: skip


class _Identity(nn.Module):
    """A normalizer that leaves images as they are (its buffer tells ``iter_batches`` the device)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _class_sorted_images(n_per_class: int = 64, classes: int = 4, size: int = 8, seed: int = 0):
    """Images whose mean brightness and texture depend strongly on the class, rows sorted by class (like every
    index the project builds)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(classes):
        base = 0.2 + 0.2 * c
        x = base + (0.02 + 0.03 * c) * rng.standard_normal((n_per_class, 1, size, size))
        images.append(x.astype(np.float32))
        labels += [c] * n_per_class
    return np.concatenate(images), np.asarray(labels, dtype=np.int64)


def test_recompute_matches_clean_statistics_and_keeps_weights():
    model = _model()
    clean = [torch.rand(16, 1, 8, 8) for _ in range(4)]
    model(clean[0])  # materialise the lazy layer
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for _ in range(20):  # "heavy augmentation": shifted, scaled inputs, few steps, low momentum
        x = torch.rand(16, 1, 8, 8) * 4 + 3
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}

    conv, bn = model[0], model[1]
    with torch.no_grad():
        feats = torch.cat([conv(x) for x in clean])  # (64, 4, 6, 6)
    clean_mean = feats.mean(dim=(0, 2, 3))
    before = (bn.running_mean - clean_mean).abs().max().item()

    seen = recompute_bn_stats(model, clean)
    after = (bn.running_mean - clean_mean).abs().max().item()
    assert seen == 64
    assert before > 0.1 and after < 1e-5, (before, after)
    # Variance: the unbiased population variance over every row and position (not a mean of batch variances).
    population = feats.transpose(0, 1).reshape(4, -1).var(dim=1)
    assert torch.allclose(bn.running_var, population, rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.01 and not model.training
    for k, v in model.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k


def test_first_layer_variance_counts_the_spread_between_class_sorted_batches():
    """The bug of issue 13: batches that each hold one class. Averaging their variances misses the variance
    between batches; pooling counts it, so the result equals the population variance of all rows."""
    images, _ = _class_sorted_images()
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten())
    x = torch.from_numpy(images)
    batches = list(x.split(64))  # one class per batch
    recompute_bn_stats(model, batches)
    population = x.var()
    mean_of_batch_vars = torch.stack([b.var() for b in batches]).mean()
    assert mean_of_batch_vars < 0.5 * population  # the old estimate would be far too small here
    assert torch.allclose(model[0].running_var, population.reshape(1), rtol=1e-5)
    assert torch.allclose(model[0].running_mean, x.mean().reshape(1), rtol=1e-5)


def test_sorted_and_shuffled_rows_give_the_same_statistics():
    images, labels = _class_sorted_images()
    rows = np.arange(len(labels))
    shuffled = np.random.default_rng(3).permutation(rows)
    stats = []
    for order in (rows, shuffled, rows[::-1]):
        model = _deep()
        info = recompute_bn_on_rows(model, _Identity(), images, order, batch_size=32, seed=0)
        assert info["rows"] == len(rows) and info["batches"] == 8
        stats.append([b.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d)
                      for b in (m.running_mean, m.running_var)])  # fmt: skip
    for other in stats[1:]:
        for a, b in zip(stats[0], other, strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_canonical_rows_depend_on_the_set_only_and_mix_classes():
    rows = np.arange(200)
    a = canonical_bn_rows(rows, 100, seed=1)
    b = canonical_bn_rows(np.random.default_rng(0).permutation(rows), 100, seed=1)
    assert np.array_equal(a, b) and len(a) == 100 and len(np.unique(a)) == 100
    assert not np.array_equal(a, np.sort(a))  # fed in a mixed order
    assert np.array_equal(canonical_bn_rows(rows, None, 0)[np.argsort(canonical_bn_rows(rows, None, 0))], rows)


def test_class_sorted_toy_index_eval_accuracy_is_order_free_and_matches_batch_statistics():
    """Train a small BN network on class-sorted data, then re-estimate statistics from sorted or shuffled rows:
    the eval-mode accuracy is the same either way and no lower than with batch statistics (the guard agrees)."""
    images, labels = _class_sorted_images(n_per_class=48)
    model = _deep()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        idx = torch.randperm(len(y_all), generator=gen)[:32]
        loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    rows = np.arange(len(labels))
    accs = []
    for order in (rows, np.random.default_rng(5).permutation(rows)):
        m = _deep()
        m.load_state_dict(model.state_dict())
        recompute_bn_on_rows(m, _Identity(), images, order, batch_size=32, seed=0)
        with torch.no_grad():
            accs.append(float((m(x_all).argmax(1) == y_all).double().mean()))
        check = bn_consistency(m, _Identity(), images, rows, labels, batch_size=32)
        assert not check["suspect"] and abs(check["gap"]) < 0.1, check
    assert accs[0] == accs[1]
    assert accs[0] > 0.9, accs


def test_guard_flags_wrong_running_statistics():
    images, labels = _class_sorted_images(n_per_class=48)
    model = _deep()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    model.train()
    for step in range(60):
        idx = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(step))[:32]
        loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    rows = np.arange(len(labels))
    recompute_bn_on_rows(model, _Identity(), images, rows, batch_size=32)
    assert not bn_consistency(model, _Identity(), images, rows, labels, batch_size=32)["suspect"]
    for m in model.modules():  # what the order bug did: running variances far too small
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.mul_(1e-3)
            m.running_mean.add_(1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check = bn_consistency(model, _Identity(), images, rows, labels, batch_size=32)
    assert check["suspect"] and check["gap"] > 0.1 and "BatchNorm" in check["message"], check
    assert check["rows"] == len(rows)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the probe used a copy


def test_no_batchnorm_is_a_noop():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    assert recompute_bn_stats(model, [torch.zeros(2, 1, 2, 2)]) == 0


def test_runs_record_bn_rows_and_evaluate_reports_the_check(teacher_run):
    meta = json.loads((teacher_run / "model.json").read_text())
    assert meta["precise_bn"]["rows"] == 128 and meta["precise_bn"]["enabled"]
    metrics = json.loads((teacher_run / "metrics.json").read_text())
    for w in ("best", "final"):
        check = metrics["weights"][w]["bn_check"]
        assert check["split"] == "train" and check["rows"] > 0
        assert check["suspect"] is False, check


def test_evaluate_warns_on_broken_statistics(teacher_run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from stillroom.evaluate.runner import evaluate_run

    run = tmp_path / "broken"
    shutil.copytree(teacher_run, run)
    state = load_file(run / "best.safetensors")
    for k in list(state):
        if k.endswith("running_var"):
            state[k] = state[k] * 1e-4
    save_file(state, run / "best.safetensors")
    with pytest.warns(UserWarning, match="BatchNorm"):
        metrics = evaluate_run(run, splits=("val",), weights=("best",), plots=False)
    assert metrics["weights"]["best"]["bn_check"]["suspect"] is True
