"""Export served predictions with user feedback as a new dataset folder (seed 000 §4.3: the feedback flywheel).

``export_feedback(db, out)`` writes an ImageFolder that ``stillroom data import-folder OUT --out NEW --kind
silhouette`` imports as is::

    OUT/<class name>/<sha16>.<ext>     labelled hard examples (the original upload, or its silhouette PNG when the
                                       service did not keep inputs)
    OUT/.unlabelled/<sha16>.<ext>      uncertain predictions nobody has answered yet: to label by hand (hidden, so
                                       import-folder skips them until they are moved into a class folder)
    OUT/.feedback_export.json          what was exported and why, with the prediction ids, verdicts and top-5

What counts (the latest feedback of a prediction wins):

- ``correct``: always exported, under the corrected label;
- ``confirm``: exported under the predicted label when the verdict was uncertain (a hard example the model got
  right but was not sure of), or for every verdict with ``include_confirmed``;
- ``not_species``: exported under ``not_species_class`` when given (e.g. an OOD class of an open-set index), else
  listed in the manifest only;
- no feedback and verdict uncertain: ``.unlabelled/`` (``include_uncertain``).

The same image (same input sha256) uploaded several times is exported once, with its latest feedback. The folder
is built beside ``out`` and renamed into place, so a crash never leaves half an export.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from stillroom._io import StillroomError, atomic_write_bytes, atomic_write_json, replace_dir
from stillroom.deploy.telemetry import Telemetry

__all__ = ["export_feedback", "UNLABELLED_DIR", "MANIFEST"]

UNLABELLED_DIR = ".unlabelled"
MANIFEST = ".feedback_export.json"
_EXT = {"image/png": "png", "image/gif": "gif", "image/jpeg": "jpg", "image/webp": "webp", "image/bmp": "bmp"}


def _safe_dir_name(label: str) -> bool:
    return (
        bool(label)
        and label not in (".", "..")
        and not label.startswith(".")
        and "/" not in label
        and "\\" not in label
    )


def _decide(row: dict[str, Any], include_uncertain: bool, include_confirmed: bool, not_species: str | None):
    """(label or None for unlabelled, why) if the row is exported, else (None, reason it is not)."""
    action, verdict = row["fb_action"], row["verdict"]
    if action == "correct":
        return row["fb_label"], "corrected"
    if action == "confirm":
        if verdict == "uncertain" or include_confirmed:
            return row["pred_label"], f"confirmed ({verdict})"
        return None, f"skip: confirmed {verdict} (use include_confirmed)"
    if action == "not_species":
        return (not_species, "not a species") if not_species else (None, "skip: not a species (no class given)")
    if verdict == "uncertain" and include_uncertain:
        return "", "uncertain, unlabelled"
    return None, "skip: no feedback"


def export_feedback(
    db_path: str | Path,
    out_dir: str | Path,
    include_uncertain: bool = True,
    include_confirmed: bool = False,
    not_species_class: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the export described in the module docstring; return the manifest (also written to ``OUT``)."""
    db_path, out_dir = Path(db_path), Path(out_dir)
    if not db_path.is_file():
        raise StillroomError(f"{db_path}: no telemetry database here")
    if not_species_class is not None and not _safe_dir_name(not_species_class):
        raise StillroomError(f"not_species_class {not_species_class!r}: must be a plain folder name")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise StillroomError(f"{out_dir}: exists and is not empty; pass overwrite=True (--overwrite) to replace it")

    latest: dict[str, dict[str, Any]] = {}  # input sha256 -> row with the latest feedback (or latest prediction)
    with Telemetry(db_path) as tel:
        for row in tel.iter_with_latest_feedback():
            prev = latest.get(row["input_sha256"])
            key = (row["fb_created_at"] or "", row["created_at"])
            if prev is None or key >= (prev["fb_created_at"] or "", prev["created_at"]):
                latest[row["input_sha256"]] = row

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    items, skipped = [], {}
    try:
        for sha, row in sorted(latest.items()):
            label, why = _decide(row, include_uncertain, include_confirmed, not_species_class)
            if label is None:
                skipped[why] = skipped.get(why, 0) + 1
                continue
            if label and not _safe_dir_name(label):
                why = f"skip: label {label!r} is not a plain folder name"
                skipped[why] = skipped.get(why, 0) + 1
                continue
            if row["input_bytes"]:
                data, ext = row["input_bytes"], _EXT.get((row["content_type"] or "").split(";")[0].lower(), "png")
                source = "upload"
            else:
                data, ext, source = row["silhouette_png"], "png", "silhouette"
            rel = f"{label or UNLABELLED_DIR}/{sha[:16]}.{ext}"
            atomic_write_bytes(tmp / rel, data)
            items.append(
                {
                    "path": rel,
                    "label": label or None,
                    "why": why,
                    "image": source,
                    "prediction_id": row["id"],
                    "input_sha256": sha,
                    "verdict": row["verdict"],
                    "reason": row["reason"],
                    "predicted": row["pred_label"],
                    "top5": json.loads(row["top5_json"]),
                    "feedback": row["fb_action"],
                    "weights": json.loads(row["weights_json"]),
                }
            )
        labelled = [it for it in items if it["label"]]
        manifest = {
            "format": "stillroom-feedback-export/1",
            "database": str(db_path),
            "labelled": len(labelled),
            "unlabelled": len(items) - len(labelled),
            "classes": sorted({it["label"] for it in labelled}),
            "skipped": skipped,
            "import_with": f"stillroom data import-folder {out_dir} --out <new dataset> --kind silhouette",
            "items": items,
        }
        atomic_write_json(tmp / MANIFEST, manifest)
        replace_dir(tmp, out_dir)  # the old export is removed only once the new one is in place
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
