"""OOD scores and their metrics (REFERENCE 4): orientation, FPR@95TPR with ties, ODIN's perturbation, tuning rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from stillroom._io import StillroomError
from stillroom.evaluate.ood import SCORES, ODINTuner, energy, msp, odin_score, ood_metrics, ood_report, tune_odin

K = 4


def _separated_logits(n: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, K+1) logits: ID rows confident in one ID class, OOD rows flat over ID and high on the sink."""
    g = torch.Generator().manual_seed(seed)
    id_z = torch.randn(n, K + 1, generator=g) * 0.3
    id_z[torch.arange(n), torch.randint(0, K, (n,), generator=g)] += 8.0
    id_z[:, K] -= 4.0
    ood_z = torch.randn(n, K + 1, generator=g) * 0.3
    ood_z[:, K] += 6.0
    return id_z, ood_z


def _scores(name: str, z: torch.Tensor) -> np.ndarray:
    # the ID-class scores see the K ID columns, the sink score all K + 1 (as in ood_report)
    return SCORES.get(name)(z if name == "sink" else z[:, :K]).numpy()


class _Identity(nn.Module):
    """logits = the input, flattened: ODIN's perturbation acts on the logits directly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@pytest.mark.parametrize("name", SCORES.list())
def test_every_score_is_oriented_higher_is_id(name):
    id_z, ood_z = _separated_logits()
    s_id, s_ood = _scores(name, id_z), _scores(name, ood_z)
    m = ood_metrics(s_id, s_ood)
    assert m["auroc"] == 1.0 and m["aupr_in"] == 1.0 and m["aupr_out"] == 1.0 and m["fpr_at_95_tpr"] == 0.0
    flipped = ood_metrics(-s_id, -s_ood)
    assert flipped["auroc"] == pytest.approx(1 - m["auroc"])
    # a monotone transform (no sigmoid anywhere: energies are unbounded and keep their ranking)
    for f in (lambda s: 3 * s + 5, np.exp, lambda s: s**3):
        assert ood_metrics(f(s_id), f(s_ood))["auroc"] == m["auroc"]


def test_odin_is_oriented_too():
    id_z, ood_z = _separated_logits()
    model = _Identity().eval()
    s_id = odin_score(model, id_z[:, None, None, :], std=[1.0], num_classes=K).numpy()
    s_ood = odin_score(model, ood_z[:, None, None, :], std=[1.0], num_classes=K).numpy()
    assert ood_metrics(s_id, s_ood)["auroc"] == 1.0


def test_metrics_match_sklearn_and_flip_on_random_scores():
    rng = np.random.default_rng(0)
    s_id, s_ood = rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 150)
    m = ood_metrics(s_id, s_ood)
    y = np.r_[np.ones(200), np.zeros(150)]
    assert m["auroc"] == pytest.approx(roc_auc_score(y, np.r_[s_id, s_ood]))
    assert ood_metrics(-s_id, -s_ood)["auroc"] == pytest.approx(1 - m["auroc"])
    # AUPR-Out of s is AUPR-In with the roles swapped
    assert ood_metrics(-s_ood, -s_id)["aupr_in"] == pytest.approx(m["aupr_out"])
    assert ood_metrics(torch.tensor(s_id), torch.tensor(s_ood))["auroc"] == pytest.approx(m["auroc"])


def test_fpr_at_95_tpr_by_hand():
    # 20 ID scores 1..20: the highest threshold accepting >= 19 of them is 2; OOD at or above 2: {2, 2, 3}
    s_id = np.arange(1, 21, dtype=float)
    s_ood = np.array([0.5, 2.0, 2.0, 3.0, 1.5])
    m = ood_metrics(s_id, s_ood)
    assert m["threshold_at_95_tpr"] == 2.0 and m["tpr_at_threshold"] == 0.95
    assert m["fpr_at_95_tpr"] == pytest.approx(3 / 5)


def test_fpr_at_95_tpr_with_ties_at_the_threshold():
    # ID: 1, 1, 2..19. t = 2 accepts 18/20 = 0.9 < 0.95, so t = 1 accepts both tied ones at once: TPR 1.0.
    # Every OOD score tied with the threshold is accepted too: {1, 1, 1.5, 5} of 5.
    s_id = np.array([1.0, 1.0, *range(2, 20)])
    s_ood = np.array([0.0, 1.0, 1.0, 1.5, 5.0])
    m = ood_metrics(s_id, s_ood)
    assert m["threshold_at_95_tpr"] == 1.0 and m["tpr_at_threshold"] == 1.0
    assert m["fpr_at_95_tpr"] == pytest.approx(4 / 5)


def test_fpr_matches_brute_force_with_many_ties():
    rng = np.random.default_rng(1)
    s_id, s_ood = rng.integers(0, 12, 97).astype(float), rng.integers(-3, 9, 61).astype(float)
    for t in sorted(set(s_id) | set(s_ood), reverse=True):  # highest threshold first
        if (s_id >= t).mean() >= 0.95:
            expected = (s_ood >= t).mean()
            break
    assert ood_metrics(s_id, s_ood)["fpr_at_95_tpr"] == pytest.approx(expected)


def test_metric_inputs_are_validated():
    with pytest.raises(StillroomError, match="id_scores"):
        ood_metrics([], [1.0])
    with pytest.raises(StillroomError, match="finite"):
        ood_metrics([1.0, float("nan")], [0.0])
    with pytest.raises(StillroomError, match="logits must be"):
        msp(torch.zeros(3))


def test_energy_formula():
    z = torch.tensor([[1.0, 2.0, 3.0]])
    assert energy(z).item() == pytest.approx(np.log(np.exp([1, 2, 3]).sum()))
    assert energy(z, temperature=2.0).item() == pytest.approx(2 * np.log(np.exp([0.5, 1.0, 1.5]).sum()))


# --- ODIN ----------------------------------------------------------------------------------------------------


def _tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, K + 1),
    ).eval()  # fmt: skip


def test_odin_with_eps_0_and_t_1_is_msp():
    model = _tiny_net()
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        ref = msp(model(x)[:, :K])
    got = odin_score(model, x, std=[0.5], temperature=1.0, eps=0.0, num_classes=K)
    torch.testing.assert_close(got, ref)


def test_odin_step_follows_the_softened_max_probability_upward():
    model = _tiny_net(1)
    x = torch.randn(16, 1, 8, 8, dtype=torch.float64)
    model = model.double()
    temp = 10.0
    base = odin_score(model, x, std=[1.0], temperature=temp, eps=0.0, num_classes=K)
    moved = odin_score(model, x, std=[1.0], temperature=temp, eps=1e-4, num_classes=K)
    assert (moved > base).all()  # first order: the step raises log S_yhat(x; T) by eps * |grad|_1

    # the step is exactly x - (eps / std) * sign(grad of CE(z/T, yhat)), with the std of the preprocessing
    std, eps = 0.25, 1e-3
    xg = x.clone().requires_grad_(True)
    z = model(xg)[:, :K] / temp
    torch.nn.functional.cross_entropy(z, z.argmax(1), reduction="sum").backward()
    x_manual = x - eps / std * xg.grad.sign()
    with torch.no_grad():
        ref = torch.softmax(model(x_manual)[:, :K] / temp, 1).amax(1)
    got = odin_score(model, x, std=[std], temperature=temp, eps=eps, num_classes=K)
    torch.testing.assert_close(got, ref, check_dtype=False)


def test_odin_is_batched_per_sample_and_needs_eval_mode():
    model = _tiny_net(2)
    x = torch.randn(6, 1, 8, 8)
    batch = odin_score(model, x, std=[0.4], num_classes=K)
    single = torch.cat([odin_score(model, x[i : i + 1], std=[0.4], num_classes=K) for i in range(6)])
    torch.testing.assert_close(batch, single)
    with pytest.raises(StillroomError, match="eval mode"):
        odin_score(model.train(), x, std=[0.4])


def test_odin_tuner_fits_on_a_grid():
    model = _tiny_net(3)
    x = torch.randn(20, 1, 8, 8)
    is_ood = np.r_[np.zeros(10, bool), np.ones(10, bool)]
    tuner = ODINTuner(temperatures=(1.0, 10.0), epsilons=(0.0, 0.001))
    with pytest.raises(StillroomError, match="fit"):
        tuner.result()
    tuner.fit(model, lambda: iter([x[:8], x[8:]]), is_ood, std=[0.5], num_classes=K)
    assert len(tuner.grid_) == 4 and tuner.auroc_ == max(g["auroc"] for g in tuner.grid_)
    assert (tuner.temperature_, tuner.eps_) in {(g["temperature"], g["eps"]) for g in tuner.grid_}


def test_odin_is_never_tuned_on_test(tmp_path):
    with pytest.raises(StillroomError, match="never tune on the test split"):
        tune_odin(tmp_path, split="test")
    with pytest.raises(StillroomError, match="tuned on test"):
        ood_report(tmp_path, odin_tuned_on="test")
