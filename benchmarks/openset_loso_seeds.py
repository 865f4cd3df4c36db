"""Leave-one-source-out results over seeds (issue 16 item 3): mean ± sd per held-out source of every
``OUT/loso_s<seed>.json`` that ``benchmarks/openset_loso_report.py`` wrote, one table per OUT (e.g. one per sink
weight g), and whether each issue target holds on every seed. Beside it, what validation saw (the split a choice
such as g may be made on): the K+1 student's ID-only val top-1 and the share of the seen sources' val OOD rows it
sends to the sink, at its selected epoch (``runs/loso_<S>_s<seed>/state.json``), against the K-class KD student's
val top-1 (``runs/kd_s<seed>``).

    python benchmarks/openset_loso_seeds.py artifacts/openset_loso artifacts/openset_loso_g1 [--md FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

COLUMNS = (  # (label, getter, scale, digits)
    ("sink AUROC (held-out)", lambda r: r["auroc_heldout"], 1.0, 3),
    ("FPR@95TPR", lambda r: r["fpr95_heldout"], 1.0, 3),
    ("ID to sink, clean %", lambda r: r["rewrite_to_sink"]["clean"], 100.0, 1),
    ("ID to sink, worst rewrite %", lambda r: r["rewrite_to_sink_worst"], 100.0, 1),
    ("top-1 K+1 %", lambda r: r["top1"], 100.0, 2),
    ("top-1 KD %", lambda r: r["kd_top1"], 100.0, 2),
    ("K+1 KNN AUROC", lambda r: r["posthoc_kplus1"]["knn"], 1.0, 3),
    ("KD KNN AUROC", lambda r: r["posthoc_kd"]["knn"], 1.0, 3),
    # the ladder's fused signal (max logit, sink, KNN; openset_loso_report.ladder_metrics); None in older files
    ("fused AUROC (held-out)", lambda r: r.get("ladder", {}).get("fused", {}).get("auroc"), 1.0, 3),
    ("fused FPR@95TPR", lambda r: r.get("ladder", {}).get("fused", {}).get("fpr_at_95_tpr"), 1.0, 3),
)


def _cell(values: list[float | None], scale: float, digits: int) -> str:
    if any(v is None for v in values):
        return "n/a"
    vals = [v * scale for v in values]
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def table(out: Path) -> str:
    files = sorted(out.glob("loso_s*.json"))
    if not files:
        raise SystemExit(f"{out}: no loso_s<seed>.json (run benchmarks/openset_loso.sh first)")
    by_source: dict[str, list[dict]] = {}
    for f in files:
        for row in json.loads(f.read_text())["rows"]:
            by_source.setdefault(row["held_out"], []).append(row)
    seeds = ",".join(f.stem.removeprefix("loso_s") for f in files)
    lines = [
        f"{out} (seeds {seeds}; mean ± sd over seeds)",
        "",
        "| held-out source | n | "
        + " | ".join(c[0] for c in COLUMNS)
        + " | targets met on every seed | with the fused signal |",
        "|---|---:|" + "---:|" * len(COLUMNS) + "---|---|",
    ]
    for source, rows in by_source.items():
        cells = [_cell([get(r) for r in rows], scale, digits) for _, get, scale, digits in COLUMNS]
        met = [k for k in rows[0]["meets"] if all(r["meets"][k] for r in rows)]
        fused = "n/a"
        if all("meets_fused" in r for r in rows):
            fused = ", ".join(k for k in rows[0]["meets_fused"] if all(r["meets_fused"][k] for r in rows)) or "none"
        lines.append(f"| {source} | {len(rows)} | " + " | ".join(cells) + f" | {', '.join(met) or 'none'} | {fused} |")
    return "\n".join(lines) + "\n" + val_table(out, by_source, seeds.split(","))


def _best_record(run: Path) -> dict | None:
    """The epoch record the trainer selected (``state.json``'s best epoch) from ``log.jsonl``; None if unfinished."""
    state, log = run / "state.json", run / "log.jsonl"
    if not (state.is_file() and log.is_file() and (run / "metrics.json").is_file()):
        return None
    epoch = json.loads(state.read_text())["best"]["epoch"]
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return next((r for r in records if r["epoch"] == epoch), None)


def val_table(out: Path, by_source: dict[str, list[dict]], seeds: list[str]) -> str:
    kd = [r for s in seeds if (r := _best_record(out / "runs" / f"kd_s{s}")) is not None]
    kd_cell = _cell([r["val_top1"] for r in kd], 100.0, 2) if kd else "n/a"
    lines = [
        "",
        f"validation, selected epoch: KD student val top-1 {kd_cell} (n={len(kd)})",
        "",
        "| held-out source | n | K+1 val ID top-1 % | seen sources' val OOD rows to the sink % |",
        "|---|---:|---:|---:|",
    ]
    for source in by_source:
        recs = [r for s in seeds if (r := _best_record(out / "runs" / f"loso_{source}_s{s}")) is not None]
        if not recs:
            continue
        rej = [r["val_ood_rejection"] for r in recs if r.get("val_ood_rejection") is not None]
        lines.append(
            f"| {source} | {len(recs)} | {_cell([r['val_id_top1'] for r in recs], 100.0, 2)} | "
            f"{_cell(rej, 100.0, 1) if rej else 'n/a'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outs", nargs="+", type=Path)
    ap.add_argument("--md", type=Path, help="also write the tables here")
    args = ap.parse_args()
    text = "\n".join(table(o) for o in args.outs)
    if args.md:
        args.md.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
