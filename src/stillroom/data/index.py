"""The canonical dataset index (REFERENCE 1.3; seed 001 §3, §4.2).

A dataset directory holds the images, ``index.csv`` (one row per sample, columns ``INDEX_COLUMNS`` plus optional
extras such as ``frame``) and ``index.json`` (hashes, counts, class names, the preprocessing recipe and any probe
results). Everything downstream (soft-label stores, runs) is tied to the index by its hashes:

- ``index_hash``   = sha256 over the ordered relative paths (seed 001 §4.2),
- ``labels_hash``  = sha256 over the ordered label ids,
- ``content_hash`` = sha256 over the ordered per-file sha256 values (a rebuilt image with the same name changes it).

Rows are never reordered after writing: row ``i`` of the CSV is sample ``i`` everywhere.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stillroom._io import StillroomError, atomic_write_json, atomic_write_text, read_json, sha256_lines

__all__ = [
    "FORMAT",
    "INDEX_COLUMNS",
    "SPLITS",
    "IndexRow",
    "DatasetIndex",
    "index_hashes",
    "write_index",
    "load_index",
    "update_index_meta",
]

INDEX_COLUMNS = ("path", "label", "label_name", "split", "group", "sha256")
SPLITS = ("train", "val", "test")
#: rows without a class (label -1) that a distilled student learns from through its teachers' targets only (a KD
#: "transfer set", Hinton et al. 2015 §2; ``data.transfer``): never evaluated, never in a split's class counts
TRANSFER = "transfer"
ALL_SPLITS = (*SPLITS, TRANSFER)
#: the training target of a transfer row: ``torch.nn.functional.cross_entropy``'s default ``ignore_index``, so every
#: cross-entropy term skips it and only teacher terms learn from it
IGNORE_INDEX = -100
FORMAT = "stillroom-index/1"
_INT = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class IndexRow:
    path: str  # relative to the dataset directory, forward slashes
    label: int
    label_name: str
    split: str
    group: str  # animation ("025/front"), emoji name, or source folder: the unit that must not straddle splits
    sha256: str
    extra: dict[str, str] = field(default_factory=dict)


def index_hashes(paths: Sequence[str], labels: Sequence[int], sha256s: Sequence[str]) -> dict[str, str]:
    return {
        "index_hash": sha256_lines(paths),
        "labels_hash": sha256_lines(int(v) for v in labels),
        "content_hash": sha256_lines(sha256s),
    }


@dataclass
class DatasetIndex:
    """A loaded index: column arrays in canonical row order plus the ``index.json`` metadata."""

    root: Path
    paths: list[str]
    labels: np.ndarray  # (N,) int64
    label_names: list[str]
    splits: np.ndarray  # (N,) str
    groups: list[str]
    sha256: list[str]
    extra: dict[str, list[str]]
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    @property
    def recipe(self) -> dict[str, Any]:
        return dict(self.meta.get("recipe", {}))

    @property
    def index_hash(self) -> str:
        return self.meta["index_hash"]

    @property
    def labels_hash(self) -> str:
        return self.meta["labels_hash"]

    @property
    def content_hash(self) -> str:
        return self.meta["content_hash"]

    def split_indices(self, split: str) -> np.ndarray:
        if split not in ALL_SPLITS:
            raise StillroomError(f"unknown split {split!r}; expected one of {', '.join(ALL_SPLITS)}")
        return np.flatnonzero(self.splits == split)

    def image_path(self, i: int) -> Path:
        return self.root / self.paths[i]

    def rows(self) -> list[IndexRow]:
        """The index as ``IndexRow``s in canonical order (extra columns included), e.g. to write a derived index."""
        cols = (self.paths, self.labels, self.label_names, self.splits, self.groups, self.sha256)
        return [
            IndexRow(p, int(lab), name, str(s), g, h, {c: self.extra[c][i] for c in self.extra})
            for i, (p, lab, name, s, g, h) in enumerate(zip(*cols, strict=True))
        ]


def _counts(rows: Sequence[IndexRow], classes: Sequence[str]) -> dict[str, Any]:
    per_split = Counter(r.split for r in rows)
    per_class: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for r in rows:
        if r.split != TRANSFER:  # no class
            per_class[r.split][classes[r.label]] = per_class[r.split].get(classes[r.label], 0) + 1
    counts = {
        "total": len(rows),
        "per_split": {s: per_split.get(s, 0) for s in SPLITS},
        "classes_per_split": {s: len(per_class[s]) for s in SPLITS},
        "groups": len({r.group for r in rows}),
    }
    if per_split.get(TRANSFER):  # only then, so indexes without such rows keep their index.json as it was
        counts["per_split"][TRANSFER] = per_split[TRANSFER]
    return counts


def write_index(
    root: str | Path,
    rows: Sequence[IndexRow],
    classes: Sequence[str],
    recipe: dict[str, Any],
    extra_meta: dict[str, Any] | None = None,
) -> DatasetIndex:
    """Validate ``rows`` and write ``index.csv`` + ``index.json`` atomically; return the loaded index."""
    root = Path(root)
    _validate_rows(rows, len(classes), source=str(root / "index.csv"))
    extra_cols = sorted({k for r in rows for k in r.extra})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*INDEX_COLUMNS, *extra_cols])
    for r in rows:
        writer.writerow(
            [
                r.path,
                r.label,
                r.label_name,
                r.split,
                r.group,
                r.sha256,
                *(r.extra.get(k, "") for k in extra_cols),
            ]
        )
    hashes = index_hashes([r.path for r in rows], [r.label for r in rows], [r.sha256 for r in rows])
    meta = {
        "format": FORMAT,
        **hashes,
        "num_samples": len(rows),
        "num_classes": len(classes),
        "classes": list(classes),
        "counts": _counts(rows, classes),
        "recipe": recipe,
        **(extra_meta or {}),
    }
    atomic_write_text(root / "index.csv", buf.getvalue())
    atomic_write_json(root / "index.json", meta)
    return load_index(root)


def _validate_rows(rows: Sequence[IndexRow], num_classes: int, source: str) -> None:
    seen: dict[str, int] = {}
    for i, r in enumerate(rows):
        where = f"{source}: row {i + 2}"  # +1 header, +1 one-based
        if not r.path or r.path.startswith("/") or ".." in Path(r.path).parts:
            raise StillroomError(f"{where}: path {r.path!r} must be relative and inside the dataset directory")
        if r.path in seen:
            raise StillroomError(f"{where}: duplicate path {r.path!r} (first at row {seen[r.path] + 2})")
        seen[r.path] = i
        if r.split not in ALL_SPLITS:
            raise StillroomError(f"{where}: split {r.split!r} not one of {', '.join(ALL_SPLITS)}")
        if r.split == TRANSFER and r.label != -1:
            raise StillroomError(f"{where}: a {TRANSFER!r} row has no class: its label must be -1, got {r.label}")
        if r.split != TRANSFER and not 0 <= r.label < num_classes:
            raise StillroomError(f"{where}: label {r.label} out of range 0..{num_classes - 1}")


def _read_rows(csv_path: Path) -> tuple[list[IndexRow], list[str]]:
    # utf-8-sig: a spreadsheet that saved the CSV with a BOM would otherwise lose the "path" column name.
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        missing = [c for c in INDEX_COLUMNS if c not in fields]
        if missing:
            raise StillroomError(f"{csv_path}: missing column(s) {', '.join(missing)}")
        extra_cols = [c for c in fields if c not in INDEX_COLUMNS]
        rows = []
        for i, rec in enumerate(reader):
            where = f"{csv_path}: row {i + 2}"
            if None in rec:  # DictReader's restkey: more fields than the header
                raise StillroomError(f"{where}: {len(fields) + len(rec[None])} fields, the header has {len(fields)}")
            if any(v is None for v in rec.values()):  # restval: fewer fields than the header
                got = sum(v is not None for v in rec.values())
                raise StillroomError(f"{where}: {got} fields, the header has {len(fields)}")
            text = rec["label"]
            # int() would also take " 3", "1_0" and non-ASCII digits; the writer only ever writes plain integers.
            if not _INT.fullmatch(text):
                raise StillroomError(f"{where}: label {text!r} is not an integer")
            rows.append(
                IndexRow(
                    rec["path"],
                    int(text),
                    rec["label_name"],
                    rec["split"],
                    rec["group"],
                    rec["sha256"],
                    {c: rec[c] for c in extra_cols},
                )
            )
    return rows, extra_cols


def load_index(root: str | Path, verify_files: bool = False) -> DatasetIndex:
    """Load and validate a dataset directory. ``verify_files`` re-hashes every image (slow, thorough)."""
    root = Path(root)
    csv_path, json_path = root / "index.csv", root / "index.json"
    if not csv_path.is_file():
        raise StillroomError(f"{csv_path}: no index.csv here; build one with `stillroom data build` or import-folder")
    meta = read_json(json_path)
    if not isinstance(meta, dict):
        raise StillroomError(f"{json_path}: top level must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise StillroomError(f"{json_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes:
        raise StillroomError(f"{json_path}: 'classes' must be a non-empty list")
    try:
        rows, extra_cols = _read_rows(csv_path)
    except UnicodeDecodeError as err:
        raise StillroomError(f"{csv_path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise StillroomError(f"{csv_path}: not a readable CSV ({err})") from None
    if not rows:
        raise StillroomError(f"{csv_path}: no rows")
    _validate_rows(rows, len(classes), source=str(csv_path))
    hashes = index_hashes([r.path for r in rows], [r.label for r in rows], [r.sha256 for r in rows])
    for key, value in hashes.items():
        if meta.get(key) != value:
            raise StillroomError(
                f"{root}: index.csv does not match index.json ({key} {value[:12]} vs {str(meta.get(key))[:12]});"
                " the CSV was edited or the JSON is stale: rebuild the index"
            )
    index = DatasetIndex(
        root=root,
        paths=[r.path for r in rows],
        labels=np.array([r.label for r in rows], dtype=np.int64),
        label_names=[r.label_name for r in rows],
        splits=np.array([r.split for r in rows]),
        groups=[r.group for r in rows],
        sha256=[r.sha256 for r in rows],
        extra={c: [r.extra[c] for r in rows] for c in extra_cols},
        meta=meta,
    )
    if verify_files:
        from stillroom._io import sha256_file

        for i, p in enumerate(index.paths):
            f = root / p
            if not f.is_file():
                raise StillroomError(f"{f}: listed in index.csv row {i + 2} but missing")
            if sha256_file(f) != index.sha256[i]:
                raise StillroomError(f"{f}: content changed since the index was written (sha256 mismatch)")
    return index


def update_index_meta(root: str | Path, **entries: Any) -> DatasetIndex:
    """Add or replace top-level ``index.json`` entries (probe results...) atomically; hashes and rows are untouched
    (the keys that tie the JSON to the CSV cannot be overwritten)."""
    root = Path(root)
    protected = {"format", "index_hash", "labels_hash", "content_hash", "num_samples", "num_classes", "classes"}
    clash = protected & set(entries)
    if clash:
        raise StillroomError(f"update_index_meta: {', '.join(sorted(clash))} are derived from index.csv")
    index = load_index(root)
    atomic_write_json(root / "index.json", {**index.meta, **entries})
    return load_index(root)
