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

Several OOD sources (issue 16 item 2: emoji, chimeras of ID species, other icon sets) go into one sink: each is
checked against the ID recipe on its own, its rows are prefixed ``ood/<name>/`` and its groups ``<name>/`` (two
sources may both have a group "cat"), every sink row says its source in the extra column ``ood_source``, and
``index.json`` lists each source with its hashes, recipe and audit (``ood_sources``). The train cap applies to the
union of the sources. ``test_only`` keeps only a source's test rows, for leave-one-source-out evaluation
(``benchmarks/openset_loso.sh``). One source keeps the original layout, so old merges rebuild to the same hashes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stillroom._io import StillroomError
from stillroom.data.builder import check_out_dir, install_build, link_or_copy, new_build_dir, rmtree
from stillroom.data.index import DatasetIndex, IndexRow, load_index, write_index
from stillroom.data.outline import outline_from_recipe

__all__ = ["SINK_NAME", "OOD_PREFIX", "merge_with_sink", "source_name"]

SINK_NAME = "ood"
OOD_PREFIX = "ood/"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a source name is one path component


def _train_group_sizes(rows: list[IndexRow]) -> dict[str, int]:
    by_group: dict[str, int] = {}
    for r in rows:
        if r.split == "train":
            by_group[r.group] = by_group.get(r.group, 0) + 1
    return by_group


def _drop_over(by_group: dict[str, int], allowed: int, rng: np.random.Generator) -> set[str]:
    """Groups to drop, visiting them in ``rng``'s order and keeping each that still fits under ``allowed`` rows."""
    kept, dropped = 0, set()
    names = sorted(by_group)
    for i in rng.permutation(len(names)):
        if kept + by_group[names[i]] <= allowed:
            kept += by_group[names[i]]
        else:
            dropped.add(names[i])
    return dropped


def _capped_train_groups(
    rows: list[IndexRow], n_id_train: int, fraction: float, seed: int, balance: bool = False
) -> set[str]:
    """OOD train groups to drop so that OOD train rows / all train rows <= ``fraction`` (module docstring).

    ``balance``: the allowed rows are shared equally among the sources with train rows (``ood_source`` column), a
    source with fewer rows than its share passing the rest on to the others (water-filling, smallest first); each
    source then drops whole groups in its own seeded order. Without it the cap draws from the union, so each source
    keeps a share proportional to its train pool.
    """
    by_group = _train_group_sizes(rows)
    allowed = int(fraction * n_id_train / (1 - fraction)) if fraction < 1 else sum(by_group.values())
    if not balance:
        return _drop_over(by_group, allowed, np.random.default_rng(seed))
    per_source: dict[str, list[IndexRow]] = {}
    for r in rows:
        if r.split == "train":
            per_source.setdefault(r.extra.get("ood_source", ""), []).append(r)
    names = sorted(per_source, key=lambda n: (len(per_source[n]), n))  # smallest pool first
    dropped: set[str] = set()
    left = allowed
    for i, name in enumerate(names):
        budget = min(len(per_source[name]), left // (len(names) - i))
        left -= budget
        dropped |= _drop_over(_train_group_sizes(per_source[name]), budget, np.random.default_rng([seed, i]))
    return dropped


def source_name(index: DatasetIndex) -> str:
    """The name a sink row's ``ood_source`` column gets for an OOD index: ``recipe["ood_kind"]`` (``chimera``, an
    icon source), ``emoji`` for an ``ood-emoji`` build (its recipe lists iconify packages and categories), else the
    directory name."""
    recipe = index.recipe
    if isinstance(recipe.get("ood_kind"), str):
        return recipe["ood_kind"]
    if "categories" in recipe and isinstance(recipe.get("source"), list):
        return "emoji"
    return index.root.resolve().name


OodSources = DatasetIndex | str | Path | Sequence[DatasetIndex | str | Path] | Mapping[str, DatasetIndex | str | Path]


def _named_sources(ood_index: OodSources) -> list[tuple[str, DatasetIndex]]:
    if isinstance(ood_index, Mapping):
        items = [(str(n), ix if isinstance(ix, DatasetIndex) else load_index(ix)) for n, ix in ood_index.items()]
    else:
        many = ood_index if isinstance(ood_index, Sequence) and not isinstance(ood_index, str) else [ood_index]
        loaded = [ix if isinstance(ix, DatasetIndex) else load_index(ix) for ix in many]
        items = [(source_name(ix), ix) for ix in loaded]
    if not items:
        raise StillroomError("merge-sink: no OOD index given")
    names = [n for n, _ in items]
    for name, ix in items:
        if not _NAME.fullmatch(name):
            raise StillroomError(f"{ix.root}: OOD source name {name!r} must match {_NAME.pattern}")
        if names.count(name) > 1:
            raise StillroomError(
                f"{ix.root}: two OOD sources are both named {name!r}; name them apart (NAME=DIR on the command line)"
            )
    return items


def merge_with_sink(
    id_index: DatasetIndex | str | Path,
    ood_index: OodSources,
    out_dir: str | Path,
    ood_train_fraction: float | None = None,
    seed: int = 0,
    test_only: Sequence[str] = (),
    balance_sources: bool = False,
) -> DatasetIndex:
    """Write the merged ID + OOD dataset to ``out_dir`` (replaced as a whole when it is a dataset) and return it.

    ``ood_index``: one OOD index (the original call: paths ``ood/<path>``, groups and recipe as before), or several
    (a sequence, names from ``source_name``, or a ``{name: index}`` mapping): paths ``ood/<name>/<path>`` and groups
    ``<name>/<group>`` so two sources never share a path or a group. Every sink row records its source in the extra
    column ``ood_source``; ``index.json`` lists every source (``ood_sources``: name, hashes, recipe, audit, rows per
    split kept).
    ``ood_train_fraction`` in (0, 1]: cap on the OOD share of the train split over all sources together (module
    docstring), seeded by ``seed``.
    ``balance_sources``: share the capped train rows equally among the sources (``_capped_train_groups``) instead of
    in proportion to their train pools.
    ``test_only``: names of sources that keep only their test rows (leave-one-source-out: the sink never trains or
    selects checkpoints on them; issue 16 item 3).

    Raises ``StillroomError`` when a source's recipe disagrees with the ID recipe on size, channels, padding or
    outline, when the ID index already has a sink or an ``"ood"`` class, when an OOD index has more than one class,
    when two sources share a name, or when ``test_only`` names an unknown source.
    """
    id_index = id_index if isinstance(id_index, DatasetIndex) else load_index(id_index)
    sources = _named_sources(ood_index)
    legacy = len(sources) == 1  # the original single-source layout, unchanged (paths, groups, recipe, hashes)
    out_dir = Path(out_dir)
    rid = id_index.recipe
    unknown = sorted(set(test_only) - {n for n, _ in sources})
    if unknown:
        raise StillroomError(
            f"test_only: {', '.join(unknown)} not among the OOD sources ({', '.join(n for n, _ in sources)})"
        )
    for name, oix in sources:
        _check_source(id_index, name, oix)
    if "sink_class" in rid or SINK_NAME in id_index.classes:
        raise StillroomError(f"{id_index.root}: already has an OOD sink class; merge into the plain ID index")
    inputs = {id_index.root.resolve(), *(oix.root.resolve() for _, oix in sources)}
    if out_dir.resolve() in inputs:
        raise StillroomError(f"{out_dir}: the merged index must go to a new directory, not over an input")
    check_out_dir(out_dir)

    if ood_train_fraction is not None and not 0 < ood_train_fraction <= 1:
        raise StillroomError(f"ood_train_fraction must be in (0, 1], got {ood_train_fraction!r}")
    k = id_index.num_classes
    id_rows = [
        IndexRow(r.path, r.label, r.label_name, r.split, r.group, r.sha256, {**r.extra, "source": "id"})
        for r in id_index.rows()
    ]
    ood_rows: list[IndexRow] = []
    ood_files: list[Path] = []
    for name, oix in sources:
        prefix, gprefix = (OOD_PREFIX, "") if legacy else (f"{OOD_PREFIX}{name}/", f"{name}/")
        for r in oix.rows():
            if name in test_only and r.split != "test":
                continue
            extra = {**r.extra, "source": "ood", "ood_source": name}
            ood_rows.append(IndexRow(prefix + r.path, k, SINK_NAME, r.split, gprefix + r.group, r.sha256, extra))
            ood_files.append(oix.root / r.path)
    dropped: set[str] = set()
    if ood_train_fraction is not None:
        n_id_train = sum(r.split == "train" for r in id_rows)
        dropped = _capped_train_groups(ood_rows, n_id_train, ood_train_fraction, seed, balance_sources)
        keep = [not (r.split == "train" and r.group in dropped) for r in ood_rows]
        ood_rows = [r for r, ok in zip(ood_rows, keep, strict=True) if ok]
        ood_files = [p for p, ok in zip(ood_files, keep, strict=True) if ok]
    clash = set(id_index.paths) & {r.path for r in ood_rows}
    if clash:
        raise StillroomError(f"{id_index.root}: ID paths already use the {OOD_PREFIX!r} prefix ({sorted(clash)[0]})")
    described = [_describe(name, oix, ood_rows, name in test_only) for name, oix in sources]
    recipe: dict[str, Any] = {**rid, "sink_class": k}
    if legacy:
        recipe["ood_source"] = {key: described[0][key] for key in ("root", "index_hash", "content_hash", "recipe")}
    else:
        recipe["ood_sources"] = [
            {key: d[key] for key in ("name", "root", "index_hash", "content_hash", "recipe", "test_only")}
            for d in described
        ]
    ood_input = [
        {"name": d["name"], "root": d["root"], "index_hash": d["index_hash"], "rows": d["rows"]} for d in described
    ]
    extra_meta = {
        "merge": {
            "id": {"root": str(id_index.root), "index_hash": id_index.index_hash, "rows": len(id_index)},
            "ood": {key: ood_input[0][key] for key in ("root", "index_hash", "rows")} if legacy else ood_input,
            "ood_train_fraction": ood_train_fraction,
            "seed": seed,
            "test_only": sorted(test_only),
            "balance_sources": bool(balance_sources),
            "ood_rows_kept": len(ood_rows),
            "ood_train_groups_dropped": sorted(dropped),
        },
        "ood_sources": described,
        "id_meta": {key: id_index.meta[key] for key in ("leakage_probe", "split_info") if key in id_index.meta},
        # display names of the ID classes travel with them (data.species_names); "ood" reads as OOD
        **{key: id_index.meta[key] for key in ("display_names", "display_names_source") if key in id_index.meta},
    }
    if legacy:
        extra_meta["ood_meta"] = described[0]["meta"]

    tmp = new_build_dir(out_dir)
    try:
        for r in id_rows:
            link_or_copy(id_index.root / r.path, tmp / r.path)
        for src, r in zip(ood_files, ood_rows, strict=True):
            link_or_copy(src, tmp / r.path)
        write_index(tmp, [*id_rows, *ood_rows], [*id_index.classes, SINK_NAME], recipe, extra_meta)
        install_build(tmp, out_dir)
    except BaseException:
        rmtree(tmp)
        raise
    return load_index(out_dir)


def _check_source(id_index: DatasetIndex, name: str, ood_index: DatasetIndex) -> None:
    """Refuse an OOD source rendered differently from the ID index, or one with more than one class."""
    rid, rood = id_index.recipe, ood_index.recipe
    for key in ("size", "channels", "padding"):
        if key == "padding" and (key not in rid or key not in rood):
            continue  # a drawn or imported set has no padding step; size and channels always count
        if rid.get(key) != rood.get(key):
            raise StillroomError(
                f"{ood_index.root} (OOD source {name!r}): recipe {key}={rood.get(key)!r} differs from the ID index's"
                f" {rid.get(key)!r} ({id_index.root}); rebuild the OOD set to match"
            )
    if outline_from_recipe(rid) != outline_from_recipe(rood):  # issue 16: one rendering for both sides
        raise StillroomError(
            f"{ood_index.root} (OOD source {name!r}): outline {rood.get('outline', 'none')!r} differs from the ID"
            f" index's {rid.get('outline', 'none')!r} ({id_index.root}); rebuild the OOD set with the ID index's"
            " --outline"
        )
    if ood_index.num_classes != 1:
        raise StillroomError(f"{ood_index.root}: an OOD set has one class, this one has {ood_index.num_classes}")


def _describe(name: str, oix: DatasetIndex, kept: list[IndexRow], test_only: bool) -> dict[str, Any]:
    """One ``ood_sources`` entry: the source's hashes, recipe, audit meta and the rows of it kept per split."""
    per_split = {s: 0 for s in ("train", "val", "test")}
    for r in kept:
        if r.extra.get("ood_source") == name:
            per_split[r.split] += 1
    return {
        "name": name,
        "root": str(oix.root),
        "index_hash": oix.index_hash,
        "content_hash": oix.content_hash,
        "recipe": oix.recipe,
        "rows": len(oix),
        "rows_kept": per_split,
        "test_only": bool(test_only),
        "meta": {key: oix.meta[key] for key in ("audit", "dedup", "split_info", "shortcut_probe") if key in oix.meta},
    }
