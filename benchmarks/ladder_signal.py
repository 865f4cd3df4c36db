"""Ladder signal on a real open-set run (issue 16 item 4): export the run (``model_features.onnx`` included) and fit
the ladder with ``signal=maxlogit``, ``auto`` (knn among the candidates) and ``knn`` on a copy of the run (the run
directory is never written), and print each candidate's val AUROC and the ladder's ID accept / OOD reject: on val
from the fit (ladder rules only) and on val and test with the structure gate first, as the service applies it
(``run_ladder_report``). ``check_eval``: the knn val AUROC recomputed with evaluation's pytorch-ood KNN
(``evaluate.feature_ood.feature_scores``, same rows, k and features), which must equal the ladder's, and the
largest per-row difference between the two scores.

    for s in 0 1 2; do OMP_NUM_THREADS=1 nice python benchmarks/ladder_signal.py \\
        artifacts/openset151/runs/os_student_kd_s$s artifacts/openset151/ood; done

A K+1 run on a merged index takes its OOD rows from the index's sink rows (the ``ood_index`` argument is then only
read by the KNN check, which ``--no-check-eval`` skips) and can weigh the sink signal:
``--signals maxlogit sink auto knn``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from stillroom.deploy.onnx_export import export_onnx
from stillroom.deploy.run_ladder import fit_run_ladder, run_ladder_report

RUN_FILES = ("model.json", "config.json", "best.safetensors", "final.safetensors", "calibration.json")
LADDERS = ("maxlogit", "auto", "knn")


def check_eval(run_dir: Path, ood_index: Path) -> dict[str, Any]:
    """Val AUROC (ID val rows vs the OOD index's val rows) of evaluation's KNN score (pytorch-ood)."""
    from stillroom.data.dataset import load_images
    from stillroom.data.index import load_index
    from stillroom.evaluate.feature_ood import feature_scores
    from stillroom.evaluate.ood import ood_metrics
    from stillroom.models.inference import iter_batches
    from stillroom.runs import Run

    run = Run(run_dir)
    loaded = run.load("best", device="cpu")
    idx, oidx = run.index(), load_index(ood_index)
    images, oimages = load_images(idx), load_images(oidx)
    k = run.layout.num_id
    val, oval = idx.split_indices("val"), oidx.split_indices("val")
    val = val[idx.labels[val] < k]
    train = idx.split_indices("train")
    train = train[idx.labels[train] < k]

    def batches():
        yield from iter_batches(images, val, loaded.normalizer, 256)
        yield from iter_batches(oimages, oval, loaded.normalizer, 256)

    res = feature_scores(
        loaded.model, batches, lambda: iter_batches(images, train, loaded.normalizer, 256), num_id_classes=k
    )
    s = res["scores"]["knn"]
    # the ladder's own scores of the same rows (its saved bank, numpy): per-row agreement, not only the AUROC
    from stillroom.deploy.ladder import Ladder
    from stillroom.deploy.run_ladder import run_features

    knn = Ladder.load(run_dir / "ladder.json").knn_
    ours = np.r_[knn.score(run_features(loaded, images, val)), knn.score(run_features(loaded, oimages, oval))]
    return {
        "auroc": ood_metrics(s[: len(val)], s[len(val) :])["auroc"],
        "max_abs_score_diff": float(np.abs(ours - s).max()),
        "n_train": len(train),
        **res["params"]["knn"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("ood_index", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/ladder_signal_runs"))
    ap.add_argument("--no-check-eval", action="store_true", help="skip the pytorch-ood KNN AUROC check")
    ap.add_argument(
        "--signals", nargs="+", default=list(LADDERS), help=f"ladders to fit (default: {' '.join(LADDERS)})"
    )
    args = ap.parse_args(argv)
    dst = args.work / args.run.name
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in RUN_FILES:
        if (args.run / name).is_file():
            shutil.copy2(args.run / name, dst / name)
    exp = export_onnx(dst, backends=False, threads=1)
    feats = exp["features"]
    out: dict[str, Any] = {
        "run": str(args.run),
        "features_export": {k: feats.get(k) for k in ("file", "feature_dim", "ok", "skipped")}
        | {"parity": {o: feats["parity"][o]["max_abs_diff"] for o in ("logits", "features")}}
        if "parity" in feats
        else feats,
    }
    for signal in args.signals:
        lad = fit_run_ladder(dst, ood_index=args.ood_index, signal=signal)
        s = lad.fit_summary_
        row = {
            "signal": lad.signal_,
            "selection": s["signal"],
            "val_logits_only": {"id_accept": s["id"]["accept"], "ood_reject": s["ood"]["reject"]},
        }
        for split in ("val", "test"):
            rep = run_ladder_report(dst, split=split, ood_index=args.ood_index)
            row[f"{split}_with_gate"] = {
                "id_accept": rep["id"]["coverage"],
                "id_selective_accuracy": rep["id"]["selective_accuracy"],
                "ood_reject": rep["ood"]["rejection"],
            }
        out[signal] = row
    if not args.no_check_eval and "knn" in out:
        ev = check_eval(dst, args.ood_index)
        ours = out["knn"]["selection"]["val_auroc"]["knn"]
        out["knn_eval_check"] = {**ev, "ladder_auroc": ours, "abs_diff": abs(ev["auroc"] - ours)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
