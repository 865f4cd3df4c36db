"""Per-seed open-set results of `benchmarks/openset_151.sh` as one CSV that `stillroom compare` reads.

One row per (variant, seed) from each run's ``ood_metrics.json`` (test split, best weights): closed-set top-1 on the ID
rows over the K ID classes (``top1``; K+1 students also ``top1_with_sink``, a sink prediction on an ID row counting
as an error), AUROC and FPR@95TPR of every score (``auroc_<score>``, ``fpr_<score>``; higher score = more ID), and for
K+1 students the OOD rejection rate (argmax = sink) and the ID false-rejection rate; and the strictness ladder's test
coverage, selective accuracy and OOD acceptance from ``metrics.json`` (``evaluate --ladder``). Variants: ``kd``
(the K-class KD student, post-hoc scores only), each ``td_g*`` of the gamma sweep, ``td_cap`` (OOD share capped).

    python benchmarks/openset_summary.py artifacts/openset151   # -> summary.csv (per seed), summary.md (mean ± sd)
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path


def _runs(out: Path) -> list[tuple[str, int, Path]]:
    runs = [("kd", int(p.name.rsplit("_s", 1)[1]), p) for p in sorted(out.glob("runs/os_student_kd_s*"))]
    runs += [(p.parent.name, int(p.name[4:]), p) for p in sorted(out.glob("sweep_gamma/td_g*/seed*"))]
    runs += [("td_cap", int(p.name.rsplit("_s", 1)[1]), p) for p in sorted(out.glob("runs/os_student_td_cap_s*"))]
    return [r for r in runs if (r[2] / "ood_metrics.json").is_file()]


def row(variant: str, seed: int, run: Path) -> dict[str, object]:
    rep = json.loads((run / "ood_metrics.json").read_text())["splits"]["test"]["best"]
    out: dict[str, object] = {"variant": variant, "seed": seed, "run_dir": str(run)}
    out["test_top1"] = rep["closed_set"]["top1"]
    out["test_top1_with_sink"] = rep["closed_set"].get("top1_with_sink", "")
    for name, m in sorted(rep["scores"].items()):
        out[f"test_auroc_{re.sub(r'[^a-z0-9]+', '_', name)}"] = m["auroc"]
        out[f"test_fpr_{re.sub(r'[^a-z0-9]+', '_', name)}"] = m["fpr_at_95_tpr"]
    out["test_ood_rejection"] = rep.get("ood_rejection_rate", "")
    out["test_id_false_rejection"] = rep.get("id_false_rejection_rate", "")
    # the strictness ladder fitted on val for 95% ID acceptance, as `stillroom evaluate --ladder` reported it
    ladder = (json.loads((run / "metrics.json").read_text()).get("ladder") or {}).get("splits", {}).get("test")
    if ladder:
        out["test_ladder_coverage"] = ladder["id"]["coverage"]
        out["test_ladder_selective_accuracy"] = ladder["id"]["selective_accuracy"]
        out["test_ladder_ood_acceptance"] = (ladder.get("ood") or {}).get("acceptance", "")
    return out


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "artifacts/openset151")
    rows = [row(*r) for r in _runs(out)]
    if not rows:
        print(f"{out}: no evaluated runs (ood_metrics.json) yet", file=sys.stderr)
        return 1
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out / 'summary.csv'}: {len(rows)} runs")
    table = markdown_table(rows)
    (out / "summary.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


COLUMNS = (  # (column, header, as percent)
    ("test_top1", "ID top-1 (K classes)", True),
    ("test_top1_with_sink", "ID top-1 (K+1, sink = error)", True),
    ("test_id_false_rejection", "ID rows sent to sink", True),
    ("test_ood_rejection", "OOD rows sent to sink", True),
    ("test_auroc_sink", "AUROC sink", False),
    ("test_fpr_sink", "FPR@95 sink", False),
    ("test_auroc_energy", "AUROC energy", False),
    ("test_auroc_knn", "AUROC KNN", False),
    ("test_ladder_coverage", "ladder: ID accepted", True),
    ("test_ladder_selective_accuracy", "ladder: top-1 of accepted", True),
    ("test_ladder_ood_acceptance", "ladder: OOD accepted", True),
)


def markdown_table(rows: list[dict[str, object]]) -> str:
    """Mean ± sample sd over seeds per variant of the main columns (blank where a variant has no such score)."""
    import math
    import statistics

    lines = [
        "| variant | seeds | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        group = [r for r in rows if r["variant"] == variant]
        cells = []
        for col, _, pct in COLUMNS:
            present = [float(r[col]) for r in group if r.get(col, "") != ""]
            vals = [v for v in present if math.isfinite(v)]  # nan: e.g. selective accuracy with nothing accepted
            if not vals:
                cells.append("nan" if present else "")
                continue
            scale = 100.0 if pct else 1.0
            mean, sd = statistics.fmean(vals) * scale, (statistics.stdev(vals) * scale if len(vals) > 1 else 0.0)
            cell = f"{mean:.2f} ± {sd:.2f}" if pct else f"{mean:.4f} ± {sd:.4f}"
            cells.append(cell + (f" ({len(vals)} of {len(present)} finite)" if len(vals) < len(present) else ""))
        lines.append(f"| {variant} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
