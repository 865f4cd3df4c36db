"""Training-step time with and without the small-map convolutions of ``models/small_maps.py`` (issue 14 item 6).

    python benchmarks/bench_small_maps.py                    # resnet18 (2 threads), mobilenet_v3_small (1 thread)
    python benchmarks/bench_small_maps.py --rounds 5 --steps 20
    python benchmarks/bench_small_maps.py --layers         # per layer: every convolution that takes a matrix path
    python benchmarks/bench_small_maps.py --baseline no-pointwise   # the 1x1 path's own share of the gain

Each cell is the trainer's step on random inputs (1 channel, 64 px, batch 64, 151 classes, channels-last, float32):
forward, cross-entropy, backward, SGD step (``bench_amp_step.step_seconds``). The two variants are timed in
alternating rounds (plain, small maps, plain, ...) on freshly built models with the same weights, so a drift of the
box's speed hits both; each round's figure is the median step after ``--warmup``; the table gives the median over
rounds and the per-round ratio. ``--baseline no-pointwise``: the baseline is the small-map model without its 1x1
path (``MAX_POINTWISE_POSITIONS`` = 0 during its rounds) instead of the plain model.

``--layers``: each convolution of the model whose input map is small enough for a matrix path, alone, on the input
it gets in the model's forward pass (channels-last): forward + backward of ``F.conv2d`` vs the matrix path, best of
``--steps`` after ``--warmup`` calls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

import stillroom.models.small_maps as small_maps_mod
from stillroom.models.factory import create_model
from stillroom.models.small_maps import (
    MAX_DENSE_POSITIONS,
    MAX_DEPTHWISE_POSITIONS,
    MAX_POINTWISE_POSITIONS,
    small_map_dense,
    small_map_depthwise,
    small_map_pointwise,
    use_small_map_convs,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling step timer
from bench_amp_step import step_seconds  # noqa: E402


def round_seconds(model: str, small_maps: bool, args: argparse.Namespace) -> float:
    """Median step seconds, channels-last float32 (``bench_amp_step.step_seconds``), with or without small maps
    (``--baseline no-pointwise``: the baseline keeps them, without the 1x1 path)."""
    if small_maps or args.baseline == "plain":
        return step_seconds(model, False, True, args, use_small_map_convs if small_maps else None)
    with mock.patch.object(small_maps_mod, "MAX_POINTWISE_POSITIONS", 0):
        return step_seconds(model, False, True, args, use_small_map_convs)


def _threads(args: argparse.Namespace):
    """Each model of ``--models`` (model:threads), with torch set to its thread count."""
    for spec in args.models.split(","):
        model, threads = spec.split(":")
        torch.set_num_threads(int(threads))
        yield model, threads


def _best_ms(fn, x: torch.Tensor, w: torch.Tensor, args: argparse.Namespace) -> float:
    times = []
    for i in range(args.warmup + args.steps):
        xx, ww = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
        t0 = time.perf_counter()
        fn(xx, ww).sum().backward()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def layer_table(model: str, args: argparse.Namespace) -> None:
    net = create_model(model, 1, 151, args.size).train().to(memory_format=torch.channels_last)
    seen: dict[str, tuple[torch.nn.Conv2d, torch.Tensor, int]] = {}

    def keep(name: str):
        def hook(module: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            # returns None: the output stays as it is; the dense path's limit is on the output map
            seen[name] = (module, inp[0].detach(), out.shape[-2] * out.shape[-1])

        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    net(torch.randn(args.batch, 1, args.size, args.size).contiguous(memory_format=torch.channels_last))
    for h in hooks:
        h.remove()
    for name, (conv, x, out_positions) in seen.items():
        positions = x.shape[-2] * x.shape[-1]
        depthwise = conv.groups == conv.in_channels == conv.out_channels > 1
        if depthwise and positions <= MAX_DEPTHWISE_POSITIONS:
            fast = small_map_depthwise
        elif conv.groups == 1 and conv.kernel_size != (1, 1) and out_positions <= MAX_DENSE_POSITIONS:
            fast = small_map_dense
        elif conv.groups == 1 and conv.kernel_size == (1, 1) and positions <= MAX_POINTWISE_POSITIONS:
            fast = lambda a, b, bias, stride, padding: small_map_pointwise(a, b, bias, stride)  # noqa: E731
        else:
            continue
        geo, groups = (conv.stride, conv.padding), conv.groups
        plain_ms = _best_ms(lambda a, b, g=geo, n=groups: F.conv2d(a, b, None, *g, 1, n), x, conv.weight, args)
        fast_ms = _best_ms(lambda a, b, f=fast, g=geo: f(a, b, None, *g), x, conv.weight, args)
        kind = "depthwise" if depthwise else "dense" if conv.kernel_size != (1, 1) else "pointwise"
        print(
            f"| {model} | {name} | {kind} {conv.kernel_size[0]}x{conv.kernel_size[1]} | {tuple(x.shape[1:])} | "
            f"{plain_ms:.1f} | {fast_ms:.1f} | {plain_ms / fast_ms:.2f}x |"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18:2,mobilenet_v3_small:1", help="model:threads,...")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--layers", action="store_true", help="time each small-map convolution alone instead")
    ap.add_argument("--baseline", choices=["plain", "no-pointwise"], default="plain", help="what the steps beat")
    args = ap.parse_args(argv)
    if args.layers:
        print(f"torch {torch.__version__}, {args.size} px, batch {args.batch}, fwd + bwd, best of {args.steps}")
        print("| model | layer | kind | input (C, H, W) | F.conv2d ms | matrix path ms | speed-up |")
        print("|---|---|---|---|---:|---:|---:|")
        for model, _ in _threads(args):
            layer_table(model, args)
        return
    print(f"torch {torch.__version__}, {args.size} px, batch {args.batch}, {args.rounds} alternating rounds")
    print(f"| model | threads | {args.baseline} ms / step | small maps ms / step | speed-up (median of rounds) |")
    print("|---|---:|---:|---:|---:|")
    for model, threads in _threads(args):
        plain, fast = [], []
        for _ in range(args.rounds):
            plain.append(round_seconds(model, False, args))
            fast.append(round_seconds(model, True, args))
        ratio = statistics.median(p / f for p, f in zip(plain, fast, strict=True))
        print(
            f"| {model} | {threads} | {statistics.median(plain) * 1e3:.0f} | {statistics.median(fast) * 1e3:.0f} "
            f"| {ratio:.2f}x |"
        )


if __name__ == "__main__":
    main()
