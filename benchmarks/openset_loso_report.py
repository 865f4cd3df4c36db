"""Leave-one-OOD-source-out report (issue 16 item 3), one row per held-out source, for benchmarks/openset_loso.sh.

For a K+1 student trained on a merged index whose sink train/val rows come from every OOD source but ``S`` (``merge-
sink --test-only S``), on the test split:

- ``auroc_heldout`` / ``fpr95_heldout``: sink score 1 - p_sink (higher = more ID, REFERENCE 4), ID test rows vs the
  test rows of ``S``, the source the sink never saw (``evaluate.ood.ood_metrics``); ``auroc_seen``: the same against
  the test rows of the sources the sink was trained on (those with train rows), for comparison;
- ``rewrite_to_sink``: share of ID test images whose argmax is the sink under each outline rewrite of
  ``evaluate.shift.REWRITES`` (mean and worst), and on the clean images;
- ``top1``: closed-set top-1 of the K+1 student on ID test rows (argmax over the K class columns) and of the
  K-class KD student trained at the same budget, and their difference in points;
- ``posthoc``: the same held-out AUROC for post-hoc scores (energy over the K ID columns, KNN on penultimate
  features fitted on the clean ID train rows, ASH-S; ``evaluate.feature_ood``, pytorch-ood) of the K-class KD
  student, which never saw any OOD row, and of the K+1 student itself: does the sink beat what needs no OOD data?
- ``ladder``: the same held-out AUROC and FPR@95TPR for the ladder's signals as ``stillroom export`` fits them on the
  K+1 run (``deploy.ladder``; statistics and thresholds from the clean ID val rows only, KNN bank from the ID train
  rows): ``sink`` (log-odds, ranks as the sink score), ``fused_logits`` (max logit and sink, each standardized on
  ID val: what a served int8 model or a run without an export gets) and ``fused`` (those and KNN).

Issue-16 targets, checked per row: AUROC >= 0.95, FPR@95TPR <= 0.20, rewrites to sink <= 10% (worst rewrite),
top-1 within 1 point of the KD student; ``meets_fused``: the same with the fused signal's AUROC and FPR@95TPR.

    python benchmarks/openset_loso_report.py --out artifacts/openset_loso --sources emoji chimera game-icons \
        --kd-run artifacts/openset_loso/runs/kd_s0 --seed 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from stillroom.data.dataset import load_images
from stillroom.deploy._run_knn import run_features
from stillroom.deploy.knn import KNNScorer
from stillroom.deploy.ladder import Ladder
from stillroom.evaluate.feature_ood import feature_scores
from stillroom.evaluate.ood import energy, ood_metrics
from stillroom.evaluate.shift import rewrite_images
from stillroom.models.inference import iter_batches, predict_logits
from stillroom.runs import Run

TARGETS = {"auroc": 0.95, "fpr95": 0.20, "rewrite_to_sink": 0.10, "top1_gap_points": 1.0}


def _logits(run: Run, images: np.ndarray) -> np.ndarray:
    loaded = run.load("best")
    return predict_logits(loaded.model, loaded.normalizer, images, np.arange(len(images)))


def posthoc_metrics(run_dir: Path, fit_run: Path, id_images: np.ndarray, ood_images: np.ndarray, k: int) -> dict:
    """``{score: evaluate.ood.ood_metrics}`` (AUROC with ID positive, FPR@95TPR, ...) of energy, KNN and ASH-S of
    ``run_dir``'s best weights, ID vs OOD images; KNN is fitted on the clean ID train rows of ``fit_run``'s index (the
    K-class ID index, so students compared with each other fit on the same rows)."""
    run = Run(run_dir)
    loaded = run.load("best")
    fit_index = Run(fit_run).index()
    train = fit_index.split_indices("train")
    fit_images = np.asarray(load_images(fit_index))
    images = np.concatenate([id_images, ood_images])
    rows = np.arange(len(images))
    norm = loaded.normalizer
    logits = torch.from_numpy(predict_logits(loaded.model, norm, images, rows))
    got = feature_scores(
        loaded.model,
        lambda: iter_batches(images, rows, norm, 256),
        lambda: iter_batches(fit_images, train, norm, 256),
        k,
    )
    if "skipped" in got:
        raise SystemExit(f"{run_dir}: post-hoc scores skipped: {got['skipped']}")
    scores = {"energy": energy(logits[:, :k]).numpy(), **got["scores"]}  # every score: higher = more ID
    n = len(id_images)
    return {name: ood_metrics(v[:n], v[n:]) for name, v in scores.items() if name in ("energy", "knn", "ash")}


def posthoc_auroc(run_dir: Path, fit_run: Path, id_images: np.ndarray, ood_images: np.ndarray, k: int) -> dict:
    """``{score: AUROC}`` of ``posthoc_metrics``."""
    return {name: m["auroc"] for name, m in posthoc_metrics(run_dir, fit_run, id_images, ood_images, k).items()}


def ladder_scores(run_dir: Path, id_images: np.ndarray, ood_images: np.ndarray) -> dict:
    """``{signal: (id_scores, ood_scores)}``, per image, of the ladder's sink, fused_logits and fused signals of a K+1
    run (module docstring; higher = more ID), fitted on the run's clean ID val rows (KNN bank: its ID train rows, as
    ``deploy._run_knn``)."""
    run = Run(run_dir)
    loaded, index = run.load("best"), run.index()
    k = int(index.recipe["sink_class"])
    images = np.asarray(load_images(index))
    val, train = (r[index.labels[r] < k] for r in (index.split_indices("val"), index.split_indices("train")))
    z_val, f_val = predict_logits(loaded.model, loaded.normalizer, images, val), run_features(loaded, images, val)
    knn = KNNScorer().fit(run_features(loaded, images, train))
    both = {}
    for name, x in (("id", id_images), ("ood", ood_images)):
        rows = np.arange(len(x))
        both[name] = (predict_logits(loaded.model, loaded.normalizer, x, rows), run_features(loaded, x, rows))
    out = {}
    for signal, kw in (("sink", {}), ("fused_logits", {}), ("fused", {"val_features": f_val, "knn": knn})):
        lad = Ladder(sink=True, signal="sink" if signal == "sink" else "fused").fit(z_val, **kw)
        out[signal] = tuple(lad.signals(z, features=f)["score"] for z, f in (both["id"], both["ood"]))
    return out


def ladder_metrics(run_dir: Path, id_images: np.ndarray, ood_images: np.ndarray) -> dict:
    """``{signal: ood_metrics}`` of ``ladder_scores``: ID vs OOD images."""
    return {signal: ood_metrics(*pair) for signal, pair in ladder_scores(run_dir, id_images, ood_images).items()}


def source_row(run_dir: Path, held_out: str, kd_top1: float, kd_run: Path) -> dict:
    run = Run(run_dir)
    index = run.index()
    k = int(index.recipe["sink_class"])
    test = index.split_indices("test")
    images = np.asarray(load_images(index)[test])
    labels = index.labels[test]
    source = np.array(index.extra["ood_source"])[test]
    is_id = labels < k
    logits = _logits(run, images)
    p_sink = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()[:, k]
    score = 1.0 - p_sink
    held = ~is_id & (source == held_out)
    # seen: the sources the sink was trained on (those with train rows; with HOLD_ALL every other source is held out)
    train = index.split_indices("train")
    trained = np.unique(np.array(index.extra["ood_source"])[train][index.labels[train] == k])
    seen = ~is_id & np.isin(source, trained) & (source != held_out)
    if not held.any():
        raise SystemExit(f"{run_dir}: no test rows of the held-out source {held_out!r} in {index.root}")
    m_held = ood_metrics(score[is_id], score[held])
    m_seen = ood_metrics(score[is_id], score[seen]) if seen.any() else None
    top1 = float((logits[is_id, :k].argmax(1) == labels[is_id]).mean())
    to_sink = {"clean": float((logits[is_id].argmax(1) == k).mean())}
    for name, rewritten in rewrite_images(images[is_id]).items():
        to_sink[name] = float((_logits(run, rewritten).argmax(1) == k).mean())
    rewrites = [v for n, v in to_sink.items() if n != "clean"]
    row = {
        "held_out": held_out,
        "run": str(run_dir),
        "n_id_test": int(is_id.sum()),
        "n_heldout_test": int(held.sum()),
        "auroc_heldout": m_held["auroc"],
        "fpr95_heldout": m_held["fpr_at_95_tpr"],
        "auroc_seen": m_seen["auroc"] if m_seen else None,
        "rewrite_to_sink": to_sink,
        "rewrite_to_sink_mean": float(np.mean(rewrites)),
        "rewrite_to_sink_worst": float(np.max(rewrites)),
        "top1": top1,
        "kd_top1": kd_top1,
        "top1_gap_points": 100 * (kd_top1 - top1),
        "posthoc_kd": posthoc_auroc(kd_run, kd_run, images[is_id], images[held], k),
        "posthoc_kplus1": posthoc_auroc(run_dir, kd_run, images[is_id], images[held], k),
        "ladder": ladder_metrics(run_dir, images[is_id], images[held]),
    }
    row["meets"] = {
        "auroc": row["auroc_heldout"] >= TARGETS["auroc"],
        "fpr95": row["fpr95_heldout"] <= TARGETS["fpr95"],
        "rewrite_to_sink": row["rewrite_to_sink_worst"] <= TARGETS["rewrite_to_sink"],
        "top1": row["top1_gap_points"] <= TARGETS["top1_gap_points"],
    }
    fused = row["ladder"]["fused"]
    row["meets_fused"] = {
        **row["meets"],
        "auroc": fused["auroc"] >= TARGETS["auroc"],
        "fpr95": fused["fpr_at_95_tpr"] <= TARGETS["fpr95"],
    }
    return row


def kd_top1(run_dir: Path) -> float:
    run = Run(run_dir)
    index = run.index()
    test = index.split_indices("test")
    logits = _logits(run, np.asarray(load_images(index)[test]))
    return float((logits.argmax(1) == index.labels[test]).mean())


def markdown(rows: list[dict]) -> str:
    head = (
        "| held-out source | ID test | held-out test | sink AUROC (held-out) | FPR@95TPR | AUROC (seen sources) "
        "| ID to sink, clean | ID to sink, rewrites mean / worst | top-1 K+1 | top-1 KD | gap (pts) | targets met |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    body = ""
    for r in rows:
        seen = f"{r['auroc_seen']:.4f}" if r["auroc_seen"] is not None else "-"
        met = ", ".join(k for k, ok in r["meets"].items() if ok) or "none"
        body += (
            f"| {r['held_out']} | {r['n_id_test']} | {r['n_heldout_test']} | {r['auroc_heldout']:.4f} | "
            f"{r['fpr95_heldout']:.3f} | {seen} | {r['rewrite_to_sink']['clean']:.1%} | "
            f"{r['rewrite_to_sink_mean']:.1%} / {r['rewrite_to_sink_worst']:.1%} | {r['top1']:.2%} | "
            f"{r['kd_top1']:.2%} | {r['top1_gap_points']:+.1f} | {met} |\n"
        )
    head2 = (
        "\nHeld-out AUROC of post-hoc scores (ID test vs the held-out source's test rows), beside the sink's:\n\n"
        "| held-out source | sink (K+1) | K+1 energy | K+1 KNN | K+1 ASH-S | KD energy | KD KNN | KD ASH-S |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    for r in rows:
        a, b = r["posthoc_kplus1"], r["posthoc_kd"]
        head2 += (
            f"| {r['held_out']} | {r['auroc_heldout']:.4f} | {a['energy']:.4f} | {a['knn']:.4f} | {a['ash']:.4f} | "
            f"{b['energy']:.4f} | {b['knn']:.4f} | {b['ash']:.4f} |\n"
        )
    head3 = (
        "\nThe ladder's signals on the held-out source (fitted on clean ID val; AUROC / FPR@95TPR):\n\n"
        "| held-out source | sink | fused, max logit + sink | fused, + KNN | targets met, fused |\n"
        "|---|---:|---:|---:|---|\n"
    )
    for r in rows:
        lad = r.get("ladder")
        if lad is None:  # a json written before the ladder columns existed
            continue
        cells = " | ".join(
            f"{lad[n]['auroc']:.4f} / {lad[n]['fpr_at_95_tpr']:.3f}" for n in ("sink", "fused_logits", "fused")
        )
        met = ", ".join(k for k, ok in r["meets_fused"].items() if ok) or "none"
        head3 += f"| {r['held_out']} | {cells} | {met} |\n"
    return head + body + head2 + head3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the benchmark's OUT directory")
    ap.add_argument("--sources", nargs="+", required=True)
    ap.add_argument("--kd-run", type=Path, required=True, help="K-class KD student at the same budget")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = kd_top1(args.kd_run)
    rows = [source_row(args.out / "runs" / f"loso_{s}_s{args.seed}", s, base, args.kd_run) for s in args.sources]
    (args.out / f"loso_s{args.seed}.json").write_text(json.dumps({"targets": TARGETS, "rows": rows}, indent=1))
    md = markdown(rows)
    (args.out / f"loso_s{args.seed}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
