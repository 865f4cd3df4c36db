"""Small I/O helpers: atomic writes, directory swaps and content hashes.

Every artefact Stillroom writes (indexes, stores, checkpoints, metrics, reports) goes through ``atomic_write_*``:
write to a temporary file in the same directory, fsync, then ``os.replace``. A crash leaves either the old file or
the new one, never a torn one. Whole directories (datasets, soft-label stores, exports) are built beside their
target and put in place with ``replace_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "checked_sidecar",
    "NotFittedError",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "read_json",
    "sha256_bytes",
    "sha256_file",
    "sha256_lines",
    "StillroomError",
    "replace_marked_section",
    "replace_dir",
]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class StillroomError(Exception):
    """An expected, user-facing error (bad input, misaligned store...). The CLI prints it without a traceback."""


class NotFittedError(StillroomError):
    """A fitted estimator (temperature scaler, strictness ladder) was used before ``fit`` or ``load``."""


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; artefacts should follow the umask like open()
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths: the usual suspects in metrics dicts.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StillroomError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise StillroomError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def checked_sidecar(folder: str | Path, name: Any, sha256: Any, suffix: str, what: str, source: str) -> Path:
    """The path of a file a record names beside ``source`` (a ladder's KNN bank, its RMD parameters): ``name`` must
    be a plain file name ending in ``suffix``, the file must exist and its sha256 equal ``sha256``; else an error
    naming the file and what to do. A file changed after the fit is never read."""
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(suffix):
        raise StillroomError(f"{source}: the {what} file must be a plain {suffix} file name, got {name!r}")
    path = Path(folder) / name
    if not path.is_file():
        raise StillroomError(f"{path}: the ladder's {what} is missing; fit the ladder again")
    if sha256_file(path) != sha256:
        raise StillroomError(f"{path}: sha256 differs from {source}; the {what} was changed, fit it again")
    return path


def sha256_lines(items: Iterable[object]) -> str:
    """sha256 over items joined by newlines (each item terminated), so ["ab","c"] and ["a","bc"] differ."""
    h = hashlib.sha256()
    for item in items:
        h.update(str(item).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def replace_marked_section(path: str | Path, begin: str, end: str, section: str, new_tail: str | None = None) -> Path:
    """Put ``section`` (which starts with ``begin`` and ends with ``end``) in place of the text between the first
    ``begin`` .. ``end`` pair of the Markdown file ``path``, atomically; when there is none (or no file), append
    ``new_tail`` (default: ``section``) to it. The rest of the file is kept as it is (benchmark write-ups)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    start = text.find(begin)
    stop = text.find(end, start) if start >= 0 else -1
    if stop >= 0:
        text = text[:start] + section + text[stop + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + (section if new_tail is None else new_tail)
    return atomic_write_text(path, text if text.endswith("\n") else text + "\n")


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def replace_dir(tmp: str | Path, out_dir: str | Path, remove: Callable[[Path], None] = _remove_tree) -> Path:
    """Put the finished directory ``tmp`` in the place of ``out_dir`` (absent, empty or not); return ``out_dir``.

    A directory cannot be renamed over a non-empty one, so it takes two renames: an existing ``out_dir`` moves aside
    to the hidden sibling ``.<name>.old-<pid>-<random>``, then ``tmp`` takes its name. If that second rename fails the
    old directory is moved back before the error propagates; once the new one is in place the old one is deleted
    with ``remove`` (default: ``shutil.rmtree``, errors ignored). A crash between the renames leaves the old
    directory intact under the aside name, never a half-built one under ``out_dir``. ``tmp`` must be on the same
    file system as ``out_dir`` (build it beside it).
    """
    tmp, out_dir = Path(tmp), Path(out_dir)
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        remove(old)
    return out_dir
