"""Issue 14 item 1: do shapes *between* two drawing styles of the same species teach a third style?

Every measured gain on a held-out drawing style came from drawings of the served species in another style (BENCHMARKS
"Each drawing style of the served species, left out in turn"). This script makes more of those drawings from the
ones we have: for a species, a training sprite frame and its drawing in the added style (the rows an index holds
under ``extra/``, ``stillroom data add-style``) are blended through their signed distance fields,
``phi = (1 - lam) * sdf(frame) + lam * sdf(drawing)``, and the blend's inside (``phi > 0``) is a new binary
silhouette of that species: smooth outlines, proportions between the two styles (a shape interpolation, not a pixel
mixup: the label is the species of both sides, so it is never mixed). The drawing is flipped left-right first when
that overlaps the frame better (intersection over union), so a pose is not blended with its own mirror image.

Only ``train`` rows take part on both sides, and the result is the input index, every row unchanged, plus
``--per-drawing`` morphs per distinct added drawing as ``train`` rows under ``morph/`` (group ``morph/<group>``,
recorded in ``recipe.morph``). Score teachers trained on it on a style in neither side (the official artwork when
the icons are the added style):

    python benchmarks/style_morph.py --index artifacts/s58/art_held/data/sprites64_1-151_icons_r3 \\
        --out artifacts/s61/data/icons_r3_morph3 --per-drawing 3
"""

from __future__ import annotations

import argparse
import io
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from stillroom._io import StillroomError, sha256_bytes
from stillroom.data.builder import check_out_dir, install_build, link_or_copy, new_build_dir, rmtree
from stillroom.data.index import DatasetIndex, IndexRow, load_index, write_index
from stillroom.data.ood_chimera import mask_iou, signed_distance


def _mask(path: Path) -> np.ndarray:
    """The silhouette of a binary index image (dark shape on a light ground)."""
    return np.asarray(Image.open(path).convert("L")) < 128


def morph(frame: np.ndarray, drawing: np.ndarray, lam: float) -> np.ndarray:
    """The silhouette ``lam`` of the way from ``frame`` to ``drawing`` (flipped when that overlaps better)."""
    flipped = drawing[:, ::-1]
    d = flipped if mask_iou(frame, flipped) > mask_iou(frame, drawing) else drawing
    # the blend of the `blend` chimeras (data/ood_chimera.py), there between two species for near-OOD, here of one
    return (1.0 - lam) * signed_distance(frame) + lam * signed_distance(d) < 0


def build_morphs(index: str | Path, out: str | Path, per_drawing: int = 3, lam: tuple[float, float] = (0.25, 0.75),
                 seed: int = 0) -> DatasetIndex:  # fmt: skip
    ix, out = load_index(index), Path(out)
    if per_drawing < 1:
        raise StillroomError(f"--per-drawing must be >= 1, got {per_drawing}")
    frames: dict[int, list[IndexRow]] = defaultdict(list)
    drawings: dict[str, IndexRow] = {}
    for r in ix.rows():
        if r.split != "train":
            continue
        if r.path.startswith("extra"):
            drawings.setdefault(r.sha256, r)  # the copies of one drawing count once
        else:
            frames[r.label].append(r)
    if not drawings:
        raise StillroomError(f"{ix.root}: no added-style train rows (extra/...); add a style first")
    check_out_dir(out)
    tmp = new_build_dir(out)  # written aside and moved in whole: an interrupted build leaves no half index at out
    try:
        rows = list(ix.rows())
        for r in rows:
            link_or_copy(ix.root / r.path, tmp / r.path)
        rows += _morph_rows(ix, tmp, frames, drawings, per_drawing, lam, seed)
        record = {"per_drawing": per_drawing, "lam": list(lam), "seed": seed, "drawings": len(drawings),
                  "rows": len(drawings) * per_drawing, "from": str(ix.root), "index_hash": ix.index_hash}  # fmt: skip
        meta = {k: v for k, v in ix.meta.items() if k == "display_names"}
        write_index(tmp, rows, ix.classes, {**ix.recipe, "morph": record}, meta)
        install_build(tmp, out)
    except BaseException:
        rmtree(tmp)
        raise
    return load_index(out)


def _morph_rows(ix: DatasetIndex, out: Path, frames: dict[int, list[IndexRow]], drawings: dict[str, IndexRow],
                per_drawing: int, lam: tuple[float, float], seed: int) -> list[IndexRow]:  # fmt: skip
    """``per_drawing`` blends of each added drawing with random train frames of its species, written under ``out``."""
    rows, rng = [], np.random.default_rng(seed)
    for k, d in enumerate(sorted(drawings.values(), key=lambda r: r.path)):
        if not frames[d.label]:
            raise StillroomError(f"{ix.root}: class {d.label_name} has no train frame to blend with {d.path}")
        drawing = _mask(ix.root / d.path)
        for j in range(per_drawing):
            f = frames[d.label][int(rng.integers(len(frames[d.label])))]
            m = morph(_mask(ix.root / f.path), drawing, float(rng.uniform(*lam)))
            buf = io.BytesIO()
            Image.fromarray(np.where(m, 0, 255).astype(np.uint8)).save(buf, format="PNG")
            rel = f"morph/{d.label_name}/{k:04d}_{j}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(buf.getvalue())
            rows.append(IndexRow(rel, d.label, d.label_name, "train", f"morph/{d.group}", sha256_bytes(buf.getvalue())))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", required=True, help="an index with an added style (extra/ train rows)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-drawing", type=int, default=3)
    ap.add_argument("--lam", type=float, nargs=2, default=(0.25, 0.75), metavar=("LO", "HI"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    ix = build_morphs(args.index, args.out, args.per_drawing, tuple(args.lam), args.seed)
    print(f"{ix.root}: {len(ix)} rows; morphs {ix.recipe['morph']['rows']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
