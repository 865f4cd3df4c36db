"""Emoji OOD set, audit step: which rendered silhouettes are kept (REFERENCE 1.2; seed 000 §2.5; pipeline step 3 in
``ood_emoji``, whose docstring gives the reasons for the ``matched`` mode).

The audit runs on the final ``size x size`` mask the model sees and uses ``topology.mask_topology``: object
components (8-connectivity), internal holes (4-connectivity, off the border) and box fill. ``seed000`` is seed 000
§2.5 as written (one component, no hole, fill >= ``MIN_FILL``); ``matched`` (default) allows components and holes up
to the ``MATCHED_QUANTILE`` of the ID train images (``matched_limits``; without an ID index
``DEFAULT_MATCHED_LIMITS``) and keeps the fill rule. Our own rejections ``render_error`` / ``empty`` and
``too_small`` (the drawing spans less than ``MIN_CANVAS_FRACTION`` of its canvas) come first. ``summarize_audit``
counts every reason a mask fails, plus exclusive totals, overall and per set.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from stillroom._io import StillroomError
from stillroom.data.topology import mask_topology

if TYPE_CHECKING:
    from stillroom.data.emoji_render import RenderOutcome
    from stillroom.data.emoji_source import Candidate

__all__ = [
    "AUDIT_REASONS",
    "AUDIT_MODES",
    "DEFAULT_AUDIT",
    "MIN_FILL",
    "MIN_CANVAS_FRACTION",
    "MATCHED_QUANTILE",
    "DEFAULT_MATCHED_LIMITS",
    "AuditThresholds",
    "audit_mask",
    "matched_limits",
    "audit_limits",
    "summarize_audit",
]

AUDIT_REASONS = ("render_error", "empty", "too_small", "components", "holes", "low_fill")
AUDIT_MODES = ("seed000", "matched")
DEFAULT_AUDIT = "matched"
MIN_FILL = 0.15
MATCHED_QUANTILE = 0.95  # matched audit: allow components / holes up to this quantile of the ID train images
# matched-audit limits without an ID index: the 95% quantiles over species 1-151 train images at 64 px (measured)
DEFAULT_MATCHED_LIMITS = {"max_components": 2, "max_holes": 9}
MIN_CANVAS_FRACTION = 0.25

AuditThresholds = tuple[float, int, int]  # (min_fill, max_components, max_holes): audit_mask's thresholds


def audit_mask(image: np.ndarray, min_fill: float = MIN_FILL, max_components: int = 1, max_holes: int = 0) -> list[str]:
    """Audit of a final silhouette: the failed reasons among ``components``, ``holes``, ``low_fill`` (empty list =
    accepted). An empty image fails as ``empty``.

    The defaults are seed 000 §2.5 (audit mode ``seed000``): one component, no hole, box fill >= ``min_fill``. The
    ``matched`` mode passes ``max_components`` / ``max_holes`` taken from the ID images (``matched_limits``).
    """
    topo = mask_topology(image)
    if topo["area"] == 0:
        return ["empty"]
    reasons = []
    if topo["components"] > max_components:
        reasons.append("components")
    if topo["holes"] > max_holes:
        reasons.append("holes")
    if topo["fill"] < min_fill:
        reasons.append("low_fill")
    return reasons


def matched_limits(images: np.ndarray, quantile: float = MATCHED_QUANTILE) -> dict[str, int]:
    """``max_components`` / ``max_holes`` for the ``matched`` audit: the ``quantile`` of each over ``images``
    (``(N, S, S)`` uint8 ID silhouettes), rounded up, and never stricter than seed 000 (>= 1 and >= 0)."""
    images = np.asarray(images)
    if images.ndim != 3 or len(images) == 0:
        raise StillroomError(f"matched_limits: expected a non-empty (N, S, S) stack, got shape {images.shape}")
    if not 0 < quantile <= 1:
        raise StillroomError(f"matched_limits: quantile must be in (0, 1], got {quantile!r}")
    topo = [mask_topology(img) for img in images]
    comps = np.array([t["components"] for t in topo], dtype=np.float64)
    holes = np.array([t["holes"] for t in topo], dtype=np.float64)
    return {
        "max_components": max(1, math.ceil(float(np.quantile(comps, quantile)))),
        "max_holes": max(0, math.ceil(float(np.quantile(holes, quantile)))),
    }


def audit_limits(audit: str, id_train: np.ndarray | None) -> dict[str, Any]:
    """``max_components``, ``max_holes`` and where they come from (``from``) for audit mode ``audit``:
    seed 000's, the ID train images' (``id_train``, ``(N, S, S)`` uint8) or the defaults when there are none."""
    if audit == "seed000":
        return {"max_components": 1, "max_holes": 0, "from": "seed000"}
    if id_train is not None:
        return {**matched_limits(id_train), "from": f"id-index train, quantile {MATCHED_QUANTILE}"}
    return {**DEFAULT_MATCHED_LIMITS, "from": "default (species 1-151 at 64 px)"}


def summarize_audit(
    outcomes: Sequence[RenderOutcome],
    candidates: Sequence[Candidate],
    prefixes: Sequence[str],
    audit_sets: Mapping[str, dict[str, Any]],
    mode: str,
    min_fill: float,
    limits: Mapping[str, Any],
) -> tuple[list[RenderOutcome], dict[str, Any]]:
    """The outcomes that passed, in order, and the ``audit`` entry of ``index.json``.

    ``candidates[o.key]`` is the icon behind outcome ``o``, ``prefixes[i]`` the prefix of icon set ``i``;
    ``audit_sets`` (per prefix, from ``emoji_source.list_candidates``) is completed in place with ``rendered``,
    ``passed``, ``rejected`` and ``rejected_by_reason``. Raises when nothing passed.
    """
    by_reason: Counter[str] = Counter()
    first_reason: Counter[str] = Counter()
    passed = []
    rejected_icons = []
    for o in outcomes:
        prefix = prefixes[candidates[o.key].set_index]
        entry = audit_sets[prefix]
        entry["rendered"] = entry.get("rendered", 0) + 1
        if o.reasons:
            rejected_icons.append({"set": prefix, "icon": candidates[o.key].name, "reasons": list(o.reasons)})
            by_reason.update(o.reasons)
            first_reason[o.reasons[0]] += 1
            for r in o.reasons:
                entry.setdefault("rejected_by_reason", {})
                entry["rejected_by_reason"][r] = entry["rejected_by_reason"].get(r, 0) + 1
            entry["rejected"] = entry.get("rejected", 0) + 1
        else:
            entry["passed"] = entry.get("passed", 0) + 1
            passed.append(o)
    if not passed:
        raise StillroomError("every emoji failed the audit; nothing to write")
    audit_meta = {
        "candidates": len(candidates),
        "passed": len(passed),
        "rejected_total": len(candidates) - len(passed),
        "rejected_by_reason": {r: by_reason.get(r, 0) for r in AUDIT_REASONS},
        "rejected_by_first_reason": {r: first_reason.get(r, 0) for r in AUDIT_REASONS},
        "mode": mode,
        "thresholds": {"min_fill": float(min_fill), "min_canvas_fraction": MIN_CANVAS_FRACTION, **limits},
        "per_set": audit_sets,
        "rejected_icons": rejected_icons,
    }
    return passed, audit_meta
