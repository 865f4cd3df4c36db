"""Training-step time with and without the small-map convolutions of ``models/small_maps.py`` (issue 14 item 6).

    python benchmarks/bench_small_maps.py                    # resnet18 (2 threads), mobilenet_v3_small (1 thread)
    python benchmarks/bench_small_maps.py --rounds 5 --steps 20

Each cell is the trainer's step on random inputs (1 channel, 64 px, batch 64, 151 classes, channels-last, float32):
forward, cross-entropy, backward, SGD step. The two variants are timed in alternating rounds (plain, small maps,
plain, ...) on freshly built models with the same weights, so a drift of the box's speed hits both; each round's
figure is the median step after ``--warmup``; the table gives the median over rounds and the per-round ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from stillroom.models.factory import create_model
from stillroom.models.small_maps import use_small_map_convs


def round_seconds(model: str, small_maps: bool, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    net = create_model(model, 1, 151, args.size).train().to(memory_format=torch.channels_last)
    if small_maps:
        use_small_map_convs(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 1, args.size, args.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 151, (args.batch,))
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18:2,mobilenet_v3_small:1", help="model:threads,...")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=4)
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {args.size} px, batch {args.batch}, {args.rounds} alternating rounds")
    print("| model | threads | plain ms / step | small maps ms / step | speed-up (median of rounds) |")
    print("|---|---:|---:|---:|---:|")
    for spec in args.models.split(","):
        model, threads = spec.split(":")
        torch.set_num_threads(int(threads))
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
