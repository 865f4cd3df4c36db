"""Latency benchmark (issue 6) as a script: the same measurement as ``stillroom bench-latency``.

    python benchmarks/bench_latency.py --arch mobilenet_v3_large --img-size 128 --num-classes 151
    python benchmarks/bench_latency.py runs/student        # an exported run (stillroom export RUN --onnx --int8)

Prints the table and writes or replaces this configuration's entry in BENCHMARKS.md (``--md``), with the exact
command line, keeping every other section of the file. See ``stillroom.deploy.latency`` for the method.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from stillroom.deploy.latency import add_timing_args, bench_arch, bench_run, update_benchmarks_md


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", type=Path, help="exported run directory (or --arch)")
    p.add_argument("--arch", help="untrained model of this registered architecture")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--batch", type=int, action="append", help="batch size (repeatable; default 1 and 64)")
    add_timing_args(p)
    p.add_argument("--json", type=Path, help="also write the raw result here")
    args = p.parse_args(argv)
    if (args.run is None) == (args.arch is None):
        p.error("give either a RUN directory or --arch NAME")
    kw = dict(batch_sizes=args.batch or [1, 64], threads=args.threads, warmup=args.warmup, repeats=args.repeats,
              max_seconds=args.max_seconds, warmup_seconds=args.warmup_seconds,
              settle_seconds=args.settle_seconds)  # fmt: skip
    if args.run is not None:
        res = bench_run(args.run, **kw)
    else:
        res = bench_arch(args.arch, img_size=args.img_size, in_chans=args.in_chans, num_classes=args.num_classes, **kw)
    for r in res["results"]:
        print(
            f"{r['backend']:9s} batch {r['batch']:3d}: median {r['median_ms']:8.3f} ms  p95 {r['p95_ms']:8.3f} ms  "
            f"{r['throughput_img_s']:8.0f} img/s  ({r['runs']} runs)"
        )
    print(f"load average before {res['load_before']}, after {res['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if args.md:
        command = " ".join(["python benchmarks/bench_latency.py", *(shlex.quote(a) for a in argv)])
        print(f"updated {update_benchmarks_md(args.md, res, command)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
