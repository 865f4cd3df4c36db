"""Batch inference on the CPU, NCHW vs channels-last (``models.inference.batch_inference_model``, issue 14 item 6).

    python benchmarks/bench_inference_layout.py
    python benchmarks/bench_inference_layout.py --models resnet18,mobilenet_v3_small --batch 256 --rounds 3

Each cell: the median over ``--calls`` forward passes (after 2 of warm-up) of an untrained model (1 channel, 64 px,
151 classes) in eval mode under ``torch.inference_mode``, on random inputs, at torch's current thread count. The
layouts alternate for ``--rounds`` rounds on the same weights, so a drift of the box's speed hits both; the table
gives the median over rounds and the per-round ratio. This is the computation of evaluation, soft-label export and
selection (``predict_logits``, ``export_softlabels``).
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np
import torch

from stillroom._timing import time_calls
from stillroom.models.factory import create_model
from stillroom.models.inference import batch_inference_model


def call_seconds(net: torch.nn.Module, x: torch.Tensor, calls: int) -> float:
    """Median seconds of ``calls`` forward passes after 2 of warm-up (the package's timing loop, ``_timing``)."""
    with torch.inference_mode():
        return float(np.median(time_calls(lambda: net(x), 2, calls, math.inf, min_runs=calls)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v3_small")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=6)
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.size} px, batch {args.batch}")
    print("| model | NCHW ms / batch | channels-last ms / batch | speed-up (median of rounds) |")
    print("|---|---:|---:|---:|")
    for name in args.models.split(","):
        torch.manual_seed(0)
        plain = create_model(name, 1, 151, args.size).eval()
        fast, channels_last = batch_inference_model(plain)
        x = torch.randn(args.batch, 1, args.size, args.size)
        xl = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        a, b = [], []
        for _ in range(args.rounds):
            a.append(call_seconds(plain, x, args.calls))
            b.append(call_seconds(fast.eval(), xl, args.calls))
        ratio = statistics.median(p / f for p, f in zip(a, b, strict=True))
        print(f"| {name} | {statistics.median(a) * 1e3:.0f} | {statistics.median(b) * 1e3:.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
