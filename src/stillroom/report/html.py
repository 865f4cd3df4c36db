"""``stillroom report``: one self-contained HTML file for a run, a directory of runs (the demo) or a sweep.

Self-contained means: inline CSS, every image a ``data:image/png;base64`` URI, no script, no external reference,
so the file opens offline and can be mailed or archived as it is. Every number is read from the artefacts the runs
wrote (``index.json``, ``config.yaml``, ``state.json``, ``metrics.json``, ``calibration.json``, ``ood_metrics.json``,
``results_summary.csv``); figures missing on disk are drawn from those numbers.

Sections: for a directory of runs with a ``tradeoff.json`` (the demo), first the trade-off a user came for: teachers,
their ensemble and the students side by side with the leakage probe beside them (``report._tradeoff``; issue 14
item 6); the sweep summary (variants x seeds: mean ± sample std, bootstrap 95% CI of the mean, each variant against
the first with ``stats.compare``; seed 001 §5.1), the data (counts, recipe, leakage probe and shortcut probe in
plain words, contact sheet), a results table (top-1 with a Wilson 95% interval over test images, top-5, macro-F1,
NLL, ECE before/after temperature scaling), then per run: config, training curves, per-class F1 extremes, the most
confused pairs shown as one test image of each class (seed 000 §4.1), reliability diagrams (seed 001 §4.1.6, §5.2)
and, when open-set metrics exist, ROC curves and ID-vs-OOD score histograms (REFERENCE 4).

Why one module of over 400 lines: one self-contained report; every section renders from files evaluation wrote and
shares the escaping, image and table helpers.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from stillroom import __version__
from stillroom._io import StillroomError, atomic_write_text, read_json
from stillroom.data.index import DatasetIndex, load_index
from stillroom.report._tradeoff import TITLE, read_tradeoff, tradeoff_notes, tradeoff_table
from stillroom.report.markdown import extra_train_note
from stillroom.runs import CALIBRATION_FILE, METRICS_FILE, MODEL_FILE, SUMMARY_FILE, Run

__all__ = ["write_html_report", "find_runs"]

_N_PAIRS = 8  # confused pairs shown as images per run
_N_EXTREMES = 5  # best and worst classes by F1
_SWEEP_METRICS = (
    ("test_top1", "test top-1", True),
    ("test_macro_f1", "test macro-F1", True),
    ("test_nll", "test NLL", False),
    ("test_ece", "test ECE (T = 1)", False),
    ("test_ece_ts", "test ECE (fitted T)", False),
)
OOD_METRICS_FILE = "ood_metrics.json"  # written by `stillroom evaluate-ood` (evaluate.ood_table)
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;background:#f6f6f4;
color:#222;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff;box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{margin:.2em 0 .1em;font-size:1.8em}h2{margin-top:2em;border-bottom:2px solid #3b6ea8;padding-bottom:.2em}
h3{margin-top:1.6em;color:#333}h4{margin:1.2em 0 .4em}
.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.9em}
th,td{border:1px solid #ddd;padding:4px 8px;vertical-align:top}th{background:#eef2f7;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:nth-child(even) td{background:#fafafa}
img.fig{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}
img.sheet{max-width:100%;image-rendering:pixelated}
.pairs{display:flex;flex-wrap:wrap;gap:12px}
.pair{border:1px solid #ddd;border-radius:6px;padding:6px 8px;background:#fcfcfc;text-align:center;font-size:.8em}
.pair img{width:80px;height:80px;image-rendering:pixelated;border:1px solid #ccc;margin:2px;background:#fff}
.pair .imgs{display:flex;gap:4px;justify-content:center}
.note{background:#fff8e6;border-left:4px solid #e0a100;padding:6px 10px;margin:.6em 0}
.verdict{background:#eef6ee;border-left:4px solid #3a8a3a;padding:6px 10px;margin:.6em 0}
pre{background:#f4f4f4;padding:8px 10px;overflow-x:auto;font-size:.82em}
details{margin:.5em 0}summary{cursor:pointer;color:#3b6ea8}
nav ul{columns:2;font-size:.9em}
"""


# --- small helpers ----------------------------------------------------------------------------------------------


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _img(data: bytes, alt: str, cls: str = "fig", mime: str = "image/png") -> str:
    return f'<img class="{cls}" alt="{_e(alt)}" src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}">'


def _pct(x: Any, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):.{digits}f}%"


def _num(x: Any, digits: int = 4) -> str:
    if x is None or x == "":
        return "–"
    x = float(x)
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = [f"<td{' class=n' if i >= numeric_from else ''}>{c}</td>" for i, c in enumerate(row)]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower() or "x"


def _read_json_or(path: Path, default: Any = None) -> Any:
    return read_json(path) if path.is_file() else default


# --- discovery --------------------------------------------------------------------------------------------------


def _is_run(path: Path) -> bool:
    return (path / MODEL_FILE).is_file() and (path / METRICS_FILE).is_file()


def _seed(run: Path) -> Any:
    cfg = Run(run).config
    return "?" if cfg is None else cfg.seed


def find_runs(root: str | Path) -> tuple[str, list[Path]]:
    """What ``root`` is and the finished runs under it: ``("run", [root])``, ``("sweep", runs)`` (a directory
    with ``results_summary.csv``) or ``("runs", runs)`` (run directories in ``root/runs/`` or ``root/``)."""
    root = Path(root)
    if not root.is_dir():
        raise StillroomError(f"{root}: not a directory")
    if _is_run(root):
        return "run", [root]
    if (root / SUMMARY_FILE).is_file():
        return "sweep", sorted(p.parent for p in root.glob("*/*/metrics.json") if _is_run(p.parent))
    for base in (root / "runs", root):
        runs = sorted(p for p in base.iterdir() if p.is_dir() and _is_run(p)) if base.is_dir() else []
        if runs:
            return "runs", runs
    raise StillroomError(
        f"{root}: no finished run here (a run has model.json and metrics.json), no runs/ with runs inside, "
        "and no results_summary.csv"
    )


# --- sections ---------------------------------------------------------------------------------------------------


def _sweep_section(root: Path) -> str:
    from stillroom.evaluate.stats import bootstrap_mean_ci, compare, describe

    with open(root / SUMMARY_FILE, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = ['<h2 id="sweep">Sweep: variants x seeds</h2>']
    sweep = _read_json_or(root / "sweep.json", {})
    if sweep:
        spec = sweep.get("spec", {})
        out.append(
            f"<p>Sweep <b>{_e(spec.get('name', ''))}</b> from <code>{_e(sweep.get('sweep_file', ''))}</code>: "
            f"{len(spec.get('variants', {}))} variant(s) x seeds {_e(spec.get('seeds'))}.</p>"
        )
        out.append("<details><summary>sweep file and base config</summary><pre>" + _e(json.dumps(sweep, indent=2)))
        out.append("</pre></details>")
    if not rows:
        return "".join(out) + '<p class="note">No finished run yet.</p>'
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    by_variant = {v: [r for r in rows if r["variant"] == v] for v in variants}

    def vals(v: str, col: str) -> tuple[list[float], list[int]]:
        pts = [(float(r[col]), int(r["seed"])) for r in by_variant[v] if r.get(col) not in (None, "")]
        return [p[0] for p in pts], [p[1] for p in pts]

    body = []
    for v in variants:
        cells = [_e(v), str(len(by_variant[v]))]
        for col, _, _ in _SWEEP_METRICS:
            x, _ = vals(v, col)
            if not x:
                cells.append("–")
                continue
            d = describe(x)
            lo, hi = bootstrap_mean_ci(x)
            std = "" if math.isnan(d["std"]) else f" ± {d['std']:.4f}"
            cells.append(f"{d['mean']:.4f}{std}<br><small>CI [{lo:.4f}, {hi:.4f}]</small>")
        body.append(cells)
    out.append(
        "<p>Mean ± sample standard deviation over seeds (best-validation weights); below it the 95% percentile "
        "bootstrap interval of the mean over seeds (B = 10,000; with 2-3 seeds it is narrow and optimistic).</p>"
    )
    out.append(_table(["variant", "runs", *(label for _, label, _ in _SWEEP_METRICS)], body, numeric_from=1))
    per_seed = [
        [
            _e(r["variant"]),
            _e(r["seed"]),
            *(_num(r.get(c)) for c, _, _ in _SWEEP_METRICS),
            _num(r.get("temperature"), 3),
            _num(r.get("wall_seconds"), 0),
        ]
        for r in rows
    ]
    out.append("<details open><summary>per-seed values</summary>")
    out.append(_table(["variant", "seed", *(lb for _, lb, _ in _SWEEP_METRICS), "T", "wall s"], per_seed, 1))
    out.append("</details>")
    if len(variants) > 1:
        out.append(f"<h3>Each variant against {_e(variants[0])}</h3>")
        for v in variants[1:]:
            for col, label, higher in _SWEEP_METRICS[:2]:
                a, sa = vals(variants[0], col)
                b, sb = vals(v, col)
                if not a or not b:
                    continue
                res = compare(a, b, sa, sb, names=(variants[0], v), metric=col, higher_is_better=higher)
                out.append(f'<div class="verdict"><b>{_e(label)}</b>: {_e(res["verdict"])}</div>')
    return "".join(out)


def _md_code(text: str) -> str:
    """Escape ``text`` and turn its Markdown code spans (`x`) into <code> elements."""
    parts = _e(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _tradeoff_section(data: dict[str, Any]) -> str:
    """The opening section: the table and its notes from ``tradeoff.json``; the leakage probe's row is set apart."""
    header, rows = tradeoff_table(data)
    cells = [[_e(c) for c in row] for row in rows]
    if data.get("leakage_probe"):
        cells[-1] = [f"<i>{c}</i>" for c in cells[-1]]
    out = [f'<h2 id="tradeoff">{_e(TITLE)}</h2>', _table(header, cells)]
    notes = tradeoff_notes(data)
    out += [f"<p>{_md_code(n)}</p>" for n in notes[:-1]]
    if notes:
        out.append(f'<div class="note">{_md_code(notes[-1])}</div>')
    return "".join(out)


def _data_section(index: DatasetIndex) -> str:
    meta, recipe = index.meta, index.recipe
    counts = meta.get("counts", {})
    per_split = counts.get("per_split", {})
    out = [f'<h3 id="data-{_slug(index.root.name)}">{_e(index.root.name)}</h3>']
    out.append(
        _table(
            ["source", "classes", "images", "train", "val", "test", "size", "channels", "split"],
            [
                [
                    _e(recipe.get("source", "?")),
                    meta.get("num_classes"),
                    meta.get("num_samples"),
                    per_split.get("train"),
                    per_split.get("val"),
                    per_split.get("test"),
                    recipe.get("size"),
                    recipe.get("channels"),
                    _e(recipe.get("split", "?")),
                ]
            ],
        )
    )
    dedup = meta.get("dedup")
    if dedup:
        out.append(
            f"<p>Frames decoded {dedup.get('frames_decoded')}; exact-distinct {dedup.get('exact_distinct')}; kept "
            f"after the {recipe.get('dedup_threshold')} near-duplicate rule {dedup.get('kept')}.</p>"
        )
    extra = extra_train_note(recipe)
    if extra:
        out.append(f"<p>{_e(extra)}</p>")
    out.append(
        f'<p class="meta">index hash {_e(index.index_hash[:16])}, content hash {_e(index.content_hash[:16])}</p>'
    )
    probe = meta.get("leakage_probe")
    if probe and probe.get("summary"):
        out.append(
            f'<div class="note"><b>Leakage probe</b> (read next to every accuracy): {_e(probe["summary"])}</div>'
        )
    shortcut = meta.get("shortcut_probe")
    if shortcut and shortcut.get("summary"):
        out.append(
            f'<div class="note"><b>Shortcut probe</b> (ID vs OOD without shape): {_e(shortcut["summary"])}</div>'
        )
    sheet = index.root / "contact_sheet.png"
    if sheet.is_file():
        out.append("<h4>Contact sheet</h4>" + _img(sheet.read_bytes(), "contact sheet", "sheet"))
    return "".join(out)


def _label(run: Path, root: Path) -> str:
    return str(run.relative_to(root)) if run != root and root in run.parents else run.name


def _results_table(runs: list[Path], root: Path, split: str = "test") -> str:
    from stillroom.evaluate.stats import wilson_interval

    body = []
    for run in runs:
        m = read_json(run / "metrics.json")
        seed = _seed(run)
        for w, rep in m.get("splits", {}).get(split, {}).items():
            epoch = m.get("best_epoch") if w == "best" else m.get("epochs")
            lo, hi = wilson_interval(round(rep["top1"] * rep["n"]), rep["n"])
            cal = rep.get("calibration") or {}
            before, after = cal.get("before") or {}, cal.get("after") or {}
            t = cal.get("temperature")
            body.append(
                [
                    f'<a href="#run-{_slug(_label(run, root))}">{_e(_label(run, root))}</a>',
                    _e(seed),
                    f"{_e(w)} ({epoch})",
                    f"{_pct(rep['top1'])}<br><small>[{_pct(lo)}, {_pct(hi)}]</small>",
                    _pct(rep.get("top5")),
                    _num(rep.get("macro_f1")),
                    _num(rep.get("nll"), 3),
                    _num(before.get("ece")),
                    _num(after.get("ece")),
                    "–" if t is None else f"{t:.3f}",
                ]
            )
    return (
        f"<p>{_e(split)} split. Top-1 with its Wilson 95% interval over the {_e(split)} images (test-set noise "
        "only, not seed-to-seed variation). <code>best</code> = highest validation top-1 (never selected on test); "
        "<code>final</code> = last epoch. ECE: 15 bins on top-label confidence, before and after temperature scaling "
        "with T fitted on validation NLL.</p>"
        + _table(
            [
                "run",
                "seed",
                "weights (epoch)",
                "top-1",
                "top-5",
                "macro-F1",
                "NLL",
                "ECE (T = 1)",
                "ECE (fitted T)",
                "T",
            ],
            body,
            numeric_from=3,
        )
    )


def _image_of(index: DatasetIndex, class_id: int, split: str = "test") -> tuple[bytes, str] | None:
    rows = np.flatnonzero((index.labels == class_id) & (index.splits == split))
    if len(rows) == 0:
        rows = np.flatnonzero(index.labels == class_id)
    if len(rows) == 0:
        return None
    path = index.image_path(int(rows[len(rows) // 2]))  # a middle frame: less likely a start/end pose
    if not path.is_file():
        return None
    return path.read_bytes(), _MIME.get(path.suffix.lower(), "image/png")


def _confused_pairs(rep: dict[str, Any], index: DatasetIndex | None) -> str:
    pairs = rep.get("confused_pairs") or []
    if not pairs:
        return "<p>No confusions between classes on this split.</p>"
    cards = []
    names = _names(index)
    for p in pairs[:_N_PAIRS]:
        imgs = []
        for cid, name in ((p["a_id"], p["a"]), (p["b_id"], p["b"])):
            found = _image_of(index, cid) if index is not None else None
            shown = names.get(name, name)
            imgs.append(_img(found[0], str(shown), "", found[1]) if found else f"<span>{_e(shown)}</span>")
        cards.append(
            f'<div class="pair"><div class="imgs">{"".join(imgs)}</div>'
            f"<div><b>{_e(names.get(p['a'], p['a']))}</b> ↔ <b>{_e(names.get(p['b'], p['b']))}</b></div>"
            f"<div>{p['a_as_b']} a→b, {p['b_as_a']} b→a (rate {p['rate']:.3f})</div></div>"
        )
    return (
        "<p>Most confused pairs (seed 000 §4.1), one test image of each class; counts from the confusion matrix.</p>"
        f'<div class="pairs">{"".join(cards)}</div>'
    )


def _names(index: DatasetIndex | None) -> dict[str, str]:
    """Class id -> species name where the index has one (``data.species_names``); ids otherwise."""
    return dict((index.meta.get("display_names") or {}) if index is not None else {})


def _f1_extremes(rep: dict[str, Any], index: DatasetIndex | None = None) -> str:
    names = _names(index)
    f1 = {c: v for c, v in (rep.get("per_class_f1") or {}).items() if v is not None}
    if not f1:
        return ""
    support = rep.get("per_class_support") or {}
    order = sorted(f1, key=lambda c: (f1[c], c))
    worst, best = order[:_N_EXTREMES], order[::-1][:_N_EXTREMES]
    rows = [[_e(names.get(c, c)), _num(f1[c], 3), support.get(c, "")] for c in worst]
    rows2 = [[_e(names.get(c, c)), _num(f1[c], 3), support.get(c, "")] for c in best]
    return (
        '<div style="display:flex;gap:32px;flex-wrap:wrap"><div><b>lowest F1</b>'
        + _table(["class", "F1", "support"], rows)
        + "</div><div><b>highest F1</b>"
        + _table(["class", "F1", "support"], rows2)
        + "</div></div>"
    )


def _reliability(run: Path, split: str, w: str, rep: dict[str, Any]) -> str:
    cal = rep.get("calibration")
    png = run / "plots" / f"reliability_{split}_{w}.png"
    if png.is_file():
        data = png.read_bytes()
    elif cal and cal.get("before") and "bins" in cal["before"]:
        from stillroom.evaluate.plots import reliability_diagram

        data = reliability_diagram(cal["before"], cal.get("after"), cal.get("temperature"), title=f"{split}, {w}")
    else:
        return (
            '<p class="note">No calibration in this metrics.json (evaluated before calibration existed): run '
            f"<code>stillroom calibrate {_e(run)}</code> to add it.</p>"
        )
    return _img(data, f"reliability diagram {split} {w}")


def _ood_reports(run: Path, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    sources = [metrics.get("ood"), _read_json_or(run / OOD_METRICS_FILE)]
    reports = []
    for src in sources:
        if not isinstance(src, dict):
            continue
        if "scores" in src:
            reports.append(src)
        for per_w in (src.get("splits") or {}).values():
            reports.extend(r for r in per_w.values() if isinstance(r, dict) and "scores" in r)
    return reports


def _ood_curves(run: Path, rep: dict[str, Any]) -> str:
    """ROC curves and score histograms from the per-row scores evaluation saved (``scores_file``)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    from stillroom.evaluate.plots import roc_curves, score_histograms

    if not rep.get("scores_file"):
        raise StillroomError("no per-row scores saved; run `stillroom evaluate RUN --ood-split SPLIT` again")
    with np.load(run / rep["scores_file"], allow_pickle=False) as f:
        arrays = {name: f[name] for name in f.files}
    is_ood = arrays.pop("is_ood").astype(bool)
    curves, hists = {}, {}
    for name, s in arrays.items():
        y = (~is_ood).astype(int)  # in-distribution = positive (REFERENCE 4)
        fpr, tpr, _ = roc_curve(y, s)
        curves[name] = (fpr, tpr, float(roc_auc_score(y, s)))
        hists[name] = (s[~is_ood], s[is_ood])
    title = f"{rep.get('split', 'test')} split, {rep.get('weights', 'best')} weights"
    return (
        f"<p>Curves from the per-row scores saved by evaluation (<code>{_e(rep['scores_file'])}</code>).</p>"
        + _img(roc_curves(curves, title=title), "ROC curves")
        + _img(score_histograms(hists, title=title), "scores")
    )


def _ood_section(run: Path, metrics: dict[str, Any]) -> str:
    reports = _ood_reports(run, metrics)
    if not reports:
        return ""
    out = ["<h4>Open-set recognition</h4>"]
    for rep in reports:
        body = [
            [
                _e(name),
                _num(s.get("auroc")),
                _num(s.get("aupr_in")),
                _num(s.get("aupr_out")),
                _pct(s.get("fpr_at_95_tpr")),
            ]
            for name, s in rep["scores"].items()
        ]
        out.append(
            f"<p>{_e(rep.get('split', '?'))} split, {_e(rep.get('weights', '?'))} weights: {rep.get('n_id')} ID and "
            f"{rep.get('n_ood')} OOD images; higher score = more in-distribution, ID is the positive class.</p>"
        )
        out.append(_table(["score", "AUROC", "AUPR-In", "AUPR-Out", "FPR@95TPR"], body))
        if "ood_rejection_rate" in rep:
            out.append(f"<p>OOD rejected by the sink (argmax = sink): {_pct(rep['ood_rejection_rate'], 2)}.</p>")
        try:
            out.append(_ood_curves(run, rep))
        except Exception as err:  # the summary table above stays; curves need the model and the index
            out.append(f'<p class="note">ROC curves and histograms not drawn: {_e(err)}</p>')
    return "".join(out)


def _run_section(run: Path, root: Path, index: DatasetIndex | None) -> str:
    from stillroom.evaluate.plots import training_curves

    label = _label(run, root)
    metrics = read_json(run / "metrics.json")
    meta = Run(run).meta
    out = [f'<h2 id="run-{_slug(label)}">Run {_e(label)}</h2>']
    out.append(
        f'<p class="meta">{_e(meta.get("arch"))}, {meta.get("num_classes")} outputs, loss {_e(meta.get("loss"))}, '
        f"seed {_e(_seed(run))}; best epoch {metrics.get('best_epoch')} of {metrics.get('epochs')}; "
        f"<code>{_e(run)}</code></p>"
    )
    cfg_text = (run / "config.yaml").read_text(encoding="utf-8") if (run / "config.yaml").is_file() else ""
    if cfg_text:
        out.append(f"<details><summary>resolved config</summary><pre>{_e(cfg_text)}</pre></details>")
    state = Run(run).state()
    if state.get("history"):
        out.append("<h4>Training curves</h4>" + _img(training_curves(state["history"], title=label), "training curves"))
    cfg = Run(run).config
    test_split = cfg.data.test_split if cfg is not None else "test"
    splits = metrics.get("splits", {})
    rep = splits.get(test_split, {}).get("best") or next(iter(splits.get(test_split, {}).values()), None)
    if rep is not None:
        out.append(f"<h4>Per-class F1 ({_e(test_split)}, best weights)</h4>" + _f1_extremes(rep, index))
        out.append("<h4>Confused pairs</h4>" + _confused_pairs(rep, index))
        out.append(f"<h4>Reliability ({_e(test_split)} split)</h4>")
        for w, r in splits.get(test_split, {}).items():
            section = _reliability(run, test_split, w, r)
            out.append(section if w == "best" else f"<details><summary>{_e(w)} weights</summary>{section}</details>")
    cal = _read_json_or(run / CALIBRATION_FILE, {})
    if cal.get("weights"):
        rows = [
            [
                _e(w),
                f"{e['temperature']:.4f}",
                _e(e.get("method")),
                _e(e.get("fit_split", "?")),
                e.get("n_val"),
                _num(e.get("val_nll_before")),
                _num(e.get("val_nll_after")),
            ]
            for w, e in cal["weights"].items()
        ]
        out.append("<p>Stored temperatures (<code>calibration.json</code>, used by evaluation and serving):</p>")
        out.append(_table(["weights", "T", "method", "fitted on", "n", "val NLL before", "val NLL after"], rows))
    out.append(_ood_section(run, metrics))
    return "".join(out)


# --- the report -------------------------------------------------------------------------------------------------


def write_html_report(run_or_sweep_dir: str | Path, out_path: str | Path) -> Path:
    """Write the self-contained HTML report of a run, a directory of runs or a sweep; return ``out_path``."""
    root = Path(run_or_sweep_dir)
    kind, runs = find_runs(root)
    out_path = Path(out_path)
    indexes: dict[str, DatasetIndex | None] = {}
    for run in runs:
        path = Run(run).meta.get("index")
        if path not in indexes:
            try:
                indexes[path] = load_index(path)
            except StillroomError:
                indexes[path] = None  # moved or deleted: the report goes on without images from it
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Stillroom report: {_e(root.name)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>Stillroom report: {_e(root.resolve().name)}</h1>",
        f'<p class="meta">{_e(kind)} <code>{_e(root)}</code>, {len(runs)} run(s); generated {now} by stillroom '
        f"{_e(__version__)}.</p>",
    ]
    tradeoff = read_tradeoff(root) if kind == "runs" else None
    nav = [("tradeoff", TITLE)] if tradeoff is not None else []
    nav += [("sweep", "Sweep summary")] if kind == "sweep" else []
    nav += [("results", "Results"), ("data", "Data")]
    nav += [(f"run-{_slug(_label(r, root))}", _label(r, root)) for r in runs]
    items = "".join(f'<li><a href="#{anchor}">{_e(text)}</a></li>' for anchor, text in nav)
    if tradeoff is not None:
        parts.append(_tradeoff_section(tradeoff))  # first: the report opens with the trade-off
    parts.append(f"<nav><b>Contents</b><ul>{items}</ul></nav>")
    if kind == "sweep":
        parts.append(_sweep_section(root))
    parts.append('<h2 id="results">Results</h2>' + _results_table(runs, root))
    parts.append('<h2 id="data">Data</h2>')
    for path, index in indexes.items():
        parts.append(_data_section(index) if index is not None else f'<p class="note">index {_e(path)} not found</p>')
    for run in runs:
        index = indexes.get(Run(run).meta.get("index"))
        parts.append(_run_section(run, root, index))
    parts.append("</main></body></html>")
    atomic_write_text(out_path, "\n".join(parts) + "\n")
    return out_path
