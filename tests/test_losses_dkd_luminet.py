"""DKD and LumiNet: hand-computed golden values, independent float64 scipy formulas, warm-up, multi-teacher.

No peer package serves as a reference: mdistiller and the LumiNet code are not on PyPI, and the distillation
packages that are (torchdistill, KD_Lib) have neither loss. The scipy references below are written from the
formulas (seed 001 §4.1.5, seed 002 eq. 1-4), sharing no code with the losses.
"""

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
from stillroom.distill.losses._multi import warmup_factor

MODES = ("fused", "split", "logits")


def _batch(b: int = 6, k: int = 5, m: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, k, generator=g, dtype=dtype) * 2
    t = torch.randn(m, b, k, generator=g, dtype=dtype) * 3
    y = torch.randint(0, k, (b,), generator=g)
    return z, t, y


def _softmax(v: list[float], temp: float) -> list[float]:
    e = [math.exp(x / temp) for x in v]
    return [x / sum(e) for x in e]


# --- DKD: golden values ----------------------------------------------------------------------------------------


def test_dkd_golden_three_classes_by_hand():
    # z = (1, 2, 0.5), t = (2, 0.5, 1), y = 0, T = 2
    zs, zt, temp = [1.0, 2.0, 0.5], [2.0, 0.5, 1.0], 2.0
    p_s, p_t = _softmax(zs, temp), _softmax(zt, temp)
    # TCKD: KL of the binary (target, rest) distributions
    tckd = p_t[0] * math.log(p_t[0] / p_s[0]) + (1 - p_t[0]) * math.log((1 - p_t[0]) / (1 - p_s[0]))
    # NCKD: KL of the non-target distributions; renormalising = softmax over the non-target logits alone
    nt_s, nt_t = _softmax(zs[1:], temp), _softmax(zt[1:], temp)
    assert nt_s[0] == pytest.approx(p_s[1] / (1 - p_s[0]), abs=1e-15)
    nckd = sum(a * math.log(a / b) for a, b in zip(nt_t, nt_s, strict=True))
    ce = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5)) - 1.0
    assert tckd == pytest.approx(0.07914618258202907, abs=1e-14)
    assert nckd == pytest.approx(0.12310808712185492, abs=1e-14)
    # DKD's decomposition of KD (Zhao et al. eq. 5): KL = TCKD + (1 - p_t,g) NCKD; KL from test_losses' KD golden
    assert tckd + (1 - p_t[0]) * nckd == pytest.approx(0.14303629279556207, abs=1e-14)

    z, t, y = torch.tensor([zs], dtype=torch.float64), torch.tensor([[zt]], dtype=torch.float64), torch.tensor([0])
    ref = build_loss("dkd", temperature=2.0)(z, t, y)  # ce 1.0, alpha 1.0, beta 8.0; no epoch: no warm-up
    assert set(ref) == {"loss_ce", "loss_tckd", "loss_nckd"}
    assert ref["loss_ce"].item() == pytest.approx(ce, abs=1e-12)
    assert ref["loss_tckd"].item() == pytest.approx(1.0 * 4.0 * tckd, abs=1e-12)
    assert ref["loss_nckd"].item() == pytest.approx(8.0 * 4.0 * nckd, abs=1e-12)
    s01 = build_loss("dkd", preset="seed001")(z, t, y)  # a = 0.5, b = 4, T = 2
    assert s01["loss_ce"].item() == pytest.approx(0.5 * ce, abs=1e-12)
    assert s01["loss_tckd"].item() == pytest.approx(0.5 * 4.0 * tckd, abs=1e-12)
    assert s01["loss_nckd"].item() == pytest.approx(4.0 * 4.0 * nckd, abs=1e-12)


def test_dkd_terms_are_batch_means_by_hand():
    # row 2: the teacher is uniform over 3 classes: b_t = (1/3, 2/3), p~_t = (1/2, 1/2); T = 1, y = (0, 2)
    z = torch.tensor([[1.0, 2.0, 0.5], [0.0, 1.0, 3.0]], dtype=torch.float64)
    t = torch.tensor([[[2.0, 0.5, 1.0], [1.0, 1.0, 1.0]]], dtype=torch.float64)
    p1s, p1t = _softmax([1.0, 2.0, 0.5], 1.0), _softmax([2.0, 0.5, 1.0], 1.0)
    tckd1 = p1t[0] * math.log(p1t[0] / p1s[0]) + (1 - p1t[0]) * math.log((1 - p1t[0]) / (1 - p1s[0]))
    n1s, n1t = _softmax([2.0, 0.5], 1.0), _softmax([0.5, 1.0], 1.0)
    nckd1 = sum(a * math.log(a / b) for a, b in zip(n1t, n1s, strict=True))
    p2s_g = math.exp(3.0) / (1 + math.exp(1.0) + math.exp(3.0))
    tckd2 = (1 / 3) * math.log((1 / 3) / p2s_g) + (2 / 3) * math.log((2 / 3) / (1 - p2s_g))
    n2s = _softmax([0.0, 1.0], 1.0)
    nckd2 = 0.5 * math.log(0.5 / n2s[0]) + 0.5 * math.log(0.5 / n2s[1])
    out = build_loss("dkd", alpha=1.0, beta=1.0, temperature=1.0)(z, t, torch.tensor([0, 2]))
    assert out["loss_tckd"].item() == pytest.approx((tckd1 + tckd2) / 2, abs=1e-12)
    assert out["loss_nckd"].item() == pytest.approx((nckd1 + nckd2) / 2, abs=1e-12)


def _scipy_dkd(z, t, y, temperature, mode, weights):
    """Independent float64 (TCKD, NCKD) from softened probabilities with numpy masks, no torch."""
    z, t, y = z.numpy(), t.numpy(), y.numpy()
    m, b, k = t.shape
    w = np.full(m, 1.0 / m) if weights is None else np.asarray(weights, dtype=np.float64)
    gt = np.eye(k, dtype=bool)[y]  # (B, K)

    def decouple(p):  # (B, K) probabilities -> binary (B, 2), non-target (B, K-1)
        pg = p[gt]
        return np.stack([pg, 1 - pg], 1), p[~gt].reshape(b, k - 1) / (1 - pg)[:, None]

    def terms(p_t):
        (bt, nt), (bs, ns) = decouple(p_t), decouple(sp_softmax(z / temperature, axis=1))
        return rel_entr(bt, bs).sum(1).mean(), rel_entr(nt, ns).sum(1).mean()

    p_m = sp_softmax(t / temperature, axis=2)
    if mode == "split":
        per = np.array([terms(p_m[i]) for i in range(m)])  # (M, 2)
        return tuple(w @ per)
    if mode == "fused":
        return terms(np.tensordot(w, p_m, axes=1))
    return terms(sp_softmax(np.tensordot(w, t, axes=1) / temperature, axis=1))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("weights", [None, [0.2, 0.5, 0.3]])
def test_dkd_matches_scipy(mode, temperature, weights):
    z, t, y = _batch()
    tckd, nckd = _scipy_dkd(z, t, y, temperature, mode, weights)
    ce = -sp_log_softmax(z.numpy(), axis=1)[np.arange(6), y.numpy()].mean()
    out = build_loss(
        "dkd", alpha=0.7, beta=3.0, ce_weight=0.4, temperature=temperature, multi_teacher=mode,
        teacher_weights=weights,
    )(z, t, y)  # fmt: skip
    assert out["loss_ce"].item() == pytest.approx(0.4 * ce, abs=1e-6)
    assert out["loss_tckd"].item() == pytest.approx(0.7 * temperature**2 * tckd, abs=1e-6)
    assert out["loss_nckd"].item() == pytest.approx(3.0 * temperature**2 * nckd, abs=1e-6)


# --- DKD: presets and warm-up -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_dkd_presets_coincide(mode):
    z, t, y = _batch()
    seed = build_loss("dkd", preset="seed001", kd_weight=0.3, beta=5.0, temperature=3.0, multi_teacher=mode)
    ref = build_loss("dkd", ce_weight=0.7, alpha=0.3, beta=5.0, temperature=3.0, multi_teacher=mode)
    a, b = seed(z, t, y, epoch=40), ref(z, t, y, epoch=40)  # past the 20-epoch warm-up of the reference one
    for key in ("loss_ce", "loss_tckd", "loss_nckd"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=0)
    assert ref(z, t, y, epoch=9)["loss_nckd"].item() == pytest.approx(0.5 * b["loss_nckd"].item(), rel=1e-12)


def test_warmup_factor_schedule():
    # 0-based epoch e: (e + 1) / 20, i.e. mdistiller's 1-based epoch / 20
    assert [warmup_factor(e, 20, "dkd") for e in (0, 9, 18, 19, 100)] == [0.05, 0.5, 0.95, 1.0, 1.0]
    assert warmup_factor(None, 20, "dkd") == 1.0 and warmup_factor(0, 0, "dkd") == 1.0
    for bad in (-1, "x", float("nan")):
        with pytest.raises(StillroomError, match="epoch"):
            warmup_factor(bad, 20, "dkd")


def test_dkd_warmup_scales_kd_terms_not_ce():
    z, t, y = _batch()
    loss = build_loss("dkd")  # reference: warm-up over 20 epochs
    full = loss(z, t, y)  # no epoch in ctx: factor 1
    for epoch, factor in ((0, 1 / 20), (4, 5 / 20), (19, 1.0), (25, 1.0)):
        out = loss(z, t, y, epoch=epoch)
        assert torch.equal(out["loss_ce"], full["loss_ce"])
        for key in ("loss_tckd", "loss_nckd"):
            assert out[key].item() == pytest.approx(factor * full[key].item(), rel=1e-12)
    # seed 001's form has no warm-up unless asked for
    s01 = build_loss("dkd", preset="seed001")
    torch.testing.assert_close(s01(z, t, y, epoch=0)["loss_nckd"], s01(z, t, y)["loss_nckd"])
    with pytest.raises(StillroomError, match="epoch"):
        loss(z, t, y, epoch=-1)


# --- DKD: exactness and stability ------------------------------------------------------------------------------


def test_nckd_ignores_the_target_logit_exactly():
    # An exact mask makes NCKD independent of the target logits; mdistiller's "- 1000 * gt_mask" would leak
    # once a target logit / T exceeds about 1000.
    z, t, y = _batch(m=1)
    loss = build_loss("dkd", temperature=1.0)
    base = loss(z, t, y)["loss_nckd"]
    gt = F.one_hot(y, 5).bool()
    moved = loss(z + 5000.0 * gt, t - 3000.0 * gt, y)["loss_nckd"]
    torch.testing.assert_close(moved, base, rtol=1e-10, atol=0)


def test_dkd_finite_with_gradients_when_target_probability_rounds_to_one():
    z, t, y = _batch(dtype=torch.float32)
    gt = F.one_hot(y, 5).bool()
    z = (z + 200.0 * gt).requires_grad_(True)  # p_s,g == 1.0 in float32: log(1 - p_g) must not be log(0)
    t = t + 200.0 * gt
    assert (F.softmax(z.detach(), 1)[gt] == 1.0).all()
    out = build_loss("dkd", temperature=1.0)(z, t, y)
    assert all(torch.isfinite(v) for v in out.values())
    sum(out.values()).backward()
    assert torch.isfinite(z.grad).all()


# --- DKD: multi-teacher and parameters -------------------------------------------------------------------------


def test_dkd_modes_coincide_for_equal_teachers_and_differ_otherwise():
    z, t, y = _batch(m=1)
    one = build_loss("dkd")(z, t, y)
    for mode in MODES:
        out = build_loss("dkd", multi_teacher=mode)(z, t.expand(3, -1, -1), y)
        for key in one:
            torch.testing.assert_close(out[key], one[key])
    z, t, y = _batch(m=3)
    vals = [sum(build_loss("dkd", multi_teacher=mode)(z, t, y).values()).item() for mode in MODES]
    assert len({round(v, 6) for v in vals}) == 3


@pytest.mark.parametrize("mode", MODES)
def test_dkd_teacher_weights(mode):
    z, t, y = _batch(m=2)
    first = build_loss("dkd", multi_teacher=mode, teacher_weights=[1.0, 0.0])(z, t, y)
    single = build_loss("dkd")(z, t[:1], y)
    for key in first:
        torch.testing.assert_close(first[key], single[key])
    if mode == "split":
        per = [build_loss("dkd")(z, t[i : i + 1], y) for i in range(2)]
        mixed = build_loss("dkd", multi_teacher="split", teacher_weights=[0.25, 0.75])(z, t, y)
        for key in ("loss_tckd", "loss_nckd"):
            torch.testing.assert_close(mixed[key], 0.25 * per[0][key] + 0.75 * per[1][key])
    with pytest.raises(StillroomError, match="2 teacher_weights for 3 teachers"):
        build_loss("dkd", multi_teacher=mode, teacher_weights=[0.5, 0.5])(*_batch(m=3))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"kd_weight": 0.5}, "kd_weight is not a parameter of preset 'reference'"),
        ({"preset": "seed001", "alpha": 1.0}, "alpha is not a parameter of preset 'seed001'"),
        ({"preset": "seed001", "ce_weight": 1.0}, "ce_weight is not a parameter"),
        ({"preset": "seed001", "kd_weight": 1.5}, "kd_weight must be in"),
        ({"preset": "mdistiller"}, "preset must be one of"),
        ({"beta": -1.0}, "beta must be a finite number"),
        ({"alpha": float("nan")}, "alpha must be a finite number"),
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"warmup_epochs": "20"}, "warmup_epochs must be a finite number"),
        ({"multi_teacher": "mean"}, "multi_teacher must be one of"),
        ({"teacher_weights": [0.5, 0.6]}, "sum to 1"),
        ({"T": 4.0}, "use temperature"),
    ],
)
def test_dkd_bad_params_name_the_param(params, match):
    with pytest.raises(StillroomError, match=match):
        build_loss("dkd", **params)


def test_dkd_shape_errors():
    z, t, y = _batch(k=5)
    with pytest.raises(StillroomError, match="OOD sink"):
        build_loss("dkd")(torch.randn(6, 6, dtype=torch.float64), t, y)
    with pytest.raises(StillroomError, match="at least 2 classes"):
        build_loss("dkd")(z[:, :1], t[..., :1], torch.zeros(6, dtype=torch.long))


# --- LumiNet ---------------------------------------------------------------------------------------------------


def _perception_by_hand(rows: list[list[float]], eps: float) -> list[list[float]]:
    b, k = len(rows), len(rows[0])
    out = [[0.0] * k for _ in range(b)]
    for j in range(k):
        col = [rows[i][j] for i in range(b)]
        mean = sum(col) / b
        var = sum((v - mean) ** 2 for v in col) / b  # biased
        for i in range(b):
            out[i][j] = (col[i] - mean) / math.sqrt(var + eps)
    return out


def test_luminet_golden_by_hand():
    zs = [[1.0, 2.0, 0.5], [0.0, 1.0, 3.0], [2.0, -1.0, 1.0]]
    zt = [[4.0, 1.0, 0.0], [1.0, 2.0, 5.0], [3.0, 0.0, 2.0]]
    y, tau, eps, weight = [0, 2, 0], 2.0, 1e-5, 3.0
    # class 0 of the student: mean 1, biased var 2/3 -> h = (0, -1, 1) / sqrt(2/3 + eps)
    h_s, h_t = _perception_by_hand(zs, eps), _perception_by_hand(zt, eps)
    assert h_s[1][0] == pytest.approx(-1 / math.sqrt(2 / 3 + eps), abs=1e-15)
    kl = 0.0
    for i in range(3):
        p_s, p_t = _softmax(h_s[i], tau), _softmax(h_t[i], tau)
        kl += sum(a * math.log(a / b) for a, b in zip(p_t, p_s, strict=True)) / 3
    ce = sum(math.log(sum(math.exp(v) for v in zs[i])) - zs[i][y[i]] for i in range(3)) / 3
    assert kl == pytest.approx(0.06444882646078126, abs=1e-14)

    loss = build_loss("luminet", kd_scale=weight, temperature=tau, eps=eps)
    out = loss(torch.tensor(zs, dtype=torch.float64), torch.tensor([zt], dtype=torch.float64), torch.tensor(y))
    assert set(out) == {"loss_ce", "loss_kd"}
    assert out["loss_ce"].item() == pytest.approx(ce, abs=1e-12)
    assert out["loss_kd"].item() == pytest.approx(weight * kl, abs=1e-12)


def _scipy_luminet(z, t, y, kd_scale, tau, eps, mode, weights):
    z, t, y = z.numpy(), t.numpy(), y.numpy()
    m = t.shape[0]
    w = np.full(m, 1.0 / m) if weights is None else np.asarray(weights, dtype=np.float64)
    h_s = (z - z.mean(0)) / np.sqrt(z.var(0) + eps)  # numpy var is biased (ddof = 0)
    h_t = np.stack([(tm - tm.mean(0)) / np.sqrt(tm.var(0) + eps) for tm in t])
    p_s, p_m = sp_softmax(h_s / tau, axis=1), sp_softmax(h_t / tau, axis=2)
    if mode == "fused":
        kl = rel_entr(np.tensordot(w, p_m, axes=1), p_s).sum(1).mean()
    elif mode == "split":
        kl = sum(w[i] * rel_entr(p_m[i], p_s).sum(1).mean() for i in range(m))
    else:
        kl = rel_entr(sp_softmax(np.tensordot(w, h_t, axes=1) / tau, axis=1), p_s).sum(1).mean()
    ce = -sp_log_softmax(z, axis=1)[np.arange(len(y)), y].mean()
    return ce, kd_scale * kl


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tau", [1.0, 4.0])
@pytest.mark.parametrize("weights", [None, [0.2, 0.5, 0.3]])
def test_luminet_matches_scipy(mode, tau, weights):
    z, t, y = _batch(b=8)
    out = build_loss("luminet", kd_scale=50.0, temperature=tau, multi_teacher=mode, teacher_weights=weights)(z, t, y)
    ce, kd = _scipy_luminet(z, t, y, 50.0, tau, 1e-5, mode, weights)
    assert out["loss_ce"].item() == pytest.approx(ce, abs=1e-6)
    assert out["loss_kd"].item() == pytest.approx(kd, abs=1e-6)


def test_luminet_standardises_each_class_and_each_teacher():
    # Perception is invariant to a positive per-class affine map of the logits (up to eps), so a teacher and an
    # affinely rescaled copy of it give the single-teacher loss in every mode: each is standardised on its own.
    z, t, y = _batch(b=8, m=1)
    scale = torch.tensor([0.5, 2.0, 10.0, 1.0, 3.0], dtype=torch.float64)
    shift = torch.tensor([1.0, -4.0, 0.0, 7.0, 2.0], dtype=torch.float64)
    loss = build_loss("luminet", eps=1e-12)
    one = loss(z, t, y)["loss_kd"]
    torch.testing.assert_close(loss(z, t * scale + shift, y)["loss_kd"], one, rtol=1e-9, atol=0)
    pair = torch.cat([t, t * scale + shift])
    for mode in MODES:
        out = build_loss("luminet", eps=1e-12, multi_teacher=mode)(z, pair, y)["loss_kd"]
        torch.testing.assert_close(out, one, rtol=1e-9, atol=0)


def test_luminet_uses_the_batch_of_cached_float16_logits():
    z, t, y = _batch(b=8, m=2, dtype=torch.float32)
    loss = build_loss("luminet")
    cached = t.half()  # a float16 store: the loss casts to the student's dtype and standardises that batch
    ref = loss(z, cached.float(), y)["loss_kd"]
    torch.testing.assert_close(loss(z, cached, y)["loss_kd"], ref)
    # the statistics are those of the batch: the same rows in another batch give another loss
    assert not torch.allclose(loss(z[:4], cached[:, :4], y[:4])["loss_kd"], ref)


def test_luminet_batch_of_one_is_an_error():
    z, t, y = _batch(b=1, m=2)
    with pytest.raises(StillroomError, match="at least 2 samples"):
        build_loss("luminet")(z, t, y)


def test_luminet_weight_default_warmup_and_errors():
    loss = build_loss("luminet")
    assert loss.params.kd_scale == 34.0**2 / 2.0  # the authors' alpha^2 / CE_WEIGHT (REFERENCE 2)
    assert loss.params.temperature == 4.0 and loss.params.eps == 1e-5
    z, t, y = _batch(b=8)
    assert torch.equal(sum(build_loss("luminet", kd_scale=0.0)(z, t, y).values()), F.cross_entropy(z, y))
    warm = build_loss("luminet", warmup_epochs=20)
    assert warm(z, t, y, epoch=4)["loss_kd"].item() == pytest.approx(0.25 * loss(z, t, y)["loss_kd"].item())
    for bad in ({"kd_scale": -1.0}, {"temperature": 0.0}, {"eps": 0.0}, {"multi_teacher": "avg"}, {"alpha": 34}):
        with pytest.raises(StillroomError, match=next(iter(bad)) if "alpha" not in bad else "use kd_scale"):
            build_loss("luminet", **bad)
    with pytest.raises(StillroomError, match="OOD sink"):
        loss(torch.randn(8, 6, dtype=torch.float64), t, y)


def test_luminet_gradient_flows_through_student_statistics():
    z, t, y = _batch(b=8, m=1)
    z.requires_grad_(True)
    build_loss("luminet", kd_scale=1.0)(z, t, y)["loss_kd"].backward()
    # d/dz of a function of batch-standardised columns sums to zero over each column (shift invariance)
    torch.testing.assert_close(z.grad.sum(0), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-12)
    assert z.grad.abs().sum() > 0


# --- registry --------------------------------------------------------------------------------------------------


def test_new_losses_are_registered_for_conformance():
    # test_losses.test_conformance parametrizes over LOSSES.list(): these entries get its checks, CE included
    assert {"dkd", "luminet"} <= set(LOSSES.list())
    for name in ("dkd", "luminet"):
        cls = LOSSES.get(name)
        assert cls.needs_teacher and cls.ce_equivalent_params is not None
