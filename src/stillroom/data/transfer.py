"""Add a KD transfer set to an index: images without a class, learned from through the teachers' targets only.

Hinton et al. (2015, §2) distil on a "transfer set" that need not be labelled: the teacher's soft targets carry
the knowledge. Here that set is a way to show a student images of a drawing style it will meet in use (issue 14
item 1): drawings of *other* things in that style, labelled by nobody, scored by the teacher. The result is the ID
index, every row unchanged (same path, label, split, group), plus ``source``'s rows as ``transfer`` rows (label
-1, the source's class name kept in ``label_name`` for audit, group ``transfer/<group>``), each ``repeat`` times
(``transfer/<path>_r<k>.png``, hard links where the file system allows) so the set can be a visible share of an
epoch. ``stillroom softlabels export`` scores them like any row; ``stillroom train`` adds them to the train rows of a
distilled run (``data.transfer``), with the KD term only.

Refused, because they would leak: a source image identical (sha256) to a val or test image of the ID index, and
rows of a class of ``exclude_classes_of`` (e.g. the ID index itself: "other species only"). The recipe is the ID
recipe (mean and std kept: the teachers were trained on it), both must agree on kind, size, channels, padding and
outline rendering, and ``recipe.transfer`` records the source's hashes and what was taken.

``add_style_rows`` is the labelled sibling (issue 14 item 1): drawings *of the served classes* in another style
(``stillroom data build style-artwork``) join as ordinary ``train`` rows with their class (matched by name), under
``extra/<path>_r<k>``, group ``extra/<group>``, recorded in ``recipe.extra_train``; every model trained on the result
learns from them with its own loss. Same refusals and recipe checks. Scored then on a style neither side has seen.
Styles add up: run it again on its own output to add a third style (``extra2/...``, and so on); ``recipe.extra_train``
then lists every source in order (``extra_train_sources``). Each added style of the same classes helped a style the
model had not seen, in both directions measured (BENCHMARKS "Each drawing style of the served species, left out in
turn"); the same source twice is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stillroom._io import StillroomError
from stillroom.data.builder import check_out_dir, install_build, link_or_copy, new_build_dir, rmtree
from stillroom.data.index import SPLITS, TRANSFER, DatasetIndex, IndexRow, load_index, update_index_meta, write_index

__all__ = ["EXTRA_TRAIN", "add_style_rows", "add_transfer_rows", "extra_train_sources"]

#: recipe key and path prefix of labelled rows from another source (``add_style_rows``)
EXTRA_TRAIN = "extra_train"

#: recipe keys that must agree: the pixels of both sides come out of the same pipeline
_SAME = ("size", "channels", "kind", "padding", "outline")


def extra_train_sources(recipe: dict) -> list[dict]:
    """Every labelled source added to an index (``add_style_rows``), in the order added: ``recipe.extra_train`` is
    one source's record (a dict) or, after a second addition, the list of them."""
    extra = recipe.get(EXTRA_TRAIN)
    if not extra:
        return []
    return [extra] if isinstance(extra, dict) else list(extra)


def add_transfer_rows(
    id_index: str | Path,
    source: str | Path,
    out: str | Path,
    splits: Sequence[str] = SPLITS,
    repeat: int = 1,
    exclude_classes_of: str | Path | None = None,
) -> DatasetIndex:
    """Write ``out`` = ``id_index`` + the rows of ``source`` in ``splits`` as ``repeat`` x transfer rows."""
    return _add_rows(id_index, source, out, splits, repeat, exclude_classes_of, labelled=False)


def add_style_rows(
    id_index: str | Path,
    source: str | Path,
    out: str | Path,
    splits: Sequence[str] = SPLITS,
    repeat: int = 1,
    exclude_classes_of: str | Path | None = None,
) -> DatasetIndex:
    """Write ``out`` = ``id_index`` + the rows of ``source`` in ``splits`` as ``repeat`` x labelled train rows;
    every taken row's class must be one of ``id_index``'s (by name)."""
    return _add_rows(id_index, source, out, splits, repeat, exclude_classes_of, labelled=True)


def _add_rows(
    id_index: str | Path,
    source: str | Path,
    out: str | Path,
    splits: Sequence[str],
    repeat: int,
    exclude_classes_of: str | Path | None,
    labelled: bool,
) -> DatasetIndex:
    ids, src, out = load_index(id_index), load_index(source), Path(out)
    key = EXTRA_TRAIN if labelled else TRANSFER
    if repeat < 1:
        raise StillroomError(f"repeat must be >= 1, got {repeat}")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise StillroomError(f"{src.root}: unknown split(s) {unknown}; expected some of {', '.join(SPLITS)}")
    if not labelled and len(ids.split_indices(TRANSFER)):
        raise StillroomError(f"{ids.root}: already has transfer rows; start from an index without them")
    before = extra_train_sources(ids.recipe) if labelled else []
    if any(b.get("content_hash") == src.content_hash for b in before):
        raise StillroomError(f"{ids.root}: already holds the drawings of {src.root} (same content hash)")
    a, b = ids.recipe, src.recipe
    for k in _SAME:
        if a.get(k) != b.get(k):
            raise StillroomError(
                f"{src.root}: recipe {k!r} is {b.get(k)!r}, {ids.root} has {a.get(k)!r}: build the source "
                "through the same pipeline (e.g. `stillroom data build style-icons --id-index`)"
            )
    excluded = set(load_index(exclude_classes_of).classes) if exclude_classes_of is not None else set()
    taken = [r for r in src.rows() if r.split in splits and r.label_name not in excluded]
    if not taken:
        raise StillroomError(f"{src.root}: no rows in split(s) {list(splits)} outside the excluded classes")
    label_of = {c: i for i, c in enumerate(ids.classes)}
    strangers = sorted({r.label_name for r in taken if r.label_name not in label_of}) if labelled else []
    if strangers:
        raise StillroomError(
            f"{src.root}: class(es) {', '.join(strangers[:3])} are not classes of {ids.root}; labelled rows must be "
            "of the served classes (use `add-transfer` for images of other things)"
        )
    held_out = {h: p for h, p, s in zip(ids.sha256, ids.paths, ids.splits, strict=True) if s != "train"}
    leaks = [(r.path, held_out[r.sha256]) for r in taken if r.sha256 in held_out]
    if leaks:
        raise StillroomError(
            f"{src.root}: {len(leaks)} image(s) identical to val/test images of {ids.root}, e.g. {leaks[0][0]} = "
            f"{leaks[0][1]}; training on them would leak the evaluation"
        )
    check_out_dir(out)
    tmp = new_build_dir(out)
    # a second or third style gets its own folder: two style sets may name their files alike
    prefix = (f"extra{len(before) + 1}" if before else "extra") if labelled else TRANSFER
    try:
        rows = []
        for r in ids.rows():
            link_or_copy(ids.root / r.path, tmp / r.path)
            rows.append(r)
        for r in taken:
            for k in range(repeat):
                rel = f"{prefix}/{Path(r.path).with_suffix('')}_r{k}{Path(r.path).suffix}"
                link_or_copy(src.root / r.path, tmp / rel)
                if labelled:
                    rows.append(IndexRow(rel, label_of[r.label_name], r.label_name, "train", f"{prefix}/{r.group}",
                                         r.sha256))  # fmt: skip
                else:
                    rows.append(IndexRow(rel, -1, r.label_name, TRANSFER, f"{prefix}/{r.group}", r.sha256))
        taken_from = {
            "index": str(src.root), "index_hash": src.index_hash, "content_hash": src.content_hash,
            "splits": list(splits), "images": len(taken), "repeat": repeat, "excluded_classes": len(excluded),
        }  # fmt: skip
        if labelled and src.recipe.get("style"):
            taken_from["style"] = src.recipe["style"]
        # labelled rows: the ID data's own description stays (frames decoded, dedup); the leakage probe is measured
        # again, as train now holds the added rows too
        carried = ("display_names", "dedup") if labelled else ("display_names",)
        meta = {k: v for k, v in ids.meta.items() if k in carried}
        record = [*before, taken_from] if before else taken_from  # one source: its record, as before
        written = write_index(tmp, rows, ids.classes, {**ids.recipe, key: record}, meta)
        if labelled and "leakage_probe" in ids.meta:
            from stillroom.data.leakage import leakage_probe

            update_index_meta(tmp, leakage_probe=leakage_probe(written))
        install_build(tmp, out)
    except BaseException:
        rmtree(tmp)
        raise
    return load_index(out)
