"""Issue 14 items 1 and 4: is a teacher trained on more species a better reader of another artist's drawings?

Scores runs on an evaluation index whose classes are a subset, by name, of each run's classes (e.g. a resnet18
trained on species 1-649 against the box icons of species 1-151): top-1 and top-5 with the argmax taken over the
subset's columns only, i.e. the same 151-way decision a 151-class model makes. A run trained on exactly the
subset is scored the same way, so the rows compare. Un-augmented images, the run's own normalizer, best weights.
Leakage check: how many of each split's images (by sha256) are in the train split of the index the run was trained
on (``model.json`` "index"; "n/a" when that index is not on this machine).

    python benchmarks/superset_teacher.py --index artifacts/demo/data/style_icons_sprites64_1-151 \\
        --split val --split test artifacts/demo/runs/teacher_resnet18_s0 artifacts/s29/t649_resnet18_s0

``--ensemble`` adds a row for the mean softmax of all the runs given (the fused ensemble a student distils).
``--versus RUN ...`` then compares each of those runs (e.g. students of the ensemble) with the ensemble drawing by
drawing: how many drawings each reads right that the other misreads, and McNemar's exact two-sided p-value on those
discordant drawings (a binomial test at 1/2, scipy), the paired test a mean over 75 drawings cannot give.
``--csv PATH`` also writes one row per run (variant = the run directory's name without ``_s<seed>``, seed, run_dir,
``<split>_top1`` and ``<split>_top5`` as fractions, ``<split>_mrr`` and ``<split>_nll``) in the layout ``stillroom
compare`` reads, e.g. ``stillroom compare DIR --metric val_top1 --a A --b B`` for a paired comparison by seed.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.special import softmax
from scipy.stats import binomtest

from stillroom._io import StillroomError
from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
from stillroom.models.inference import predict_logits
from stillroom.runs import load_run


def subset_probs(run_dir: str, index_dir: str, splits: Sequence[str], weights: str = "best") -> dict[str, dict]:
    """``{split: {"probs", "labels", "in_run_train"}}``: the run's softmax over the index's classes only (columns in
    the index's class order) for each split's rows; ``in_run_train``: the split's images also in the run's own train
    split (None if that index is absent)."""
    index, run = load_index(index_dir), load_run(run_dir, weights, device="cpu")
    try:
        own = load_index(run.meta["index"])
        seen: set[str] | None = {h for h, s in zip(own.sha256, own.splits, strict=True) if s == "train"}
    except (KeyError, StillroomError):
        seen = None
    column = {c: i for i, c in enumerate(run.classes)}
    missing = [c for c in index.classes if c not in column]
    if missing:
        raise StillroomError(f"{run_dir}: classes of {index_dir} it has no output for, e.g. {missing[:3]}")
    cols = np.array([column[c] for c in index.classes])
    images, out = load_images(index), {}
    for split in splits:
        rows = index.split_indices(split)
        logits = predict_logits(run.model, run.normalizer, images, rows)[:, cols]
        leak = None if seen is None else sum(index.sha256[i] in seen for i in rows)
        out[split] = {"probs": softmax(logits.astype(np.float64), axis=1), "labels": index.labels[rows],
                      "in_run_train": leak}  # fmt: skip
    return out


def per_drawing(probs: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per row: ``top1`` and ``top5`` (1.0 or 0.0), ``rr``, the reciprocal rank of the true class (1 / (1 + the
    classes scored above it)), and ``nll``, its negative log-probability. The graded two were added because at
    top-1 a held-out-style split of 76-115 drawings moves 0.9-1.3 points a drawing; measured, they give the same
    signal to noise as top-1, the spread being between drawings (BENCHMARKS "How many drawings a held-out style
    needs")."""
    top5 = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    p_true = probs[np.arange(len(y)), y]
    return {
        "top1": (top5[:, 0] == y).astype(float),
        "top5": (top5 == y[:, None]).any(1).astype(float),
        "rr": 1.0 / (1 + (probs > p_true[:, None]).sum(1)),
        "nll": -np.log(np.clip(p_true, 1e-12, None)),
    }


def _scores(probs: np.ndarray, y: np.ndarray, leak: int | None) -> dict:
    d = per_drawing(probs, y)
    return {"n": int(len(y)), "top1": float(d["top1"].mean()), "top5": float(d["top5"].mean()),
            "mrr": float(d["rr"].mean()), "nll": float(d["nll"].mean()), "in_run_train": leak}  # fmt: skip


def subset_scores(run_dir: str, index_dir: str, splits: Sequence[str], weights: str = "best") -> dict[str, dict]:
    """``{split: {"n", "top1", "top5", "mrr", "nll", "in_run_train"}}`` of the run on the index, argmax over the
    index's classes only; ``in_run_train``: the split's images also in the run's own train split (None if that
    index is absent)."""
    got = subset_probs(run_dir, index_dir, splits, weights)
    return {k: _scores(v["probs"], v["labels"], v["in_run_train"]) for k, v in got.items()}


def ensemble_scores(runs: Sequence[str], index_dir: str, splits: Sequence[str], weights: str = "best") -> dict:
    """The runs' mean softmax (over the index's classes, as ``subset_scores`` restricts each run) scored like one
    run: the fused ensemble the KD losses distil (REFERENCE 2). ``in_run_train``: the largest count of any member."""
    per = [subset_probs(r, index_dir, splits, weights) for r in runs]
    out = {}
    for k in splits:
        leaks = [p[k]["in_run_train"] for p in per]
        leak = None if any(v is None for v in leaks) else max(leaks)
        out[k] = _scores(np.mean([p[k]["probs"] for p in per], axis=0), per[0][k]["labels"], leak)
    return out


def versus_ensemble(
    ensemble: Sequence[str], runs: Sequence[str], index_dir: str, splits: Sequence[str], weights: str = "best"
) -> list[dict]:
    """Per run and split: drawings read right by both, by the ensemble's mean softmax only, by the run only, and
    McNemar's exact p (two-sided binomial test of ``run_only`` out of the discordant drawings at 1/2; 1.0 if none)."""
    per = [subset_probs(r, index_dir, splits, weights) for r in ensemble]
    labels = {k: per[0][k]["labels"] for k in splits}
    ens_right = {k: np.mean([p[k]["probs"] for p in per], axis=0).argmax(1) == labels[k] for k in splits}
    out = []
    for run in runs:
        mine = subset_probs(run, index_dir, splits, weights)
        for k in splits:
            y, ens = labels[k], ens_right[k]
            right = mine[k]["probs"].argmax(1) == y
            e_only, r_only = int(np.sum(ens & ~right)), int(np.sum(right & ~ens))
            p = binomtest(r_only, e_only + r_only, 0.5).pvalue if e_only + r_only else 1.0
            out.append({"run": run, "split": k, "n": len(y), "both": int(np.sum(ens & right)),
                        "ensemble_only": e_only, "run_only": r_only, "p": float(p)})  # fmt: skip
    return out


def _cells(s: dict, splits: Sequence[str]) -> str:
    return " | ".join(
        f"{100 * s[k]['top1']:.2f} | {100 * s[k]['top5']:.2f} | "
        + ("n/a" if s[k]["in_run_train"] is None else f"{s[k]['in_run_train']} of {s[k]['n']}")
        for k in splits
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--index", required=True, help="evaluation index; its classes must be among each run's")
    ap.add_argument("--split", action="append", default=None)
    ap.add_argument("--weights", default="best")
    ap.add_argument("--csv", help="write per-run rows here for `stillroom compare`")
    ap.add_argument("--ensemble", action="store_true", help="add a row: the mean softmax of all the runs given")
    ap.add_argument("--versus", nargs="+", default=[], help="runs compared drawing by drawing with that ensemble")
    args = ap.parse_args(argv)
    splits = args.split or ["val", "test"]
    heads = " | ".join(f"{s} top-1 % | {s} top-5 % | {s} in run's train" for s in splits)
    print(f"| run | classes | {heads} |")
    print("|---|---:|" + "---:|---:|---:|" * len(splits))
    records = []
    for run in args.runs:
        s = subset_scores(run, args.index, splits, args.weights)
        name = Path(run).name
        seed = re.search(r"_s(\d+)$", name)
        cells = {f"{k}_{m}": f"{s[k][m]:.6f}" for k in splits for m in ("top1", "top5", "mrr", "nll")}
        records.append({"variant": re.sub(r"_s\d+$", "", name), "seed": seed.group(1) if seed else "0", "run_dir": run,
                        **cells})  # fmt: skip
        n_classes = len(load_run(run, args.weights, device="cpu").classes)
        print(f"| {run} | {n_classes} | {_cells(s, splits)} |")
    if args.ensemble and len(args.runs) > 1:
        s = ensemble_scores(args.runs, args.index, splits, args.weights)
        print(f"| ensemble of the {len(args.runs)} runs (mean softmax) | | {_cells(s, splits)} |")
    if args.versus:
        print(
            "\n| run vs the ensemble of the runs above | split | n | both right | ensemble only | run only | "
            "McNemar exact p |\n|---|---|---:|---:|---:|---:|---:|"
        )
        for r in versus_ensemble(args.runs, args.versus, args.index, splits, args.weights):
            print(
                f"| {r['run']} | {r['split']} | {r['n']} | {r['both']} | {r['ensemble_only']} | {r['run_only']} | "
                f"{r['p']:.3f} |"
            )
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
