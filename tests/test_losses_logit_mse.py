"""Logit matching (``logit_mse``, Kim et al. 2021): hand-computed values, KD's high-temperature limit, what it
passes on that KL cannot (the level of the logits), and its multi-teacher modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stillroom._io import StillroomError
from stillroom.distill.losses import build_loss


def _batch(b: int = 6, k: int = 5, m: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, k, generator=g, dtype=torch.float64) * 2
    t = torch.randn(m, b, k, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, k, (b,), generator=g)
    return z, t, y


def test_golden_by_hand():
    # z = (1, 2, 0.5), t = (2, 0.5, 1): squared errors 1, 2.25, 0.25 -> mean 3.5 / 3
    out = build_loss("logit_mse", kd_weight=0.25)(
        torch.tensor([[1.0, 2.0, 0.5]]), torch.tensor([[[2.0, 0.5, 1.0]]]), torch.tensor([0])
    )
    ce = np.log(np.exp(1.0) + np.exp(2.0) + np.exp(0.5)) - 1.0
    assert out["loss_kd"].item() == pytest.approx(0.25 * 3.5 / 3, abs=1e-6)
    assert out["loss_ce"].item() == pytest.approx(0.75 * ce, abs=1e-6)


def test_numpy_oracle_batch_mean_over_elements():
    z, t, y = _batch(m=1)
    got = build_loss("logit_mse", kd_weight=1.0)(z, t, y)["loss_kd"].item()
    assert got == pytest.approx(float(np.mean((z.numpy() - t[0].numpy()) ** 2)), rel=1e-12)


def test_kd_high_temperature_limit_has_the_same_gradient_direction():
    # Hinton et al. 2015 §2.1: for zero-mean logits, d(T^2 KL)/dz -> (z - t) / K as T grows; ours is 2 (z - t) / (B K)
    z, t, y = _batch(b=4, k=7, m=1)
    z = (z - z.mean(1, keepdim=True)).requires_grad_(True)
    t = t - t.mean(2, keepdim=True)
    build_loss("kd", kd_weight=1.0, temperature=1e5)(z, t, y)["loss_kd"].backward()
    g_kd = z.grad.clone() * z.shape[0]  # KD is a batch mean of per-row sums
    z.grad = None
    build_loss("logit_mse", kd_weight=1.0)(z, t, y)["loss_kd"].backward()
    g_mse = z.grad * z.shape[0] / 2
    torch.testing.assert_close(g_kd, g_mse, rtol=1e-3, atol=1e-6)


def test_passes_on_the_logit_level_that_kl_cannot():
    # a teacher unsure of a row (all logits low) and one sure of it differ by a constant shift: KL sees no difference,
    # logit matching does, and its optimum is the teacher's own logits
    z, t, y = _batch(m=1)
    for name, params in (("kd", {"kd_weight": 1.0}), ("logit_mse", {"kd_weight": 1.0})):
        loss = build_loss(name, **params)
        a, b = loss(z, t, y)["loss_kd"], loss(z, t - 5.0, y)["loss_kd"]
        assert torch.isclose(a, b) if name == "kd" else b > a + 1.0, name
    copy = t[0].clone().requires_grad_(True)
    out = build_loss("logit_mse", kd_weight=1.0)(copy, t, y)["loss_kd"]
    out.backward()
    assert out.item() == 0.0 and torch.count_nonzero(copy.grad) == 0


@pytest.mark.parametrize("mode", ["fused", "logits", "split"])
def test_multi_teacher_modes_share_the_gradient_of_the_weighted_mean(mode):
    z, t, y = _batch(m=3)
    w = [0.5, 0.3, 0.2]
    z = z.requires_grad_(True)
    out = build_loss("logit_mse", kd_weight=1.0, multi_teacher=mode, teacher_weights=w)(z, t, y)["loss_kd"]
    out.backward()
    mean_t = (torch.tensor(w, dtype=t.dtype)[:, None, None] * t).sum(0)
    ref_z = z.detach().clone().requires_grad_(True)
    F.mse_loss(ref_z, mean_t).backward()
    torch.testing.assert_close(z.grad, ref_z.grad)
    per_teacher = sum(wi * F.mse_loss(z.detach(), ti).item() for wi, ti in zip(w, t, strict=True))
    expected = per_teacher if mode == "split" else F.mse_loss(z.detach(), mean_t).item()
    assert out.item() == pytest.approx(expected, rel=1e-12)


def test_bad_parameters_and_inputs_name_the_problem():
    z, t, y = _batch(m=2)
    with pytest.raises(StillroomError, match=r"loss 'logit_mse'.*'temperature'.*no temperature"):
        build_loss("logit_mse", temperature=4.0)
    with pytest.raises(StillroomError, match=r"1 teacher_weights for 2 teachers"):
        build_loss("logit_mse", teacher_weights=[1.0])(z, t, y)
    with pytest.raises(StillroomError, match=r"student has 6 outputs, teachers 5"):
        build_loss("logit_mse")(torch.zeros(6, 6), t, y)
