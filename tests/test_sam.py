"""Sharpness-aware minimization (``train.sam``, ``optim.sam_rho``): the ascent step, the gradient SAM steps with,
BatchNorm statistics left alone by the second pass, and a run that trains and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from stillroom._io import StillroomError
from stillroom.config import config_from_dict
from stillroom.pipeline import train
from stillroom.train import sam


def test_ascent_has_radius_rho_and_descend_undoes_it():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(2))]
    params[0].grad, params[1].grad = torch.randn(3, 4), torch.randn(5)  # the third has no gradient
    before = [p.detach().clone() for p in params]
    eps = sam.ascend(params, rho=0.05)
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before, strict=True)])
    assert torch.linalg.vector_norm(moved).item() == pytest.approx(0.05, rel=1e-5)
    assert torch.equal(params[2].detach(), before[2])
    g = torch.cat([params[0].grad.flatten(), params[1].grad.flatten()])  # along the gradient
    assert torch.allclose(moved[: g.numel()], 0.05 * g / torch.linalg.vector_norm(g), atol=1e-6)
    sam.descend(params, eps)
    assert all(torch.allclose(p.detach(), b, atol=1e-6) for p, b in zip(params, before, strict=True))


def test_adaptive_ascent_scales_by_weight_magnitude():
    w = nn.Parameter(torch.tensor([10.0, 0.0]))
    w.grad = torch.tensor([1.0, 1.0])
    e = sam.ascend([w], rho=1.0, adaptive=True, eta=0.0)[0]
    # ASAM: e = rho T^2 g / ||T g|| with T = |w|: all of the step goes to the large weight
    assert torch.allclose(e, torch.tensor([10.0, 0.0]))


def test_sam_step_uses_the_gradient_at_the_perturbed_weights():
    # L(w) = 0.5 w'Aw: g = Aw, e = rho g / ||g||, SAM's SGD step is w - lr A (w + e)
    a = torch.diag(torch.tensor([1.0, 4.0]))
    w = nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    (0.5 * w @ a @ w).backward()
    eps = sam.ascend([w], rho=0.2)
    opt.zero_grad()
    (0.5 * w @ a @ w).backward()
    sam.descend([w], eps)
    opt.step()
    w0 = torch.tensor([1.0, 1.0])
    g = a @ w0
    expected = w0 - 0.1 * a @ (w0 + 0.2 * g / g.norm())
    assert torch.allclose(w.detach(), expected, atol=1e-6)


def test_frozen_bn_stats_normalizes_by_the_batch_and_keeps_running_statistics():
    bn = nn.BatchNorm2d(3).train()
    bn(torch.randn(8, 3, 4, 4) + 2.0)
    mean, var, tracked = bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()
    x = torch.randn(8, 3, 4, 4) * 3.0 - 1.0
    with sam.frozen_bn_stats(bn):
        y = bn(x)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert torch.equal(bn.num_batches_tracked, tracked) and bn.momentum == 0.1
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)  # batch statistics, as in training
    bn(x)
    assert not torch.equal(bn.running_mean, mean)  # outside the context the statistics move again


def test_config_checks_rho():
    with pytest.raises(StillroomError, match="sam_rho"):
        config_from_dict({"data": {"index": "x"}, "optim": {"sam_rho": -0.1}})


def test_run_with_sam_learns_differs_from_plain_and_resumes_exactly(shapes_index, tmp_path, tiny_config, cut_after):
    raw = tiny_config(shapes_index.root, "sam", epochs=3, optim={"name": "sgd", "lr": 0.05, "sam_rho": 0.05})
    full = train(config_from_dict(raw), tmp_path / "full")
    plain = train(config_from_dict({**raw, "optim": {"name": "sgd", "lr": 0.05}}), tmp_path / "plain")
    metrics = json.loads((full / "metrics.json").read_text())
    assert metrics["splits"]["test"]["final"]["top1"] > 0.5  # 4 classes
    wa, wp = load_file(full / "final.safetensors"), load_file(plain / "final.safetensors")
    assert any(not torch.equal(wa[k], wp[k]) for k in wa)
    cut_after(raw, tmp_path / "cut", 2)
    resumed = train(config_from_dict(raw), tmp_path / "cut", resume=True)
    wb = load_file(resumed / "final.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
