"""Issue 14 item 1: does a second drawing style of *some* species help recognize the other species in that style?

Builds a training index = the ID index (every row, unchanged) + the style set's rows of one split (the box icons of
the odd national ids, ``val``, by default) as extra ``train`` rows, each repeated ``--repeat`` times (a hard link per
copy, ``<path>_r<k>.png``) so that the other style is a visible share of the train split. The ID recipe (mean, std)
is kept and the added source is recorded under ``recipe.extra_train`` (the style set's hashes). The other split of
the style set (``test``, even ids) holds species never seen in that style: score runs trained on this index there
(``benchmarks/style_augment.sh`` with ``INDEX=OUT``), against runs on the plain ID index.

    python benchmarks/style_half_mix.py --id-index artifacts/demo/data/sprites64_1-151 \\
        --style artifacts/demo/data/style_icons_sprites64_1-151 --out artifacts/s29/data/mix_val_r8 --repeat 8

The same question at scale (issue 14 item 1): a teacher of species 1-649 trained with the box icons of the 498
species *outside* the student's 151 (both splits, ``--exclude-classes-of`` the 151-species index), scored on the
icons of the 151 (all unseen in that style):

    python benchmarks/style_half_mix.py --id-index artifacts/s39/data/sprites64_1-649 \\
        --style artifacts/s39/data/style_icons_1-649 --split val --split test \\
        --exclude-classes-of artifacts/demo/data/sprites64_1-151 --out artifacts/s39/data/mix_other498_r4 --repeat 4
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

from stillroom._io import StillroomError
from stillroom.data.builder import link_or_copy
from stillroom.data.index import DatasetIndex, IndexRow, load_index, write_index


def build_half_mix(id_index: str | Path, style: str | Path, out: str | Path, split: str | Sequence[str] = "val",
                   repeat: int = 8, exclude_classes_of: str | Path | None = None) -> DatasetIndex:  # fmt: skip
    """The ID index plus ``style``'s rows of ``split`` (one or several) as ``repeat`` x extra train rows, written to
    ``out``; rows of the classes of ``exclude_classes_of`` (an index) are left out, so that index's species stay
    unseen in the style."""
    ids, sty, out = load_index(id_index), load_index(style), Path(out)
    splits = (split,) if isinstance(split, str) else tuple(split)
    excluded = set(load_index(exclude_classes_of).classes) if exclude_classes_of is not None else set()
    if ids.classes != sty.classes:
        raise StillroomError(f"{sty.root}: classes differ from {ids.root}'s; build the style set for that index")
    if repeat < 1:
        raise StillroomError(f"--repeat must be >= 1, got {repeat}")
    added = [r for r in sty.rows() if r.split in splits and r.label_name not in excluded]
    if not added:
        raise StillroomError(f"{sty.root}: no rows in split(s) {splits!r} outside the excluded classes")
    if out.exists():
        shutil.rmtree(out)
    rows = []
    for r in ids.rows():
        link_or_copy(ids.root / r.path, out / r.path)
        rows.append(r)
    for r in added:
        for k in range(repeat):
            rel = f"extra/{Path(r.path).with_suffix('')}_r{k}.png"
            link_or_copy(sty.root / r.path, out / rel)
            rows.append(IndexRow(rel, r.label, r.label_name, "train", f"extra/{r.group}", r.sha256))
    source = {"index": str(sty.root), "index_hash": sty.index_hash, "content_hash": sty.content_hash}
    extra = {**source, "split": splits[0] if len(splits) == 1 else list(splits), "repeat": repeat, "rows": len(added)}
    if excluded:
        extra["excluded_classes"] = len(excluded)
    recipe = {**ids.recipe, "extra_train": extra}
    return write_index(out, rows, ids.classes, recipe, {k: v for k, v in ids.meta.items() if k == "display_names"})


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--id-index", required=True)
    ap.add_argument("--style", required=True, help="a style set of the ID index (stillroom data build style-icons)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", action="append", help="the style set's split(s) added to train (default: val)")
    ap.add_argument("--exclude-classes-of", help="an index whose classes' style rows are left out")
    ap.add_argument("--repeat", type=int, default=8)
    args = ap.parse_args(argv)
    ix = build_half_mix(args.id_index, args.style, args.out, args.split or "val", args.repeat, args.exclude_classes_of)
    counts = ix.meta["counts"]["per_split"]
    print(f"{ix.root}: {len(ix)} rows ({counts}); added {ix.recipe['extra_train']['rows']} x {args.repeat}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
