"""A plain Markdown report of a pipeline run: the trade-off, data, leakage probe, metrics, confused pairs, timings.

It opens with the trade-off a user came for (issue 14 item 6): teachers, their ensemble and the students side by
side (parameters, weights file size, batch-1 CPU latency, test top-1 and macro-F1, share of the ensemble's top-1
kept) with the leakage probe beside them. Every number in it is read from the artefacts the run wrote
(tradeoff.json, index.json, metrics.json, state.json, alignment_check.json); nothing is typed in by hand.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from stillroom import __version__
from stillroom._io import atomic_write_bytes, atomic_write_text, read_json
from stillroom._timing import cpu_model
from stillroom.data.index import DatasetIndex
from stillroom.data.species_names import display_names
from stillroom.data.transfer import extra_train_sources
from stillroom.report._tradeoff import TITLE, read_tradeoff, tradeoff_notes, tradeoff_table

__all__ = ["write_demo_report", "markdown_table", "metrics_rows", "extra_train_note"]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def metrics_rows(runs: dict[str, Path], split: str = "test") -> list[dict[str, Any]]:
    rows = []
    for label, run in runs.items():
        metrics = read_json(run / "metrics.json")
        state = read_json(run / "state.json")
        seconds = sum(h.get("epoch_seconds", 0.0) for h in state.get("history", []))
        for weights, rep in metrics["splits"].get(split, {}).items():
            rows.append(
                {
                    "label": label,
                    "run": run,
                    "weights": weights,
                    "epoch": metrics.get("best_epoch") if weights == "best" else metrics.get("epochs"),
                    "top1": rep["top1"],
                    "top5": rep["top5"],
                    "macro_f1": rep["macro_f1"],
                    "nll": rep.get("nll"),
                    "calibration": rep.get("calibration") or {},
                    "train_seconds": seconds,
                    "report": rep,
                }
            )
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """``header`` and ``rows`` as a Markdown table: the first column left-aligned, the rest right-aligned, any ``|``
    inside a cell escaped."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | weights (epoch) | top-1 | top-5 | macro-F1 | NLL | ECE (T = 1) | T | ECE (T) | NLL (T) "
        "| train time |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cal = r["calibration"]
        before, after = cal.get("before") or {}, cal.get("after") or {}
        temp = cal.get("temperature")
        lines.append(
            f"| {r['label']} | {r['weights']} ({r['epoch']}) | {_pct(r['top1'])} | {_pct(r['top5'])} | "
            f"{r['macro_f1']:.4f} | {r['nll']:.3f} | {_num(before.get('ece'))} | {_num(temp, 2)} | "
            f"{_num(after.get('ece'))} | {_num(after.get('nll'))} | {r['train_seconds'] / 60:.1f} min |"
        )
    lines += [
        "",
        "ECE: 15 equal-width bins on top-label confidence (REFERENCE 4). T: temperature fitted on the validation split "
        "(`calibration.json`, kept at 1 when it does not lower validation NLL); ECE (T) and NLL (T) are the test "
        "metrics after dividing the logits by T.",
    ]
    return lines


def _tradeoff_section(report_dir: Path) -> list[str]:
    """The opening section, from ``report_dir/tradeoff.json`` (``evaluate.tradeoff``)."""
    lines = [f"## {TITLE}", ""]
    data = read_tradeoff(report_dir)
    if data is None:
        return lines + ["No `tradeoff.json` beside this report: the trade-off was not measured.", ""]
    lines += markdown_table(*tradeoff_table(data)).splitlines()
    lines.append("")
    for note in tradeoff_notes(data):
        lines += [note, ""]
    return lines


def extra_train_note(recipe: dict[str, Any]) -> str | None:
    """One sentence on labelled rows from another source in train (``stillroom data add-style``), else None."""
    sources = extra_train_sources(recipe)
    if not sources:
        return None
    added = " and ".join(
        f"{e.get('images')} drawings ({e.get('style', 'labelled rows')}, {e.get('index')}) x {e.get('repeat')} copies"
        for e in sources
    )
    styles = "another style" if len(sources) == 1 else f"{len(sources)} other styles"
    return f"Train also holds drawings of the classes in {styles}: {added}; val and test are the source above only."


def _data_section(index: DatasetIndex, report_dir: Path) -> list[str]:
    meta, recipe = index.meta, index.recipe
    counts = meta.get("counts", {}).get("per_split", {})
    lines = [
        "## Data",
        "",
        f"- Source: `{recipe.get('source')}`, {meta['num_classes']} classes, {meta['num_samples']} images at "
        f"{recipe.get('size')} px, {recipe.get('channels')} channel(s); split `{recipe.get('split')}` "
        f"(train/val/test = {counts.get('train')}/{counts.get('val')}/{counts.get('test')}).",
        f"- Index hash `{index.index_hash[:16]}`, content hash `{index.content_hash[:16]}`.",
    ]
    extra = extra_train_note(recipe)
    if extra:
        lines.append(f"- {extra}")
    dedup = meta.get("dedup")
    if dedup:
        lines.append(
            f"- Frames decoded: {dedup.get('frames_decoded')}; exact-distinct: {dedup.get('exact_distinct')}; "
            f"kept after the {recipe.get('dedup_threshold')} near-duplicate rule: {dedup.get('kept')}."
        )
    probe = meta.get("leakage_probe")
    if probe:
        lines += ["", "### Leakage probe (read this next to every accuracy below)", "", probe.get("summary", "")]
        for split in ("val", "test"):
            part = probe.get(split) or {}
            q = part.get("distance_quantiles") or {}
            if part:
                lines.append(
                    f"- 1-NN pixel classifier, train -> {split}: accuracy {_pct(part.get('accuracy'))} "
                    f"(n = {part.get('n')}); nearest-train distance median {q.get('p50', float('nan')):.4f}"
                    f" (p10 {q.get('p10', float('nan')):.4f}, p90 {q.get('p90', float('nan')):.4f})."
                )
    sheet = index.root / "contact_sheet.png"
    if sheet.is_file():
        # atomic like every report artefact: a crash mid-copy must not leave a torn PNG next to report.md
        atomic_write_bytes(report_dir / "contact_sheet.png", sheet.read_bytes())
        lines += ["", "![contact sheet](contact_sheet.png)"]
    return lines + [""]


def write_demo_report(
    path: str | Path,
    index: DatasetIndex,
    runs: dict[str, Path],
    alignment: dict[str, Any] | None = None,
    timings: dict[str, float] | None = None,
    budget: dict[str, Any] | None = None,
    cpu_steal_share: float | None = None,
) -> Path:
    """Write the demo's Markdown report to ``path``; it opens with the trade-off read from ``tradeoff.json`` in the
    same directory (written by ``evaluate.tradeoff.measure_tradeoff``), then the data, results and timings
    (``cpu_steal_share``: the hypervisor's share of CPU time during the run, ``_timing.steal_share``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = metrics_rows(runs)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = ["# Stillroom demo report", ""]
    lines += _tradeoff_section(path.parent)
    lines += [
        f"Generated {now} by stillroom {__version__} (torch {torch.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPU cores{', CUDA' if torch.cuda.is_available() else ''}).",
        "",
    ]
    lines += _data_section(index, path.parent)
    lines += ["## Results (test split)", ""]
    lines += _table(rows)
    by = {(r["label"], r["weights"]): r for r in rows}
    scratch = next((r for r in rows if "scratch" in r["label"] and r["weights"] == "best"), None)
    kd = next((r for r in rows if "KD" in r["label"] and r["weights"] == "best"), None)
    lines.append("")
    lines.append(
        "`best` = the epoch with the highest validation top-1 (never selected on test); `final` = the last epoch. "
        "Both have BatchNorm statistics re-estimated on clean training images."
    )
    if scratch and kd:
        lines += [
            "",
            f"KD over scratch (best-validation weights): top-1 {100 * (kd['top1'] - scratch['top1']):+.1f} points, "
            f"macro-F1 {kd['macro_f1'] - scratch['macro_f1']:+.4f} (one seed each: a single comparison, not a "
            "statistical claim).",
        ]
        if (budget or {}).get("student_lr_tuned") is False:  # `--student` with no measured lr (budgets.STUDENT_LR)
            lines[-1] += (
                f" Both students trained at peak lr {budget['student_lr']}, chosen for another network than "
                f"{budget['student_model']}: a scratch twin away from its own lr can make KD look better than it is."
            )
    if alignment is not None:
        lines += [
            "",
            "## Soft labels",
            "",
            f"Alignment check over {len(alignment['stores'])} store(s): **{'ok' if alignment['ok'] else 'FAILED'}** "
            "(lengths, path/label/content hashes; see `alignment_check.json`).",
        ]
        stores = alignment["stores"]
        views = stores[0].get("views") if stores else None
        if views and alignment.get("replay"):
            rp = alignment["replay"]
            lines += [
                "",
                f"Replay stores: each teacher's logits of {views} augmented views per image (`{rp['augment']}`, "
                f"augment seed {rp['augment_seed']}); the KD student re-creates the view it trains on and learns "
                "from the teachers' logits of that very view (exact augmented KD).",
            ]
    if kd is not None:
        rep = kd["report"]
        # species names where the index has them (data.species_names), the class ids otherwise
        name = dict(zip(index.classes, display_names(index), strict=True)).get
        lines += ["", f"## Most confused pairs ({kd['label']}, test, best weights)", ""]
        lines += ["| class a | class b | a as b | b as a | rate |", "|---|---|---:|---:|---:|"]
        for p in rep.get("confused_pairs", [])[:10]:
            a, b = name(p["a"], p["a"]), name(p["b"], p["b"])
            lines.append(f"| {a} | {b} | {p['a_as_b']} | {p['b_as_a']} | {p['rate']:.3f} |")
        worst = rep.get("worst_classes") or []
        if worst:
            lines += [
                "",
                "Lowest per-class F1: " + ", ".join(f"{name(w['class'], w['class'])} {w['f1']:.2f}" for w in worst),
            ]
    if timings:
        lines += ["", "## Wall time", ""]
        lines += [f"- {k}: {v / 60:.1f} min" for k, v in timings.items() if v > 0]
        target = (budget or {}).get("wall_minutes")
        if target and timings.get("total", 0) > 0:
            total = timings["total"] / 60
            verdict = "within it" if total <= target else f"over by {total - target:.1f} min"
            # the budget was set on one host of the 2-core box; hosts differ about 2x in speed (README "The demo")
            lines.append(f"- budget: {target} min on the 2-core box; this run {total:.1f} min, {verdict}")
        if (budget or {}).get("plan"):  # epochs planned on this machine (pipeline/plan.py)
            lines.append(f"- plan: {budget['plan']}")
        teachers = [r for r in rows if r["label"].startswith("teacher") and r["weights"] == "best"]
        metas = [runs[r["label"]] / "model.json" for r in teachers]
        amps = sorted({str(read_json(m).get("amp", "off")) for m in metas if m.is_file()})
        fmt = " / ".join("bfloat16 autocast" if a == "bf16" else "float32" for a in amps)
        # which kind of host: the same recipe takes 16-22 min on these 2-core hosts (README "The demo")
        host = f"- host: {cpu_model() or platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
        lines.append(host + (f"; the teacher's training step ran in {fmt}" if fmt else ""))
        if cpu_steal_share is not None:
            lines.append(
                f"- CPU time taken by the hypervisor for other machines during the run (steal, /proc/stat): "
                f"{100 * cpu_steal_share:.0f}%"
            )
    if budget:
        lines += ["", "## Settings", "", "```", *(f"{k}: {v}" for k, v in budget.items()), "```"]
    del by
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
