"""SQLite telemetry of served predictions and the users' feedback (seed 000 §4.3; REFERENCE 5).

Every prediction row records what is needed to trace a hard example back to the exact model state that produced
it: the sha256 of the input bytes, the ladder thresholds and temperature in force, the sha256 of every weight file
used (ONNX graph and the safetensors it came from), the verdict with its reason and scores, and a UTC timestamp.
Feedback rows (confirm / correct / not a species) reference a prediction; the latest one counts.

The database runs in WAL mode (readers never block the writer) with ``synchronous=FULL``: the WAL is fsynced at
every commit, so a row the service has answered "stored" for survives a power cut or OS crash too, not only a crash
of the process (NORMAL would only promise the latter). One connection is
shared by the app's worker threads behind a lock: sqlite3 connections are not safe to use from two threads at
once, and a single writer is all SQLite allows anyway.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stillroom._io import StillroomError

__all__ = ["Telemetry", "FEEDBACK_ACTIONS", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
FEEDBACK_ACTIONS = ("confirm", "correct", "not_species")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS predictions (
    id              TEXT PRIMARY KEY,
    created_at      TEXT NOT NULL,
    input_sha256    TEXT NOT NULL,
    input_bytes     BLOB,
    content_type    TEXT,
    filename        TEXT,
    mask_source     TEXT NOT NULL,
    silhouette_png  BLOB NOT NULL,
    verdict         TEXT NOT NULL CHECK (verdict IN ('accept', 'uncertain', 'reject')),
    reason          TEXT NOT NULL,
    pred_index      INTEGER NOT NULL,
    pred_label      TEXT NOT NULL,
    top5_json       TEXT NOT NULL,
    scores_json     TEXT NOT NULL,
    thresholds_json TEXT NOT NULL,
    temperature     REAL NOT NULL,
    weights_json    TEXT NOT NULL,
    model_file      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_verdict ON predictions (verdict);
CREATE INDEX IF NOT EXISTS predictions_input ON predictions (input_sha256);
CREATE TABLE IF NOT EXISTS feedback (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    prediction_id TEXT NOT NULL REFERENCES predictions (id),
    created_at    TEXT NOT NULL,
    action        TEXT NOT NULL CHECK (action IN ('confirm', 'correct', 'not_species')),
    label         TEXT,
    comment       TEXT
);
CREATE INDEX IF NOT EXISTS feedback_prediction ON feedback (prediction_id);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Telemetry:
    """The telemetry database at ``path`` (created with its schema when missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
            self._conn.row_factory = sqlite3.Row
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._conn.execute("PRAGMA synchronous=FULL")  # durable commits; see the module docstring
            self._conn.execute("PRAGMA foreign_keys=ON")
            with self._conn:
                self._conn.executescript(_SCHEMA)
                self._conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
        except sqlite3.DatabaseError as err:
            raise StillroomError(f"{self.path}: cannot open the telemetry database ({err})") from None
        self.journal_mode = str(mode).lower()
        version = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        if int(version) != SCHEMA_VERSION:
            raise StillroomError(f"{self.path}: telemetry schema {version}, this Stillroom reads {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writes ------------------------------------------------------------------------------------------------

    def record_prediction(self, row: dict[str, Any]) -> None:
        """Insert one prediction. ``row`` keys: the ``predictions`` columns; ``*_json`` values may be dicts/lists."""
        data = dict(row)
        data["created_at"] = data.get("created_at") or _now()
        for key in ("top5_json", "scores_json", "thresholds_json", "weights_json"):
            if not isinstance(data[key], str):
                data[key] = json.dumps(data[key], sort_keys=True)
        cols = list(data)
        sql = f"INSERT INTO predictions ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        with self._lock, self._conn:
            self._conn.execute(sql, [data[c] for c in cols])

    def record_feedback(self, prediction_id: str, action: str, label: str | None = None, comment: str | None = None):
        """Store feedback for ``prediction_id``; returns the stored row as a dict. Raises KeyError if unknown."""
        if action not in FEEDBACK_ACTIONS:
            raise StillroomError(f"feedback action must be one of {', '.join(FEEDBACK_ACTIONS)}, got {action!r}")
        with self._lock, self._conn:
            if self._conn.execute("SELECT 1 FROM predictions WHERE id = ?", (prediction_id,)).fetchone() is None:
                raise KeyError(prediction_id)
            cur = self._conn.execute(
                "INSERT INTO feedback (prediction_id, created_at, action, label, comment) VALUES (?, ?, ?, ?, ?)",
                (prediction_id, _now(), action, label, comment),
            )
            new = self._conn.execute("SELECT * FROM feedback WHERE id = ?", (cur.lastrowid,)).fetchone()
        return dict(new)

    # --- reads -------------------------------------------------------------------------------------------------

    def get_prediction(self, prediction_id: str, with_blobs: bool = False) -> dict[str, Any] | None:
        cols = "*" if with_blobs else _NO_BLOBS
        with self._lock:
            row = self._conn.execute(f"SELECT {cols} FROM predictions WHERE id = ?", (prediction_id,)).fetchone()
        return None if row is None else dict(row)

    def feedback_for(self, prediction_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM feedback WHERE prediction_id = ? ORDER BY id", (prediction_id,)
            ).fetchall()
        return [dict(r) for r in rows]

    def counts(self) -> dict[str, Any]:
        """Predictions by verdict and feedback by action (latest feedback per prediction)."""
        with self._lock:
            verdicts = dict(self._conn.execute("SELECT verdict, COUNT(*) FROM predictions GROUP BY verdict"))
            actions = dict(
                self._conn.execute(
                    "SELECT action, COUNT(*) FROM feedback WHERE id IN "
                    "(SELECT MAX(id) FROM feedback GROUP BY prediction_id) GROUP BY action"
                )
            )
        return {
            "predictions": sum(verdicts.values()),
            "by_verdict": {v: int(verdicts.get(v, 0)) for v in ("accept", "uncertain", "reject")},
            "feedback_by_action": {a: int(actions.get(a, 0)) for a in FEEDBACK_ACTIONS},
        }

    def iter_with_latest_feedback(self) -> Iterator[dict[str, Any]]:
        """Yield every prediction (with blobs) joined with its latest feedback (``fb_action``, ``fb_label``,
        ``fb_created_at``; None when there is none), oldest first. Blobs are read one row at a time."""
        sql = (
            "SELECT p.id, f.action AS fb_action, f.label AS fb_label, f.created_at AS fb_created_at "
            "FROM predictions p LEFT JOIN feedback f ON f.id = "
            "(SELECT MAX(id) FROM feedback WHERE prediction_id = p.id) ORDER BY p.created_at, p.id"
        )
        with self._lock:
            heads = [dict(r) for r in self._conn.execute(sql).fetchall()]
        for head in heads:
            row = self.get_prediction(head["id"], with_blobs=True)
            if row is not None:
                yield {**row, **head}


_NO_BLOBS = ", ".join(
    c
    for c in (
        "id created_at input_sha256 content_type filename mask_source verdict reason pred_index pred_label "
        "top5_json scores_json thresholds_json temperature weights_json model_file"
    ).split()
)
