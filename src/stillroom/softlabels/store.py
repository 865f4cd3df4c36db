"""Soft-label store: one teacher's raw logits for every row of a canonical index (REFERENCE 1.3; seed 001 §4.2, §7.3).

A store is a directory::

    logits.npy     (N, K) float32 or float16; row i is index row i; opened memory-mapped so it streams.
                   A replay store (augmentation replay) holds (V, N, K): [v, i] = logits of view v of row i
    paths.txt      the N relative paths, in order, that the logits were computed for (names rows on a mismatch)
    manifest.json  format, the index's index_hash / labels_hash / content_hash, N, K, dtype, teacher
                   (arch, weights_sha256, run, ...), preprocessing recipe, temperature (null: raw logits),
                   created, stillroom_version; a replay store adds views (V), augment (recipe name) and
                   augment_seed: view v of row i is ``augment(image_i, augment_rng(augment_seed, i, v))``

Logits are stored raw (temperature-free) so any T can be applied at training time. Nothing is ever unpickled:
the array is opened with ``np.lib.format.open_memmap`` (header only; no pickle, no zip). Before training on
stores, call ``stillroom.softlabels.check.require_aligned``: a store is only usable with the exact index it was
computed for (no truncation, no reordering, seed 001 §7.3.3).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stillroom._io import StillroomError, atomic_write_json, read_json, sha256_lines
from stillroom.data.index import DatasetIndex

__all__ = ["FORMAT", "SoftLabelStore", "write_store", "teacher_logits_for", "teacher_class_counts"]

FORMAT = "stillroom-softlabels/1"
DTYPES = ("float32", "float16")
LOGITS, PATHS, MANIFEST = "logits.npy", "paths.txt", "manifest.json"
_REQUIRED = ("index_hash", "labels_hash", "content_hash", "num_samples", "num_classes", "dtype", "teacher")
_CHUNK = 65536  # rows per finiteness check, so a large array is not duplicated as a boolean mask at once


@dataclass
class SoftLabelStore:
    """An opened store. ``logits`` is a read-only memmap of shape (num_samples, num_classes), or
    (views, num_samples, num_classes) for a replay store."""

    path: Path
    manifest: dict[str, Any]
    paths: list[str]
    logits: np.ndarray

    @property
    def num_samples(self) -> int:
        return int(self.manifest["num_samples"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def views(self) -> int:
        """Number of stored augmented views per sample; 0 for a plain (un-augmented) store."""
        return int(self.manifest.get("views") or 0)

    @property
    def teacher(self) -> dict[str, Any]:
        return dict(self.manifest["teacher"])

    def __len__(self) -> int:
        return self.num_samples

    @classmethod
    def open(cls, path: str | Path) -> SoftLabelStore:
        """Open and validate a store directory; every problem is a ``StillroomError`` naming the file."""
        path = Path(path)
        if not path.is_dir():
            raise StillroomError(f"{path}: not a soft-label store directory (missing or not a directory)")
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise StillroomError(f"{manifest_path}: missing; {path} is not a soft-label store")
        manifest = read_json(manifest_path)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise StillroomError(f"{manifest_path}: unknown format {got!r}, expected {FORMAT!r}")
        missing = [k for k in _REQUIRED if k not in manifest]
        if missing:
            raise StillroomError(f"{manifest_path}: missing key(s) {', '.join(missing)}")
        if manifest["dtype"] not in DTYPES:
            raise StillroomError(f"{manifest_path}: dtype {manifest['dtype']!r} not one of {', '.join(DTYPES)}")
        n, k = int(manifest["num_samples"]), int(manifest["num_classes"])
        v = manifest.get("views") or 0
        if not isinstance(v, int) or v < 0:
            raise StillroomError(f"{manifest_path}: views must be a non-negative integer, got {v!r}")
        want_shape = (v, n, k) if v else (n, k)

        logits_path = path / LOGITS
        if not logits_path.is_file():
            raise StillroomError(f"{logits_path}: missing")
        try:
            # open_memmap reads only the .npy header: unlike np.load it never opens zip (.npz) data, and object
            # arrays, which would need unpickling, are refused
            logits = np.lib.format.open_memmap(logits_path, mode="r")
        except (ValueError, OSError, EOFError) as err:
            raise StillroomError(f"{logits_path}: not a readable .npy array of numbers ({err})") from None
        if logits.dtype != np.dtype(manifest["dtype"]):
            raise StillroomError(f"{logits_path}: dtype {logits.dtype} but the manifest says {manifest['dtype']}")
        if logits.shape != want_shape:
            raise StillroomError(f"{logits_path}: shape {logits.shape} but the manifest says {want_shape}")

        paths_path = path / PATHS
        if not paths_path.is_file():
            raise StillroomError(f"{paths_path}: missing")
        paths = paths_path.read_text(encoding="utf-8").splitlines()
        if len(paths) != n:
            raise StillroomError(f"{paths_path}: {len(paths)} lines but the manifest says {n} samples")
        if sha256_lines(paths) != manifest["index_hash"]:
            raise StillroomError(f"{paths_path}: does not hash to the manifest's index_hash (edited after writing?)")
        return cls(path=path, manifest=manifest, paths=paths, logits=logits)


def teacher_class_counts(index: DatasetIndex) -> tuple[int, ...]:
    """Class counts a store for ``index`` may have: K, and K - 1 on an index whose recipe has an OOD sink as its
    last class (``sink_class``, seed 000 §2.4): teachers are K-class and have no sink column."""
    k = index.num_classes
    return (k, k - 1) if index.recipe.get("sink_class") == k - 1 and k > 1 else (k,)


def write_store(
    out_dir: str | Path,
    logits: np.ndarray,
    index: DatasetIndex,
    teacher: dict[str, Any],
    preprocessing: dict[str, Any],
    dtype: str = "float32",
    replay: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> SoftLabelStore:
    """Write ``logits`` (N, K) for ``index`` as a store at ``out_dir``, atomically, and return it opened.

    A replay store: ``logits`` (V, N, K) and ``replay = {"augment": name, "augment_seed": seed}`` (both or
    neither). ``extra`` adds manifest fields (e.g. build time); the manifest always gets ``logits_bytes``.

    ``teacher`` needs ``arch`` and ``weights_sha256`` (``run`` and anything else is kept as given). The files are
    written into a temporary sibling directory that is then renamed into place; an existing ``out_dir`` is replaced
    only if it is a store (or empty).
    """
    out_dir = Path(out_dir)
    if dtype not in DTYPES:
        raise StillroomError(f"write_store: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    ndim = 3 if replay is not None else 2
    if not isinstance(logits, np.ndarray) or logits.ndim != ndim:
        want = "3-D numpy array (V, N, K) with replay" if replay is not None else "2-D numpy array (N, K)"
        raise StillroomError(f"write_store: logits must be a {want}, got {_describe(logits)}")
    if replay is not None and (
        not isinstance(replay.get("augment"), str) or not isinstance(replay.get("augment_seed"), int)
    ):
        raise StillroomError(f"write_store: replay must have a str 'augment' and an int 'augment_seed', got {replay}")
    views = int(logits.shape[0]) if replay is not None else 0
    if replay is not None and views < 1:
        raise StillroomError("write_store: a replay store needs at least one view")
    n, allowed = len(index), teacher_class_counts(index)
    if logits.shape[-2] != n or logits.shape[-1] not in allowed:
        want = " or ".join(map(str, allowed))
        raise StillroomError(
            f"write_store: logits shape {logits.shape} does not match the index at {index.root}"
            f" ({n} rows, {want} classes)"
        )
    k = int(logits.shape[-1])
    if not np.issubdtype(logits.dtype, np.floating):
        raise StillroomError(f"write_store: logits must be floating point, got {logits.dtype}")
    if not isinstance(teacher, dict) or not all(
        isinstance(teacher.get(key), str) for key in ("arch", "weights_sha256")
    ):
        raise StillroomError("write_store: teacher must be a dict with string 'arch' and 'weights_sha256'")
    if any("\n" in p or "\r" in p for p in index.paths):
        raise StillroomError(
            f"write_store: index at {index.root} has a path with a line break; paths.txt cannot hold it"
        )
    with np.errstate(over="ignore"):  # float16 overflow is reported below, with the row it happened in
        stored = np.ascontiguousarray(logits, dtype=dtype)
    flat, flat_in = stored.reshape(-1, k), logits.reshape(-1, k)  # (V*N, K): view v of row i at v*N + i
    for start in range(0, len(flat), _CHUNK):
        bad = ~np.isfinite(flat[start : start + _CHUNK])
        if bad.any():
            pos = start + int(np.argwhere(bad)[0][0])
            row, where = pos % n, f" view {pos // n}" if views else ""
            why = " (overflows float16: store as float32)" if np.isfinite(flat_in[pos]).all() else ""
            raise StillroomError(f"write_store: logits row {row} ({index.paths[row]}){where} is not finite{why}")
    _check_replaceable(out_dir)

    manifest = {
        "format": FORMAT,
        "index_hash": index.index_hash,
        "labels_hash": index.labels_hash,
        "content_hash": index.content_hash,
        "num_samples": n,
        "num_classes": k,
        "dtype": dtype,
        "teacher": {"run": "", **teacher},
        "preprocessing": preprocessing,
        "temperature": None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stillroom_version": _version(),
        **({"views": views, "augment": replay["augment"], "augment_seed": replay["augment_seed"]} if views else {}),
        **(extra or {}),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        with open(tmp / LOGITS, "wb") as fh:
            np.save(fh, stored, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        manifest["logits_bytes"] = os.path.getsize(tmp / LOGITS)
        _write_synced(tmp / PATHS, "".join(p + "\n" for p in index.paths))
        atomic_write_json(tmp / MANIFEST, manifest)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SoftLabelStore.open(out_dir)


def teacher_logits_for(
    stores: Sequence[SoftLabelStore],
    rows: torch.Tensor | np.ndarray,
    views: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """Gather cached logits of aligned ``stores`` for index ``rows`` (B,): a float32 tensor (M, B, K).

    Replay stores need ``views`` (B,), the augmented view of each row: entry b is ``logits[views[b], rows[b]]``.
    Only shapes are checked here; run ``require_aligned`` once before training to prove the stores fit the index.
    """
    if not stores:
        raise StillroomError("teacher_logits_for: no stores given")
    idx = _int_vector(rows, "rows")
    shapes = {s.logits.shape for s in stores}
    if len(shapes) != 1:
        raise StillroomError(f"teacher_logits_for: stores have different shapes {sorted(shapes)}; check alignment")
    n = stores[0].logits.shape[-2]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise StillroomError(f"teacher_logits_for: rows must be in 0..{n - 1}, got {idx.min()}..{idx.max()}")
    n_views = stores[0].logits.shape[0] if stores[0].logits.ndim == 3 else 0
    if not n_views:
        if views is not None:
            raise StillroomError("teacher_logits_for: views given but the stores hold un-augmented logits only")
        # fancy indexing on a memmap reads only the requested rows
        return torch.from_numpy(np.stack([np.asarray(s.logits[idx], dtype=np.float32) for s in stores]))
    if views is None:
        raise StillroomError(f"teacher_logits_for: the stores hold {n_views} views per row; pass views")
    vdx = _int_vector(views, "views")
    if vdx.shape != idx.shape:
        raise StillroomError(f"teacher_logits_for: views shape {vdx.shape} differs from rows shape {idx.shape}")
    if vdx.size and (vdx.min() < 0 or vdx.max() >= n_views):
        raise StillroomError(f"teacher_logits_for: views must be in 0..{n_views - 1}, got {vdx.min()}..{vdx.max()}")
    return torch.from_numpy(np.stack([np.asarray(s.logits[vdx, idx], dtype=np.float32) for s in stores]))


def _int_vector(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise StillroomError(f"teacher_logits_for: {name} must be a 1-D integer array, got {_describe(arr)}")
    return arr


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise StillroomError(f"{out_dir}: exists and is not a directory; refusing to replace it with a store")
    if any(out_dir.iterdir()) and not _is_store(out_dir):
        raise StillroomError(f"{out_dir}: exists and is not a soft-label store; refusing to replace it")


def _is_store(path: Path) -> bool:
    try:
        manifest = read_json(path / MANIFEST)
    except StillroomError:
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    # A directory cannot be os.replace'd over a non-empty one: move the old store aside first, then remove it.
    _check_replaceable(out_dir)
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        os.replace(out_dir, old / "store")
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old / "store", out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return type(x).__name__


def _version() -> str:
    from stillroom import __version__

    return __version__
