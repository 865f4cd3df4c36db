"""The demo's data step: the sprite index, and the training index that adds the species drawn in other styles.

Split from ``pipeline.demo`` to keep it under the module length rule: ``demo_dataset`` builds the training index,
``held_out_style`` picks the style the trade-off scores as unseen (none when training holds every style).
"""

from __future__ import annotations

import numbers
import time
from pathlib import Path
from typing import Any

from stillroom._io import StillroomError
from stillroom._progress import console
from stillroom.data.index import DatasetIndex, load_index

__all__ = ["STYLE_SETS", "check_train_styles", "demo_dataset", "held_out_style", "style_set"]

#: the demo's other drawing styles of the served species: the official artwork (``data.style_artwork``, one drawing
#: per species) and the box icons (``data.style_icons``, gen 7 and gen 8 icons, female and right-facing forms)
STYLE_SETS = ("artwork", "icons")


def check_train_styles(styles: Any) -> tuple[tuple[str, int], ...]:
    """``styles`` ([(style, copies)]) as the budget's ``train_styles``, or a ``StillroomError`` naming the bad entry: a
    style not in ``STYLE_SETS``, copies not a whole number >= 1, a style given twice. ``run_demo`` and
    ``demo_dataset`` check before any data is built, so a typo costs nothing (an unknown name used to be refused
    only after the sprite index was built, and a style given twice was trained twice)."""
    checked: list[tuple[str, int]] = []
    for entry in styles:
        try:
            style, copies = entry
        except (TypeError, ValueError):
            raise StillroomError(f"demo: train style {entry!r}: expected (style, copies)") from None
        if style not in STYLE_SETS:
            raise StillroomError(f"demo: unknown train style {style!r}; choose among {', '.join(STYLE_SETS)}")
        if isinstance(copies, bool) or not isinstance(copies, numbers.Integral) or copies < 1:
            raise StillroomError(f"demo: train style {style!r}: copies must be a whole number >= 1, got {copies!r}")
        if style in dict(checked):
            raise StillroomError(f"demo: train style {style!r} given twice; give each style once with its copies")
        checked.append((style, int(copies)))
    return tuple(checked)


def demo_dataset(out: Path, budget: dict[str, Any], tarball: Path | None) -> tuple[DatasetIndex, DatasetIndex, float]:
    """(the training index, the sprites index it extends, seconds). The training index is the sprites index plus,
    for each ``(style, repeat)`` of ``budget["train_styles"]`` in order, that style's drawings of the species as
    labelled train rows, ``repeat`` copies each (``STYLE_SETS``; ``data.transfer.add_style_rows``). A style whose
    package cannot be had is skipped (said on the console); with none left, the sprites index itself."""
    from stillroom.data.species_names import add_species_names
    from stillroom.data.sprites import build_sprites

    styles = check_train_styles(budget.get("train_styles") or ())  # before any data is built
    lo, hi = budget["species"]
    data_dir = out / "data" / f"sprites{budget['size']}_{lo}-{hi}"
    t0 = time.perf_counter()
    sprites = None
    if (data_dir / "index.json").is_file():
        try:
            sprites = load_index(data_dir)
            console.print(f"[dim]reusing dataset {data_dir}[/]")
        except StillroomError:
            pass  # incomplete or stale: rebuild below
    if sprites is None:
        build_sprites(data_dir, size=budget["size"], species=(lo, hi), tarball=tarball, split="blocks")
        # species names for the report and the service (display only); offline (--tarball) they come from the cache
        added = add_species_names(data_dir, offline=tarball is not None)
        if not added["added"]:
            console.print(f"[yellow]species names skipped[/]: {added['skipped']}", highlight=False)
        sprites = load_index(data_dir)
    train = sprites
    for style, repeat in styles:
        drawings, why = style_set(style, out, sprites, tarball is not None)
        if drawings is None:
            console.print(f"[yellow]train style {style} skipped[/]: {why}", highlight=False)
            continue
        train = _with_style(train, drawings, train.root.with_name(f"{train.root.name}_{style}_r{repeat}"), repeat)
    return train, sprites, time.perf_counter() - t0


def style_set(style: str, out: Path, sprites: DatasetIndex, offline: bool) -> tuple[DatasetIndex | None, str]:
    """The demo's set of ``style`` (one of ``STYLE_SETS``) for ``sprites``: reused from ``out/data/style_<style>_*``
    or built there; ``(None, why)`` when its package cannot be had (offline and not cached, registry unreachable)."""
    from stillroom.data.style_artwork import style_artwork_or_none
    from stillroom.data.style_icons import style_icons_or_none

    or_none = {"artwork": style_artwork_or_none, "icons": style_icons_or_none}[style]
    return or_none(out / "data" / f"style_{style}_{sprites.root.name}", sprites, offline)


def held_out_style(
    out: Path, train: DatasetIndex, sprites: DatasetIndex, offline: bool
) -> tuple[DatasetIndex | None, str]:
    """The style the trade-off scores as "another artist": the first of the box icons, then the artwork, that
    ``train`` does not hold (by content hash); ``(None, why)`` when ``train`` holds both (the demo's default: no
    style is left unseen) or the package cannot be had."""
    from stillroom.data.transfer import extra_train_sources

    trained = {e.get("content_hash") for e in extra_train_sources(train.recipe)}
    why = (
        "the box icons and the official artwork are both in training (the budget's train_styles), so no style is "
        'left unseen; what a held-out style gets: BENCHMARKS "Every style of the served species in training"'
    )
    for name in ("icons", "artwork"):
        style, why_not = style_set(name, out, sprites, offline)
        if style is None:
            why = why_not
        elif style.content_hash not in trained:
            return style, ""
    return None, why


def _with_style(base: DatasetIndex, drawings: DatasetIndex, out: Path, repeat: int) -> DatasetIndex:
    """``base`` + ``drawings`` x ``repeat`` as labelled train rows at ``out``: reused when ``out`` holds exactly that
    (``base``'s rows first, then this source as its last added style at this repeat), rebuilt otherwise."""
    from stillroom.data.transfer import add_style_rows, extra_train_sources

    try:
        mixed = load_index(out)
        n, before = len(base), extra_train_sources(base.recipe)
        got = extra_train_sources(mixed.recipe)
        same_base = list(mixed.sha256[:n]) == list(base.sha256) and mixed.paths[:n] == base.paths
        last = got[-1] if len(got) == len(before) + 1 else {}
        if same_base and last.get("content_hash") == drawings.content_hash and last.get("repeat") == repeat:
            console.print(f"[dim]reusing dataset {out}[/]")
            return mixed
    except StillroomError:
        pass  # absent or incomplete
    from stillroom.data.builder import rmtree
    from stillroom.data.index import SPLITS

    rmtree(out)  # a stale mix (other base rows, drawings or repeat): rebuilt from ``base``
    mixed = add_style_rows(base.root, drawings.root, out, SPLITS, repeat)
    console.print(f"train rows: {len(base.split_indices('train'))} + {len(drawings)} drawings x {repeat} ({out.name})")
    return mixed
