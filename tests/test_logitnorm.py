"""LogitNorm (``distill.losses.logitnorm``): the paper's loss against pytorch-ood's, its base loss on the normalised
logits, and what the normalisation removes (the logits' length)."""

from __future__ import annotations

import pytest
import torch

from stillroom._io import StillroomError
from stillroom.distill.losses import build_loss, resolve_loss_params
from stillroom.distill.losses.logitnorm import logit_norm
from stillroom.distill.losses.luminet import LumiNetLoss


def _batch(b: int = 12, k: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, k, generator=g) * 4,
        torch.randn(1, b, k, generator=g) * 4,
        torch.randint(0, k, (b,), generator=g),
    )


@pytest.mark.parametrize("tau", [0.04, 0.5, 1.0])
def test_ce_base_matches_pytorch_ood(tau):
    pytest.importorskip("pytorch_ood")
    from pytorch_ood.loss import LogitNorm

    z, _, y = _batch(seed=1)
    out = build_loss("logitnorm", base="ce", tau=tau)(z, None, y)
    torch.testing.assert_close(out["loss_ce"], LogitNorm(t=tau)(z, y))


def test_rows_have_norm_one_over_tau_and_length_does_not_matter():
    z, t, y = _batch(seed=2)
    assert torch.allclose(logit_norm(z, 0.04).norm(dim=1), torch.full((len(z),), 25.0), atol=1e-4)
    loss = build_loss("logitnorm", base_params={"kd_scale": 10.0})  # base: luminet, terms: ce
    a, b = loss(z, t, y), loss(z * 7.5, t, y)  # every logit 7.5 times longer: the same loss
    for name in ("loss_ce", "loss_kd"):
        torch.testing.assert_close(a[name], b[name])
    # plain LumiNet does see the length (so the check above could fail)
    assert not torch.allclose(
        LumiNetLoss(kd_scale=10.0)(z, t, y)["loss_ce"], LumiNetLoss(kd_scale=10.0)(z * 7.5, t, y)["loss_ce"]
    )


def test_terms_choose_what_sees_the_normalised_student():
    z, t, y = _batch(seed=3)
    kd = build_loss("kd")
    ref_n, ref_raw = kd(logit_norm(z, 0.1), t, y), kd(z, t, y)
    out = build_loss("logitnorm", base="kd", tau=0.1, terms="all")(z, t, y)  # every term; the teacher stays raw
    for name in ("loss_ce", "loss_kd"):
        torch.testing.assert_close(out[name], ref_n[name])
    out = build_loss("logitnorm", base="kd", tau=0.1)(z, t, y)  # terms: ce, the default
    torch.testing.assert_close(out["loss_ce"], ref_n["loss_ce"])
    torch.testing.assert_close(out["loss_kd"], ref_raw["loss_kd"])
    assert not torch.allclose(ref_n["loss_kd"], ref_raw["loss_kd"])


def test_params_resolve_the_base_and_refuse_wrappers():
    assert resolve_loss_params("logitnorm", {})["base_params"]["kd_scale"] == pytest.approx(578.0)
    assert not build_loss("logitnorm", base="ce").needs_teacher
    assert build_loss("logitnorm").needs_teacher
    for wrapper in ("outlier_exposure", "logitnorm", "target_dampened"):
        with pytest.raises(StillroomError, match=f"base must be a K-class loss.*'{wrapper}'"):
            build_loss("logitnorm", base=wrapper)
    with pytest.raises(StillroomError, match="terms must be"):
        build_loss("logitnorm", terms="kd")
    with pytest.raises(StillroomError, match="tau must be a finite number > 0"):
        build_loss("logitnorm", tau=0.0)


def test_a_base_without_cross_entropy_is_an_error_not_a_no_op():
    class _KLOnly(torch.nn.Module):
        def forward(self, z, t, y, **ctx):
            return {"loss_kd": z.square().mean()}

    loss = build_loss("logitnorm", base="kd")
    loss.base = _KLOnly()
    z, t, y = _batch()
    with pytest.raises(StillroomError, match="base 'kd' has no loss_ce term"):
        loss(z, t, y)
