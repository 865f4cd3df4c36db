"""The demo's data step: the sprite index, and the training index that adds a second drawing of each species.

Split from ``pipeline.demo`` to keep it under the module length rule; ``demo_dataset`` is its only caller's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from stillroom._io import StillroomError
from stillroom._progress import console
from stillroom.data.index import DatasetIndex, load_index

__all__ = ["demo_dataset"]


def demo_dataset(out: Path, budget: dict[str, Any], tarball: Path | None) -> tuple[DatasetIndex, DatasetIndex, float]:
    """(the training index, the sprites index it extends, seconds). The training index is the sprites index plus the
    species' official artwork as labelled train rows (``second_style_repeat`` copies each; ``data.style_artwork``),
    or the sprites index itself when that is 0 or the package cannot be had (said on the console)."""
    from stillroom.data.index import SPLITS
    from stillroom.data.species_names import add_species_names
    from stillroom.data.sprites import build_sprites
    from stillroom.data.style_artwork import style_artwork_or_none
    from stillroom.data.transfer import EXTRA_TRAIN, add_style_rows

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
    repeat = int(budget.get("second_style_repeat") or 0)
    if not repeat:
        return sprites, sprites, time.perf_counter() - t0
    art, why = style_artwork_or_none(out / "data" / f"style_artwork_{data_dir.name}", sprites, tarball is not None)
    if art is None:
        console.print(f"[yellow]second style (official artwork) skipped[/]: {why}", highlight=False)
        return sprites, sprites, time.perf_counter() - t0
    mixed_dir = out / "data" / f"{data_dir.name}_artwork_r{repeat}"
    try:
        mixed = load_index(mixed_dir)
        got, n = mixed.recipe.get(EXTRA_TRAIN) or {}, len(sprites)
        got = got if isinstance(got, dict) else {}  # several styles: not the demo's own mix, rebuilt below
        same_sprites = list(mixed.sha256[:n]) == list(sprites.sha256) and mixed.paths[:n] == sprites.paths
        if same_sprites and got.get("content_hash") == art.content_hash and got.get("repeat") == repeat:
            console.print(f"[dim]reusing dataset {mixed_dir}[/]")
            return mixed, sprites, time.perf_counter() - t0
    except StillroomError:
        pass  # absent or incomplete
    from stillroom.data.builder import rmtree

    rmtree(mixed_dir)  # a stale mix (other sprites, artwork or repeat): rebuilt from the sprites index
    mixed = add_style_rows(sprites.root, art.root, mixed_dir, SPLITS, repeat)
    console.print(f"train rows: {len(sprites.split_indices('train'))} sprites + {len(art)} drawings x {repeat}")
    return mixed, sprites, time.perf_counter() - t0
