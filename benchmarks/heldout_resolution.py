"""Issue 14 items 1-2: how much can a held-out-style split of 76-115 drawings tell two recipes apart?

``stillroom compare`` resamples *seeds*: its interval says what another seed would do on the same drawings. When two
splits of one style (odd national ids val, even test) disagree about a recipe, the other uncertainty is the
drawings: another set of species of the same style. This script pairs two arms' runs by seed (``_s<seed>``) on one
evaluation index and bootstraps the mean difference B - A three ways: over seeds (drawings fixed, what ``compare``
does), over drawings (each drawing's difference averaged over the seeds), and over both at once (seeds and drawings
resampled independently, the crossed bootstrap: the interval for "another seed on other drawings of this style").
Each for top-1 (right or wrong per drawing) and the reciprocal rank of the true class (graded per drawing; its mean
is ``mrr`` of ``benchmarks/superset_teacher.py``), in points; ``z`` is the difference over the crossed interval's
half-width / 1.96, the signal to noise the two scores give the same arms; ``n for +-2`` extrapolates how many
drawings would bring the drawings-only interval to +-2 points (its half-width scales as 1/sqrt(n)).

    python benchmarks/heldout_resolution.py --index artifacts/demo/data/style_artwork_sprites64_1-151 \\
        --split val --split test --a artifacts/s53/sl_artwork_lum_s{0,1,2,3,4} \\
        --b artifacts/s53/sl_artwork_def4_s{0,1,2,3,4}
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling scoring module
from superset_teacher import per_drawing, subset_probs  # noqa: E402

from stillroom._io import StillroomError  # noqa: E402


def _seed(run: str) -> int:
    m = re.search(r"_s(\d+)$", Path(run).name)
    if m is None:
        raise StillroomError(f"{run}: the run directory's name must end in _s<seed> to pair by seed")
    return int(m.group(1))


def crossed_intervals(d: np.ndarray, B: int = 10_000, seed: int = 0) -> dict[str, tuple[float, float]]:  # noqa: N803
    """95% percentile intervals of ``d.mean()`` for a (seeds, drawings) matrix of paired differences, resampling
    ``seeds``, ``drawings`` or ``both`` (independent multinomial counts on each axis)."""
    n_s, n_i = d.shape
    rng = np.random.default_rng(seed)
    cs = rng.multinomial(n_s, np.full(n_s, 1 / n_s), size=B).astype(float)  # (B, seeds) counts
    ci = rng.multinomial(n_i, np.full(n_i, 1 / n_i), size=B).astype(float)  # (B, drawings)
    ones_s, ones_i = np.ones_like(cs), np.ones_like(ci)
    out = {}
    for name, ws, wi in (("seeds", cs, ones_i), ("drawings", ones_s, ci), ("both", cs, ci)):
        stats = np.einsum("bs,si,bi->b", ws, d, wi) / (n_s * n_i)
        lo, hi = np.percentile(stats, [2.5, 97.5])
        out[name] = (float(lo), float(hi))
    return out


def paired_matrices(
    a_runs: Sequence[str], b_runs: Sequence[str], index: str, splits: Sequence[str]
) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {score: (seeds, drawings) matrix of b - a}}`` for ``top1`` and ``rr``, rows in the order of A's
    seeds; each run is loaded and scored once for all the splits."""
    sa, sb = [_seed(r) for r in a_runs], {_seed(r): r for r in b_runs}
    if sorted(sa) != sorted(sb) or len(set(sa)) != len(sa):
        raise StillroomError(f"A's seeds {sorted(sa)} and B's seeds {sorted(sb)} must be the same distinct seeds")
    out: dict[str, dict[str, list]] = {k: {"top1": [], "rr": []} for k in splits}
    for s, run_a in zip(sa, a_runs, strict=True):
        pa, pb = subset_probs(run_a, index, splits), subset_probs(sb[s], index, splits)
        for k in splits:
            da, db = per_drawing(pa[k]["probs"], pa[k]["labels"]), per_drawing(pb[k]["probs"], pb[k]["labels"])
            for score in out[k]:
                out[k][score].append(db[score] - da[score])
    return {k: {score: np.asarray(v, dtype=float) for score, v in m.items()} for k, m in out.items()}


def rows(d: dict[str, np.ndarray], split: str, B: int = 10_000) -> list[str]:  # noqa: N803
    """One markdown row per score of the split: difference, the three intervals, z, drawings for +-2 points."""
    lines = []
    for score, m in d.items():
        n_s, n_i = m.shape
        iv = crossed_intervals(100 * m, B=B)
        diff = 100 * float(m.mean())
        half = (iv["both"][1] - iv["both"][0]) / 2
        z = diff / (half / 1.96) if half > 0 else float("nan")
        hw_draw = (iv["drawings"][1] - iv["drawings"][0]) / 2
        n_needed = int(np.ceil(n_i * (hw_draw / 2) ** 2)) if hw_draw > 0 else 0
        cells = " | ".join(f"[{lo:+.2f}, {hi:+.2f}]" for lo, hi in (iv["seeds"], iv["drawings"], iv["both"]))
        lines.append(f"| {split} | {score} | {n_i} | {n_s} | {diff:+.2f} | {cells} | {z:+.2f} | {n_needed} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", required=True, help="evaluation index; its classes must be among each run's")
    ap.add_argument("--split", action="append", default=None)
    ap.add_argument("--a", nargs="+", required=True, help="baseline runs, names ending in _s<seed>")
    ap.add_argument("--b", nargs="+", required=True, help="compared runs, the same seeds")
    ap.add_argument("--resamples", type=int, default=10_000)
    args = ap.parse_args(argv)
    print(f"B = {Path(args.b[0]).name.rsplit('_s', 1)[0]}, A = {Path(args.a[0]).name.rsplit('_s', 1)[0]}, "
          f"points, bootstrap 95% intervals of B - A resampling:")  # fmt: skip
    print("| split | score | drawings | seeds | B - A | seeds only | drawings only | seeds x drawings | z "
          "| n for +-2 |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    splits = args.split or ["val", "test"]
    for split, d in paired_matrices(args.a, args.b, args.index, splits).items():
        for line in rows(d, split, B=args.resamples):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
