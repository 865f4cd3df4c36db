"""Soft-label store: one teacher's raw logits for every row of a canonical index (REFERENCE 1.3; seed 001 §4.2, §7.3).

A store is a directory::

    logits.npy     (N, K) float32 or float16; row i is index row i; opened memory-mapped so it streams.
                   A replay store (augmentation replay) holds (V, N, K): [v, i] = logits of view v of row i
    paths.txt      the N relative paths, in order, that the logits were computed for (names rows on a mismatch)
    manifest.json  format, the index's index_hash / labels_hash / content_hash, N, K, dtype, teacher
                   (arch, weights_sha256, run, ...), preprocessing recipe, temperature (null: raw logits),
                   compression ({"kind": "none"} or {"kind": "topk", "k": k, "index_dtype": ...}; a manifest
                   without it is "none"), created, stillroom_version; a replay store adds views (V), augment
                   (recipe name) and augment_seed: view v of row i is ``augment(image_i, augment_rng(augment_seed,
                   i, v))``

Top-k compression (``write_store(..., topk=k)``, ``stillroom softlabels export --topk k``) replaces logits.npy by
three memory-mapped arrays, with a leading V axis for a replay store::

    topk_indices.npy   (N, k) int16 (int32 when K > 32767): the classes of the k largest logits, largest first
    topk_values.npy    (N, k) float32 or float16 (the manifest's dtype): those logits
    topk_rest_lse.npy  (N,) float32: lse_rest = log sum_{j not in top-k} exp(z_j), always float32 (one per row;
                       float16 would cost ~1e-3 of the rest mass for nothing)

``store.logits`` is then a ``TopKLogits``: indexing it like the (N, K) array rebuilds only the requested rows,
top-k entries as stored and every other class set to the rest logit ``r = lse_rest - log(K - k)``, so that
at T = 1 the rest classes together carry exactly the original rest mass: (K - k) exp(r) = exp(lse_rest), and
softmax(z) is exact on the top-k classes. Since r = log(mean of exp(z_j) over the rest) <= max of the rest, the
top-k classes stay the top-k. At T != 1 the reconstruction is approximate: the tempered rest mass
sum_{j in rest} exp(z_j / T) becomes (K - k) (mean_{j in rest} exp(z_j))^(1/T), which by the power-mean
inequality is >= the original for T > 1 (the soft target gives the rest more mass, equal only when the rest
logits are all equal) and <= for T < 1; the ratios among the top-k classes stay exact at every T, and the spread
within the rest (its "dark knowledge") is replaced by a uniform one. ``benchmarks/bench_topk.py`` measures the
effect on the KD term (BENCHMARKS.md).

Bound on the values: every stored logit is finite with ``|z| <= MAX_ABS_LOGIT`` (1e4), and a top-k store's
``lse_rest`` is finite with ``|lse_rest| <= MAX_ABS_LOGIT + log K`` (the log-sum-exp of logits within the bound).
Trained classifiers give logits of order 10 (the teachers here stay under 100); 1e4 leaves two orders of magnitude
of headroom, and anything beyond it is an overflow, an uninitialised buffer or a damaged file, not a teacher's
opinion: softmax(z / T) of such a row is a one-hot for any usual T and float32 ``exp`` overflows past 88.
``write_store`` refuses such logits, and ``logit_problems`` (run by ``softlabels check`` and, through
``require_aligned``, before training on a store: one pass over the memory-mapped arrays) names the rows.

Logits are stored raw (temperature-free) so any T can be applied at training time. Nothing is ever unpickled:
the array is opened with ``np.lib.format.open_memmap`` (header only; no pickle, no zip). Before training on
stores, call ``stillroom.softlabels.check.require_aligned``: a store is only usable with the exact index it was
computed for (no truncation, no reordering, seed 001 §7.3.3).

Why one module of over 400 lines: one file format: writing, opening, validating and the top-k encoding of the soft-
label store must change together.
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

from stillroom._io import StillroomError, atomic_write_json, read_json, replace_dir, sha256_lines
from stillroom.data.index import DatasetIndex

__all__ = [
    "FORMAT",
    "MAX_ABS_LOGIT",
    "SoftLabelStore",
    "TopKLogits",
    "logit_problems",
    "reconstruct_topk",
    "teacher_class_counts",
    "teacher_logits_for",
    "topk_compress",
    "write_store",
]

FORMAT = "stillroom-softlabels/1"
DTYPES = ("float32", "float16")
LOGITS, PATHS, MANIFEST = "logits.npy", "paths.txt", "manifest.json"
TOPK_INDICES, TOPK_VALUES, TOPK_REST = "topk_indices.npy", "topk_values.npy", "topk_rest_lse.npy"
NO_COMPRESSION: dict[str, Any] = {"kind": "none"}
_REQUIRED = ("index_hash", "labels_hash", "content_hash", "num_samples", "num_classes", "dtype", "teacher")
_CHUNK = 65536  # rows per finiteness check, so a large array is not duplicated as a boolean mask at once
# Largest |logit| a store may hold (module docstring): beyond it a value is a broken export, not a logit.
MAX_ABS_LOGIT = 1e4


class TopKLogits:
    """Read-only (N, K) or (V, N, K) view of a top-k compressed store, rebuilt row by row on indexing.

    ``indices`` (..., k), ``values`` (..., k) and ``rest_lse`` (...) are the store's memmaps; ``x[key]`` with a key
    over the leading (row, or view and row) axes, as ``np.memmap`` would take it, returns float32 logits (..., K)
    where class ``indices[..., j]`` holds ``values[..., j]`` and every other class ``rest_lse - log(K - k)``.
    Only the requested rows are read, so a store larger than RAM streams. ``np.asarray(x)`` rebuilds everything.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, indices: np.ndarray, values: np.ndarray, rest_lse: np.ndarray, num_classes: int) -> None:
        self.indices, self.values, self.rest_lse = indices, values, rest_lse
        self.num_classes, self.k = int(num_classes), int(indices.shape[-1])
        self.shape = (*indices.shape[:-1], self.num_classes)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays (not of the rebuilt (N, K) logits)."""
        return int(self.indices.nbytes + self.values.nbytes + self.rest_lse.nbytes)

    def __getitem__(self, key: Any) -> np.ndarray:
        lead = key if isinstance(key, tuple) else (key,)
        if len(lead) > self.ndim - 1 or any(k is Ellipsis or k is None for k in lead):
            raise IndexError("TopKLogits: index the row (or view, row) axes only; take classes from the result")
        return reconstruct_topk(self.indices[key], self.values[key], self.rest_lse[key], self.num_classes)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def reconstruct_topk(indices: np.ndarray, values: np.ndarray, rest_lse: np.ndarray, num_classes: int) -> np.ndarray:
    """Full float32 logits (..., K) from top-k ``indices``/``values`` (..., k) and ``rest_lse`` (...).

    Non-top-k classes get ``r = lse_rest - log(K - k)``: then (K - k) exp(r) = exp(lse_rest), the original rest mass
    of softmax at T = 1, spread uniformly (see the module docstring for T != 1).
    """
    k = indices.shape[-1]
    rest = np.asarray(rest_lse, dtype=np.float32) - np.float32(np.log(num_classes - k))
    out = np.empty((*indices.shape[:-1], num_classes), dtype=np.float32)
    out[...] = rest[..., None]
    np.put_along_axis(out, np.asarray(indices, dtype=np.intp), np.asarray(values, dtype=np.float32), axis=-1)
    return out


@dataclass
class SoftLabelStore:
    """An opened store. ``logits`` is a read-only memmap of shape (num_samples, num_classes), or
    (views, num_samples, num_classes) for a replay store; a ``TopKLogits`` of that shape for a top-k store."""

    path: Path
    manifest: dict[str, Any]
    paths: list[str]
    logits: np.ndarray | TopKLogits

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

    @property
    def compression(self) -> dict[str, Any]:
        """``{"kind": "none"}`` (also for manifests written before compression existed) or ``{"kind": "topk",
        "k": k, "index_dtype": ...}``."""
        return dict(self.manifest.get("compression") or NO_COMPRESSION)

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
        compression = manifest.get("compression") or NO_COMPRESSION
        kind = compression.get("kind") if isinstance(compression, dict) else None
        if kind == "none":
            logits: np.ndarray | TopKLogits = _open_array(path / LOGITS, manifest["dtype"], want_shape)
        elif kind == "topk":
            topk, index_dtype = compression.get("k"), compression.get("index_dtype")
            if not isinstance(topk, int) or not 1 <= topk < k:
                raise StillroomError(f"{manifest_path}: compression k must be an integer in 1..{k - 1}, got {topk!r}")
            if index_dtype not in ("int16", "int32"):
                raise StillroomError(f"{manifest_path}: compression index_dtype {index_dtype!r} not int16 or int32")
            part = (*want_shape[:-1], topk)
            indices = _open_array(path / TOPK_INDICES, index_dtype, part)
            values = _open_array(path / TOPK_VALUES, manifest["dtype"], part)
            rest_lse = _open_array(path / TOPK_REST, "float32", want_shape[:-1])
            logits = TopKLogits(indices, values, rest_lse, k)
        else:
            raise StillroomError(f"{manifest_path}: unknown compression {compression!r} (kind none or topk)")

        paths_path = path / PATHS
        if not paths_path.is_file():
            raise StillroomError(f"{paths_path}: missing")
        paths = paths_path.read_text(encoding="utf-8").splitlines()
        if len(paths) != n:
            raise StillroomError(f"{paths_path}: {len(paths)} lines but the manifest says {n} samples")
        if sha256_lines(paths) != manifest["index_hash"]:
            raise StillroomError(f"{paths_path}: does not hash to the manifest's index_hash (edited after writing?)")
        return cls(path=path, manifest=manifest, paths=paths, logits=logits)


def _open_array(path: Path, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if not path.is_file():
        raise StillroomError(f"{path}: missing")
    try:
        # open_memmap reads only the .npy header: unlike np.load it never opens zip (.npz) data, and object
        # arrays, which would need unpickling, are refused
        arr = np.lib.format.open_memmap(path, mode="r")
    except (ValueError, OSError, EOFError) as err:
        raise StillroomError(f"{path}: not a readable .npy array of numbers ({err})") from None
    if arr.dtype != np.dtype(dtype):
        raise StillroomError(f"{path}: dtype {arr.dtype} but the manifest says {dtype}")
    if arr.shape != shape:
        raise StillroomError(f"{path}: shape {arr.shape} but the manifest says {shape}")
    return arr


def logit_problems(store: SoftLabelStore, limit: int = 5) -> dict[str, Any]:
    """Rows of ``store`` whose logits are not finite or beyond ``MAX_ABS_LOGIT`` (module docstring).

    One pass over the memory-mapped array(s), ``_CHUNK`` rows at a time (a top-k store: its values, and its
    ``lse_rest`` against ``MAX_ABS_LOGIT + log K``). Returns ``{"count": rows at fault, "rows": the first
    ``limit`` as {"row", "view" (None for a plain store), "path", "value" (the first bad number, as text)}}``.
    """
    logits, n, k = store.logits, store.num_samples, store.num_classes
    if isinstance(logits, TopKLogits):
        parts = [(logits.values, MAX_ABS_LOGIT), (logits.rest_lse[..., None], MAX_ABS_LOGIT + float(np.log(k)))]
    else:
        parts = [(logits, MAX_ABS_LOGIT)]
    flat = [(arr.reshape(-1, arr.shape[-1]), bound) for arr, bound in parts]  # (V*N, .): view v of row i at v*N + i
    total, views = len(flat[0][0]), store.views
    count, rows = 0, []
    for start in range(0, total, _CHUNK):
        chunks = [(np.asarray(arr[start : start + _CHUNK], dtype=np.float32), bound) for arr, bound in flat]
        bad = [~(np.abs(c) <= bound) for c, bound in chunks]  # NaN compares False: bad
        bad_rows = np.flatnonzero(np.logical_or.reduce([b.any(axis=1) for b in bad]))
        count += len(bad_rows)
        for r in bad_rows[: max(0, limit - len(rows))]:
            c, b = next((c, b) for (c, _), b in zip(chunks, bad, strict=True) if b[r].any())
            pos = start + int(r)
            rows.append(
                {
                    "row": pos % n,
                    "view": pos // n if views else None,
                    "path": store.paths[pos % n],
                    "value": f"{float(c[r][b[r]][0]):g}",  # text: NaN and inf are not JSON numbers
                }
            )
    return {"count": count, "rows": rows}


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
    topk: int | None = None,
) -> SoftLabelStore:
    """Write ``logits`` (N, K) for ``index`` as a store at ``out_dir``, atomically, and return it opened.

    A replay store: ``logits`` (V, N, K) and ``replay = {"augment": name, "augment_seed": seed}`` (both or
    neither). ``extra`` adds manifest fields (e.g. build time); the manifest always gets ``logits_bytes`` (bytes of
    the logits file(s)).

    ``topk`` = k in 1..K-1 stores only the k largest logits of each row (and view) plus
    lse_rest = log sum_{j not in top-k} exp(z_j), computed in float64 from ``logits`` (module docstring); None or 0:
    no compression. k >= K is an error, since it would store more than the plain array.

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
    topk = int(topk or 0)
    if topk and not 1 <= topk < k:
        raise StillroomError(
            f"write_store: topk must be in 1..{k - 1} for {k} classes (or 0/None: no compression), got {topk}"
        )
    if not isinstance(teacher, dict) or not all(
        isinstance(teacher.get(key), str) for key in ("arch", "weights_sha256")
    ):
        raise StillroomError("write_store: teacher must be a dict with string 'arch' and 'weights_sha256'")
    if any("\n" in p or "\r" in p for p in index.paths):
        raise StillroomError(
            f"write_store: index at {index.root} has a path with a line break; paths.txt cannot hold it"
        )
    flat_in = logits.reshape(-1, k)  # (V*N, K): view v of row i at v*N + i
    for start in range(0, len(flat_in), _CHUNK):
        with np.errstate(over="ignore"):  # float16 overflow is reported below, with the row it happened in
            chunk = np.asarray(flat_in[start : start + _CHUNK], dtype=dtype)
        bad = ~np.isfinite(chunk)
        if bad.any():
            pos = start + int(np.argwhere(bad)[0][0])
            row, where = pos % n, f" view {pos // n}" if views else ""
            why = " (overflows float16: store as float32)" if np.isfinite(flat_in[pos]).all() else ""
            raise StillroomError(f"write_store: logits row {row} ({index.paths[row]}){where} is not finite{why}")
        big = np.abs(chunk) > MAX_ABS_LOGIT
        if big.any():
            pos = start + int(np.argwhere(big)[0][0])
            row, where = pos % n, f" view {pos // n}" if views else ""
            raise StillroomError(
                f"write_store: logits row {row} ({index.paths[row]}){where} holds |logit| "
                f"{float(np.abs(chunk[pos - start]).max()):.3g} > {MAX_ABS_LOGIT:g}: not a trained classifier's logits"
            )
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
        "compression": {"kind": "topk", "k": topk, "index_dtype": _index_dtype(k)} if topk else NO_COMPRESSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stillroom_version": _version(),
        **({"views": views, "augment": replay["augment"], "augment_seed": replay["augment_seed"]} if views else {}),
        **(extra or {}),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        if topk:
            parts = dict(zip((TOPK_INDICES, TOPK_VALUES, TOPK_REST), topk_compress(logits, topk, dtype), strict=True))
        else:
            parts = {LOGITS: np.ascontiguousarray(logits, dtype=dtype)}
        for name, arr in parts.items():
            with open(tmp / name, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
        manifest["logits_bytes"] = sum(os.path.getsize(tmp / name) for name in parts)
        _write_synced(tmp / PATHS, "".join(p + "\n" for p in index.paths))
        atomic_write_json(tmp / MANIFEST, manifest)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SoftLabelStore.open(out_dir)


def _index_dtype(num_classes: int) -> str:
    return "int16" if num_classes <= np.iinfo(np.int16).max + 1 else "int32"


def topk_compress(logits: np.ndarray, k: int, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices (..., k) largest first, values (..., k) in ``dtype``, lse_rest (...) float32) of ``logits`` (..., K).

    lse_rest = m + log sum_{j not in top-k} exp(z_j - m), m the largest rest logit, taken over the rest directly
    (never as lse_all minus the top-k mass, which cancels catastrophically when the top-k hold almost all of it).
    """
    num_classes = logits.shape[-1]
    if not 1 <= k < num_classes:
        raise StillroomError(f"topk_compress: k must be in 1..{num_classes - 1} for {num_classes} classes, got {k}")
    flat = logits.reshape(-1, num_classes)
    idx_out = np.empty((len(flat), k), dtype=_index_dtype(num_classes))
    val_out = np.empty((len(flat), k), dtype=dtype)
    lse_out = np.empty(len(flat), dtype=np.float32)
    for start in range(0, len(flat), _CHUNK):
        z = np.array(flat[start : start + _CHUNK], dtype=np.float64)  # (B, K), a copy: it is written below
        top = np.argpartition(-z, k - 1, axis=1)[:, :k]  # (B, k), unordered
        top_vals = np.take_along_axis(z, top, axis=1)
        order = np.argsort(-top_vals, axis=1, kind="stable")  # largest first: a stored row reads as a ranking
        top, top_vals = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_vals, order, axis=1)
        np.put_along_axis(z, top, -np.inf, axis=1)  # leave only the rest
        m = z.max(axis=1, keepdims=True)  # finite: K - k >= 1 finite logits remain
        lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
        stop = start + len(z)
        idx_out[start:stop], lse_out[start:stop] = top, lse
        with np.errstate(over="ignore"):  # finiteness of the float16 values was checked by the caller
            val_out[start:stop] = top_vals
    lead = logits.shape[:-1]
    return idx_out.reshape(*lead, k), val_out.reshape(*lead, k), lse_out.reshape(lead)


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
    # Checked again right before the swap: only a store is ever replaced. The old one is restored on failure.
    _check_replaceable(out_dir)
    replace_dir(tmp, out_dir)


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
