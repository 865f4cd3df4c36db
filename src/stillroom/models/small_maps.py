"""Convolutions on small feature maps as matrix products, for CPU training.

Why: on the 2-core CPU box, a training step of the demo's models spends much of its time in the backward pass of
convolutions on the last, tiny maps, where oneDNN and the native kernels are poorly blocked. mobilenet_v3_small at
64 px: its seven 5x5 depthwise convolutions on 4x4 and 2x2 maps take 10-41 ms each per batch of 64 (forward +
backward, one thread) for a few million multiply-adds, over half the step; resnet18 at 64 px: its 3x3 convolutions
on the 2x2 maps of layer4 take 75-94 ms each on two threads (``python benchmarks/bench_small_maps.py --layers``,
AMD EPYC, 2026-12-02: the matrix paths take 4-12x and 1.7-2.0x less); its 1x1 convolutions on 4x4, 2x2 and 1x1 maps
(expansions, projections, squeeze-excitation) take 1.15-2.8x longer through oneDNN than as one matrix product.
Three rewrites of the same function:

- depthwise (groups = in = out channels) on a map of P = H x W <= ``MAX_DEPTHWISE_POSITIONS``: per channel c the
  convolution is a linear map from the P input positions to the Q output positions whose (Q, P) matrix holds that
  channel's kernel taps (entry (q, p): the tap linking input p to output q under stride and zero padding, or 0):

      M = w (C, k*k) @ E (k*k, Q*P)      E: one-hot, which tap sits at (q, p); a constant of the geometry
      y[b, c, q] = sum_p x[b, c, p] M[c, q, p]     (one ``bmm`` over the C channels)

- dense (groups = 1, kernel > 1) with an output map of at most ``MAX_DENSE_POSITIONS``: im2col and one matrix
  product with the (out, k * k * in) weight, the textbook lowering, which at 2x2 is a GEMM of 4 rows per image.
- pointwise (groups = 1, kernel 1x1, no padding) on a map of at most ``MAX_POINTWISE_POSITIONS``: ``F.linear`` on the
  (B * H * W, C) rows of the channels-last input (strided: every s-th row and column first).

All three equal ``F.conv2d`` up to float summation order (|diff| ~1e-5 on unit-scale inputs;
``tests/test_small_maps.py`` checks outputs and gradients against it in float64).

Scope: only where it was measured faster and nothing else can see it. ``SmallMapConv2d`` is an ``nn.Conv2d`` with the
same parameters, buffers and state_dict; it takes a matrix path only while training (train mode, autograd on), on a
CPU float32 input, for a convolution with dilation 1 and zero padding, and never under tracing, scripting, ONNX
export or ``torch.compile``. Everything else (evaluation, inference, export, quantization, GPUs, larger maps) runs
``nn.Conv2d`` unchanged. The trainer swaps the class in place on its own model (``use_small_map_convs``); saved
weights and every model built by ``create_model`` elsewhere stay plain torchvision modules.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = [
    "MAX_DEPTHWISE_POSITIONS",
    "MAX_DENSE_POSITIONS",
    "MAX_POINTWISE_POSITIONS",
    "SmallMapConv2d",
    "small_map_depthwise",
    "small_map_dense",
    "small_map_pointwise",
    "use_small_map_convs",
]

#: Largest map (H x W) on which a depthwise convolution takes the matrix path. Measured on the CPU box (one thread,
#: batch 64, ad hoc): faster on 4x4 and 2x2 maps, 2-3x SLOWER on 8x8 (P x Q grows with the square of the map), so 16.
MAX_DEPTHWISE_POSITIONS = 16
#: Largest OUTPUT map of a dense convolution (im2col + GEMM): 2-3x faster on 2x2 maps (512 -> 512 channels, two
#: threads), 1.2-1.4x for resnet18's stride-2 layer from 4x4 to 2x2; 1.3-1.7x slower with 4x4 or larger outputs
#: (stride 1 on 4x4, stride 2 from 8x8 or 16x16; ad hoc, same box), so 4.
MAX_DENSE_POSITIONS = 4
#: Same for a 1x1 convolution as ``F.linear``: mobilenet_v3_small's, one thread, batch 64, forward + backward (ad hoc,
#: same box): 1.15-2.8x faster on 4x4, 2x2 and 1x1 maps (about 20 ms of a ~200 ms step in all), level on 8x8, 1.5x
#: slower on 16x16, so 16.
MAX_POINTWISE_POSITIONS = 16


@lru_cache(maxsize=64)
def _taps(h: int, w: int, k_h: int, k_w: int, stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """E (k_h * k_w, Q * P): E[t, q * P + p] = 1 when tap t links input position p to output position q."""
    (s_h, s_w), (p_h, p_w) = stride, padding
    h_out, w_out = (h + 2 * p_h - k_h) // s_h + 1, (w + 2 * p_w - k_w) // s_w + 1
    oi = torch.arange(h_out).view(h_out, 1, 1, 1)
    oj = torch.arange(w_out).view(1, w_out, 1, 1)
    di = torch.arange(h).view(1, 1, h, 1) - (oi * s_h - p_h)  # kernel row linking input row i to output row oi
    dj = torch.arange(w).view(1, 1, 1, w) - (oj * s_w - p_w)
    valid = (di >= 0) & (di < k_h) & (dj >= 0) & (dj < k_w)
    tap = torch.where(valid, di * k_w + dj, torch.full_like(di, k_h * k_w)).reshape(-1)  # k*k = "no tap"
    onehot = torch.zeros(k_h * k_w + 1, tap.numel())
    onehot[tap, torch.arange(tap.numel())] = 1.0
    return onehot[: k_h * k_w]


class _DepthwiseAsBmm(torch.autograd.Function):
    """y = the depthwise cross-correlation of x with the taps matrix M = w @ E, per channel one (B, P) @ (P, Q)
    product. A Function rather than plain autograd ops because ``bmm`` on transposed (non-contiguous) operands falls
    back to one small copy per batch on the CPU, which ate most of the gain: here every operand is made contiguous
    once, in the forward and in the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, taps: torch.Tensor, shape_out: tuple[int, int]):
        b, c, h, w = x.shape
        q = shape_out[0] * shape_out[1]
        xr = x.reshape(b, c, h * w).transpose(0, 1).contiguous()  # (C, B, P)
        m = (weight.reshape(c, -1) @ taps).view(c, q, h * w)  # (C, Q, P)
        y = torch.bmm(xr, m.transpose(1, 2).contiguous())  # (C, B, Q)
        ctx.save_for_backward(xr, m, taps)
        ctx.shapes = (x.shape, weight.shape)
        return y.transpose(0, 1).reshape(b, c, *shape_out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        xr, m, taps = ctx.saved_tensors
        x_shape, w_shape = ctx.shapes
        b, c = x_shape[:2]
        g = grad_y.reshape(b, c, -1).transpose(0, 1).contiguous()  # (C, B, Q)
        grad_x = torch.bmm(g, m).transpose(0, 1).reshape(x_shape)  # (C, B, P) -> (B, C, H, W)
        grad_m = torch.bmm(g.transpose(1, 2).contiguous(), xr)  # (C, Q, P)
        grad_w = (grad_m.reshape(c, -1) @ taps.t()).view(w_shape)
        return grad_x, grad_w, None, None


def small_map_depthwise(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int], padding: tuple[int, int]
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, groups=C)`` for x (B, C, H, W) and weight (C, 1, k_h, k_w), as
    the batched matrix product of the module docstring. The output has the input's memory format."""
    h, w = x.shape[-2:]
    k_h, k_w = weight.shape[-2:]
    h_out, w_out = (h + 2 * padding[0] - k_h) // stride[0] + 1, (w + 2 * padding[1] - k_w) // stride[1] + 1
    taps = _taps(h, w, k_h, k_w, tuple(stride), tuple(padding)).to(weight.dtype)
    y = _DepthwiseAsBmm.apply(x, weight, taps, (h_out, w_out))
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return _like_input(y, x)


def small_map_dense(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int], padding: tuple[int, int]
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)`` (groups 1, dilation 1) as im2col + one matrix product. The
    output has the input's memory format. The columns are laid out (tap row, tap column, channel), the order of a
    channels-last weight's memory, so the (out, k_h * k_w * in) weight matrix is a view of it, not a copy (with
    ``F.unfold``'s (channel, tap) order, copying resnet18's 512 x 512 x 3 x 3 weights and their gradients cost ~25 ms
    of a ~700 ms step)."""
    b, c, h, w = x.shape
    k_h, k_w = weight.shape[-2:]
    h_out, w_out = (h + 2 * padding[0] - k_h) // stride[0] + 1, (w + 2 * padding[1] - k_w) // stride[1] + 1
    xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    windows = xp.unfold(2, k_h, stride[0]).unfold(3, k_w, stride[1])  # (B, C, H_out, W_out, k_h, k_w), a view
    cols = windows.permute(0, 2, 3, 4, 5, 1).reshape(b * h_out * w_out, k_h * k_w * c)
    y = F.linear(cols, weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1), bias)  # (B * L, out)
    return _like_input(y.view(b, h_out, w_out, -1).permute(0, 3, 1, 2), x)


def small_map_pointwise(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int]
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride)`` for a (out, in, 1, 1) weight without padding, as ``F.linear`` on the
    pixels' channel vectors. The output has the input's memory format."""
    xs = x[..., :: stride[0], :: stride[1]] if tuple(stride) != (1, 1) else x
    b, c, h, w = xs.shape
    y = F.linear(xs.permute(0, 2, 3, 1).reshape(-1, c), weight.reshape(weight.shape[0], c), bias)
    return _like_input(y.view(b, h, w, -1).permute(0, 3, 1, 2), x)


def _like_input(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return y.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _out_positions(x: torch.Tensor, conv: nn.Conv2d) -> int:
    (h, w), (k_h, k_w), (s_h, s_w), (p_h, p_w) = x.shape[-2:], conv.kernel_size, conv.stride, conv.padding
    return ((h + 2 * p_h - k_h) // s_h + 1) * ((w + 2 * p_w - k_w) // s_w + 1)


def _tracing() -> bool:
    # torch.fx's symbolic tracing (QAT's prepare_qat_fx) replaces inputs by Proxy objects: the isinstance test
    # catches it without torch.fx's is_fx_tracing(), which warns on every call in recent torch
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
    )


class SmallMapConv2d(nn.Conv2d):
    """``nn.Conv2d`` that trains on small CPU maps as a matrix product (module docstring); ``nn.Conv2d`` otherwise."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if (
            self.training
            and torch.is_grad_enabled()
            and isinstance(input, torch.Tensor)
            and not _tracing()
            and input.dim() == 4
            and input.device.type == "cpu"
            and input.dtype == torch.float32
        ):
            positions = input.shape[-2] * input.shape[-1]
            args = (input, self.weight, self.bias, self.stride, self.padding)
            if self.groups > 1 and positions <= MAX_DEPTHWISE_POSITIONS:
                return small_map_depthwise(*args)  # type: ignore[arg-type]
            if self.groups == 1 and self.kernel_size == (1, 1):
                if positions <= MAX_POINTWISE_POSITIONS:
                    return small_map_pointwise(input, self.weight, self.bias, self.stride)  # type: ignore[arg-type]
            elif self.groups == 1 and _out_positions(input, self) <= MAX_DENSE_POSITIONS:
                return small_map_dense(*args)  # type: ignore[arg-type]
        return super().forward(input)


def _eligible(conv: nn.Conv2d) -> bool:
    depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
    dense = conv.groups == 1 and (conv.kernel_size != (1, 1) or tuple(conv.padding) == (0, 0))
    return (
        type(conv) is nn.Conv2d
        and (depthwise or dense)
        and tuple(conv.dilation) == (1, 1)
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)  # "same" / "valid" strings keep nn.Conv2d
    )


def use_small_map_convs(model: nn.Module) -> int:
    """Turn every eligible ``nn.Conv2d`` of ``model`` (depthwise, dense, or 1x1 without padding) into
    ``SmallMapConv2d`` in place (same parameters and state_dict; whether a call takes a matrix path is decided per
    call, from its map). Returns how many."""
    n = 0
    for module in model.modules():
        # exactly nn.Conv2d: a subclass may do more in its forward (timm's Conv2dSame pads first), which the
        # swapped class would skip
        if type(module) is nn.Conv2d and _eligible(module):
            module.__class__ = SmallMapConv2d
            n += 1
    return n
