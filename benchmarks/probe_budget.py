"""The probe epochs `stillroom demo` measures before it trains (``pipeline.plan.probe_pace``): the teacher's with
torch's threads as set, a student's on one thread. Run on an idle host, a few times, to set a budget's
``reference`` probe (``pipeline/budgets.py``; ``pipeline.plan.forecast_fixed`` scales the reference run by them).

    python benchmarks/probe_budget.py --budget best --index artifacts/s46/best/data/sprites64_1-151_artwork_r8
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

import stillroom._compat  # noqa: F401  (torchvision import guard, before any model import)
from stillroom.config import config_from_dict
from stillroom.pipeline.budgets import BUDGETS, student_config, student_name, teacher_config
from stillroom.pipeline.plan import probe_pace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="best", choices=sorted(BUDGETS))
    ap.add_argument("--index", type=Path, required=True, help="the demo's training index (data/ of a demo run)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    budget = {"name": args.budget, **BUDGETS[args.budget]}
    probes = (
        teacher_config(args.index, budget["teacher_seeds"][0], 1, budget),
        student_config(f"{student_name(budget)}_scratch", args.index, 1, budget),
    )
    paces = [probe_pace(*(config_from_dict(raw) for raw in probes)) for _ in range(args.repeat)]
    teacher = statistics.median(p.teacher_epoch for p in paces)
    student = statistics.median(p.student_epoch for p in paces)
    print(f"threads {torch.get_num_threads()}; probe epochs over {args.repeat} probes:")
    for p in paces:
        print(f"  teacher {p.teacher_epoch:.2f} s, student {p.student_epoch:.2f} s")
    print(f"median: teacher_probe_s {teacher:.1f}, student_probe_s {student:.1f}")


if __name__ == "__main__":
    main()
