"""The trade-off table both reports open with, as plain strings: one formatting for Markdown and HTML.

Reads only what ``evaluate.tradeoff.measure_tradeoff`` wrote (``tradeoff.json``); every figure comes from that file.
Cells and notes are plain text (Markdown code spans in backticks); the HTML report escapes them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from stillroom._io import StillroomError, read_json
from stillroom.evaluate.stats import wilson_interval
from stillroom.evaluate.tradeoff import TRADEOFF_FILE, TRADEOFF_FORMAT

__all__ = ["TITLE", "read_tradeoff", "tradeoff_table", "tradeoff_notes", "stale_runs"]

TITLE = "Trade-off: teachers vs student"
_DASH = "–"


def read_tradeoff(directory: str | Path) -> dict[str, Any] | None:
    """``directory/tradeoff.json``, or None when there is none; a file of another format is an error naming it."""
    path = Path(directory) / TRADEOFF_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != TRADEOFF_FORMAT:
        raise StillroomError(f"{path}: not a trade-off file of format {TRADEOFF_FORMAT!r}")
    return data


def _pct(x: Any) -> str:
    return _DASH if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):.1f}%"


def _params(n: Any) -> str:
    return _DASH if n is None else f"{n / 1e6:.2f} M"


def _mb(n: Any) -> str:
    return _DASH if n is None else f"{n / 1e6:.1f} MB"


def _ms(row: dict[str, Any]) -> str:
    lat = row.get("latency_ms") or {}
    med = lat.get("median_ms")
    if med is None:
        return _DASH
    return f"{med:.1f} ms" + (" (sum)" if row.get("role") == "ensemble" else "")


def _has_ensemble(data: dict[str, Any]) -> bool:
    """Whether the file has an ensemble row (two teachers or more; with one, shares are of that teacher)."""
    return any(r.get("role") == "ensemble" for r in data["rows"])


def tradeoff_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the table: one row per model in file order, then the leakage probe's row."""
    split = data["split"]
    header = [
        "model",
        "parameters",
        "weights file",
        "CPU latency, batch 1 (median)",
        f"{split} top-1",
        f"{split} macro-F1",
        "share of ensemble top-1 kept" if _has_ensemble(data) else "share of teacher top-1 kept",
    ]
    style = data.get("style")
    if style:
        header.append(
            f"another artist: top-1 ({style.get('style') or 'style set'}, {style['split']}) [Wilson 95% over its "
            f"{style['n']} images]"
        )
    rows = []
    for r in data["rows"]:
        share = r.get("share_of_ensemble_top1") if r.get("role") == "student" else None
        rows.append(
            [
                str(r["label"]),
                _params(r.get("parameters")),
                _mb(r.get("weights_bytes")),
                _ms(r),
                _pct(r.get("top1")),
                _DASH if r.get("macro_f1") is None else f"{r['macro_f1']:.4f}",
                _pct(share),
            ]
            + ([_style_cell(r.get("style_top1"), style["n"])] if style else [])
        )
    probe = data.get("leakage_probe")
    if probe:
        label = "1-NN pixel matcher (leakage probe, learns nothing)"
        rows.append([label, _DASH, _DASH, _DASH, _pct(probe.get("accuracy")), _DASH, _DASH])
        if style:
            rows[-1].append(_style_cell(style.get("nn_probe_top1"), style["n"]))
    return header, rows


def _style_cell(top1: float | None, n: int) -> str:
    """Top-1 on the other artist's set with its Wilson 95% interval over the set's n images. Why the interval:
    a held-out style has a hundred-odd drawings a split, and which drawings they are moves a figure by several
    points (BENCHMARKS "How many drawings a held-out style needs")."""
    if top1 is None:
        return _DASH
    lo, hi = wilson_interval(round(top1 * n), n)
    return f"{_pct(top1)} [{100 * lo:.1f}, {100 * hi:.1f}]"


def stale_runs(data: dict[str, Any]) -> list[str]:
    """Labels of rows whose run's weights changed after the trade-off was measured: the sha256 evaluation recorded
    in the run's ``metrics.json`` differs from the one in ``tradeoff.json`` (e.g. retrained by hand since)."""
    stale = []
    for r in data["rows"]:
        if not r.get("run") or not r.get("weights_sha256"):
            continue
        metrics = Path(r["run"]) / "metrics.json"
        recorded = (read_json(metrics).get("weights") or {}) if metrics.is_file() else {}
        if (recorded.get(data.get("weights", "best")) or {}).get("sha256") not in (None, r["weights_sha256"]):
            stale.append(str(r["label"]))
    return stale


def tradeoff_notes(data: dict[str, Any]) -> list[str]:
    """The sentences under the table: a warning when runs changed since, what was measured, how latency was timed,
    and the leakage probe in words (last)."""
    split, lat = data["split"], data.get("latency") or {}
    rows = data["rows"]
    n = rows[0].get("n") if rows else None
    stale = stale_runs(data)
    notes = []
    if stale:
        notes.append(
            f"Out of date: the weights of {', '.join(stale)} changed after `tradeoff.json` was written; run the demo "
            "again to measure them."
        )
    notes += [
        f"`{data.get('weights', 'best')}` weights of each run (highest validation top-1) on the {split} split "
        f"(n = {n}), scored as in the results below. "
        + (
            "The ensemble averages the teachers' softmax; its parameters, file size and latency are the sums of its "
            "members'. Share kept = student top-1 / ensemble top-1. "
            if _has_ensemble(data)
            else "Share kept = student top-1 / the teacher's top-1 (one teacher: no ensemble). "
        )
        + "Weights file: the safetensors file a deployment ships.",
    ]
    if lat:
        load = lat.get("load_before"), lat.get("load_after")
        load_txt = (
            f"; 1-min load average {load[0][0]:.2f} before, {load[1][0]:.2f} after" if load[0] and load[1] else ""
        )
        notes.append(
            f"Latency: {lat.get('backend', 'PyTorch eager')}, batch {lat.get('batch', 1)}, "
            f"{lat.get('threads')} thread(s), median over about {lat.get('seconds_per_model')} s of calls after "
            f"{lat.get('warmup_seconds')} s of warm-up per model{load_txt}. A short timing on the machine the report "
            "was made on, not a benchmark: `stillroom bench-latency RUN` times ONNX Runtime fp32 and int8 with the "
            "full protocol."
        )
    style = data.get("style")
    if style:
        notes.append(
            f"Another artist: the same species drawn by someone else ({style.get('source')}, {style.get('style')}: "
            f"other poses and proportions), {style['n']} images of the `{style['split']}` split of "
            f"`{style['index']}`, never trained on. The generalization a user of another drawing style gets; the "
            "1-NN row is what a lookup of the training images gets there. The interval beside each figure is how "
            f"far it could move on another {style['n']} drawings of the same style (Wilson 95%): one run on this "
            "many drawings places a model on the style only that well."
        )
    elif data.get("style_skipped"):
        notes.append(f"Another artist: no style scored here: {data['style_skipped']}.")
    probe = data.get("leakage_probe")
    if not probe:
        notes.append(f"No leakage probe for the {split} split: read its accuracy without knowing how leaky it is.")
        return notes
    text = (
        f"Leakage probe, beside every accuracy above: {probe.get('summary') or ''}".rstrip()
        if probe.get("summary")
        else f"Leakage probe: a 1-NN pixel matcher gets {_pct(probe.get('accuracy'))} of {split} images right."
    )
    students = [r["top1"] for r in rows if r.get("role") == "student" and r.get("top1") is not None]
    if students and probe.get("accuracy") is not None and probe["accuracy"] >= max(students):
        text += " Here it does at least as well as every student."
    notes.append(text)
    return notes
