"""CLI commands for evaluation, experiments and their reports: ``evaluate``, ``sweep``, ``compare``, ``report`` and
``calibrate``.

``register(app)`` adds them to a typer app; ``stillroom.cli`` wires them in.

- ``stillroom evaluate RUN [--split test] [--ood-split test] [--ladder]``: metrics.json (and ood_metrics.json);

- ``stillroom shift-val RUN [--weights best] [--split val]``: the domain-shift validation proxy (``evaluate.shift``:
  top-1 on rewritten outlines, resolutions and stroke widths of val images) -> RUN/shift_val.json;
- ``stillroom style-proxy RUN [--ladder-signal auto] [--split val] [--ood-index DIR]``: the same rewrites judged by the
  served ladder (``deploy.style_proxy``: rewritten ID accepted, rewritten OOD rejected, AUROC) -> RUN/style_proxy.json;
- ``stillroom sweep SWEEP.yaml [--out DIR] [--jobs N]``: variants x seeds, resumable (``stillroom.pipeline.sweep``);
- ``stillroom compare SUMMARY.csv [MORE.csv ...] --metric macro_f1 --a VARIANT --b VARIANT [--b ...]``: per-seed
  values, mean ± std, bootstrap CI, exact permutation p, Cohen's d and a verdict (``evaluate.stats``; seed 001 §5.1);
  several ``--b``: one table against the baseline (``cli.summaries``);
- ``stillroom report RUN_OR_SWEEP_DIR -o report.html``: the self-contained HTML report (``report.html``);
- ``stillroom calibrate RUN [--method nll|grid]``: fit the temperature on validation logits and store it in
  ``RUN/calibration.json``, then re-evaluate so ``metrics.json`` uses it (``evaluate.calibration``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from stillroom._io import StillroomError, atomic_write_json, atomic_write_text
from stillroom._progress import console
from stillroom.cli.summaries import (
    LOWER_IS_BETTER,
    comparison_rows,
    read_summaries,
    summary_column,
    variant_values,
)

__all__ = ["register"]


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def _print_metrics(run_dir: Path, split: str = "test", metrics_file: str = "metrics.json") -> None:
    metrics = json.loads((run_dir / metrics_file).read_text())
    table = Table(title=f"{run_dir} ({split})")
    for col in ("weights", "top1", "top5", "macro_f1", "nll"):
        table.add_column(col)
    for w, rep in metrics["splits"].get(split, {}).items():
        table.add_row(w, *(f"{rep[k]:.4f}" for k in ("top1", "top5", "macro_f1", "nll")))
    console.print(table)
    for w, info in metrics.get("weights", {}).items():
        check = info.get("bn_check") or {}
        if check.get("suspect"):
            console.print(f"[bold red]WARNING[/] {w} weights: {check['message']}", highlight=False)


def evaluate_cmd(
    run: Path = typer.Argument(..., help="run directory"),
    split: list[str] = typer.Option(["test"], "--split", help="split(s) to evaluate"),
    weights: list[str] = typer.Option(["best", "final"], "--weights", help="best and/or final"),
    index: Path | None = typer.Option(None, "--index", help="evaluate on another dataset with the same classes"),
    ood_split: str | None = typer.Option(None, "--ood-split", help="add open-set metrics on this split's OOD rows"),
    ood_index: Path | None = typer.Option(None, "--ood-index", help="OOD dataset (when the index has no sink rows)"),
    tune_odin: bool = typer.Option(True, "--tune-odin/--no-tune-odin", help="tune ODIN T, eps on the val split"),
    grid_t: list[float] = typer.Option([], "--odin-grid-T", help="ODIN temperatures to tune over (repeatable)"),
    grid_eps: list[float] = typer.Option([], "--odin-grid-eps", help="ODIN eps values to tune over (repeatable)"),
    ladder: bool | None = typer.Option(
        None, "--ladder/--no-ladder", help="fit the strictness ladder on val into RUN/ladder.json (default: use one)"
    ),
    target_accept: float = typer.Option(0.95, help="--ladder: fraction of ID validation samples to accept"),
) -> None:
    """Top-1/top-5, macro-F1, per-class F1, confusion matrix and most confused pairs -> RUN/metrics.json; with
    --ood-split also open-set metrics (-> RUN/ood_metrics.json; with --index another dataset: RUN/ood_metrics_on_<its
    name>-<hash>[_vs_<OOD index>].json) and the ladder's coverage and OOD acceptance."""
    from stillroom.data.index import load_index
    from stillroom.deploy.run_ladder import update_ladder_metrics
    from stillroom.evaluate.runner import evaluate_run, other_metrics_name, print_open_set
    from stillroom.runs import Run

    idx = load_index(index) if index else None
    metrics_file = "metrics.json"
    if idx is not None and not Run(run).trained_on(idx):
        metrics_file = other_metrics_name(idx)  # evaluate_run writes there; the run's own metrics stay untouched
        if ladder:
            raise StillroomError(f"{index}: --ladder fits on the run's own validation data; drop --index to refit")
    metrics = evaluate_run(
        run, splits=split, weights=weights, index=idx, allow_other_index=index is not None, ood_split=ood_split,
        ood_index=ood_index, tune_odin=tune_odin, odin_temperatures=grid_t or None, odin_epsilons=grid_eps or None,
    )  # fmt: skip
    ladder_splits = list(dict.fromkeys([*split, *([ood_split] if ood_split else [])]))
    section = update_ladder_metrics(
        run, ladder_splits, weights, index=idx, ood_index=ood_index, ladder=ladder, target_accept=target_accept,
        metrics_file=metrics_file,
    )  # fmt: skip
    if section is not None:
        metrics["ladder"] = section
    for s in split:
        _print_metrics(run, s, metrics_file)
    if metrics_file != "metrics.json":
        console.print(f"[green]wrote[/] {run / metrics_file} (the run's own metrics.json is unchanged)")
    print_open_set(metrics, console.print)


def shift_val_cmd(
    run: Path = typer.Argument(..., help="run directory"),
    weights: list[str] = typer.Option(["best"], "--weights", help="best and/or final"),
    split: str = typer.Option("val", "--split", help="split to rewrite (val: the proxy selects on it; never test)"),
    index: Path | None = typer.Option(None, "--index", help="another build of the run's dataset"),
) -> None:
    """Domain-shift validation proxy: top-1 on deterministic rewrites of the split's images (coarser pixel grids,
    low-resolution renderings, smoothing, thicker / thinner strokes, filled holes) and their mean ->
    RUN/shift_val.json (``{weights: report}``, see ``stillroom.evaluate.shift``)."""
    from stillroom.evaluate.shift import SHIFT_FILE, shift_report

    reports = {w: shift_report(run, split=split, weights=w, index=index) for w in weights}
    atomic_write_json(run / SHIFT_FILE, _json_safe(reports))
    for w, rep in reports.items():
        table = Table(
            title=f"{run} ({split}, {w} weights): shift-val {rep['mean']:.4f}, clean {rep['clean']['top1']:.4f}"
        )
        for col in ("rewrite", "top1", "macro_f1", "changed pixels", "in shape recipe"):
            table.add_column(col)
        table.add_row("clean", f"{rep['clean']['top1']:.4f}", f"{rep['clean']['macro_f1']:.4f}", "-", "-")
        for name, r in rep["rewrites"].items():
            flag = "yes" if r["in_shape_recipe"] else "no"
            table.add_row(name, f"{r['top1']:.4f}", f"{r['macro_f1']:.4f}", f"{r['changed_pixels']:.4f}", flag)
        table.add_row("mean (shift-val)", f"{rep['mean']:.4f}", "", "", "")
        table.add_row("mean, not in shape recipe", f"{rep['held_out_mean']:.4f}", "", "", "")
        console.print(table)
    console.print(f"wrote {run / SHIFT_FILE}")


def _pct(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _num(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _print_style_proxy(rep: dict[str, Any]) -> None:
    lad, summ = rep["ladder"], rep["summary"]
    table = Table(
        title=f"{rep['run']} ({rep['split']}, {rep['weights']} weights, input {rep['input']}): ladder signal "
        f"{lad['signal']} ({lad['source']}), OOD {rep['ood_source'] or 'none'}"
    )
    sink = any("auroc_sink" in r for r in rep["rows"].values())
    cols = ("ID acc", "top1 acc", "ID gate", "OOD rej", "AUROC", "FPR95", "sig", *(("sink",) if sink else ()))
    table.caption = (
        "%: ID accepted, top-1 among them, ID refused by the structure gate, OOD rejected; AUROC / FPR95: served order "
        "(gate and sink rejections last); AUROC of the ladder's signal alone (sig) and of 1 - p_sink (sink)"
    )
    table.add_column("rewrite", no_wrap=True)
    for col in cols:
        table.add_column(col, justify="right")
    for name, r in rep["rows"].items():
        table.add_row(
            name, _pct(r["id_accepted"]), _pct(r["id_top1_accepted"]), _pct(r["id_gate_rejected"]),
            _pct(r.get("ood_rejected")), _num(r.get("auroc_served")), _num(r.get("fpr95_served")),
            _num(r.get("auroc_signal")), *((_num(r.get("auroc_sink")),) if sink else ()),
        )  # fmt: skip
    for stat in ("min", "mean"):
        cells = [summ.get(k, {}).get(stat) for k in ("id_accepted", "id_top1_accepted")]
        table.add_row(
            f"{stat} (rewrites)", _pct(cells[0]), _pct(cells[1]), "", _pct(summ.get("ood_rejected", {}).get(stat)),
            _num(summ.get("auroc_served", {}).get(stat)), "", _num(summ.get("auroc_signal", {}).get(stat)),
            *((_num(summ.get("auroc_sink", {}).get(stat)),) if sink else ()),
        )  # fmt: skip
    console.print(table)
    for bar_name, v in summ["verdict"].items():
        met = "met" if v["worst_rewrite_met"] else "NOT met"
        console.print(
            f"{bar_name} (>= {v['bar']}, {v['metric']}): worst rewrite {met} (gap {v['gap_worst']:+.4f}); "
            f"mean {'met' if v['mean_met'] else 'NOT met'}; clean {'met' if v['clean_met'] else 'NOT met'}",
            highlight=False,
        )


def style_proxy_cmd(
    run: Path = typer.Argument(..., help="run directory"),
    split: list[str] = typer.Option(["val"], "--split", help="split(s) to rewrite (val to choose, test to report)"),
    weights: str = typer.Option("best", "--weights", help="best or final"),
    ladder_signal: str | None = typer.Option(
        None,
        "--ladder-signal",
        help="fit the ladder on clean val with this signal (maxlogit, energy, msp, sink, knn, rmd, fused, "
        "auto; not saved); default: RUN/ladder.json as served",
    ),  # fmt: skip
    ood_index: Path | None = typer.Option(None, "--ood-index", help="OOD dataset (when the index has no sink rows)"),
    index: Path | None = typer.Option(None, "--index", help="another build of the run's dataset"),
    input_mode: str = typer.Option(
        "dataset", "--input", help="dataset: the model sees the rewritten pixels; served: the service's re-rendering"
    ),
    rewrite: list[str] = typer.Option([], "--rewrite", help="only these rewrites (repeatable; default all)"),
    target_accept: float = typer.Option(0.95, help="--ladder-signal: fraction of clean ID val samples to accept"),
    ladder_style_views: int = typer.Option(
        0, "--ladder-style-views", help="--ladder-signal: fit on clean val plus this many style views of each image"
    ),
) -> None:
    """Style proxies at the served ladder (issue 16 item 5): for the clean split and each rewrite of
    ``evaluate.shift``, the share of rewritten ID images accepted at the ladder's clean operating point (and top-1
    among them), the share of rewritten OOD images rejected and the AUROC / FPR@95 of rewritten ID vs rewritten OOD,
    with min / mean over rewrites and a verdict against the bars (90% accepted, AUROC 0.95) ->
    RUN/style_proxy.json (``stillroom.deploy.style_proxy``)."""
    from stillroom.deploy.style_proxy import STYLE_PROXY_FILE, style_proxy_report, update_style_proxy_file

    reports = [
        style_proxy_report(
            run,
            split=s,
            weights=weights,
            signal=ladder_signal,
            ood_index=ood_index,
            index=index,
            names=rewrite or None,
            input_mode=input_mode,
            target_accept=target_accept,
            style_views=ladder_style_views,
        )  # fmt: skip
        for s in split
    ]
    update_style_proxy_file(run, reports)
    for rep in reports:
        _print_style_proxy(rep)
    console.print(f"wrote {run / STYLE_PROXY_FILE}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_cmd)
    app.command("shift-val")(shift_val_cmd)
    app.command("style-proxy")(style_proxy_cmd)

    @app.command("sweep")
    def sweep_cmd(
        sweep_file: Path = typer.Argument(..., help="sweep YAML: base, seeds, variants (see stillroom.pipeline.sweep)"),
        out: Path | None = typer.Option(None, "--out", help="sweep directory (default runs/sweeps/<name>)"),
        jobs: int = typer.Option(1, "--jobs", help="runs trained in parallel processes"),
        variant: list[str] = typer.Option([], "--variant", help="train only these variants (repeatable)"),
        seed: list[int] = typer.Option([], "--seed", help="train only these seeds (repeatable)"),
    ) -> None:
        """Train a grid of named variants x seeds; finished runs are skipped, interrupted ones resumed."""
        from stillroom.pipeline.sweep import load_sweep, run_sweep

        spec, _ = load_sweep(sweep_file)
        out = out or Path("runs") / "sweeps" / spec.name
        summary = run_sweep(sweep_file, out, jobs=jobs, log=console.print, variants=variant or None, seeds=seed or None)
        console.print(f"[bold green]summary:[/] {summary}")

    @app.command("compare")
    def compare_cmd(
        summaries: list[Path] = typer.Argument(
            ..., help="results_summary.csv (or the sweep directory holding it); several: their rows together"
        ),
        metric: str = typer.Option("macro_f1", "--metric", help="column, or metric name prefixed with --split"),
        a: str = typer.Option(..., "--a", help="baseline variant"),
        bs: list[str] = typer.Option(
            ..., "--b", help="variant compared against the baseline (difference = b - a); repeat for a table"
        ),
        split: str = typer.Option("test", "--split", help="split prefix when --metric is not a full column name"),
        resamples: int = typer.Option(10_000, "--resamples", help="bootstrap resamples B"),
        seed: int = typer.Option(0, "--seed", help="random seed of the bootstrap (and Monte Carlo permutations)"),
        json_out: Path | None = typer.Option(None, "--json", help="also write the full result as JSON here"),
        md_out: Path | None = typer.Option(
            None, "--md", help="also write the table (the baseline, a row per --b) as Markdown"
        ),
    ) -> None:
        """Compare variants over seeds: mean ± std, bootstrap 95% CI, permutation p, Cohen's d, verdict. Several
        ``--b``: one row each against the same baseline (paired by seed where the seeds agree)."""
        from stillroom.evaluate.stats import compare
        from stillroom.report.markdown import markdown_table

        path, rows = read_summaries(summaries)
        column = summary_column(rows, metric, split, path)
        va, sa = variant_values(rows, a, column, path)
        higher = not any(k in column for k in LOWER_IS_BETTER)
        results = []
        for b in bs:
            vb, sb = variant_values(rows, b, column, path)
            results.append(
                compare(va, vb, sa, sb, names=(a, b), metric=column, higher_is_better=higher, B=resamples, seed=seed)
            )
        header, table_rows = comparison_rows(results)
        if md_out is not None:
            atomic_write_text(md_out, markdown_table(header, table_rows))
        if len(results) > 1:
            table = Table(title=f"{column}: each variant against {a} (paired by seed where the seeds agree)")
            for col in header:
                table.add_column(col)
            for row in table_rows:
                table.add_row(*row)
            console.print(table)
            if json_out is not None:
                atomic_write_json(json_out, _json_safe(results))
            for written in (w for w in (md_out, json_out) if w is not None):
                console.print(f"wrote {written}")
            return
        res, b = results[0], bs[0]
        table = Table(title=f"{column} per seed ({'paired by seed' if res['paired'] else 'unpaired'})")
        for col in ("variant", "seeds", "values", "mean", "std (ddof=1)"):
            table.add_column(col)
        for side in ("a", "b"):
            s = res[side]
            seeds = ", ".join(str(x) for x in s["seeds"]) if s["seeds"] else "-"
            std = "-" if math.isnan(s["std"]) else f"{s['std']:.5f}"
            table.add_row(s["name"], seeds, ", ".join(f"{v:.5f}" for v in s["values"]), f"{s['mean']:.5f}", std)
        console.print(table)
        ci, perm = res["bootstrap_ci"], res["permutation"]
        console.print(
            f"mean difference ({b} - {a}): {res['mean_diff']:+.5f}; bootstrap {100 * ci['level']:.0f}% CI "
            f"[{ci['low']:.5f}, {ci['high']:.5f}] (B = {ci['B']:,}, percentile); permutation p = "
            f"{perm['p_value']:.4g} ({perm['method']}); Cohen's d = {res['cohens_d']:.3f}"
        )
        console.print(res["verdict"], highlight=False)
        if json_out is not None:
            atomic_write_json(json_out, _json_safe(res))
        for written in (w for w in (md_out, json_out) if w is not None):
            console.print(f"wrote {written}")

    @app.command("report")
    def report_cmd(
        source: Path = typer.Argument(..., help="a run, a directory with runs/ (the demo), or a sweep directory"),
        out: Path = typer.Option(Path("report.html"), "-o", "--out", help="HTML file to write"),
    ) -> None:
        """One self-contained HTML report (images inlined, no network): data, curves, metrics, calibration."""
        from stillroom.report.html import write_html_report

        path = write_html_report(source, out)
        console.print(f"[bold green]report:[/] {path} ({path.stat().st_size / 1e6:.1f} MB)")

    @app.command("calibrate")
    def calibrate_cmd(
        run: Path = typer.Argument(..., help="run directory"),
        method: str = typer.Option("nll", "--method", help="nll (bounded search of log T) | grid (seed 001 §5.2)"),
        weights: list[str] = typer.Option(["best", "final"], "--weights", help="best and/or final"),
    ) -> None:
        """Fit the temperature on validation logits, store it in RUN/calibration.json and re-evaluate with it."""
        from stillroom.evaluate.runner import evaluate_run
        from stillroom.runs import CALIBRATION_FILE, Run

        if method not in ("nll", "grid"):
            raise StillroomError(f"--method {method!r}: use nll or grid")
        config = Run(run).config
        val_test = (config.data.val_split, config.data.test_split) if config else ("val", "test")
        splits = list(dict.fromkeys(val_test))
        metrics = evaluate_run(run, splits=splits, weights=weights, temperature_method=method)
        table = Table(title=f"{run}: temperature scaling ({method}, fitted on {splits[0]})")
        for col in ("weights", "split", "T", "ECE before", "ECE after", "NLL before", "NLL after"):
            table.add_column(col)
        for split in splits:
            for w in weights:
                cal = metrics["splits"][split][w].get("calibration") or {}
                before, after = cal.get("before") or {}, cal.get("after") or {}
                t = cal.get("temperature")
                cells = [f"{m[k]:.4f}" if k in m else "-" for k in ("ece", "nll") for m in (before, after)]
                table.add_row(w, split, "-" if t is None else f"{t:.4f}", *cells)
        console.print(table)
        console.print(f"wrote {run / CALIBRATION_FILE}; on {splits[0]} the 'after' numbers are in-sample")
