"""A run's strictness ladder: fitted on the run's validation logits, stored in ``RUN/ladder.json``, reported on a
split and summarized in ``metrics.json`` (REFERENCE 5, seed 000 §4.2). The ladder itself (rules, fitting on
logits, decisions) is ``deploy.ladder``; this module connects it to run directories (``stillroom.runs``).

The knn signal (``deploy.knn``) needs the pooled penultimate features: they are computed here in PyTorch with
evaluation's cut (``evaluate.feature_ood.split_model``), the bank from the run's clean ID training rows (the rows
evaluation's KNN is fitted on: train split, label < K). knn is offered (``signal="knn"``, or a candidate of
"auto") only when the run's export holds ``model_features.onnx`` for these weights with passing parity, so that a
ladder never picks a signal the service cannot compute; the int8 ladder keeps to the logit signals.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stillroom._io import StillroomError, atomic_write_json, read_json
from stillroom.data.outline import outline_from_recipe
from stillroom.deploy._ort import normalize_uint8
from stillroom.deploy._run_knn import knn_available, run_features
from stillroom.deploy._style_views import calibration_inputs
from stillroom.deploy.backends import make_runner, runner_logits, serving_backend
from stillroom.deploy.ladder import LADDER_FILE, Ladder, ladder_report
from stillroom.deploy.onnx_export import EXPORT_DIR
from stillroom.deploy.structure import StructureGate
from stillroom.runs import CALIBRATION_FILE, Run, index_sink, split_rows

__all__ = [
    "LADDER_FILES",
    "fit_run_ladder",
    "fit_served_temperature",
    "run_logits",
    "knn_available",
    "run_features",
    "run_ladder_report",
    "served_temperature_key",
    "update_ladder_metrics",
]

#: the ladder of each servable model: thresholds fitted on that model's own logits (issue 15)
LADDER_FILES = {"fp32": LADDER_FILE, "int8": "ladder_int8.json"}


def _int8_logits(run_dir: Path, weights_sha256: str) -> tuple[Any, dict[str, Any]]:
    """A function (images, rows) -> logits of the exported int8 model on the runtime that will serve it
    (``serving_backend``: the fastest that passed export's int8 check, else ONNX Runtime), and its export.json
    entry plus ``backend``. int8 kernels differ between runtimes, so the ladder and temperature fitted here belong
    to that runtime's logits; the service serves int8 on the same one. Refuses an export of other weights or an
    int8 model that failed its accuracy check (it is never served)."""
    exp_path = run_dir / EXPORT_DIR / "export.json"
    if not exp_path.is_file():
        raise StillroomError(f"{exp_path}: not found; run `stillroom export {run_dir} --int8` first")
    exp = read_json(exp_path)
    if exp.get("weights", {}).get("sha256") != weights_sha256:
        raise StillroomError(f"{exp_path}: exported from other weights; export again")
    if "int8" not in exp.get("models", {}) or not exp.get("int8_check", {}).get("ok"):
        raise StillroomError(f"{exp_path}: no int8 model that passed its accuracy check; it cannot be served")
    entry = exp["models"]["int8"]
    backend = serving_backend(exp, "int8")["backend"]
    runner, fixed = make_runner(backend, run_dir / EXPORT_DIR / entry["file"])
    mean, std = exp["input"]["mean"], exp["input"]["std"]

    def logits(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return runner_logits(runner, fixed, normalize_uint8(np.asarray(images[rows]), mean, std), batch_size=256)

    return logits, {**entry, "backend": backend}


def run_logits(
    run_dir: Path, weights: str, index: Any, ood_index: Any, split: str, served: str = "fp32"
) -> dict[str, Any]:
    """Logits of a run on ``split``: ID rows, their labels, and OOD rows (the sink-labelled rows of a merged index,
    else the same split of ``ood_index``) with where they came from. ``served``: "fp32" (PyTorch, which the fp32
    ONNX file matches to 1e-3) or "int8" (the exported int8 model in ONNX Runtime: what the service runs then)."""
    from stillroom.data.dataset import load_images
    from stillroom.data.index import load_index

    if served not in LADDER_FILES:
        raise StillroomError(f"served model must be one of {', '.join(LADDER_FILES)}, got {served!r}")
    the_run = Run(run_dir)
    run = the_run.load(weights)
    idx = the_run.index(index)
    images = load_images(idx)
    sink = the_run.layout.sink
    # OOD rows are the index's sink-labelled rows, whether or not the model has a sink column: a K-class model on a
    # merged index must not count OOD rows as ID samples it could never label correctly.
    row_sink = sink if index_sink(idx) is None else index_sink(idx)
    id_rows, ood_rows = split_rows(idx, split, row_sink)
    if len(id_rows) == 0:
        raise StillroomError(f"{idx.root}: no in-distribution rows in the {split!r} split")
    out: dict[str, Any] = {"run": run, "index": idx, "sink": sink, "ood": None, "ood_source": None}
    out.update(images=images, row_sink=row_sink, id_rows=id_rows, ood_images=None, ood_rows=None, served=served)
    if served == "int8":
        int8, out["served_file"] = _int8_logits(Path(run_dir), run.weights_sha256)

        def logits(rows: np.ndarray, ix: Any, im: np.ndarray) -> np.ndarray:
            return int8(im, rows)
    else:

        def logits(rows: np.ndarray, ix: Any, im: np.ndarray) -> np.ndarray:
            return the_run.logits(weights, rows, ix, im)

    out["logits_fn"] = logits  # (rows, index, images) -> logits of the served model: calibration views use it too
    out["id"] = logits(id_rows, idx, images)
    out["labels"] = idx.labels[id_rows]
    if len(ood_rows):
        out["ood"] = logits(ood_rows, idx, images)
        out["ood_source"] = f"{idx.root} ({split}, sink-labelled rows)"
        out.update(ood_images=images, ood_rows=ood_rows)
    elif ood_index is not None:
        oidx = ood_index if hasattr(ood_index, "split_indices") else load_index(ood_index)
        if int(oidx.recipe.get("size", -1)) != int(run.meta["img_size"]):
            raise StillroomError(f"{oidx.root}: image size {oidx.recipe.get('size')} != run's {run.meta['img_size']}")
        ood_images = load_images(oidx)
        out["ood"] = logits(oidx.split_indices(split), oidx, ood_images)
        out["ood_source"] = f"{oidx.root} ({split})"
        out.update(ood_images=ood_images, ood_rows=oidx.split_indices(split))
    return out


def _fit_structure_gate(d: dict[str, Any], quantile: float, max_images: int = 20000) -> StructureGate | None:
    """The structure gate of a silhouette run, fitted on the ID training images as the service preprocesses them,
    with its rejection rate on the ID validation rows (and OOD rows when there are some) in ``summary_``; None
    for other kinds of data (the service only serves silhouettes) or too few training images (with a warning)."""
    from stillroom.deploy.structure import MIN_FIT_IMAGES, served_features

    run, idx = d["run"], d["index"]
    recipe = run.meta.get("recipe", {})
    if recipe.get("kind", "silhouette") != "silhouette":
        return None
    size, padding = int(run.meta["img_size"]), float(recipe.get("padding", 0.2))
    outline = outline_from_recipe(recipe)  # a canonical-outline recipe: the gate sees what the service renders
    train_rows = split_rows(idx, "train", d["row_sink"])[0]
    if len(train_rows) < MIN_FIT_IMAGES:
        warnings.warn(
            f"fit_run_ladder: {len(train_rows)} ID training images in {idx.root}; no structure gate fitted "
            f"(at least {MIN_FIT_IMAGES} needed)",
            stacklevel=3,
        )
        return None
    feats = served_features(d["images"], train_rows, size, padding, max_images=max_images, outline=outline)
    n = len(feats["share"])
    gate = StructureGate.fit_features(feats, size, quantile=quantile, fit_data=f"{idx.root.name}: {n} ID train images")
    val = gate.passes(served_features(d["images"], d["id_rows"], size, padding, max_images, outline))
    gate.summary_ = {"n_train": n, "id_val_reject": float(1.0 - val.mean()) if len(val) else math.nan}
    if d["ood_rows"] is not None and len(d["ood_rows"]):
        ood = gate.passes(served_features(d["ood_images"], d["ood_rows"], size, padding, max_images, outline))
        gate.summary_["ood_val_reject"] = float(1.0 - ood.mean())
    return gate


def fit_run_ladder(
    run_dir: str | Path,
    target_accept: float = 0.95,
    weights: str = "best",
    index: Any = None,
    ood_index: Any = None,
    save: bool = True,
    structure_quantile: float = 0.001,
    served: str = "fp32",
    signal: str = "maxlogit",
    style_views: int = 0,
    **params: Any,
) -> Ladder:
    """Fit a one-model ladder on the run's validation split and store it in ``RUN/ladder.json``
    (``RUN/ladder_int8.json`` with ``served="int8"``).

    Issue 15: the thresholds belong to the logits of the model that is served. ``served="int8"`` fits them on the
    exported int8 model's logits in ONNX Runtime (which differ from fp32 by up to export.json's ``max_abs_diff``),
    and also fits the temperature the service applies to them (``fit_served_temperature``).

    ID logits: the val rows of the run's index (of a merged open-set index, the rows not labelled with the sink).
    OOD logits, never used to place the thresholds: the sink-labelled val rows of a merged index, else the val split
    of ``ood_index`` (an OOD dataset directory) when given; they give each candidate signal's val AUROC, by which
    ``signal="auto"`` (``deploy.ladder`` docstring; ``stillroom export``'s default) chooses the ladder's signal
    (maxlogit without them), and the OOD rejection reached. The default signal stays maxlogit (REFERENCE 5), so
    callers that do not ask, such as ``stillroom evaluate --ladder``, fit what they fitted before. ``params`` go to
    ``Ladder(...)``; ``sink`` defaults to whether the run has a sink class. The file records the weights' sha256 the
    ladder belongs to.

    ``signal="knn"`` / ``"rmd"`` (fp32 only), and "auto" when the export has ``model_features.onnx`` for these
    weights (``knn_available``): KNN bank and RMD Gaussians (``_run_knn``) are fitted on the ID training rows'
    features, the chosen one saved beside the ladder; ``fit_summary_["signal"]["knn_candidate"]`` says why not.

    A silhouette run also gets the structure gate (``structure_``, module docstring): fitted on the ID training
    images with ``structure_quantile`` per side per feature; ``fit_summary_["structure_gate"]`` reports the share
    of ID validation images (and OOD ones, when given) it rejects.

    ``style_views=V`` > 0 (issue 16 item 5, ``deploy._style_views``): the thresholds are placed on the clean ID (and
    OOD) val rows plus V ``style`` views of each, so ``target_accept`` holds over a range of drawing styles, not only
    the clean rendering; ``fit_summary_["calibration"]`` (and ``fit_data`` in the file) record it.
    """
    run_dir = Path(run_dir)
    if signal in ("knn", "rmd") and served != "fp32":
        raise StillroomError(f"signal {signal!r} is served from model_features.onnx (fp32) only; the {served} "
                             "ladder takes a logit signal (maxlogit, energy, msp, sink for K+1, or auto)")  # fmt: skip
    d = run_logits(run_dir, weights, index, ood_index, "val", served=served)
    params.setdefault("sink", d["sink"] is not None)
    why_not = "served model is not fp32" if served != "fp32" else None
    if why_not is None and signal in ("knn", "rmd", "fused", "auto"):  # fused takes rmd (or knn) as a part
        why_not = knn_available(run_dir, d["run"].weights_sha256)
    elif why_not is None:
        why_not = f"signal {signal!r} set by the caller"
    if signal in ("knn", "rmd") and why_not is not None:
        raise StillroomError(f"{run_dir}: signal {signal!r} cannot be served: {why_not}")
    fit = calibration_inputs(d, style_views, knn=why_not is None)  # ID / OOD logits (and knn inputs) to fit on
    ladder = Ladder(signal=signal, **params).fit(
        fit["id"], target_accept=target_accept, ood_logits_list=fit["ood"], **fit["knn_kw"]
    )
    ladder.fit_summary_["calibration"] = fit["summary"]
    ladder.fit_summary_["signal"]["knn_candidate"] = (
        {"weighed": True} if why_not is None else {"weighed": False, "reason": why_not}
    )
    ladder.structure_ = _fit_structure_gate(d, structure_quantile)
    if ladder.structure_ is not None:
        ladder.fit_summary_["structure_gate"] = ladder.structure_.summary_
    if save:
        fit_data = {"index": str(d["index"].root), "split": "val", "ood": d["ood_source"], "served": served}
        fit_data.update(calibration=fit["summary"])
        if served != "fp32":
            fit_data["served_file"] = {k: d["served_file"][k] for k in ("file", "sha256", "backend")}
        # where the chosen feature signal's parameters came from (the KNN bank's rows, the RMD fit rows and views)
        fit_data.update({"knn_bank": fit["knn_bank"]} if ladder.uses_knn else {})
        fit_data.update({"rmd_fit": fit["rmd_fit"]} if ladder.uses_rmd else {})
        ladder.save(
            run_dir / LADDER_FILES[served],
            extra={
                "members": [{"run": str(run_dir), "weights": weights, "sha256": d["run"].weights_sha256}],
                "fit_data": fit_data,
            },
        )
        if served != "fp32":
            fit_served_temperature(run_dir, d, weights)
    return ladder


def served_temperature_key(weights: str, served: str) -> str:
    """The ``calibration.json`` entry of a served model: the weights name for fp32 (PyTorch's logits, which the
    fp32 ONNX file matches), ``<weights>:int8`` for the int8 file (checked against that file's sha256)."""
    return weights if served == "fp32" else f"{weights}:{served}"


def fit_served_temperature(run_dir: Path, d: dict[str, Any], weights: str) -> float:
    """Fit T (NLL, REFERENCE 4) on the served model's ID validation logits ``d`` (``run_logits``) and store it in
    ``calibration.json`` under ``served_temperature_key``, with the served file's sha256."""
    from stillroom.evaluate.calibration import TemperatureScaler

    k = Run(run_dir).layout.num_id
    keep = d["labels"] < k
    scaler = TemperatureScaler(num_id_classes=k).fit(d["id"][keep], d["labels"][keep])
    scaler.save(
        run_dir / CALIBRATION_FILE,
        served_temperature_key(weights, d["served"]),
        weights_sha256=d["served_file"]["sha256"],
        fit_split="val",
        n_val=int(keep.sum()),
    )
    return scaler.temperature_


def run_ladder_report(
    run_dir: str | Path,
    split: str = "test",
    weights: str = "best",
    index: Any = None,
    ood_index: Any = None,
) -> dict[str, Any]:
    """``ladder_report`` of ``RUN/ladder.json`` on ``split`` of the run's index (and OOD rows as in
    ``fit_run_ladder``): what ``stillroom evaluate`` reports. Refuses a ladder fitted on other weights."""
    run_dir = Path(run_dir)
    ladder = Ladder.load(run_dir / LADDER_FILE)
    d = run_logits(run_dir, weights, index, ood_index, split)
    members = getattr(ladder, "extra_", {}).get("members") or [{}]
    if members[0].get("sha256") not in (None, d["run"].weights_sha256):
        raise StillroomError(f"{run_dir / LADDER_FILE}: fitted on other weights than {weights!r}; fit it again")
    # the structure gate judges the served silhouettes before the model (service), so the report applies it too
    id_ok = ood_ok = None
    gate = ladder.structure_
    if gate is not None:
        from stillroom.deploy.structure import served_features

        recipe = d["run"].meta.get("recipe", {})
        size, padding = int(d["run"].meta["img_size"]), float(recipe.get("padding", 0.2))
        outline = outline_from_recipe(recipe)
        id_ok = gate.passes(served_features(d["images"], d["id_rows"], size, padding, outline=outline))
        if d["ood_rows"] is not None and len(d["ood_rows"]):
            ood_ok = gate.passes(served_features(d["ood_images"], d["ood_rows"], size, padding, outline=outline))
    id_f = ood_f = None
    if ladder.uses_features:  # knn (alone or fused) and rmd score the penultimate features (PyTorch, as fitted)
        id_f = run_features(d["run"], d["images"], d["id_rows"])
        if d["ood_rows"] is not None and len(d["ood_rows"]):
            ood_f = run_features(d["run"], d["ood_images"], d["ood_rows"])
    rep = ladder_report(
        ladder, d["id"], d["labels"], d["ood"], id_structure_ok=id_ok, ood_structure_ok=ood_ok,
        id_features=id_f, ood_features=ood_f,
    )  # fmt: skip
    rep.update(split=split, weights=weights, ood_source=d["ood_source"], target_accept=ladder.target_accept_)
    rep["signal"] = ladder.signal_  # what t1/t2 are thresholds of (also in rep["thresholds"])
    return rep


def update_ladder_metrics(
    run_dir: str | Path,
    splits: Sequence[str],
    weights: Sequence[str] = ("best", "final"),
    index: Any = None,
    ood_index: Any = None,
    ladder: bool | None = None,
    target_accept: float = 0.95,
    signal: str = "maxlogit",
    metrics_file: str = "metrics.json",
) -> dict[str, Any] | None:
    """The strictness-ladder section of ``RUN/metrics.json`` (REFERENCE 5, seed 000 §4.2), written by
    ``stillroom evaluate`` after ``evaluate.runner.evaluate_run`` (whose metrics file must exist).

    With ``ladder=True`` the ladder is fitted on the validation split for ``target_accept`` with ``signal`` and
    stored in ``RUN/ladder.json`` (as ``stillroom export`` does); with ``ladder=None`` an existing ``ladder.json`` is
    used; ``False`` skips. ``metrics_file`` (``metrics.json``; another dataset's: ``evaluate.runner.
    other_metrics_name``) then gets ``"ladder"``: the thresholds, the signal they are thresholds of (how it was
    chosen: ``fit_summary["signal"]``), the target, and per split the verdict counts on ID and OOD rows, coverage
    (accepted share of ID), selective accuracy (top-1 on accepted ID) and OOD acceptance (accepted share of OOD),
    for the weights the ladder was fitted on. Returns the section (None: none); a re-report keeps earlier splits."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / metrics_file
    if not metrics_path.is_file():
        raise StillroomError(f"{metrics_path}: not found; evaluate the run before reporting its ladder")
    metrics = read_json(metrics_path)
    section = _ladder_section(
        run_dir, weights, metrics["weights"], splits, index, ood_index, ladder, target_accept, signal
    )
    if section is None:
        return None
    for rep in section["splits"].values():  # another dataset's split is never the rows the ladder was fitted on
        rep["in_sample"] = rep["in_sample"] and metrics_file == "metrics.json"
    prev = metrics.get("ladder") or {}
    if (prev.get("thresholds"), prev.get("weights_sha256")) == (section["thresholds"], section.get("weights_sha256")):
        section["splits"] = {**prev.get("splits", {}), **section["splits"]}  # the same ladder: keep earlier splits
    metrics["ladder"] = section
    atomic_write_json(metrics_path, metrics)
    return section


def _ladder_section(
    run_dir: Path,
    weights: Sequence[str],
    weight_files: dict[str, Any],
    splits: Sequence[str],
    index: Any,
    ood_index: Any,
    ladder: bool | None,
    target_accept: float,
    signal: str = "maxlogit",
) -> dict[str, Any] | None:
    path = run_dir / LADDER_FILE
    if ladder is False or (ladder is None and not path.is_file()):
        return None
    if ladder:
        # one ladder per run (the service loads it): fitted for the best weights when they are evaluated
        fit_w = "best" if "best" in weights else weights[0]
        fit_run_ladder(
            run_dir, target_accept=target_accept, weights=fit_w, index=index, ood_index=ood_index, signal=signal
        )
    lad = Ladder.load(path)
    members = lad.extra_.get("members") or []
    section: dict[str, Any] = {
        "file": LADDER_FILE,
        "target_accept": lad.target_accept_,
        "signal": lad.signal_,
        "thresholds": lad.thresholds(),
        "fit_data": lad.extra_.get("fit_data"),
        "fit_summary": lad.fit_summary_,
        "splits": {},
    }
    if lad.n_members_ != 1 or len(members) > 1:
        section["skipped"] = f"an ensemble ladder ({lad.n_members_} members) is reported by the service, not per run"
        return section
    member = members[0] if members else {}
    # the weights this ladder belongs to: the member's sha256 when recorded, else its weights name
    sha = member.get("sha256")
    match = [w for w in weights if (weight_files[w]["sha256"] == sha if sha else member.get("weights", "best") == w)]
    if not match:
        section["skipped"] = (
            f"{path} was fitted on other weights (sha256 {str(member.get('sha256'))[:12]}) than those evaluated;"
            " refit with `stillroom evaluate RUN --ladder`"
        )
        return section
    w = match[0]
    section.update(weights=w, weights_sha256=weight_files[w]["sha256"])
    for split in splits:
        rep = run_ladder_report(run_dir, split=split, weights=w, index=index, ood_index=ood_index)
        section["splits"][split] = {key: rep.get(key) for key in ("id", "ood", "ood_source")}
        # coverage on the split the thresholds were fitted on is in-sample (it meets the target by construction)
        section["splits"][split]["in_sample"] = split == (section["fit_data"] or {}).get("split", "val")
    return section
