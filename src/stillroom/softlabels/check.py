"""Alignment gate between soft-label stores and the canonical index (REFERENCE 1.3; seed 001 §4.2, §7.3.3).

Seed 001 lost 6-9 macro-F1 points to teacher probabilities that were silently truncated to a common length and
averaged across different images. Here a store is usable only with the exact index it was computed for: the same
ordered paths (``index_hash``), labels (``labels_hash``), image bytes (``content_hash``), length and class count.
Any difference is a hard failure that names the store, the check and the first mismatching rows; nothing is ever
truncated or reordered to make it fit. The report is written as ``alignment_check.json`` beside the run.

The values are checked too (``logit_problems``, one pass over the memory-mapped arrays): a store holding NaN, inf or
a logit beyond ``MAX_ABS_LOGIT`` (see ``stillroom.softlabels.store``) fails, naming its first bad rows, so training
never starts on it (``require_aligned`` runs before the first step).

Replay stores (augmentation replay, issue 7) must also agree with each other and with the student on the views:
the number of views, the augment recipe and the augment seed. A store made with another seed or recipe would
pair the student's view with the logits of a different image: a hard failure, never a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from stillroom._io import StillroomError, atomic_write_json
from stillroom.data.index import DatasetIndex
from stillroom.softlabels.store import (
    LOGITS,
    MAX_ABS_LOGIT,
    PATHS,
    SoftLabelStore,
    logit_problems,
    teacher_class_counts,
)

__all__ = ["ALIGNMENT_FILE", "check_alignment", "require_aligned"]

ALIGNMENT_FILE = "alignment_check.json"
_MAX_ROWS = 5
# report flag -> (manifest / index attribute, what a mismatch means)
_HASH_CHECKS = {
    "hash_paths_equal": ("index_hash", "paths differ in order or content"),
    "labels_equal": ("labels_hash", "labels differ"),
    "content_equal": ("content_hash", "image files differ (rebuilt images?)"),
}


def check_alignment(
    stores: Sequence[SoftLabelStore | str | Path], index: DatasetIndex, replay: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Compare every store with ``index`` (and so with each other); return the report, never raise on mismatch.

    A store given as a path that cannot be opened is reported as not ok with the reason. ``replay`` is what the
    student will re-create (``{"augment": name, "augment_seed": seed}``); replay stores must match it and every
    store must have the same views, augment and augment_seed as the first one.
    """
    if not stores:
        raise StillroomError("check_alignment: no soft-label stores given")
    entries = [_check_one(s, index) for s in stores]
    _check_replay(entries, replay)
    flags = ["len_equal", "num_classes_equal", *_HASH_CHECKS, "logits_in_range", "replay_equal"]
    report: dict[str, Any] = {
        "index": str(index.root),
        "index_hash": index.index_hash,
        "labels_hash": index.labels_hash,
        "content_hash": index.content_hash,
        "num_samples": len(index),
        "num_classes": index.num_classes,
        "views": entries[0].get("views", 0),
        "replay": replay,
        "stores": entries,
        **{flag: all(e["checks"].get(flag, False) for e in entries) for flag in flags},
        "checked": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    report["ok"] = all(e["ok"] for e in entries)
    return report


def require_aligned(
    stores: Sequence[SoftLabelStore | str | Path],
    index: DatasetIndex,
    out_json: str | Path | None = None,
    replay: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``check_alignment``; write the report to ``out_json`` (a directory gets ``alignment_check.json``) even on
    failure, for the audit trail; raise ``StillroomError`` unless every store aligns. Returns the report."""
    report = check_alignment(stores, index, replay=replay)
    if out_json is not None:
        out = Path(out_json)
        atomic_write_json(out / ALIGNMENT_FILE if out.is_dir() else out, report)
    if report["ok"]:
        return report
    lines = [
        f"soft labels do not align with the index at {index.root}; nothing is truncated or reordered: "
        "re-export the failing store(s) for this index"
    ]
    for e in report["stores"]:
        if e["ok"]:
            continue
        lines.append(f"  {e['path']}: " + "; ".join(e["problems"]))
        if e["first_mismatches"]:
            rows = ", ".join(
                f"row {m['row']}: index {m['index_path']!r} vs store {m['store_path']!r}" for m in e["first_mismatches"]
            )
            lines.append(f"    first mismatching rows: {rows}")
    raise StillroomError("\n".join(lines))


def _check_one(store: SoftLabelStore | str | Path, index: DatasetIndex) -> dict[str, Any]:
    if not isinstance(store, SoftLabelStore):
        try:
            store = SoftLabelStore.open(store)
        except StillroomError as err:
            # Name the rows even so: from paths.txt when it can be read (a reordered or truncated one fails to
            # open), else from the row count in the header of a truncated logits.npy.
            mismatches = _first_mismatches(_read_paths(Path(store)), index.paths) or _missing_rows(
                Path(store), index.paths
            )
            return {
                "path": str(store),
                "ok": False,
                "checks": {},
                "problems": [str(err)],
                "first_mismatches": mismatches,
            }
    m = store.manifest
    problems: list[str] = []
    checks = {
        "len_equal": store.num_samples == len(index),
        "num_classes_equal": store.num_classes in teacher_class_counts(index),  # K - 1 allowed beside a sink
    }
    if not checks["len_equal"]:
        problems.append(f"length mismatch: store has {store.num_samples} rows, index {len(index)}")
    if not checks["num_classes_equal"]:
        problems.append(f"num_classes mismatch: store has {store.num_classes}, index {index.num_classes}")
    for flag, (key, meaning) in _HASH_CHECKS.items():
        ours, theirs = m.get(key), getattr(index, key)
        checks[flag] = ours == theirs
        if not checks[flag]:
            problems.append(f"{key} mismatch ({meaning}): store {str(ours)[:12]} vs index {theirs[:12]}")
    mismatches = _first_mismatches(store.paths, index.paths)
    if mismatches and checks["hash_paths_equal"]:  # cannot happen for a store that opened, but never trust silence
        checks["hash_paths_equal"] = False
        problems.append("paths.txt differs from the index although index_hash matches")
    bad = logit_problems(store, limit=_MAX_ROWS)
    checks["logits_in_range"] = bad["count"] == 0
    if bad["count"]:
        rows = ", ".join(_bad_row(r) for r in bad["rows"])
        more = f" and {bad['count'] - len(bad['rows'])} more" if bad["count"] > len(bad["rows"]) else ""
        problems.append(f"non-finite logits or |logit| > {MAX_ABS_LOGIT:g} (a broken export): {rows}{more}")
    return {
        "path": str(store.path),
        "teacher": store.teacher.get("arch"),
        "num_samples": store.num_samples,
        "num_classes": store.num_classes,
        "views": store.views,
        "augment": m.get("augment"),
        "augment_seed": m.get("augment_seed"),
        **{key: m.get(key) for key, _ in _HASH_CHECKS.values()},
        "ok": not problems,
        "checks": checks,
        "problems": problems,
        "first_mismatches": mismatches,
        "bad_logit_rows": bad["rows"],
    }


def _bad_row(r: dict[str, Any]) -> str:
    view = "" if r["view"] is None else f" view {r['view']}"
    return f"row {r['row']}{view} ({r['path']!r}): {r['value']}"


def _missing_rows(path: Path, index_paths: Sequence[str]) -> list[dict[str, Any]]:
    """Index rows past the end of a truncated ``logits.npy`` (read from its header only), as mismatches."""
    try:
        with open(path / LOGITS, "rb") as fh:
            fmt = np.lib.format
            version = fmt.read_magic(fh)
            shape = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(fh)[0]
    except (OSError, ValueError, TypeError):
        return []
    rows = shape[-2] if len(shape) >= 2 else None
    if rows is None or rows >= len(index_paths):
        return []
    last = min(len(index_paths), rows + _MAX_ROWS)
    return [{"row": r, "index_path": index_paths[r], "store_path": None} for r in range(rows, last)]


def _read_paths(path: Path) -> list[str] | None:
    try:
        return (path / PATHS).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None


def _check_replay(entries: list[dict[str, Any]], replay: dict[str, Any] | None) -> None:
    """Set ``checks["replay_equal"]`` on every opened entry: same views/augment/augment_seed as the first opened
    store, and (replay stores only) the student's ``replay`` expectation."""
    opened = [e for e in entries if "views" in e]
    if not opened:
        return
    keys = ("views", "augment", "augment_seed")
    ref = {k: opened[0][k] for k in keys}
    for e in opened:
        problems = [f"{k} {e[k]!r} differs from {ref[k]!r} in {opened[0]['path']}" for k in keys if e[k] != ref[k]]
        if e["views"] and replay is not None:
            problems += [
                f"{k} {e[k]!r} differs from the student's {replay.get(k)!r} (the student would re-create other views)"
                for k in ("augment", "augment_seed")
                if e[k] != replay.get(k)
            ]
        e["checks"]["replay_equal"] = not problems
        e["problems"] += [f"replay mismatch: {p}" for p in problems]
        e["ok"] = e["ok"] and not problems


def _first_mismatches(store_paths: Sequence[str] | None, index_paths: Sequence[str]) -> list[dict[str, Any]]:
    if store_paths is None or list(store_paths) == list(index_paths):
        return []
    out: list[dict[str, Any]] = []
    for row in range(max(len(store_paths), len(index_paths))):
        a = index_paths[row] if row < len(index_paths) else None
        b = store_paths[row] if row < len(store_paths) else None
        if a != b:
            out.append({"row": row, "index_path": a, "store_path": b})
            if len(out) == _MAX_ROWS:
                break
    return out
