"""Small-map convolutions as matrix products (models.small_maps) against F.conv2d: outputs, gradients, where they
apply and where they must not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stillroom.models.factory import create_model
from stillroom.models.small_maps import (
    MAX_DENSE_POSITIONS,
    MAX_DEPTHWISE_POSITIONS,
    MAX_POINTWISE_POSITIONS,
    SmallMapConv2d,
    small_map_dense,
    small_map_depthwise,
    small_map_pointwise,
    use_small_map_convs,
)

# (channels, map side, kernel, stride, padding): mobilenet_v3_small's shapes at 64 px, odd cases beside them
CASES = [(240, 4, 5, 1, 2), (576, 2, 5, 1, 2), (288, 4, 5, 2, 2), (16, 3, 3, 2, 1), (8, 4, 3, 1, 0), (6, 2, 5, 2, 2)]


def _assert_matches(fast, ref, tensors, fmt) -> None:
    """``fast(*tensors)`` and ``ref(*tensors)`` (float64; None = no bias) agree in output and every gradient, and
    ``fast`` keeps the input's memory format, as F.conv2d does."""
    outs = []
    for fn in (ref, fast):
        leaves = [None if t is None else t.clone().requires_grad_(True) for t in tensors]
        y = fn(*leaves)
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
        outs.append((y.detach(), *(t.grad for t in leaves if t is not None)))
    if y.shape[-1] > 1:
        assert y.is_contiguous(memory_format=fmt)
    for ref_t, got in zip(*outs, strict=True):
        assert got.shape == ref_t.shape
        torch.testing.assert_close(got, ref_t, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("c", "side", "k", "stride", "pad"), CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_conv2d_outputs_and_gradients(c, side, k, stride, pad, channels_last):
    g = torch.Generator().manual_seed(c + side)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(5, c, side, side, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    w = torch.randn(c, 1, k, k, generator=g, dtype=torch.float64)
    bias = torch.randn(c, generator=g, dtype=torch.float64)
    geo = ((stride, stride), (pad, pad))
    _assert_matches(
        lambda a, b, d: small_map_depthwise(a, b, d, *geo),
        lambda a, b, d: F.conv2d(a, b, d, *geo, 1, c),
        (x, w, bias),
        fmt,
    )


DENSE_CASES = [(16, 12, 2, 3, 1, 1), (8, 4, 2, 3, 2, 1), (5, 6, 1, 3, 1, 1), (4, 3, 2, 2, 1, 0)]


@pytest.mark.parametrize(("c_in", "c_out", "side", "k", "stride", "pad"), DENSE_CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_dense_matches_conv2d(c_in, c_out, side, k, stride, pad, channels_last):
    g = torch.Generator().manual_seed(c_in * c_out)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, c_in, side, side, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    w = torch.randn(c_out, c_in, k, k, generator=g, dtype=torch.float64)
    bias = torch.randn(c_out, generator=g, dtype=torch.float64)
    geo = ((stride, stride), (pad, pad))
    _assert_matches(
        lambda a, b, d: small_map_dense(a, b, d, *geo), lambda a, b, d: F.conv2d(a, b, d, *geo), (x, w, bias), fmt
    )


# (in, out, map side, stride, bias): mobilenet_v3_small's expansions / squeeze-excitation, resnet18's downsampling
POINTWISE_CASES = [(40, 240, 4, 1, False), (576, 144, 1, 1, True), (8, 6, 4, 2, False), (5, 3, 3, 2, True)]


@pytest.mark.parametrize(("c_in", "c_out", "side", "stride", "with_bias"), POINTWISE_CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_pointwise_matches_conv2d(c_in, c_out, side, stride, with_bias, channels_last):
    g = torch.Generator().manual_seed(c_in + c_out)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, c_in, side, side, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    w = torch.randn(c_out, c_in, 1, 1, generator=g, dtype=torch.float64)
    bias = torch.randn(c_out, generator=g, dtype=torch.float64) if with_bias else None
    st = (stride, stride)
    _assert_matches(
        lambda a, b, d=None: small_map_pointwise(a, b, d, st),
        lambda a, b, d=None: F.conv2d(a, b, d, st),
        (x, w, bias),
        fmt,
    )


def test_pointwise_path_is_taken_on_maps_of_at_most_sixteen_positions(monkeypatch):
    import stillroom.models.small_maps as mod

    calls: list[int] = []
    real = mod.small_map_pointwise
    monkeypatch.setattr(mod, "small_map_pointwise", lambda *a: calls.append(1) or real(*a))
    conv = nn.Conv2d(6, 4, 1).train()
    padded = nn.Conv2d(6, 4, 1, padding=1)
    assert use_small_map_convs(conv) == 1 and use_small_map_convs(padded) == 0
    conv(torch.randn(2, 6, 4, 4)).sum().backward()
    conv(torch.randn(2, 6, 8, 8)).sum().backward()
    assert MAX_POINTWISE_POSITIONS == 16 and len(calls) == 1


def test_dense_path_is_taken_on_maps_of_at_most_four_positions(monkeypatch):
    import stillroom.models.small_maps as mod

    calls: list[int] = []
    real = mod.small_map_dense
    monkeypatch.setattr(mod, "small_map_dense", lambda *a: calls.append(1) or real(*a))
    conv = nn.Conv2d(6, 6, 3, padding=1).train()
    assert use_small_map_convs(conv) == 1
    conv(torch.randn(2, 6, 2, 2)).sum().backward()
    conv(torch.randn(2, 6, 4, 4)).sum().backward()
    assert MAX_DENSE_POSITIONS == 4 and len(calls) == 1
    strided = nn.Conv2d(6, 6, 3, stride=2, padding=1).train()  # the limit is on the output map: 4x4 -> 2x2 takes it
    use_small_map_convs(strided)
    strided(torch.randn(2, 6, 4, 4)).sum().backward()
    strided(torch.randn(2, 6, 8, 8)).sum().backward()  # -> 4x4: F.conv2d
    assert len(calls) == 2


def test_gradcheck():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: small_map_depthwise(a, b, None, (2, 2), (1, 1)), (x, w))


def _counting(conv: nn.Module, monkeypatch) -> list[int]:
    calls: list[int] = []
    import stillroom.models.small_maps as mod

    real = mod.small_map_depthwise
    monkeypatch.setattr(mod, "small_map_depthwise", lambda *a: calls.append(1) or real(*a))
    return calls


def test_module_takes_the_fast_path_only_when_training_small_maps(monkeypatch):
    conv = nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False)
    assert use_small_map_convs(conv) == 1 and isinstance(conv, SmallMapConv2d)
    calls = _counting(conv, monkeypatch)
    small = torch.randn(2, 8, 4, 4)
    conv.train()(small).sum().backward()
    assert len(calls) == 1
    conv(torch.randn(2, 8, 8, 8))  # 64 positions > MAX_POSITIONS: nn.Conv2d
    assert MAX_DEPTHWISE_POSITIONS < 64 and len(calls) == 1
    with torch.no_grad():
        conv(small)
    conv.eval()(small)
    assert len(calls) == 1  # no autograd, eval mode: nn.Conv2d, bit for bit the deployed computation
    ref = F.conv2d(small, conv.weight, None, 1, 2, 1, 8)
    assert torch.equal(conv(small), ref)


def test_every_convolution_of_the_demo_models_is_swapped_and_weights_keep_their_names():
    net = create_model("mobilenet_v3_small", 1, 7, 64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    n = use_small_map_convs(net)
    assert n == sum(1 for m in net.modules() if isinstance(m, nn.Conv2d)) > 0
    after = net.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    resnet = create_model("resnet18", 1, 7, 64)
    assert use_small_map_convs(resnet) == sum(1 for m in resnet.modules() if isinstance(m, nn.Conv2d))


def test_training_step_matches_the_plain_model():
    torch.manual_seed(0)
    plain = create_model("mobilenet_v3_small", 1, 7, 64).train()
    fast = create_model("mobilenet_v3_small", 1, 7, 64).train()
    fast.load_state_dict(plain.state_dict())
    use_small_map_convs(fast)
    x, y = torch.randn(4, 1, 64, 64), torch.tensor([0, 1, 2, 3])
    for net in (plain, fast):
        torch.manual_seed(1)  # the same dropout mask in both
        F.cross_entropy(net(x), y).backward()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_fx_tracing_sees_a_plain_convolution():
    """QAT (deploy.qat) traces models with torch.fx: a traced swapped module must be the ordinary convolution."""
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4).train()
    use_small_map_convs(conv)
    graph = torch.fx.symbolic_trace(conv).graph
    assert [n.target for n in graph.nodes if n.op == "call_function"] == [F.conv2d]
