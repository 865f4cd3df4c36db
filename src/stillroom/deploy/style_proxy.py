"""Style proxies at the served ladder (issue 16 item 5; seed 000 §4.2 for the ladder, REFERENCE 7 for why proxies).

Outside this repository the students are judged on images drawn in another style (REFERENCE 7, never read here):
ID species drawn differently must be **accepted** by the reject-option ladder (>= 90% at its 95% ID-acceptance
operating point), and OOD shapes of another style must be **rejected** (AUROC >= 0.95). This module builds proxies
for both from data we may use: the deterministic outline rewrites of ``evaluate.shift.REWRITES`` (coarser pixel
grids, low-resolution renderings, smoothing, thicker / thinner strokes, filled holes), applied alike to the ID rows
and the OOD rows of a split, and judged by the ladder the service serves.

The ladder is the one export fits: ``RUN/ladder.json`` as it is (``signal=None``), or fitted afresh on the clean
validation split with ``deploy.run_ladder.fit_run_ladder(..., signal=..., save=False)`` (the run's ladder.json is
never written), on clean val alone or, with ``style_views=V``, on clean val plus V ``style`` views of each image
(``deploy._style_views``; a training augmentation's thickness and re-rendering changes, not these rewrites). The
operating point is fixed before any rewrite is seen; only the inputs change. The summary's ``held_out_mean`` is
the mean over the rewrites of kinds neither the ``restyle`` training views nor the style views draw (smoothing,
2 px erosion, filled holes; ``in_shape_recipe`` False), the less flattering figure for both. Each row of the
report (the clean split, then every rewrite) gives:

- ID: the share accepted (verdict "accept"; the structure gate first, as the service applies it), top-1 among the
  accepted, top-1 on all, the share the structure gate refuses, and the reasons;
- OOD (the sink-labelled rows of a merged index, else the same split of ``ood_index``): the share rejected (verdict
  "reject") and accepted, and, ID positive, the AUROC and FPR@95TPR (``evaluate.ood.ood_metrics``) of
  (a) the ladder's signal alone (``Ladder.signals(...)["score"]``) and (b) the **served order**: that score with
  every input the service rejects whatever its score (structure gate, or the sink winning the soft vote of a K+1
  model) ranked below all others. (b) is what the verdict uses: it is the service's ranking; (a) isolates the signal.
  A K+1 model also gets the AUROC of evaluate's sink score (``1 - p_sink``).

Inputs (``INPUTS``, argument ``input_mode``): ``"dataset"`` gives the model the rewritten dataset pixels, the
structure gate their served silhouettes, exactly as ``run_ladder_report`` and ``stillroom evaluate`` do (the clean
row is then the ladder's own operating point); ``"served"`` sends the rewritten image through the service's
preprocessing first (``deploy.structure.served_masks``: re-cropped, re-padded, re-rendered, through the recipe's
canonical outline if it has one) and gives that silhouette to both the gate and the model, as an upload would be.
Re-rendering is not idempotent on dataset images (about a fifth of the 64 px sprites change in some pixels), so
the clean row of ``"served"`` already moves away from the fitted 95%.

Summaries are over the rewrites (the clean row excluded): minimum and mean of the ID acceptance and of both AUROCs,
and a verdict per bar (``ID_ACCEPT_BAR``, ``AUROC_BAR``) on the worst rewrite and on the mean. These are proxies:
no rewrite of a sprite reproduces another artist, and OOD rows rewritten the same way keep their source's style.

    rep = style_proxy_report("runs/x", split="val", signal="maxlogit")   # {"rows": {...}, "summary": ...}
    stillroom style-proxy RUN --ladder-signal auto --split test            # writes RUN/style_proxy.json
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stillroom._io import StillroomError, atomic_write_json, read_json
from stillroom.data.outline import outline_from_recipe
from stillroom.deploy._run_knn import run_features
from stillroom.deploy.ladder import LADDER_FILE, Ladder, ladder_report
from stillroom.deploy.run_ladder import fit_run_ladder, run_logits
from stillroom.deploy.structure import served_masks, silhouette_features
from stillroom.evaluate.shift import REWRITES, rewrite_images

__all__ = [
    "AUROC_BAR",
    "ID_ACCEPT_BAR",
    "INPUTS",
    "STYLE_PROXY_FILE",
    "report_key",
    "style_proxy_report",
    "update_style_proxy_file",
]

STYLE_PROXY_FILE = "style_proxy.json"
#: the outside evaluation's bars (issue 16 item 5): ID drawn in another style accepted, OOD of another style rejected
ID_ACCEPT_BAR = 0.90
AUROC_BAR = 0.95
#: what the model sees of a (rewritten) image: the dataset pixels, or the service's re-rendered silhouette
INPUTS = ("dataset", "served")


def _load_ladder(run_dir: Path, sha256: str) -> Ladder:
    """``RUN/ladder.json`` (the served fp32 ladder), refused when fitted on other weights (as ``run_ladder_report``)."""
    path = run_dir / LADDER_FILE
    if not path.is_file():
        raise StillroomError(f"{path}: not found; fit one (`stillroom export RUN`) or pass a ladder signal")
    ladder = Ladder.load(path)
    members = getattr(ladder, "extra_", {}).get("members") or [{}]
    if members[0].get("sha256") not in (None, sha256):
        raise StillroomError(f"{path}: fitted on other weights than those evaluated; fit it again")
    return ladder


class _Judge:
    """The ladder (and its structure gate) applied to one batch of images, as the service does for ``input``."""

    def __init__(self, ladder: Ladder, d: dict[str, Any], served_input: bool) -> None:
        recipe = d["run"].meta.get("recipe", {})
        self.ladder, self.run, self.served_input = ladder, d["run"], served_input
        self.size, self.padding = int(d["run"].meta["img_size"]), float(recipe.get("padding", 0.2))
        self.outline = outline_from_recipe(recipe)
        self.k = int(ladder.num_classes_)

    def __call__(self, images: np.ndarray) -> dict[str, Any]:
        """(N, 1, S, S) uint8 -> logits, features (knn ladders), gate verdicts (None: no gate) and signals."""
        from stillroom.models.inference import predict_logits

        gate = self.ladder.structure_
        masks = None
        if gate is not None or self.served_input:
            masks = served_masks(images, self.size, self.padding, self.outline)  # (N, S, S)
        x = masks[:, None] if self.served_input else images  # (N, 1, S, S): what the model is given
        rows = np.arange(len(x))
        logits = predict_logits(self.run.model, self.run.normalizer, x, rows)
        feats = run_features(self.run, x, rows) if self.ladder.uses_features else None
        ok = None if gate is None else gate.passes(silhouette_features(masks))
        sig = self.ladder.signals(logits, features=feats)
        # the service rejects these whatever the signal says: the gate before the model, the sink on the soft vote
        hard = sig["sink_top"].astype(bool) | (np.zeros(len(x), bool) if ok is None else ~ok)
        return {"logits": logits, "features": feats, "ok": ok, "score": sig["score"], "hard_reject": hard}


def _served_order(id_j: dict[str, Any], ood_j: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Signal scores with hard rejections ranked below every other input (one finite floor shared by both sides)."""
    floor = min(id_j["score"].min(), ood_j["score"].min()) - 1.0
    return np.where(id_j["hard_reject"], floor, id_j["score"]), np.where(ood_j["hard_reject"], floor, ood_j["score"])


def _row(
    ladder: Ladder, labels: np.ndarray, id_j: dict[str, Any], ood_j: dict[str, Any] | None, sink: bool
) -> dict[str, Any]:
    from stillroom.evaluate.ood import ood_metrics, sink_score

    rep = ladder_report(
        ladder, id_j["logits"], labels, None if ood_j is None else ood_j["logits"],
        id_structure_ok=id_j["ok"], ood_structure_ok=None if ood_j is None else ood_j["ok"],
        id_features=id_j["features"], ood_features=None if ood_j is None else ood_j["features"],
    )  # fmt: skip
    i = rep["id"]
    row: dict[str, Any] = {
        "id_n": i["n"],
        "id_accepted": i["coverage"],
        "id_top1_accepted": i["selective_accuracy"],
        "id_top1": i["accuracy"],
        "id_gate_rejected": 0.0 if id_j["ok"] is None else float(1.0 - np.mean(id_j["ok"])),
        "id_reasons": i["reasons"],
    }
    if ood_j is None:
        return row
    o = rep["ood"]
    sig = ood_metrics(id_j["score"], ood_j["score"])
    served = ood_metrics(*_served_order(id_j, ood_j))
    row.update(
        ood_n=o["n"], ood_rejected=o["rejection"], ood_accepted=o["acceptance"], ood_reasons=o["reasons"],
        ood_gate_rejected=0.0 if ood_j["ok"] is None else float(1.0 - np.mean(ood_j["ok"])),
        auroc_signal=sig["auroc"], fpr95_signal=sig["fpr_at_95_tpr"],
        auroc_served=served["auroc"], fpr95_served=served["fpr_at_95_tpr"],
    )  # fmt: skip
    if sink:
        import torch

        s_id, s_ood = (sink_score(torch.from_numpy(j["logits"])).numpy() for j in (id_j, ood_j))
        row["auroc_sink"] = ood_metrics(s_id, s_ood)["auroc"]
    return row


def _summary(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Min and mean over the rewrites (clean excluded) and a verdict per bar, on the worst rewrite and on the mean."""
    rw = [r for name, r in rows.items() if name != "clean"]
    out: dict[str, Any] = {"n_rewrites": len(rw)}
    for key in ("id_accepted", "id_top1_accepted", "ood_rejected", "auroc_signal", "auroc_served", "auroc_sink"):
        vals = [r[key] for r in rw if key in r]
        if vals:
            worst = min(range(len(vals)), key=lambda j: vals[j])
            names = [n for n, r in rows.items() if n != "clean" and key in r]
            out[key] = {"min": float(vals[worst]), "min_at": names[worst], "mean": float(np.mean(vals))}
            # rewrites of kinds no training or calibration view draws (``evaluate.shift``: in_shape_recipe False)
            held = [r[key] for n, r in rows.items() if n != "clean" and key in r and r.get("in_shape_recipe") is False]
            out[key]["held_out_mean"] = float(np.mean(held)) if held else None
    verdict: dict[str, Any] = {}
    for bar_name, key, bar in (("id_accept", "id_accepted", ID_ACCEPT_BAR), ("ood_auroc", "auroc_served", AUROC_BAR)):
        if key in out:
            verdict[bar_name] = {
                "bar": bar,
                "metric": key,
                "worst_rewrite_met": out[key]["min"] >= bar,
                "mean_met": out[key]["mean"] >= bar,
                "clean_met": rows["clean"][key] >= bar,
                "gap_worst": out[key]["min"] - bar,
            }
    out["verdict"] = verdict
    return out


def style_proxy_report(
    run_dir: str | Path,
    split: str = "val",
    weights: str = "best",
    signal: str | None = None,
    ood_index: Any = None,
    index: Any = None,
    names: Sequence[str] | None = None,
    input_mode: str = "dataset",
    target_accept: float = 0.95,
    style_views: int = 0,
    rewrite: Callable[[np.ndarray, list[str] | None], dict[str, np.ndarray]] = rewrite_images,
) -> dict[str, Any]:
    """The style proxies of ``run_dir`` on ``split`` (module docstring).

    Args:
        signal: None: judge with ``RUN/ladder.json`` as served; else fit a ladder on this signal (one of
            ``deploy.ladder.ALL_SIGNALS`` or "auto") on the clean val split for ``target_accept``, as
            ``stillroom export --ladder-signal`` does, without writing it.
        ood_index: OOD dataset of a K-class run (a merged index's sink rows are used instead when it has them).
        names: rewrites of ``evaluate.shift.REWRITES`` (default all); ``rewrite`` maps (images, names) to
            {name: rewritten images} (``evaluate.shift.rewrite_images``; replaceable for tests).
        input_mode: what the model sees, one of ``INPUTS``.
        style_views: with ``signal``, fit the ladder on clean val plus this many ``style`` views of each val image
            (``fit_run_ladder(style_views=...)``; 0: clean val only, as export fits it by default).

    Returns {"run", "split", "weights", "input", "ladder": {"source", "signal", "thresholds", "fit_summary"},
    "ood_source", "rows": {"clean" | rewrite: row}, "summary"}; a row holds ``id_accepted``, ``id_top1_accepted``,
    ``id_top1``, ``id_gate_rejected``, ``id_reasons`` and, with OOD rows, ``ood_rejected``, ``ood_accepted``,
    ``ood_gate_rejected``, ``auroc_signal`` / ``fpr95_signal``, ``auroc_served`` / ``fpr95_served`` (``auroc_sink``
    for K+1 models), plus ``changed_pixels`` (median share of ID pixels the rewrite flips)."""
    run_dir = Path(run_dir)
    if input_mode not in INPUTS:
        raise StillroomError(f"style proxy input must be one of {', '.join(INPUTS)}, got {input_mode!r}")
    if signal is None and style_views:
        raise StillroomError("style_views needs a ladder signal to fit with; RUN/ladder.json is judged as fitted")
    d = run_logits(run_dir, weights, index, ood_index, split)
    if signal is None:
        ladder, source = _load_ladder(run_dir, d["run"].weights_sha256), str(run_dir / LADDER_FILE)
    else:
        ladder = fit_run_ladder(
            run_dir, target_accept=target_accept, weights=weights, index=index, ood_index=ood_index, save=False,
            signal=signal, style_views=style_views,
        )  # fmt: skip
        views = f" + {style_views} style views of each" if style_views else ""
        source = f"fitted on clean val{views} (signal {signal!r}, not saved)"
    judge = _Judge(ladder, d, served_input=input_mode == "served")
    id_clean = np.asarray(d["images"][d["id_rows"]])  # (N, 1, S, S) uint8
    has_ood = d["ood_rows"] is not None and len(d["ood_rows"]) > 0
    ood_clean = np.asarray(d["ood_images"][d["ood_rows"]]) if has_ood else None
    sink = d["sink"] is not None
    id_sets = {"clean": id_clean, **rewrite(id_clean, None if names is None else list(names))}
    ood_sets = {"clean": ood_clean, **rewrite(ood_clean, None if names is None else list(names))} if has_ood else {}
    rows: dict[str, dict[str, Any]] = {}
    for name, x in id_sets.items():
        row = _row(ladder, d["labels"], judge(x), judge(ood_sets[name]) if has_ood else None, sink)
        row["changed_pixels"] = float(np.median((x != id_clean).reshape(len(x), -1).mean(1)))
        row["in_shape_recipe"] = next((r.in_shape_recipe for r in REWRITES if r.name == name), None)
        rows[name] = row
    return {
        "run": str(run_dir),
        "split": split,
        "weights": weights,
        "input": input_mode,
        "ladder": {
            "source": source,
            "signal": ladder.signal_,
            "target_accept": ladder.target_accept_,
            "thresholds": ladder.thresholds(),
            "structure_gate": ladder.structure_ is not None,
            "fit_summary": {k: ladder.fit_summary_.get(k) for k in ("id", "ood", "signal", "calibration")},
            "style_views": _style_views(ladder),
        },
        "ood_source": d["ood_source"],
        "rows": rows,
        "summary": _summary(rows),
    }


def _style_views(ladder: Ladder) -> int:
    """How many style views per val image the ladder's thresholds were placed on (0: clean val only, or a ladder
    fitted before ``style_views`` existed)."""
    return int((ladder.fit_summary_.get("calibration") or {}).get("style_views", 0))


def report_key(rep: dict[str, Any]) -> str:
    """Where a report lives in ``style_proxy.json``: ``<split>/<ladder signal>/<input>/<weights>``, then
    ``/style<V>`` for a ladder placed on V style views per val image."""
    views = rep["ladder"].get("style_views", 0)
    return f"{rep['split']}/{rep['ladder']['signal']}/{rep['input']}/{rep['weights']}" + (
        f"/style{views}" if views else ""
    )


def update_style_proxy_file(run_dir: str | Path, reports: Sequence[dict[str, Any]]) -> Path:
    """Write ``reports`` into ``RUN/style_proxy.json`` (atomically) under ``report_key``, keeping other entries."""
    path = Path(run_dir) / STYLE_PROXY_FILE
    data = read_json(path) if path.is_file() else {}
    if not isinstance(data, dict):
        raise StillroomError(f"{path}: expected a JSON object of reports, got {type(data).__name__}")
    for rep in reports:
        data[report_key(rep)] = rep
    return atomic_write_json(path, _json_safe(data))


def _json_safe(obj: Any) -> Any:
    """nan -> None (strict JSON), recursively."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj
