"""Markdown tables of a seed-000-scale run directory (benchmarks/gpu_seed000.sh): per run the closed-set test
top-1 / macro-F1 over the K ID classes, top-5, ECE before / after temperature scaling, every OOD score's AUROC, the
OOD rejection rate (argmax = sink), the ladder's coverage / selective accuracy / OOD acceptance, epochs and wall
time; then mean ± sd over runs that share a prefix (seeds of one configuration).

    python benchmarks/seed000_table.py artifacts/seed000_649/runs [--out TABLE.md]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

SCORES = ("msp", "maxlogit", "energy", "odin", "sink")


def run_row(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    test = m["splits"]["test"]["best"]
    cal = test.get("calibration") or {}
    row = {"run": run.name, "epochs": m.get("epochs")}
    ood = (m.get("ood") or {}).get("summary", {}).get("best")
    if ood:  # closed-set numbers over the ID rows and K classes (REFERENCE 4), not over K+1 with the sink rows
        row.update(top1=ood["closed_set_top1"], macro_f1=ood["closed_set_macro_f1"])
        row.update({f"auroc_{k}": ood["auroc"].get(k) for k in SCORES})
        row["ood_rejection"] = ood.get("ood_rejection_rate")
    else:
        row.update(top1=test["top1"], macro_f1=test["macro_f1"])
    row["top5"] = test["top5"]
    row["ece"] = (cal.get("before") or {}).get("ece")
    row["ece_t"] = (cal.get("after") or {}).get("ece")
    lad = ((m.get("ladder") or {}).get("splits") or {}).get("test")
    if lad:
        row.update(
            coverage=lad["id"]["coverage"],
            sel_acc=lad["id"]["selective_accuracy"],
            ood_accept=lad.get("ood", {}).get("acceptance"),
        )
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    row["wall_min"] = sum(r["epoch_seconds"] for r in log) / 60
    return row


COLUMNS = [
    ("run", "run", None),
    ("epochs", "ep", None),
    ("top1", "top-1", "{:.2%}"),
    ("top5", "top-5*", "{:.2%}"),
    ("macro_f1", "macro-F1", "{:.4f}"),
    ("ece", "ECE", "{:.4f}"),
    ("ece_t", "ECE (T)", "{:.4f}"),
    *((f"auroc_{k}", f"AUROC {k}", "{:.4f}") for k in SCORES),
    ("ood_rejection", "OOD rejection", "{:.2%}"),
    ("coverage", "ladder coverage", "{:.2%}"),
    ("sel_acc", "selective acc.", "{:.2%}"),
    ("ood_accept", "OOD acceptance", "{:.2%}"),
    ("wall_min", "wall (min)", "{:.1f}"),
]


def _cell(value, fmt: str | None) -> str:
    if value is None:
        return "-"
    return fmt.format(value) if fmt else str(value)


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r.get(k), f) for k, _, f in COLUMNS) + " |" for r in rows]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(re.sub(r"_s\d+$", "", r["run"]), []).append(r)
    for name, members in groups.items():
        if len(members) < 2:
            continue
        cells = [f"{name} (mean ± sd, {len(members)} seeds)", str(members[0]["epochs"])]
        for key, _, fmt in COLUMNS[2:]:
            vals = [r[key] for r in members if r.get(key) is not None]
            if len(vals) < 2 or fmt is None:
                cells.append("-")
                continue
            scale = 100 if "%" in fmt else 1
            digits = 2 if "%" in fmt else (1 if key == "wall_min" else 4)
            cells.append(
                f"{statistics.mean(vals) * scale:.{digits}f} ± {statistics.stdev(vals) * scale:.{digits}f}"
                + ("%" if "%" in fmt else "")
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    runs = sorted(p for p in args.runs_dir.iterdir() if (p / "metrics.json").is_file() and (p / "log.jsonl").is_file())
    text = markdown([run_row(p) for p in runs])
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
