"""Training-step time of a model in float32 vs bfloat16 autocast, with and without channels-last (issue 14 item 6).

    python benchmarks/bench_amp_step.py                                  # resnet18 and mobilenet_v3_small, 64 px
    python benchmarks/bench_amp_step.py --threads 1 --models resnet18    # one torch thread

Each cell is the trainer's step on random inputs (1 channel, ``--size`` px, batch ``--batch``, 151 classes):
forward (under ``torch.autocast(..., bfloat16)`` for the bf16 rows, as ``amp: bf16`` does), cross-entropy in
float32, backward, SGD step; median seconds over ``--steps`` steps after ``--warmup``. Augmentation and data
loading are left out (``bench_kd_step.py`` times those). Whether the CPU has native bfloat16 (AMX or AVX512-BF16,
where ``amp: bf16`` turns autocast on) is printed: elsewhere bfloat16 is emulated and the bf16 rows say nothing about
what ``amp: bf16`` does (it falls back to float32).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from stillroom.models.factory import create_model
from stillroom.train.trainer import _use_bf16


def step_seconds(
    model: str, bf16: bool, channels_last: bool, args: argparse.Namespace, prepare: Callable | None = None
) -> float:
    """Median seconds of a training step (module docstring); ``prepare(net)`` runs on the fresh model first (e.g.
    ``bench_small_maps.py``'s small-map convolutions; the trainer applies them to every run)."""
    torch.manual_seed(0)
    net = create_model(model, 1, 151, args.size).train()
    if prepare is not None:
        prepare(net)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(args.batch, 1, args.size, args.size), torch.randint(0, 151, (args.batch,))
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(xin)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v3_small")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    native = _use_bf16("bf16", torch.device("cpu"))
    print(f"torch {torch.__version__}, {args.threads} thread(s), native bfloat16 on this CPU: {native}")
    print("| model | format | channels-last | ms / step | vs float32 NCHW |")
    print("|---|---|---|---:|---:|")
    for model in args.models.split(","):
        base = None
        for bf16 in (False, True):
            for cl in (False, True):
                sec = step_seconds(model, bf16, cl, args)
                base = base or sec
                fmt, layout = ("bfloat16 autocast" if bf16 else "float32"), ("yes" if cl else "no")
                print(f"| {model} | {fmt} | {layout} | {1000 * sec:.0f} | {base / sec:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
