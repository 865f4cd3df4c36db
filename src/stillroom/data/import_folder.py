"""Import a user's own images into the canonical dataset index (REFERENCE 1.1 preprocessing, 1.3 index format).

Layouts:

- ImageFolder: ``src/<class_name>/**/*.{png,jpg,jpeg,gif,bmp,webp}``; when the top-level folders are exactly
  ``train``, ``val`` and ``test``, ``src/<split>/<class_name>/...`` with the splits taken as given.
- CSV: ``csv_path`` with columns ``path,label_name`` and optional ``split``, ``group``; paths relative to ``src``.

Kinds: ``silhouette`` (alpha or black-on-white mask -> ``preprocess_image``, 1 channel, REFERENCE 1.1),
``grayscale`` / ``rgb`` (EXIF-rotated, transparency flattened onto white, shorter side resized to ``size`` then
centre-cropped), or ``auto`` (decided on a sample of the images; the choice and its reason go into the recipe).
Animated GIFs contribute their first frame.

Groups: the source path relative to ``src`` without its extension (``cat/0001``), or the CSV ``group``. The bare
file stem would make ``cat/0001`` and ``dog/0001`` one group that "straddles" splits; the folder prefix keeps
groups unique, like the sprites' ``025/front``. Without given splits, groups are split per class at random
(stratified, seeded), so one group never straddles splits.

Bad files (zero bytes, not an image, truncated, smaller than ``MIN_IMAGE_SIDE`` or over ``MAX_IMAGE_PIXELS``, fully
transparent, empty silhouette) are skipped and listed with the reason in ``out_dir/rejects.json`` (counts in
``index.json`` under ``import``); with ``strict=True`` the first bad file is an error naming it and nothing is
written. Unusual modes are converted, not rejected: 16-bit grayscale is scaled to 8 bits, CMYK goes through PIL's
RGB conversion, palette images without transparency are read as ordinary (black-on-white for silhouettes) images.
The dataset is built in a temporary directory beside ``out_dir`` and renamed into place at the end, so a crash
never leaves a half-written dataset; the leakage probe (:mod:`stillroom.data.leakage`) and a contact sheet are part
of the build.

Finding the files is :mod:`stillroom.data.import_sources`, converting them :mod:`stillroom.data.import_convert`;
this module decides the splits and writes the dataset.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stillroom._io import StillroomError, atomic_write_json, replace_dir
from stillroom.data.builder import is_dataset_dir
from stillroom.data.contact_sheet import make_contact_sheet
from stillroom.data.import_convert import SILHOUETTE_PADDING, choose_kind, convert_files
from stillroom.data.import_sources import IMAGE_EXTENSIONS, Source, scan_csv, scan_folder
from stillroom.data.index import DatasetIndex, IndexRow, load_index, update_index_meta, write_index
from stillroom.data.leakage import leakage_probe
from stillroom.data.stats import channel_stats

__all__ = ["import_folder", "IMAGE_EXTENSIONS", "KINDS"]

log = logging.getLogger(__name__)

KINDS = ("auto", "silhouette", "grayscale", "rgb")


# --- splits and folder names -----------------------------------------------------------------------------------------


def _check_fractions(split_fractions: Sequence[float]) -> tuple[float, float, float]:
    try:
        fr = tuple(float(f) for f in split_fractions)
    except (TypeError, ValueError):
        raise StillroomError(f"split_fractions must be three numbers, got {split_fractions!r}") from None
    if len(fr) != 3 or any(not (f >= 0) for f in fr) or abs(sum(fr) - 1) > 1e-6 or fr[0] <= 0:
        raise StillroomError(
            f"split_fractions must be three non-negative numbers (train, val, test) summing to 1 with train > 0,"
            f" got {split_fractions!r}"
        )
    return fr  # type: ignore[return-value]


def _split_counts(g: int, fr: tuple[float, float, float]) -> tuple[int, int, int]:
    """Groups per split for a class with ``g`` groups; >= 1 in every split with a positive fraction when g >= 3."""
    if g == 1:
        return 1, 0, 0
    if g == 2:
        # Too few to cover three splits: keep one to learn from, one to report on.
        return (1, 0, 1) if fr[2] > 0 else (1, 1, 0) if fr[1] > 0 else (2, 0, 0)
    n_val = max(1, round(fr[1] * g)) if fr[1] > 0 else 0
    n_test = max(1, round(fr[2] * g)) if fr[2] > 0 else 0
    while g - n_val - n_test < 1:  # rounding up small fractions must not starve train
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        else:
            n_test -= 1
    return g - n_val - n_test, n_val, n_test


def _assign_splits(kept: Sequence[Source], fr: tuple[float, float, float], seed: int) -> list[str]:
    """Stratified random split over groups: each group goes whole to one split, counted in its first row's class."""
    primary: dict[str, str] = {}
    for s in kept:
        primary.setdefault(s.group, s.label_name)
    by_class: dict[str, list[str]] = {}
    for group, label in primary.items():
        by_class.setdefault(label, []).append(group)
    split_of: dict[str, str] = {}
    for label, groups in by_class.items():
        # A per-class generator keyed by the class name: adding a class does not reshuffle the others.
        rng = np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])
        order = [groups[i] for i in rng.permutation(len(groups))]
        n_train, n_val, _ = _split_counts(len(order), fr)
        for k, group in enumerate(order):
            split_of[group] = "train" if k < n_train else "val" if k < n_train + n_val else "test"
    return [split_of[s.group] for s in kept]


def _safe_dirnames(classes: Sequence[str]) -> list[str]:
    """Folder name per class: the name itself where that is a safe path part, else a sanitized, unique variant."""
    out, taken = [], set()
    for label, name in enumerate(classes):
        d = re.sub(r"[^\w.+-]", "_", name).lstrip(".") or f"class_{label}"
        if d.lower() in taken:  # case-insensitive file systems would merge "Cat" and "cat"
            d = f"{d}_{label}"
        taken.add(d.lower())
        out.append(d)
    return out


# --- output directory ------------------------------------------------------------------------------------------------


def _check_out_dir(out_dir: Path, src: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise StillroomError(f"{out_dir}: exists and is not a directory; refusing to overwrite")
        if any(out_dir.iterdir()) and not is_dataset_dir(out_dir):
            raise StillroomError(
                f"{out_dir}: directory is not empty and is not a stillroom dataset; refusing to overwrite it"
            )
    s, o = src.resolve(), out_dir.resolve()
    if s == o or s.is_relative_to(o) or o.is_relative_to(s):
        raise StillroomError(f"{out_dir}: output must lie outside the source folder {src} (and not contain it)")


def _duplicates(rows: Sequence[IndexRow]) -> dict[str, int]:
    """Identical output images: within a split they only reweight, across splits they are plain leakage."""
    splits_of: dict[str, set[str]] = {}
    for r in rows:
        splits_of.setdefault(r.sha256, set()).add(r.split)
    return {
        "duplicate_images": len(rows) - len(splits_of),
        "duplicates_across_splits": sum(len(v) > 1 for v in splits_of.values()),
    }


def _read_images(paths: Sequence[Path]) -> Iterator[np.ndarray]:
    for p in paths:
        with Image.open(p) as img:
            yield np.asarray(img)


# --- entry point -----------------------------------------------------------------------------------------------------


def import_folder(
    src: Path,
    out_dir: Path,
    kind: str = "auto",
    size: int = 64,
    csv_path: Path | None = None,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    workers: int | None = None,
    strict: bool = False,
) -> DatasetIndex:
    """Build a stillroom dataset in ``out_dir`` from an ImageFolder tree or a CSV under ``src``.

    Args:
        src: folder holding the images (the CSV's paths are relative to it).
        out_dir: dataset directory to create; an existing stillroom dataset there is replaced, anything else that
            is not empty is refused.
        kind: "auto", "silhouette", "grayscale" or "rgb" (see module docstring).
        size: output side S; images are S x S PNGs, 1 channel (silhouette, grayscale) or 3 (rgb).
        csv_path: use the CSV layout (columns path,label_name[,split][,group]) instead of folders.
        split_fractions: (train, val, test) fractions for the seeded stratified group split, used only when the
            layout gives no splits.
        seed: seed of that split.
        workers: decoding processes (default: up to 2, the cores of the reference machine).
        strict: a bad file is a ``StillroomError`` naming it (nothing is written) instead of a line in rejects.json.

    Returns the loaded index of ``out_dir``. Classes are sorted by name -> labels 0..K-1; ``index.json`` holds the
    recipe (kind, kind_reason, source, size, channels, mean/std over train, augment, padding for silhouettes), the
    import summary (rejected/ignored counts) and the leakage probe; ``rejects.json`` and ``contact_sheet.png`` sit
    beside it.
    """
    src, out_dir = Path(src), Path(out_dir)
    if not src.is_dir():
        raise StillroomError(f"{src}: source folder not found")
    if kind not in KINDS:
        raise StillroomError(f"kind {kind!r} not one of {', '.join(KINDS)}")
    if int(size) != size or size < 1:
        raise StillroomError(f"size must be a positive integer, got {size!r}")
    fr = _check_fractions(split_fractions)
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    _check_out_dir(out_dir, src)

    ignored: list[dict] = []
    if csv_path is not None:
        sources, layout = scan_csv(src, Path(csv_path)), "csv"
    else:
        sources, layout = scan_folder(src, ignored)
    if not sources:
        raise StillroomError(f"{src}: no image files found ({', '.join(IMAGE_EXTENSIONS)}) in the {layout} layout")

    if kind == "auto":
        kind, kind_reason = choose_kind(sources, workers)
    else:
        kind_reason = "requested"
    log.info("import-folder %s: %d files, kind %s (%s)", src, len(sources), kind, kind_reason)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its 0700 mode would survive the final rename; a plain mkdir honours the umask.
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        staging = tmp / "staging"
        staging.mkdir()
        items = [(s.path, s.rel, staging / f"{i}.png") for i, s in enumerate(sources)]
        results = convert_files(items, kind, size, workers)
        rejected = [
            {"path": s.rel, "reason": reason}
            for s, (_, reason) in zip(sources, results, strict=True)
            if reason is not None
        ]
        if strict and rejected:
            first = next(s for s, (_, r) in zip(sources, results, strict=True) if r is not None)
            raise StillroomError(
                f"{first.path}: {rejected[0]['reason']} (--strict: stopped at the first bad file;"
                f" {len(rejected)} of {len(sources)} files are bad, without --strict they are skipped and listed in"
                " rejects.json)"
            )
        kept_idx = [i for i, (sha, _) in enumerate(results) if sha is not None]
        if not kept_idx:
            examples = "; ".join(f"{r['path']}: {r['reason']}" for r in rejected[:3])
            raise StillroomError(f"{src}: no usable images ({len(rejected)} rejected, e.g. {examples})")
        kept = [sources[i] for i in kept_idx]
        all_classes = sorted({s.label_name for s in sources})
        classes = sorted({s.label_name for s in kept})
        if classes != all_classes:
            empty = [c for c in all_classes if c not in classes]
            why = [f"{s.rel}: {r}" for s, (_, r) in zip(sources, results, strict=True) if s.label_name in empty]
            raise StillroomError(
                f"{src}: class(es) {', '.join(empty[:5])} have no usable images left ("
                + "; ".join(why[:3])
                + (f"; {len(why) - 3} more" if len(why) > 3 else "")
                + ")"
            )
        given = all(s.split is not None for s in kept)
        splits = [s.split for s in kept] if given else _assign_splits(kept, fr, seed)
        if "train" not in splits:
            raise StillroomError(f"{src}: no usable training images; the train split is empty")

        label_of = {c: i for i, c in enumerate(classes)}
        dirnames = _safe_dirnames(classes)
        counters = [0] * len(classes)
        rows: list[IndexRow] = []
        for i, s, split in zip(kept_idx, kept, splits, strict=True):
            label = label_of[s.label_name]
            rel = f"images/{dirnames[label]}/{counters[label]:05d}.png"
            counters[label] += 1
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(items[i][2], tmp / rel)
            rows.append(IndexRow(rel, label, s.label_name, split, s.group, results[i][0], {"source": s.rel}))
        staging.rmdir()

        mean, std = channel_stats(_read_images([tmp / r.path for r in rows if r.split == "train"]))
        recipe: dict[str, Any] = {
            "kind": kind,
            "kind_reason": kind_reason,
            "source": f"import-folder:{src.resolve()}",
            "size": int(size),
            "channels": 3 if kind == "rgb" else 1,
            "mean": mean,
            "std": std,
            "augment": "silhouette" if kind == "silhouette" else "rgb",
        }
        if kind == "silhouette":
            recipe["padding"] = SILHOUETTE_PADDING
        summary = {
            "layout": layout,
            "split": "given" if given else "stratified-random-by-group",
            **({} if given else {"split_fractions": list(fr), "seed": int(seed)}),
            "files": len(sources),
            "imported": len(rows),
            "rejected": len(rejected),
            "ignored": len(ignored),
            **_duplicates(rows),
        }
        atomic_write_json(
            tmp / "rejects.json", {"source": str(src.resolve()), "rejected": rejected, "ignored": ignored}
        )
        index = write_index(tmp, rows, classes, recipe, extra_meta={"import": summary})
        update_index_meta(tmp, leakage_probe=leakage_probe(index))
        make_contact_sheet(index, tmp / "contact_sheet.png")
        replace_dir(tmp, out_dir)  # an old dataset is moved aside first and deleted only afterwards
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if rejected:
        # The CLI reports this to the user; a library caller finds it in index.meta["import"].
        log.info("import-folder %s: %d file(s) rejected, listed in %s", src, len(rejected), out_dir / "rejects.json")
    return load_index(out_dir)
