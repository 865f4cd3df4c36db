"""``stillroom evaluate``: metrics of a run's best and final weights on index splits, into ``metrics.json``.

Reports come from ``evaluate.metrics.classification_report`` (top-1/top-5, macro-F1, per-class F1, confused pairs;
seed 000 §4.1). Confusion matrices go to ``confusion_<split>_<weights>.npy`` beside the JSON (649 x 649 does not
belong in a JSON file). The run must have been trained on the same index (hash check) unless ``index`` has the same
classes and ``allow_other_index`` is set, e.g. to evaluate on a rebuilt or imported set.

Calibration (REFERENCE 4; seed 001 §4.1.6, §5.2; ``evaluate.calibration``): on the run's own index, a temperature
is fitted on the validation split (the config's ``data.val_split``; ID rows only) for each weights file and stored
in ``calibration.json`` with the weights' sha256; the method of an existing entry (``nll`` by default, or ``grid``
after ``stillroom calibrate --method grid``) is kept. On another index the stored temperature is used as it is
(never refitted on foreign data). Each split report gets ``"calibration": {"before", "after", "temperature"}``
(ECE, MCE, Brier, NLL with their reliability bins; ``after`` is None when no temperature is available) and, for
every split but the one T was fitted on, a reliability diagram ``plots/reliability_<split>_<weights>.png``.

Open set (``ood_split``; REFERENCE 4, seed 000 §3.2): ``evaluate.ood.evaluate_open_set`` writes the full reports
(every score's AUROC, AUPR-In, AUPR-Out, FPR@95TPR with the orientation conventions; closed-set top-1 / macro-F1 on
the ID rows over the K ID classes; for K+1 models the OOD rejection rate = share of OOD rows whose argmax is the
sink) into ``ood_metrics.json``, where ``ood-table`` and ``report`` read them; ``metrics.json`` gets ``"ood"``: a
reference to that file plus a per-weights summary. OOD rows are the sink-labelled rows of a merged index (``data
merge-sink``) or every row of the split in ``ood_index``. ODIN's (T, eps) are tuned on the validation split only.

The strictness ladder section of ``metrics.json`` is added by ``deploy.ladder.update_ladder_metrics`` (``stillroom
evaluate --ladder``): evaluation sits below deployment and does not import it.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stillroom._io import StillroomError, atomic_write_bytes, atomic_write_json, read_json
from stillroom.data.dataset import load_images
from stillroom.data.index import DatasetIndex, load_index
from stillroom.evaluate.calibration import CALIBRATION_FILE, TemperatureScaler, calibration_metrics
from stillroom.evaluate.metrics import classification_report
from stillroom.runs import METRICS_FILE, WEIGHT_CHOICES, Run, index_sink
from stillroom.train.precise_bn import bn_consistency

__all__ = ["evaluate_run", "other_metrics_name", "print_open_set"]


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _fit_temperature(
    run_dir: Path,
    weights: str,
    sha256: str,
    val_split: str,
    logits: np.ndarray,
    labels: np.ndarray,
    k_id: int,
    method: str | None,
) -> TemperatureScaler:
    """Fit on validation logits with ``method``, else the one stored for these weights (default ``nll``); store."""
    path = run_dir / CALIBRATION_FILE
    if method is None:
        stored = read_json(path).get("weights", {}).get(weights, {}) if path.is_file() else {}
        method = stored.get("method", "nll")
    scaler = TemperatureScaler(num_id_classes=k_id).fit(logits, labels, method=method)
    scaler.save(path, weights, weights_sha256=sha256, fit_split=val_split)
    return scaler


def _stored_temperature(run_dir: Path, weights: str, sha256: str) -> TemperatureScaler | None:
    path = run_dir / CALIBRATION_FILE
    if not path.is_file():
        return None
    entry = read_json(path).get("weights", {}).get(weights)
    if entry is None or entry.get("weights_sha256") not in (None, sha256):
        return None
    return TemperatureScaler.from_dict(entry)


def _calibration_section(
    logits: np.ndarray, labels: np.ndarray, k_id: int, scaler: TemperatureScaler | None
) -> dict[str, Any] | None:
    keep = labels < k_id  # ID rows only: calibration of the K renormalized in-distribution probabilities
    if not keep.any():
        return None
    z, y = logits[keep], labels[keep]
    before = calibration_metrics(z, y, num_id_classes=k_id, return_bins=True)
    if scaler is None:
        return {"before": before, "after": None, "temperature": None, "method": None}
    after = calibration_metrics(scaler.transform(z), y, num_id_classes=k_id, return_bins=True)
    return {"before": before, "after": after, "temperature": scaler.temperature_, "method": scaler.method_}


def evaluate_run(
    run_dir: str | Path,
    splits: Sequence[str] = ("test",),
    weights: Sequence[str] = WEIGHT_CHOICES,
    index: DatasetIndex | None = None,
    images: np.ndarray | None = None,
    allow_other_index: bool = False,
    plots: bool = True,
    temperature_method: str | None = None,
    ood_split: str | None = None,
    ood_index: DatasetIndex | str | Path | None = None,
    tune_odin: bool = True,
    odin_temperatures: Sequence[float] | None = None,
    odin_epsilons: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Evaluate ``weights`` of the run on ``splits``; merge into ``run_dir/metrics.json`` and return it.

    Also fits/stores the temperature (module docstring; ``temperature_method`` "nll" or "grid" overrides the stored
    method) and, with ``plots``, writes reliability diagrams. ``ood_split`` adds the open-set report (``ood_index``:
    OOD rows from another dataset; ``tune_odin`` on the validation split over ``odin_temperatures`` x
    ``odin_epsilons``, default grid of ``ODINTuner``).
    """
    run_dir = Path(run_dir)
    the_run = Run(run_dir)
    meta = the_run.meta
    index = index or load_index(meta["index"])
    own_index = the_run.trained_on(index)
    if not own_index:
        if not allow_other_index:
            raise StillroomError(
                f"{index.root}: not the index {run_dir} was trained on (index/content hash differ); "
                "pass --allow-other-index to evaluate on another dataset with the same classes"
            )
        if index.classes != meta["classes"][: index.num_classes]:
            raise StillroomError(f"{index.root}: classes differ from the run's classes; cannot evaluate")
    images = load_images(index) if images is None else images
    # Another dataset's figures never go into the run's own metrics.json (the report and compare read its splits
    # there): they get a file of their own, named by that dataset, confusion matrices alike.
    tag = "" if own_index else _other_tag(index)
    metrics_path = run_dir / (METRICS_FILE if own_index else other_metrics_name(index))
    out: dict[str, Any] = read_json(metrics_path) if metrics_path.is_file() else {}
    out.update(run=str(run_dir), arch=meta["arch"], index=str(index.root), index_hash=index.index_hash)
    state = the_run.state()
    out["best_epoch"] = state.get("best", {}).get("epoch")
    out["epochs"] = state.get("epoch")
    out.setdefault("splits", {})
    out.setdefault("weights", {})
    val_split, train_split = the_run.val_split, the_run.train_split
    # ID classes of this index (a merged index has a sink class; its sink-labelled rows are OOD)
    k_id = index.num_classes if index_sink(index) is None else int(index_sink(index))
    bn_checks: dict[str, dict] = {}  # weights sha256 -> its check: best and final are often the same bytes
    for w in weights:
        run = the_run.load(w)
        out["weights"][w] = {"file": run.weights_path.name, "sha256": run.weights_sha256}
        if own_index and len(index.split_indices(train_split)):
            if run.weights_sha256 not in bn_checks:
                bn_checks[run.weights_sha256] = _bn_check(the_run, run, images, index, train_split, k_id)
            out["weights"][w]["bn_check"] = dict(bn_checks[run.weights_sha256])

        def split_logits(split: str, w=w) -> np.ndarray:
            return the_run.logits(w, index.split_indices(split), index, images, cache_key=split)

        scaler = None
        if own_index:
            val_labels = index.labels[index.split_indices(val_split)]
            if (val_labels < k_id).any():
                val_id = val_labels < k_id
                val_logits = split_logits(val_split)[val_id]
                scaler = _fit_temperature(
                    run_dir, w, run.weights_sha256, val_split, val_logits, val_labels[val_id], k_id, temperature_method
                )
        else:
            scaler = _stored_temperature(run_dir, w, run.weights_sha256)
        for split in splits:
            rows = index.split_indices(split)
            if len(rows) == 0:
                raise StillroomError(f"{index.root}: split {split!r} is empty")
            logits = split_logits(split)
            labels = index.labels[rows]
            # A K+1 model (OOD sink) is scored on the K in-distribution classes here; open-set metrics are separate.
            k = index.num_classes
            if logits.shape[1] < k:  # a K-class model of a merged index (outlier exposure): its ID rows only
                keep = labels < logits.shape[1]
                logits, labels, k = logits[keep], labels[keep], logits.shape[1]
            report = classification_report(logits[:, :k], labels, index.classes[:k])
            report["nll"] = float(
                torch.nn.functional.cross_entropy(torch.from_numpy(logits[:, :k]), torch.from_numpy(labels))
            )
            cm = np.asarray(report.pop("confusion_matrix"), dtype=np.int64)
            cm_file = f"confusion_{split}_{w}{'_' + tag if tag else ''}.npy"
            _save_npy(run_dir / cm_file, cm)
            report["confusion_matrix_file"] = cm_file
            report["calibration"] = _calibration_section(logits, labels, k_id, scaler)
            # no diagram for the split T was fitted on: its "after" is in-sample (the numbers stay in the JSON)
            if plots and own_index and report["calibration"] is not None and split != val_split:
                from stillroom.evaluate.plots import reliability_diagram  # late: matplotlib only when plotting

                cal = report["calibration"]
                reliability_diagram(
                    cal["before"],
                    cal["after"],
                    cal["temperature"],
                    title=f"{run_dir.name}: {split} split, {w} weights",
                    path=run_dir / "plots" / f"reliability_{split}_{w}.png",
                )
            out["splits"].setdefault(split, {})[w] = report
    if ood_split is not None:
        from stillroom.evaluate.ood import evaluate_open_set, ood_metrics_name, ood_source_tag

        if ood_index is not None and not isinstance(ood_index, DatasetIndex):
            ood_index = load_index(ood_index)  # once: every weights reads its rows
        # another ID set may be scored against several OOD sets: both name the files. The run's own ID rows against
        # a separate OOD set go to ood_metrics.json (what ood-table and report read) and, so that scoring another
        # OOD set later loses nothing, also to a file named by that set.
        vs = ood_source_tag(ood_index) if ood_index is not None else ""
        ood_tag = f"{tag}_{vs}" if tag and vs else tag
        keep_as = vs if not tag else ""
        ood_out = evaluate_open_set(
            run_dir, split=ood_split, weights=weights, index=index, ood_index=ood_index, images=images,
            tune=tune_odin, val_split=val_split, temperatures=odin_temperatures, epsilons=odin_epsilons,
            tag=ood_tag, keep_as=keep_as,
        )  # fmt: skip
        out["ood"] = _ood_summary(ood_out, ood_split, weights, ood_tag)
        if keep_as:
            out["ood"]["source_file"] = ood_metrics_name(keep_as)
    atomic_write_json(metrics_path, out)
    return out


def _other_tag(index: DatasetIndex) -> str:
    return f"on_{index.root.name}-{index.index_hash[:8]}"


def other_metrics_name(index: DatasetIndex) -> str:
    """File name, inside a run, of its metrics on ``index`` when that is not the run's own dataset:
    ``metrics_on_<dataset dir name>-<index hash[:8]>.json`` (its confusion files end in the same tag)."""
    return f"metrics_{_other_tag(index)}.json"


def _bn_check(the_run: Run, run: Any, images: np.ndarray, index: DatasetIndex, split: str, k_id: int) -> dict:
    """Guard against wrong BatchNorm statistics (issue 13): eval-mode vs batch-statistics top-1 on clean training
    images (``train.precise_bn.bn_consistency``). A suspect result is recorded and warned about, never hidden."""
    check = bn_consistency(
        run.model, run.normalizer, images, index.split_indices(split), index.labels,
        batch_size=the_run.batch_size, seed=the_run.seed, num_classes=k_id,
    )  # fmt: skip
    check["split"] = split
    if check["suspect"]:
        warnings.warn(f"{run.weights_path}: {check['message']}", stacklevel=3)
    return check


def _ood_summary(ood_out: dict[str, Any], split: str, weights: Sequence[str], tag: str = "") -> dict[str, Any]:
    """The pointer into ``ood_metrics.json`` kept in ``metrics.json``: where the full reports are, plus the headline
    numbers per weights. No ``scores``/``splits`` keys on purpose: ``report`` reads full reports from the file and
    would otherwise list them twice."""
    from stillroom.evaluate.ood import ood_metrics_name

    summary: dict[str, Any] = {}
    for w in weights:
        rep = ood_out["splits"][split][w]
        entry: dict[str, Any] = {
            "n_id": rep["n_id"],
            "n_ood": rep["n_ood"],
            "ood_source": rep.get("ood_source"),
            "closed_set_top1": rep["closed_set"]["top1"],
            "closed_set_macro_f1": rep["closed_set"]["macro_f1"],
            "auroc": {name: m["auroc"] for name, m in rep["scores"].items()},
            "fpr_at_95_tpr": {name: m["fpr_at_95_tpr"] for name, m in rep["scores"].items()},
            "odin": rep["odin"],
        }
        if "ood_rejection_rate" in rep:
            entry["ood_rejection_rate"] = rep["ood_rejection_rate"]
        summary[w] = entry
    return {
        "file": ood_metrics_name(tag),
        "path": ["splits", split],  # ood_metrics.json[splits][split][weights] is the full report
        "split": split,
        "conventions": "see the reports' 'conventions' (higher score = more in-distribution; ID positive)",
        "summary": summary,
    }


def print_open_set(metrics: dict[str, Any], print_fn: Any = print) -> None:
    """Console lines for the ``ood`` and ``ladder`` sections of ``metrics`` (used by ``stillroom evaluate``)."""
    ood = metrics.get("ood")
    if ood:
        files = " and ".join(f for f in (ood["file"], ood.get("source_file")) if f)
        for w, e in ood["summary"].items():
            aurocs = ", ".join(f"{k} {v:.4f}" for k, v in e["auroc"].items())
            rej = e.get("ood_rejection_rate")
            rej_txt = "" if rej is None else f"; OOD rejection (argmax = sink) {100 * rej:.2f}%"
            print_fn(
                f"open set ({ood['split']}, {w}): {e['n_id']} ID / {e['n_ood']} OOD; closed-set top-1 "
                f"{100 * e['closed_set_top1']:.2f}%; AUROC {aurocs}{rej_txt} -> {files}"
            )
    lad = metrics.get("ladder")
    if lad:
        if "skipped" in lad:
            print_fn(f"ladder: skipped ({lad['skipped']})")
            return
        t = lad["thresholds"]
        margin = "" if t.get("margin") is None else f", margin {t['margin']:.4g}"
        print_fn(
            f"ladder ({lad['weights']}, target ID acceptance {lad['target_accept']}): "
            f"t1 {t['t1']:.4g}, t2 {t['t2']:.4g}{margin}"
        )
        for split, rep in lad["splits"].items():
            i = rep["id"]
            line = (
                f"  {split}: ID {i['counts']} coverage {i['coverage']:.4f}, "
                f"selective accuracy {i['selective_accuracy']:.4f} (accepted: {i['coverage_correct']:.4f} of "
                f"those read right, {i['coverage_misread']:.4f} of those misread)"
            )
            if rep.get("ood"):
                line += f"; OOD {rep['ood']['counts']} acceptance {rep['ood']['acceptance']:.4f}"
            print_fn(line)
