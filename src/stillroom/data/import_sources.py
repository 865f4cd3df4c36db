"""What ``import_folder`` imports: the image files of a folder tree or a CSV (REFERENCE 1.3 index format).

Layouts: ImageFolder, ``src/<class_name>/**/*.{png,jpg,jpeg,gif,bmp,webp}``, or ``src/<split>/<class_name>/...``
when the top-level folders are exactly ``train``, ``val`` and ``test`` (``scan_folder``); or a CSV with columns
``path,label_name`` and optional ``split``, ``group``, paths relative to ``src`` (``scan_csv``). Hidden files and
folders are never data; other files are listed as ignored with the reason. The group of a file is its path relative
to ``src`` without the extension (``cat/0001``) or the CSV ``group``: the bare stem would make ``cat/0001`` and
``dog/0001`` one group.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from stillroom._io import StillroomError
from stillroom.data.index import SPLITS

__all__ = ["IMAGE_EXTENSIONS", "Source", "scan_folder", "scan_csv"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")


@dataclass(frozen=True)
class Source:
    """One image file to import, with its class, given split (or None) and group."""

    path: Path  # absolute
    rel: str  # relative to src, forward slashes: how the file is named in messages and rejects.json
    label_name: str
    split: str | None
    group: str


def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def _visible(p: Path, root: Path) -> bool:
    # Hidden files and folders (".DS_Store", ".ipynb_checkpoints") are never data.
    return not any(part.startswith(".") for part in p.relative_to(root).parts)


def _default_group(rel: str) -> str:
    return rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel


def _scan_class_dir(class_dir: Path, src: Path, label: str, split: str | None, ignored: list[dict]) -> list[Source]:
    out = []
    for p in sorted(class_dir.rglob("*")):
        if not p.is_file() or not _visible(p, src):
            continue
        rel = p.relative_to(src).as_posix()
        if not _is_image_name(p):
            ignored.append({"path": rel, "reason": f"unsupported extension {p.suffix or '(none)'!r}"})
            continue
        out.append(Source(p, rel, label, split, _default_group(rel)))
    return out


def scan_folder(src: Path, ignored: list[dict]) -> tuple[list[Source], str]:
    """The image files of the ImageFolder layout under ``src`` (module docstring) and the layout's name
    (``imagefolder`` or ``imagefolder-presplit``); files that are not imported are appended to ``ignored``."""
    top = sorted(d for d in src.iterdir() if _visible(d, src))
    for f in top:
        if f.is_file():
            ignored.append({"path": f.name, "reason": "file outside a class folder"})
    dirs = [d for d in top if d.is_dir()]
    names = {d.name for d in dirs}
    if names == set(SPLITS):
        sources = []
        for split in SPLITS:
            for class_dir in sorted(d for d in (src / split).iterdir() if d.is_dir() and _visible(d, src)):
                sources += _scan_class_dir(class_dir, src, class_dir.name, split, ignored)
            for f in sorted((src / split).iterdir()):
                if f.is_file() and _visible(f, src):
                    ignored.append({"path": f"{split}/{f.name}", "reason": "file outside a class folder"})
        return sources, "imagefolder-presplit"
    if names and names < set(SPLITS):
        # Classes literally named "train"/"test" are far less likely than a pre-split folder missing one split.
        missing = ", ".join(s for s in SPLITS if s not in names)
        raise StillroomError(
            f"{src}: top-level folders look like a pre-split dataset but {missing} is missing;"
            " add it (pre-split folders need exactly train/val/test) or move the class folders up one level"
        )
    sources = []
    for class_dir in dirs:
        sources += _scan_class_dir(class_dir, src, class_dir.name, None, ignored)
    return sources, "imagefolder"


def scan_csv(src: Path, csv_path: Path) -> list[Source]:
    """The image files listed in ``csv_path`` (columns ``path,label_name[,split][,group]``, paths under ``src``)."""
    if not csv_path.is_file():
        raise StillroomError(f"{csv_path}: CSV file not found")
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in reader.fieldnames or []]
        missing = [c for c in ("path", "label_name") if c not in fields]
        if missing:
            raise StillroomError(f"{csv_path}: missing column(s) {', '.join(missing)}; need path,label_name")
        has_split, has_group = "split" in fields, "group" in fields
        sources: list[Source] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(reader):
            rec = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            where = f"{csv_path}: row {i + 2}"
            rel, label = rec["path"].replace("\\", "/"), rec["label_name"]
            if not rel or not label:
                raise StillroomError(f"{where}: empty path or label_name")
            if rel in seen:
                raise StillroomError(f"{where}: path {rel!r} already listed at row {seen[rel]}")
            seen[rel] = i + 2
            split = rec.get("split") if has_split else None
            if has_split and split not in SPLITS:
                raise StillroomError(f"{where}: split {split!r} not one of {', '.join(SPLITS)}")
            group = (rec.get("group") if has_group else "") or _default_group(rel)
            sources.append(Source(src / rel, rel, label, split, group))
    if not sources:
        raise StillroomError(f"{csv_path}: no rows")
    return sources
