"""Distillation losses: hand-computed golden values, an independent scipy formula, and registry conformance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import log_softmax as sp_log_softmax
from scipy.special import rel_entr
from scipy.special import softmax as sp_softmax

from stillroom._io import StillroomError
from stillroom.distill.losses import LOSSES, build_loss

MODES = ("fused", "split", "logits")


def _total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(terms.values())


def _batch(b: int = 6, k: int = 5, m: int = 3, seed: int = 0, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, k, generator=g, dtype=dtype) * 2
    t = torch.randn(m, b, k, generator=g, dtype=dtype) * 3
    y = torch.randint(0, k, (b,), generator=g)
    return z, t, y


# --- golden values -------------------------------------------------------------------------------------------


def test_kd_golden_three_classes_by_hand():
    # z = (1, 2, 0.5), t = (2, 0.5, 1), y = 0, T = 2, kd_weight = 0.5
    # p_s^T = softmax(0.5, 1, 0.25), p_t^T = softmax(1, 0.25, 0.5)
    zs = math.exp(0.5) + math.exp(1.0) + math.exp(0.25)
    zt = math.exp(1.0) + math.exp(0.25) + math.exp(0.5)
    p_s = [math.exp(0.5) / zs, math.exp(1.0) / zs, math.exp(0.25) / zs]
    p_t = [math.exp(1.0) / zt, math.exp(0.25) / zt, math.exp(0.5) / zt]
    kl = sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True))
    ce = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5)) - 1.0  # -log softmax(z)[0]
    assert ce == pytest.approx(1.4643687841079447, abs=1e-12)
    assert kl == pytest.approx(0.14303629279556207, abs=1e-12)

    loss = build_loss("kd", kd_weight=0.5, temperature=2.0)
    out = loss(torch.tensor([[1.0, 2.0, 0.5]]), torch.tensor([[[2.0, 0.5, 1.0]]]), torch.tensor([0]))
    assert set(out) == {"loss_ce", "loss_kd"}
    assert out["loss_ce"].item() == pytest.approx(0.5 * ce, abs=1e-6)
    assert out["loss_kd"].item() == pytest.approx(0.5 * 2.0**2 * kl, abs=1e-6)


def test_kd_kl_is_batch_mean():
    z = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]], dtype=torch.float64)
    t = torch.tensor([[[2.0, 0.5, 1.0], [1.0, 1.0, 1.0]]], dtype=torch.float64)
    # the second row's teacher is uniform: KL(u || p) = -log 3 - mean(log p)
    log_p2 = [v - math.log(2 + math.exp(3.0)) for v in (0.0, 0.0, 3.0)]
    kl2 = -math.log(3) - sum(log_p2) / 3
    # the first row as in the golden test, here at T = 1
    p_s = [math.exp(v) / (math.exp(1) + math.exp(2) + math.exp(0.5)) for v in (1.0, 2.0, 0.5)]
    p_t = [math.exp(v) / (math.exp(2) + math.exp(0.5) + math.exp(1)) for v in (2.0, 0.5, 1.0)]
    kl1 = sum(a * math.log(a / b) for a, b in zip(p_t, p_s, strict=True))
    out = build_loss("kd", kd_weight=1.0, temperature=1.0)(z, t, torch.tensor([0, 2]))
    assert out["loss_kd"].item() == pytest.approx((kl1 + kl2) / 2, abs=1e-12)
    assert out["loss_ce"].item() == 0.0


def _scipy_kd(z, t, y, kd_weight, temperature, mode, weights):
    """Independent float64 reference: scipy softmax / rel_entr, no torch."""
    z, t, y = z.numpy(), t.numpy(), y.numpy()
    m = t.shape[0]
    w = np.full(m, 1.0 / m) if weights is None else np.asarray(weights, dtype=np.float64)
    p_s = sp_softmax(z / temperature, axis=1)
    p_m = sp_softmax(t / temperature, axis=2)  # (M, B, K)
    if mode == "fused":
        kl = rel_entr(np.tensordot(w, p_m, axes=1), p_s).sum(1).mean()
    elif mode == "split":
        kl = sum(w[i] * rel_entr(p_m[i], p_s).sum(1).mean() for i in range(m))
    else:
        kl = rel_entr(sp_softmax(np.tensordot(w, t, axes=1) / temperature, axis=1), p_s).sum(1).mean()
    ce = -sp_log_softmax(z, axis=1)[np.arange(len(y)), y].mean()
    return (1 - kd_weight) * ce, kd_weight * temperature**2 * kl


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("weights", [None, [0.2, 0.5, 0.3]])
def test_kd_matches_scipy(mode, temperature, weights):
    z, t, y = _batch(dtype=torch.float64)
    loss = build_loss("kd", kd_weight=0.3, temperature=temperature, multi_teacher=mode, teacher_weights=weights)
    out = loss(z, t, y)
    ce_ref, kd_ref = _scipy_kd(z, t, y, 0.3, temperature, mode, weights)
    assert out["loss_ce"].item() == pytest.approx(ce_ref, abs=1e-6)
    assert out["loss_kd"].item() == pytest.approx(kd_ref, abs=1e-6)


# --- temperature and weights ---------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 2.0, 8.0])
def test_t_squared_scaling(temperature):
    z, t, y = _batch(m=1, dtype=torch.float64)
    out = build_loss("kd", kd_weight=1.0, temperature=temperature)(z, t, y)
    unscaled = F.kl_div(
        F.log_softmax(z / temperature, 1), F.softmax(t[0] / temperature, 1), reduction="batchmean"
    ).item()
    assert out["loss_kd"].item() / temperature**2 == pytest.approx(unscaled, rel=1e-10)


def test_t_squared_keeps_gradient_scale_at_high_temperature():
    # Hinton et al.: with zero-mean logits and large T, d(T^2 KL)/dz -> (z - t) / (K B), independent of T.
    z, t, _ = _batch(b=4, k=5, m=1, dtype=torch.float64)
    z, t = z - z.mean(1, keepdim=True), t - t.mean(2, keepdim=True)
    z.requires_grad_(True)
    out = build_loss("kd", kd_weight=1.0, temperature=1e5)(z, t, torch.zeros(4, dtype=torch.long))
    out["loss_kd"].backward()
    # the next-order term is O(|z|^2 / T): about 1e-5 here, against gradients of order 0.1
    torch.testing.assert_close(z.grad, (z.detach() - t[0]) / (5 * 4), rtol=0, atol=2e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_kd_weight_zero_is_ce_exactly(mode, label_smoothing):
    z, t, y = _batch()
    out = build_loss("kd", kd_weight=0.0, multi_teacher=mode, label_smoothing=label_smoothing)(z, t, y)
    assert torch.equal(_total(out), F.cross_entropy(z, y, label_smoothing=label_smoothing))


def test_modes_coincide_for_one_teacher_and_for_equal_teachers():
    z, t, y = _batch(m=1)
    vals = [build_loss("kd", multi_teacher=mode)(z, t, y)["loss_kd"] for mode in MODES]
    torch.testing.assert_close(vals[0], vals[1])
    torch.testing.assert_close(vals[0], vals[2])
    same = t.expand(4, -1, -1)
    vals4 = [build_loss("kd", multi_teacher=mode)(z, same, y)["loss_kd"] for mode in MODES]
    for v in vals4:
        torch.testing.assert_close(v, vals[0])


def test_modes_differ_for_distinct_teachers():
    z, t, y = _batch(m=3)
    fused, split, logits = (build_loss("kd", multi_teacher=mode)(z, t, y)["loss_kd"].item() for mode in MODES)
    # KL is convex in its first argument, so the KL to the averaged target is below the average of the KLs
    assert fused < split
    assert abs(logits - fused) > 1e-4 and abs(logits - split) > 1e-4


@pytest.mark.parametrize("mode", MODES)
def test_teacher_weights_select_and_mix(mode):
    z, t, y = _batch(m=2)
    only_first = build_loss("kd", multi_teacher=mode, teacher_weights=[1.0, 0.0])(z, t, y)["loss_kd"]
    single = build_loss("kd", multi_teacher=mode)(z, t[:1], y)["loss_kd"]
    torch.testing.assert_close(only_first, single)
    if mode == "split":
        per = [build_loss("kd")(z, t[i : i + 1], y)["loss_kd"] for i in range(2)]
        mixed = build_loss("kd", multi_teacher="split", teacher_weights=[0.25, 0.75])(z, t, y)["loss_kd"]
        torch.testing.assert_close(mixed, 0.25 * per[0] + 0.75 * per[1])


def test_teacher_weights_validated():
    with pytest.raises(StillroomError, match="sum to 1"):
        build_loss("kd", teacher_weights=[0.5, 0.6])
    with pytest.raises(StillroomError, match="non-negative"):
        build_loss("kd", teacher_weights=[1.5, -0.5])
    z, t, y = _batch(m=3)
    with pytest.raises(StillroomError, match="2 teacher_weights for 3 teachers"):
        build_loss("kd", teacher_weights=[0.5, 0.5])(z, t, y)


def test_fused_is_stable_for_confident_teachers():
    z, t, y = _batch(m=2, dtype=torch.float32)
    t = t * 1e3  # softmax underflows to exact zeros; the log-space mixture must not produce inf or nan
    for mode in MODES:
        out = build_loss("kd", temperature=1.0, multi_teacher=mode)(z, t, y)
        assert torch.isfinite(out["loss_kd"])


def test_kd_errors():
    z, t, y = _batch(k=5)
    with pytest.raises(StillroomError, match="OOD sink"):
        build_loss("kd")(torch.randn(6, 6), t, y)
    with pytest.raises(StillroomError, match="needs teacher logits"):
        build_loss("kd")(z, None, y)
    with pytest.raises(StillroomError, match=r"teacher_logits must be \(M, 6, K\)"):
        build_loss("kd")(z, t[:, :3], y)
    for bad in ({"kd_weight": 1.5}, {"temperature": 0.0}, {"multi_teacher": "mean"}, {"label_smoothing": 1.0}):
        with pytest.raises(StillroomError):
            build_loss("kd", **bad)


def test_single_teacher_may_be_two_dimensional():
    z, t, y = _batch(m=1)
    loss = build_loss("kd")
    torch.testing.assert_close(loss(z, t[0], y)["loss_kd"], loss(z, t, y)["loss_kd"])


# --- registry --------------------------------------------------------------------------------------------------


def test_unknown_loss_lists_known_ones():
    with pytest.raises(StillroomError) as err:
        build_loss("hinton")
    assert "'hinton'" in str(err.value)
    for name in LOSSES.list():
        assert name in str(err.value)


def test_unknown_param_names_param_and_loss():
    with pytest.raises(StillroomError, match=r"loss 'kd': unknown parameter\(s\) 'alpha'.*kd_weight"):
        build_loss("kd", alpha=0.5)
    with pytest.raises(StillroomError, match=r"loss 'ce'.*'temperature'"):
        build_loss("ce", temperature=2.0)


def test_ce_ignores_teachers_and_smooths():
    z, t, y = _batch()
    loss = build_loss("ce", label_smoothing=0.1)
    assert torch.equal(loss(z, t, y)["loss_ce"], loss(z, None, y)["loss_ce"])
    assert torch.equal(loss(z, None, y)["loss_ce"], F.cross_entropy(z, y, label_smoothing=0.1))


@pytest.mark.parametrize("name", LOSSES.list())
def test_conformance(name):
    cls = LOSSES.get(name)
    z, t, y = _batch(b=8, k=7, m=2)
    z.requires_grad_(True)
    t.requires_grad_(True)
    ctx = {"features": torch.randn(8, 16)} if cls.needs_features else {}  # supcon: the student's pooled features
    out = build_loss(name)(z, t, y, **ctx)
    assert out and all(k.startswith("loss_") for k in out)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in out.values())
    _total(out).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert t.grad is None, "teacher logits must be detached (frozen teacher)"
    if cls.needs_teacher:
        with pytest.raises(StillroomError):
            build_loss(name)(z, None, y, **ctx)
    if cls.ce_equivalent_params is not None:
        ref = F.cross_entropy(z.detach(), y)
        got = _total(build_loss(name, **cls.ce_equivalent_params)(z.detach(), t.detach(), y))
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-7)
