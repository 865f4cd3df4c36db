"""Other species as an OOD source: the sprites of species the ID index does not have (issue 16 items 1-3).

Every other source (emoji, game-icons, procedural creatures, chimeras) differs from the ID sprites in how it was
drawn, or was made here. The sprite package holds 649 species; a student of species 1-151 has never seen 152-649,
which were drawn by the same artists, for the same games, and animated the same way. Rendered by the ID builder's
own call (``sprites.build_sprites`` with the ID recipe's size and outline), they cannot be told from ID images by
rendering at all (the shortcut probe is recorded): an open-set score has to reject them by shape, and a sink trained
on them has no rendering cue to learn. They are near-OOD in the strictest sense: often a relative of an ID species.

Selection: from each species' deduplicated frames (the sprite builder's own dedup, front frames first), at most
``per_species`` frames evenly spaced over the list, so every species counts about the same. Audit (``index.json``
``audit``), each frame under its first failing reason: ``too_close`` (IoU with some ID image above ``iou_max``:
the same silhouette as an ID species, e.g. a form sharing its shape) and ``duplicate`` (PNG sha256 of an ID image
or an earlier frame).

Splits are by species, never by frame: the species are permuted by ``seed`` and cut ``fractions`` (default
60/20/20), so a val or test frame is of a species no train frame shows (``group`` = the species), and leaving a
whole source out stays honest. The ID index must be a sprite index of ``species_NNN`` classes; the range must not
overlap its species.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from stillroom._io import StillroomError, sha256_bytes
from stillroom.data.index import DatasetIndex
from stillroom.data.ood_write import OODImage, check_ood_build, png_bytes, write_ood_source
from stillroom.data.outline import outline_from_recipe
from stillroom.data.species_names import species_number

__all__ = ["DEFAULT_PER_SPECIES", "build_ood_species"]

DEFAULT_PER_SPECIES = 8
DEFAULT_IOU_MAX = 0.85
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


def _spread(n: int, k: int) -> list[int]:
    """``k`` positions evenly spaced over ``range(n)`` (all of them when ``n <= k``)."""
    return list(range(n)) if n <= k else sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


def build_ood_species(
    out_dir: str | Path,
    id_index: DatasetIndex | str | Path,
    species: tuple[int, int] = (152, 649),
    per_species: int = DEFAULT_PER_SPECIES,
    seed: int = 0,
    iou_max: float = DEFAULT_IOU_MAX,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    probe: bool = True,
    tarball: str | Path | None = None,
    package: tuple[str, str] | None = None,
    workers: int | None = None,
) -> DatasetIndex:
    """Build the other-species OOD set into ``out_dir`` (one class ``"ood"``) with ``id_index``'s rendering.

    Args:
        out_dir: absent, empty, or a previous Stillroom dataset (replaced as a whole).
        id_index: the plain ID sprite index (``species_NNN`` classes, one channel, no sink).
        species: inclusive range of national ids to take; none may be an ID species.
        per_species: frames kept per species at most, evenly spaced over its deduplicated frames.
        seed: the permutation of species into splits (and the probe's classifiers).
        iou_max: drop a frame whose IoU with some ID image is above this.
        fractions: train / val / test shares of the species.
        probe: store the ID-vs-OOD shortcut probe in ``index.json``.
        tarball: local sprite package (else the npm cache, as ``data build sprites``).
        package: (name@version, integrity) pin of the sprite package (default: the ID builder's own).
        workers: decoding processes (default: as ``data build sprites``).
    """
    from stillroom.data.dataset import load_images
    from stillroom.data.sprites import build_sprites

    t0 = time.perf_counter()
    out_dir, id_index = check_ood_build(out_dir, id_index, per_species, iou_max, "other species")
    ids = [species_number(c) for c in id_index.classes]
    if any(i is None for i in ids):
        raise StillroomError(f"{id_index.root}: classes are not species_NNN; other species need a sprite index")
    lo, hi = species
    if not 1 <= lo <= hi:
        raise StillroomError(f"species range {lo}-{hi}: expected 1 <= first <= last")
    overlap = sorted(set(range(lo, hi + 1)) & set(ids))  # type: ignore[arg-type]
    if overlap:
        raise StillroomError(f"species {lo}-{hi} overlap the ID index's species (e.g. {overlap[:3]})")
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0) or fractions[0] <= 0:
        raise StillroomError(f"fractions must be three shares summing to 1 with train > 0, got {fractions}")
    rid = id_index.recipe
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stillroom-ood-species-", dir=out_dir.parent) as tmp:
        pin = {} if package is None else {"package": package}
        with warnings.catch_warnings():  # the sprite build's own split is not used here (splits are by species)
            warnings.filterwarnings("ignore", message="split ")
            src = build_sprites(Path(tmp) / "sprites", size=int(rid["size"]), species=species, tarball=tarball,
                                progress=False, outline=outline_from_recipe(rid), workers=workers, **pin)  # fmt: skip
        src_images = np.asarray(load_images(src))[:, 0]  # (M, S, S) uint8, as rendered
        rows_by_species: dict[str, list[int]] = {}
        for i, cls in enumerate(src.label_names):
            rows_by_species.setdefault(cls, []).append(i)  # index order: front frames first, frame order
    id_masks = np.asarray(load_images(id_index))[:, 0] < 128
    flat = id_masks.reshape(len(id_masks), -1).astype(np.float32)
    id_area = flat.sum(axis=1)
    names = sorted(rows_by_species)
    order = np.random.default_rng(seed).permutation(len(names))
    cuts = np.cumsum([round(f * len(names)) for f in fractions[:2]])
    split_of = {names[j]: ("train", "val", "test")[int(np.searchsorted(cuts, r, side="right"))]
                for r, j in enumerate(order)}  # fmt: skip
    seen = set(id_index.sha256)
    counts = {"species": len(names), "frames": int(len(src_images)), "candidates": 0, "dropped_too_close": 0,
              "dropped_duplicate": 0, "kept": 0}  # fmt: skip
    per_split = {s: {"species": 0, "candidates": 0, "kept": 0} for s in ("train", "val", "test")}
    items: list[OODImage] = []
    for cls in names:
        split, sc = split_of[cls], per_split[split_of[cls]]
        sc["species"] += 1
        rows = rows_by_species[cls]
        for k in _spread(len(rows), per_species):
            image = src_images[rows[k]]
            counts["candidates"] += 1
            sc["candidates"] += 1
            obj = (image < 128).reshape(-1).astype(np.float32)
            inter = flat @ obj
            iou = float(np.max(inter / np.maximum(id_area + obj.sum() - inter, 1)))
            data = png_bytes(image)
            if iou > iou_max:
                counts["dropped_too_close"] += 1
                continue
            if sha256_bytes(data) in seen:
                counts["dropped_duplicate"] += 1
                continue
            seen.add(sha256_bytes(data))
            number = species_number(cls)
            extra = {"species": cls, "frame": src.paths[rows[k]], "iou_max_id": f"{iou:.4f}"}
            items.append(OODImage(f"images/{number:03d}/{len(items):05d}.png", split, cls, image, data, extra))
            counts["kept"] += 1
            sc["kept"] += 1
    if not any(it.split == "train" for it in items):
        raise StillroomError(f"species {lo}-{hi}: no train frame survived the audit; nothing to build")
    params = {"species": [lo, hi], "per_species": int(per_species), "iou_max": float(iou_max), "seed": int(seed),
              "fractions": [float(f) for f in fractions], "sprites": src.recipe.get("source")}  # fmt: skip
    audit = {**counts, "iou_max": float(iou_max), "per_split": per_split}
    split_note = ("species", "whole species per split, permuted by the seed: val/test species are never in train")
    return write_ood_source(out_dir, items, id_index, "other_species", params, split_note, audit, seed, probe, t0)
