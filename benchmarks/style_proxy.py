"""Style proxies at the served ladder (issue 16 item 5): one markdown table from the ``style_proxy.json`` files that
``stillroom style-proxy`` wrote into the given runs (``stillroom.deploy.style_proxy``), one line per run, ladder
signal, input and split: ID accepted (clean, min and mean over the 11 rewrites, and the worst rewrite), top-1 among
the accepted (mean), OOD rejected (mean), the served-order AUROC (clean, min, mean) and FPR@95 (mean), the signal's
own AUROC (mean), and the verdict on each bar at the worst rewrite (90% accepted, AUROC 0.95).

The runs are the exported copies ``benchmarks/ladder_signal.py`` makes (``model_features.onnx`` is needed for knn):

    for s in 0 1 2; do OMP_NUM_THREADS=1 nice python benchmarks/ladder_signal.py \\
        artifacts/openset151/runs/os_student_kd_s$s artifacts/openset151/ood; done
    OMP_NUM_THREADS=1 nice python benchmarks/ladder_signal.py artifacts/openset151/runs/os_student_td_cap_s0 \\
        artifacts/openset151/ood --no-check-eval
    W=/tmp/ladder_signal_runs; for input in dataset served; do for sig in maxlogit auto; do
      for s in 0 1 2; do OMP_NUM_THREADS=1 nice stillroom style-proxy $W/os_student_kd_s$s \\
          --ood-index artifacts/openset151/ood --ladder-signal $sig --split val --split test --input $input; done
      OMP_NUM_THREADS=1 nice stillroom style-proxy $W/os_student_td_cap_s0 --ladder-signal $sig \\
          --split val --split test --input $input; done; done
    python benchmarks/style_proxy.py $W/os_student_kd_s{0,1,2} $W/os_student_td_cap_s0
    python benchmarks/style_proxy.py $W/os_student_kd_s{0,1,2} $W/os_student_td_cap_s0 --split test \\
        --per-rewrite id_accepted --input dataset      # or id_top1_accepted, auroc_served, ood_rejected, ...
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from stillroom.deploy.style_proxy import STYLE_PROXY_FILE


def _p(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _a(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def table_rows(run: Path, splits: list[str]) -> list[str]:
    data = json.loads((run / STYLE_PROXY_FILE).read_text())
    out = []
    shown = [k for k in data if data[k]["split"] in splits]  # before sorting: the sort key indexes ``splits``
    for key in sorted(shown, key=lambda k: (k.split("/")[2], k.split("/")[1], splits.index(k.split("/")[0]))):
        rep = data[key]
        clean, s, v = rep["rows"]["clean"], rep["summary"], rep["summary"]["verdict"]
        rw = [r for n, r in rep["rows"].items() if n != "clean"]
        fpr = [r["fpr95_served"] for r in rw if "fpr95_served" in r]
        # accepted and correct = coverage x selective accuracy (nan when none accepted: counts as 0 correct)
        both = [r["id_accepted"] * (r["id_top1_accepted"] or 0.0) for r in rw]
        met = {b: ("yes" if v[b]["worst_rewrite_met"] else "no") if b in v else "-" for b in ("id_accept", "ood_auroc")}
        out.append(
            "| "
            + " | ".join(
                [
                    run.name,
                    rep["ladder"]["signal"],
                    str(rep["ladder"].get("style_views", 0)),
                    rep["input"],
                    rep["split"],
                    _p(clean["id_accepted"]),
                    _p(s["id_accepted"]["min"]),
                    s["id_accepted"]["min_at"],
                    _p(s["id_accepted"]["mean"]),
                    _p(s["id_accepted"].get("held_out_mean")),
                    _p(s["id_top1_accepted"]["mean"]),
                    _p(sum(both) / len(both)),
                    _p(clean.get("ood_rejected")),
                    _p(s.get("ood_rejected", {}).get("mean")),
                    _a(clean.get("auroc_served")),
                    _a(s.get("auroc_served", {}).get("min")),
                    _a(s.get("auroc_served", {}).get("mean")),
                    _a(sum(fpr) / len(fpr) if fpr else None),
                    _a(s.get("auroc_signal", {}).get("mean")),
                    met["id_accept"],
                    met["ood_auroc"],
                ]
            )  # fmt: skip
            + " |"
        )
    return out


def per_rewrite(runs: list[Path], metric: str, split: str, input_mode: str) -> list[str]:
    """One row per rewrite (clean first), one column per run and ladder signal: ``metric`` of each report row."""
    cols = []
    for run in runs:
        data = json.loads((run / STYLE_PROXY_FILE).read_text())
        for key in sorted(data):
            rep = data[key]
            if rep["split"] == split and rep["input"] == input_mode:
                cols.append((f"{run.name} {rep['ladder']['signal']}", rep["rows"]))
    if not cols:
        return []
    fmt = _a if metric.startswith(("auroc", "fpr")) else _p
    out = ["| rewrite | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    for name in cols[0][1]:
        out.append(f"| {name} | " + " | ".join(fmt(rows[name].get(metric)) for _, rows in cols) + " |")
    return out


HEADER = (
    "| run | signal | style views | input | split | ID acc clean | ID acc min | worst rewrite | ID acc mean "
    "| ID acc held-out mean | top-1 of acc mean | acc & correct mean | OOD rej clean | OOD rej mean | AUROC clean "
    "| AUROC min | AUROC mean | FPR95 mean | signal AUROC mean "
    "| 90% acc met | AUROC 0.95 met |"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--split", action="append", default=None, help="splits to show (default val and test)")
    ap.add_argument("--per-rewrite", default=None, help="instead: one table of this row metric per rewrite")
    ap.add_argument("--input", default="dataset", help="--per-rewrite: dataset or served")
    args = ap.parse_args(argv)
    splits = args.split or ["val", "test"]
    if args.per_rewrite:
        for split in splits:
            print(f"\n{args.per_rewrite}, {split}, input {args.input}:\n")
            print("\n".join(per_rewrite(args.runs, args.per_rewrite, split, args.input)))
        return 0
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for run in args.runs:
        for line in table_rows(run, splits):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
