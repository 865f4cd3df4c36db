"""Merge an ID index and an OOD set into one open-set training index with a sink class (seed 000 §2.5; REFERENCE 1.2).

The merged dataset lists every ID row first, unchanged (same relative path, label, split and group), then every OOD
row with label ``K`` (= number of ID classes) and label name ``"ood"``; classes = ID classes + ``["ood"]``. Image
files are hard-linked when both directories share a file system, copied otherwise; OOD files live under ``ood/``.

The recipe is the ID recipe (size, channels, **mean and std**: teachers trained on the ID index must see exactly the
inputs they were trained on, and a student's normalization must not shift with the OOD share) plus
``sink_class: K`` and ``ood_source`` (the OOD index's hashes and recipe). Both recipes must agree on size, channels,
padding and ``outline`` (the canonical outline rendering, issue 16): merging a canonically rendered side with a plain
one would bring back the rendering gap the option removes. An extra column ``source`` says ``id`` or
``ood`` for every row; the OOD rows keep their own groups (emoji names) and splits.

``ood_train_fraction`` caps the OOD share of the *train* split: whole OOD groups (emoji names) are dropped from
train, in a seeded random order, until OOD rows are at most that fraction of the train rows; val and test keep all
their OOD rows, so evaluation does not change. Seed 000 §2.5 trained with 1,957 OOD masks among ~55,000 samples
(~3.6%); the full emoji set is ~37% of the train rows at species 1-151, and with the seed's g = 7.8 on that share
the sink swallowed ID images (``benchmarks/openset_151.sh``). The dropped groups are recorded in ``index.json``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from stillroom._io import StillroomError
from stillroom.data.builder import check_out_dir, install_build, new_build_dir, rmtree
from stillroom.data.index import DatasetIndex, IndexRow, load_index, write_index
from stillroom.data.outline import outline_from_recipe

__all__ = ["SINK_NAME", "OOD_PREFIX", "merge_with_sink"]

SINK_NAME = "ood"
OOD_PREFIX = "ood/"


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def _rows(index: DatasetIndex) -> list[IndexRow]:
    return [
        IndexRow(p, int(lab), name, str(s), g, h, {c: index.extra[c][i] for c in index.extra})
        for i, (p, lab, name, s, g, h) in enumerate(
            zip(index.paths, index.labels, index.label_names, index.splits, index.groups, index.sha256, strict=True)
        )
    ]


def _capped_train_groups(rows: list[IndexRow], n_id_train: int, fraction: float, seed: int) -> set[str]:
    """OOD train groups to drop so that OOD train rows / all train rows <= ``fraction`` (module docstring)."""
    by_group: dict[str, int] = {}
    for r in rows:
        if r.split == "train":
            by_group[r.group] = by_group.get(r.group, 0) + 1
    allowed = int(fraction * n_id_train / (1 - fraction)) if fraction < 1 else sum(by_group.values())
    kept, dropped = 0, set()
    for i in np.random.default_rng(seed).permutation(len(by_group)):
        group = sorted(by_group)[i]
        if kept + by_group[group] <= allowed:
            kept += by_group[group]
        else:
            dropped.add(group)
    return dropped


def merge_with_sink(
    id_index: DatasetIndex | str | Path,
    ood_index: DatasetIndex | str | Path,
    out_dir: str | Path,
    ood_train_fraction: float | None = None,
    seed: int = 0,
) -> DatasetIndex:
    """Write the merged ID + OOD dataset to ``out_dir`` (replaced as a whole when it is a dataset) and return it.

    ``ood_train_fraction`` in (0, 1]: cap on the OOD share of the train split (module docstring), seeded by ``seed``.

    Raises ``StillroomError`` when the two recipes disagree on size, channels or padding, when the ID index already
    has a sink or an ``"ood"`` class, or when the OOD index has more than one class.
    """
    id_index = id_index if isinstance(id_index, DatasetIndex) else load_index(id_index)
    ood_index = ood_index if isinstance(ood_index, DatasetIndex) else load_index(ood_index)
    out_dir = Path(out_dir)
    rid, rood = id_index.recipe, ood_index.recipe
    for key in ("size", "channels", "padding"):
        if key == "padding" and (key not in rid or key not in rood):
            continue  # a drawn or imported set has no padding step; size and channels always count
        if rid.get(key) != rood.get(key):
            raise StillroomError(
                f"{ood_index.root}: recipe {key}={rood.get(key)!r} differs from the ID index's {rid.get(key)!r}"
                f" ({id_index.root}); rebuild the OOD set to match"
            )
    if outline_from_recipe(rid) != outline_from_recipe(rood):  # issue 16: one rendering for both sides
        raise StillroomError(
            f"{ood_index.root}: outline {rood.get('outline', 'none')!r} differs from the ID index's "
            f"{rid.get('outline', 'none')!r} ({id_index.root}); rebuild the OOD set with the ID index's --outline"
        )
    if "sink_class" in rid or SINK_NAME in id_index.classes:
        raise StillroomError(f"{id_index.root}: already has an OOD sink class; merge into the plain ID index")
    if ood_index.num_classes != 1:
        raise StillroomError(f"{ood_index.root}: an OOD set has one class, this one has {ood_index.num_classes}")
    if out_dir.resolve() in (id_index.root.resolve(), ood_index.root.resolve()):
        raise StillroomError(f"{out_dir}: the merged index must go to a new directory, not over an input")
    check_out_dir(out_dir)

    if ood_train_fraction is not None and not 0 < ood_train_fraction <= 1:
        raise StillroomError(f"ood_train_fraction must be in (0, 1], got {ood_train_fraction!r}")
    k = id_index.num_classes
    id_rows = [
        IndexRow(r.path, r.label, r.label_name, r.split, r.group, r.sha256, {**r.extra, "source": "id"})
        for r in _rows(id_index)
    ]
    ood_rows = [
        IndexRow(OOD_PREFIX + r.path, k, SINK_NAME, r.split, r.group, r.sha256, {**r.extra, "source": "ood"})
        for r in _rows(ood_index)
    ]
    ood_sources = list(ood_index.paths)
    dropped: set[str] = set()
    if ood_train_fraction is not None:
        n_id_train = sum(r.split == "train" for r in id_rows)
        dropped = _capped_train_groups(ood_rows, n_id_train, ood_train_fraction, seed)
        keep = [not (r.split == "train" and r.group in dropped) for r in ood_rows]
        ood_rows = [r for r, ok in zip(ood_rows, keep, strict=True) if ok]
        ood_sources = [p for p, ok in zip(ood_sources, keep, strict=True) if ok]
    clash = set(id_index.paths) & {r.path for r in ood_rows}
    if clash:
        raise StillroomError(f"{id_index.root}: ID paths already use the {OOD_PREFIX!r} prefix ({sorted(clash)[0]})")
    recipe: dict[str, Any] = {
        **rid,
        "sink_class": k,
        "ood_source": {
            "root": str(ood_index.root),
            "index_hash": ood_index.index_hash,
            "content_hash": ood_index.content_hash,
            "recipe": rood,
        },
    }
    extra_meta = {
        "merge": {
            "id": {"root": str(id_index.root), "index_hash": id_index.index_hash, "rows": len(id_index)},
            "ood": {"root": str(ood_index.root), "index_hash": ood_index.index_hash, "rows": len(ood_index)},
            "ood_train_fraction": ood_train_fraction,
            "seed": seed,
            "ood_rows_kept": len(ood_rows),
            "ood_train_groups_dropped": sorted(dropped),
        },
        "id_meta": {key: id_index.meta[key] for key in ("leakage_probe", "split_info") if key in id_index.meta},
        # display names of the ID classes travel with them (data.species_names); "ood" reads as OOD
        **{key: id_index.meta[key] for key in ("display_names", "display_names_source") if key in id_index.meta},
        "ood_meta": {
            key: ood_index.meta[key]
            for key in ("audit", "dedup", "split_info", "shortcut_probe")
            if key in ood_index.meta
        },
    }

    tmp = new_build_dir(out_dir)
    try:
        for r in id_rows:
            _link_or_copy(id_index.root / r.path, tmp / r.path)
        for src, r in zip(ood_sources, ood_rows, strict=True):
            _link_or_copy(ood_index.root / src, tmp / r.path)
        write_index(tmp, [*id_rows, *ood_rows], [*id_index.classes, SINK_NAME], recipe, extra_meta)
        install_build(tmp, out_dir)
    except BaseException:
        rmtree(tmp)
        raise
    return load_index(out_dir)
