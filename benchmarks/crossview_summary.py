"""Summaries of cross-view recipe runs (issue 14): one row per (variant, seed) and a mean ± sd table.

Used by benchmarks/crossview_recipe.sh and benchmarks/crossview_kd_sources.sh.

    python benchmarks/crossview_summary.py table OUT DEST NAME VARIANT:DIR... [--teacher RUN]
        -> DEST/NAME_summary.csv and DEST/NAME.md: test top-1 / macro-F1 of the best-val weights, clean val top-1 and
           the shift-val columns (`stillroom shift-val`, val only) of every run under OUT/DIR/VARIANT/seed* that
           has shift_val.json; with --teacher, the per-rewrite table gets that run's column. Runs whose
           sweep_run.json records a wall time add a "train wall s" column.
    python benchmarks/crossview_summary.py compares DEST
        -> a markdown table of every DEST/compare_*.json (`stillroom compare --json` outputs)
    python benchmarks/crossview_summary.py teachers RUN...
        -> a markdown table of single runs: epochs at a reduced side (progressive resizing) / at the data's size,
           median epoch seconds of each, training wall seconds, val and test top-1 of the best-val weights
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path


def _ms(vals: list[float], scale: float = 100.0, digits: int = 2) -> str:
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{scale * vals[0]:.{digits}f}"
    return f"{scale * statistics.mean(vals):.{digits}f} ± {scale * statistics.stdev(vals):.{digits}f}"


def _wall(run: Path) -> float | None:
    """Training wall seconds: the sum of log.jsonl's epoch_seconds (train + evaluation of each epoch)."""
    log = run / "log.jsonl"
    if not log.is_file():
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return sum(r.get("epoch_seconds", 0.0) for r in rows) or None


def table(out: Path, dest: Path, name: str, specs: list[str], teacher: Path | None) -> str:
    rows = []
    for spec in specs:
        variant, where = spec.split(":")
        for run in sorted((out / where / variant).glob("seed*")):
            if not (run / "shift_val.json").is_file():
                continue
            m = json.loads((run / "metrics.json").read_text())["splits"]
            sh = json.loads((run / "shift_val.json").read_text())["best"]
            row = {
                "variant": variant,
                "seed": run.name[len("seed") :],
                "run_dir": str(run),
                "test_top1": m["test"]["best"]["top1"],
                "test_macro_f1": m["test"]["best"]["macro_f1"],
                "val_top1": sh["clean"]["top1"],
                "shift_mean": sh["mean"],
                "shift_held_out_mean": sh["held_out_mean"],
                "train_wall_s": _wall(run),
            }
            row.update({f"shift_{k}": v["top1"] for k, v in sh["rewrites"].items()})
            rows.append(row)
    if not rows:
        raise SystemExit(f"{name}: no run with shift_val.json under {out} for {specs}")
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / f"{name}_summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    variants = [s.split(":")[0] for s in specs if any(r["variant"] == s.split(":")[0] for r in rows)]

    def col(v: str, c: str) -> list[float]:
        return [r[c] for r in rows if r["variant"] == v and r[c] is not None]

    cols = [
        ("test_top1", "test top-1 %"),
        ("test_macro_f1", "test macro-F1 x100"),
        ("val_top1", "val top-1 %"),
        ("shift_mean", "shift-val % (mean of 11)"),
        ("shift_held_out_mean", "shift-val not in recipe % (4)"),
    ]
    lines = [
        "| variant | seeds | " + " | ".join(c[1] for c in cols) + " | train wall s |",
        "|---|---|" + "---:|" * (len(cols) + 1),
    ]
    for v in variants:
        seeds = ",".join(r["seed"] for r in rows if r["variant"] == v)
        lines.append(
            f"| {v} | {seeds} | "
            + " | ".join(_ms(col(v, c)) for c, _ in cols)
            + f" | {_ms(col(v, 'train_wall_s'), 1.0, 0)} |"
        )
    rewrites = [
        k[len("shift_") :] for k in rows[0] if k.startswith("shift_") and k not in ("shift_mean", "shift_held_out_mean")
    ]
    t = json.loads((teacher / "shift_val.json").read_text())["best"] if teacher else None
    tname = f" {teacher.name} |" if t else ""
    lines += [
        "",
        "| rewrite (val, top-1 %) | " + " | ".join(variants) + " |" + tname,
        "|---|" + "---:|" * (len(variants) + (1 if t else 0)),
    ]

    def line(label: str, c: str, tv: float | None) -> str:
        tail = f" {100 * tv:.2f} |" if t else ""
        return f"| {label} | " + " | ".join(_ms(col(v, c)) for v in variants) + " |" + tail

    lines.append(line("clean", "val_top1", t["clean"]["top1"] if t else None))
    for k in rewrites:
        lines.append(line(k, f"shift_{k}", t["rewrites"][k]["top1"] if t else None))
    lines.append(line("mean (shift-val)", "shift_mean", t["mean"] if t else None))
    lines.append(line("mean, not in shape recipe", "shift_held_out_mean", t["held_out_mean"] if t else None))
    text = "\n".join(lines) + "\n"
    (dest / f"{name}.md").write_text(text)
    return text


def compares(dest: Path) -> str:
    lines = [
        "| a -> b | metric | b - a (x100) | bootstrap 95% CI (x100) | b ahead in | permutation p | verdict |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for path in sorted(dest.glob("compare_*.json")):
        r = json.loads(path.read_text())
        a, b, ci = r["a"], r["b"], r["bootstrap_ci"]
        ahead = sum(vb > va for va, vb in zip(a["values"], b["values"], strict=True))
        f, verdict = 100, r["verdict"].split("Verdict: ")[-1]
        lines.append(
            f"| {a['name']} -> {b['name']} | {r['metric']} | {f * r['mean_diff']:+.2f} | [{f * ci['low']:+.2f}, "
            f"{f * ci['high']:+.2f}] | {ahead} of {len(a['values'])} | {r['permutation']['p_value']:.3g} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def teachers(runs: list[Path]) -> str:
    lines = [
        "| run | epochs at a reduced / the full side | median epoch s at each | train + validation s | val top-1 % "
        "| test top-1 % |",
        "|---|---|---|---:|---:|---:|",
    ]
    for run in runs:
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
        m = json.loads((run / "metrics.json").read_text())["splits"]
        low = [r["train_seconds"] for r in log if r.get("train_size")]
        full = [r["train_seconds"] for r in log if not r.get("train_size")]
        med = " / ".join(f"{statistics.median(v):.0f}" if v else "-" for v in (low, full))
        lines.append(
            f"| {run.name} | {len(low)} / {len(full)} | {med} | {_wall(run):.0f} | "
            f"{100 * m['val']['best']['top1']:.2f} | {100 * m['test']['best']['top1']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if argv[:1] == ["table"]:
        args = argv[1:]
        teacher = None
        if "--teacher" in args:
            i = args.index("--teacher")
            teacher = Path(args[i + 1])
            args = args[:i] + args[i + 2 :]
        out, dest, name, *specs = args
        print(table(Path(out), Path(dest), name, specs, teacher), end="")
    elif argv[:1] == ["teachers"]:
        print(teachers([Path(a) for a in argv[1:]]), end="")
    elif argv[:1] == ["compares"]:
        print(compares(Path(argv[1])), end="")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
