"""The demo planner's prediction of every tier for given probe epochs: what `make demo` would choose on a host.

    python benchmarks/plan_predict.py --teacher 37.5 --student 10.0 --elapsed 12      # probe epochs, seconds
    python benchmarks/plan_predict.py --plan artifacts/demo/plan.json                  # a demo's own probes

Prints, per tier of ``pipeline.plan.TIERS``, each stage's predicted minutes (``plan.stage_seconds`` with the
current ``plan.OVERHEAD``; the demo's 4 views and student validation every 4th epoch), the total with ``elapsed``,
whether it fits ``SHARE`` of ``--minutes`` and how far its students may grow (``plan.grow_ceiling``), then the tier
``plan.choose_tier`` picks. No training: the stage model alone, to check a figure quoted from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stillroom._io import read_json
from stillroom.pipeline.budgets import DEMO_BUDGET
from stillroom.pipeline.plan import SHARE, TIERS, Pace, choose_tier, grow_ceiling, stage_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", type=float, help="teacher probe epoch, seconds")
    ap.add_argument("--student", type=float, help="student probe epoch, seconds")
    ap.add_argument("--elapsed", type=float, default=0.0, help="seconds spent before the plan (data, probes)")
    ap.add_argument("--plan", type=Path, help="a demo's plan.json: its probe epochs and elapsed seconds")
    ap.add_argument("--minutes", type=float, default=15.0)
    args = ap.parse_args()
    if args.plan is not None:
        saved = read_json(args.plan)
        pace, elapsed = Pace(**saved["pace"]), float(saved["elapsed"])
    elif args.teacher and args.student:
        pace, elapsed = Pace(args.teacher, args.student), args.elapsed
    else:
        ap.error("give --plan, or --teacher and --student")
    views, every = DEMO_BUDGET["replay_views"], DEMO_BUDGET["student_eval_every"]
    allowed = args.minutes * 60 * SHARE
    head = f"probe epochs: teacher {pace.teacher_epoch:.1f} s, student {pace.student_epoch:.1f} s"
    print(f"{head}; {allowed / 60:.1f} min allowed ({SHARE:.0%} of {args.minutes:g}), {elapsed:.0f} s already spent")
    print("| tier | teacher | export | students | report | total min | fits | students may grow to |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for tier in TIERS:
        st = stage_seconds(pace, *tier, views, every)
        total = sum(st.values()) + elapsed
        cells = " | ".join(f"{st[k] / 60:.1f}" for k in ("teachers", "export", "students", "report"))
        fits = "yes" if total <= allowed else "no"
        print(f"| {tier[0]} + {tier[1]} | {cells} | {total / 60:.1f} | {fits} | {grow_ceiling(tier, TIERS)} |")
    chosen, _ = choose_tier(pace, allowed - elapsed, views, every)
    print(f"chosen: {chosen[0]} + {chosen[1]}")


if __name__ == "__main__":
    main()
