"""CLI commands for teacher selection (seed 004): ``score-teachers`` and ``validate-selection``.

``register(app)`` adds both to a typer app; ``stillroom.cli`` wires them in. ``validate-selection`` takes
``--teachers A B C --students a b c`` (several values after one flag, or the flag repeated), which click options
cannot express, so those two flags are read from the extra arguments of the command.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from stillroom._io import StillroomError, atomic_write_json
from stillroom._progress import console

__all__ = ["register"]

_COLUMNS = ("tac", "ssp", "r12", "margin", "logprob_gap", "prob_gap", "ece", "nll")


def _fmt(value: Any) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _print_scores(result: dict[str, Any]) -> None:
    rank = {m: {run: i + 1 for i, run in enumerate(order)} for m, order in result["rankings"].items()}
    table = Table(title=f"teacher scores ({result['split']}, {result['weights']} weights); (#rank), 1 = expected best")
    table.add_column("teacher")
    for m in _COLUMNS:
        table.add_column(f"{m} ({'↑' if result['directions'][m] == 'higher' else '↓'})", justify="right")
    for e in sorted(result["teachers"], key=lambda e: rank["r12"][e["run"]]):  # rows in R12 order (seed 004)
        table.add_row(e["run"], *(f"{_fmt(e[m])} (#{rank[m][e['run']]})" for m in _COLUMNS))
    console.print(table)
    for e in result["teachers"]:
        if e["r12_n_excluded"]:
            console.print(
                f"[yellow]{e['run']}[/]: r12 excludes {e['r12_n_excluded']} of {e['n']} samples "
                f"({100 * e['r12_excluded_fraction']:.1f}%) whose second logit is <= 0"
            )


def _split_flags(args: list[str], flags: tuple[str, ...]) -> dict[str, list[str]]:
    """``--teachers A B --students a b`` (or repeated flags) -> {"--teachers": [A, B], "--students": [a, b]}."""
    out: dict[str, list[str]] = {f: [] for f in flags}
    current = None
    for arg in args:
        if arg in flags:
            current = arg
        elif arg.startswith("-"):
            raise StillroomError(f"unknown option {arg!r}")
        elif current is None:
            raise StillroomError(f"unexpected argument {arg!r}; give runs after --teachers / --students")
        else:
            out[current].append(arg)
    return out


def register(app: typer.Typer) -> None:
    """Add ``score-teachers`` and ``validate-selection`` to ``app``."""

    @app.command("score-teachers")
    def score_teachers_cmd(
        runs: list[Path] = typer.Argument(..., help="teacher run directories"),
        split: str = typer.Option("val", help="held-out split of each run's own index (never augmented)"),
        weights: str = typer.Option("best", help="best | final"),
        out: Path = typer.Option(Path("teacher_scores.json"), "--out", help="JSON with scores and rankings"),
    ) -> None:
        """Teacher-selection metrics (seed 004): TAC, SSP, R12, margin, log-prob gap, ECE, NLL; ranked."""
        from stillroom.distill.selection import score_teachers

        result = score_teachers(runs, split=split, weights=weights)
        atomic_write_json(out, result)
        _print_scores(result)
        console.print(f"wrote {out}")

    @app.command(
        "validate-selection",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def validate_selection_cmd(
        ctx: typer.Context,
        split: str = typer.Option("val", help="split the teachers are scored on"),
        weights: str = typer.Option("best", help="teacher weights: best | final"),
        student_split: str = typer.Option("test", help="split of the students' accuracy in metrics.json"),
        student_weights: str = typer.Option("best", help="student weights in metrics.json: best | final"),
        student_metric: str = typer.Option("top1", help="student metric in metrics.json (top1, macro_f1...)"),
        scores: Path | None = typer.Option(None, "--scores", help="reuse a score-teachers JSON"),
        out: Path = typer.Option(Path("selection_validation.json"), "--out", help="JSON with the correlations"),
    ) -> None:
        """Spearman rho of each teacher metric vs student accuracy: --teachers A B C --students a b c (pairs)."""
        from stillroom._io import read_json
        from stillroom.distill.selection import validate_selection

        runs = _split_flags(list(ctx.args), ("--teachers", "--students"))
        result = validate_selection(
            runs["--teachers"], runs["--students"], metric_for_students=student_metric, student_split=student_split,
            student_weights=student_weights, split=split, weights=weights,
            scores=read_json(scores) if scores else None,
        )  # fmt: skip
        atomic_write_json(out, result)
        table = Table(title=f"Spearman rho vs student {result['student_metric']} ({result['n_pairs']} pairs)")
        for col in ("metric", "expected", "rho", "p (scipy)", "p (exact)", "rho oriented"):
            table.add_column(col, justify="left" if col in ("metric", "expected") else "right")
        # best-predicting metric first; nan (None in JSON) last
        ordered = sorted(
            result["correlations"].items(),
            key=lambda kv: -kv[1]["rho_oriented"] if kv[1]["rho_oriented"] is not None else math.inf,
        )
        for metric, c in ordered:
            table.add_row(metric, f"{c['direction']} is better", _fmt(c["rho"]), _fmt(c["p_value"]),
                          _fmt(c["p_value_exact"]), _fmt(c["rho_oriented"]))  # fmt: skip
        console.print(table)
        console.print(f"wrote {out}")
