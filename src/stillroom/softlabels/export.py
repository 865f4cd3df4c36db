"""``stillroom softlabels export``: run a trained teacher once over every sample of an index and store raw logits.

No augmentation, eval mode, rows in index order (REFERENCE 1.3). The store's manifest records the index hashes,
the teacher architecture and the sha256 of the exact weight file used, so a stale or foreign store is caught
before any student step.

Augmentation replay (``views=V``, issue 7): the teacher runs once over V augmented views of every row, view v of
row i being ``augment(image_i, augment_rng(augment_seed, i, v))`` with the trainer's own augment function, and the
store holds (V, N, K) logits. A student trained with the same recipe and seed re-creates exactly the view whose
logits it looks up, so it gets online-teacher targets at cached-teacher cost. Build time and store size are
recorded in the manifest (``build_seconds``, ``logits_bytes``).

Crash safety and resume: logits are computed batch by batch into a float32 memmap in a work directory next to the
store (``.<store name>.partial/``, which holds no manifest and so can never be opened as a store). Every
``COMMIT_SECONDS`` the memmap is flushed and ``progress.json`` (rows done + a fingerprint of teacher weights,
index hashes, views, augment, seed and batch size) is replaced atomically, in that order, so the committed count
never runs ahead of the data on disk. Running the same export again after a crash or Ctrl-C continues from the
last commit when the fingerprint matches (else it starts over); batches are the same as in an uninterrupted run,
so the finished store is byte-identical to one. The store itself is written at the end by ``write_store``
(temporary directory + rename), then the work directory is removed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stillroom._io import StillroomError, atomic_write_json, read_json
from stillroom.data.augment import augment_batch, augment_name, augment_rng, get_augment
from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
from stillroom.models.inference import batch_inference_model, iter_batches
from stillroom.runs import index_sink, load_run
from stillroom.softlabels.store import SoftLabelStore, write_store

__all__ = ["export_softlabels", "partial_dir", "COMMIT_SECONDS"]

COMMIT_SECONDS = 1.0  # at most this much teacher work is redone after a crash; each commit costs an fsync
_PROGRESS, _LOGITS = "progress.json", "logits.partial.npy"
_WORK_FORMAT = "stillroom-softlabels-partial/1"
# how an image is drawn: a teacher must have been trained on images made the same way
_RENDERING = ("kind", "size", "channels", "padding", "alpha_threshold", "resize", "outline")


def partial_dir(out_dir: str | Path) -> Path:
    """The work directory of an unfinished export into ``out_dir``."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.partial"


def export_softlabels(
    run_dir: str | Path,
    index_dir: str | Path,
    out_dir: str | Path | None = None,
    weights: str = "best",
    dtype: str = "float32",
    batch_size: int = 256,
    views: int = 0,
    augment: str = "auto",
    augment_seed: int = 0,
    progress: Callable[..., None] | None = None,
    resume: bool = True,
    topk: int | None = None,
) -> SoftLabelStore:
    """Export ``run_dir``'s logits for every row of the index at ``index_dir``; default out: RUN/softlabels/<hash>.

    ``views=0``: un-augmented logits (N, K). ``views=V`` > 0: a replay store of (V, N, K) logits of the views
    made by ``augment`` (a recipe name, ``auto`` as in training) with ``augment_seed`` (the student's seed).
    ``progress(phase, done, total)`` is called after each batch. ``resume``: continue an interrupted export of
    the same teacher, index and settings (see the module docstring); False discards it and starts over.
    ``topk`` = k: store only each row's k largest logits plus the rest's log-sum-exp (``write_store``).
    """
    if views < 0:
        raise StillroomError(f"export_softlabels: views must be >= 0, got {views}")
    if batch_size < 1:
        raise StillroomError(f"export_softlabels: batch_size must be >= 1, got {batch_size}")
    t0 = time.perf_counter()
    run = load_run(run_dir, weights)
    index = load_index(index_dir)
    recipe, trecipe = index.recipe, run.meta["recipe"]
    columns = _teacher_columns(run.meta["classes"], index, run.path)
    # A teacher of the same classes was trained on this data: its normalization must match too. A teacher of more
    # classes was trained on other data (so other mean/std, which it keeps applying: its own normalizer runs
    # below); what must match is how an image is drawn, every rendering setting.
    for key in ("size", "channels", "mean", "std") if columns is None else _RENDERING:
        if recipe.get(key) != trecipe.get(key):
            raise StillroomError(
                f"{index.root}: preprocessing {key}={recipe.get(key)!r} differs from the teacher's "
                f"{trecipe.get(key)!r} ({run.path}); the teacher would see inputs it was not trained on"
            )
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "softlabels" / index.index_hash[:12]
    replay = {"augment": augment_name(augment, recipe), "augment_seed": int(augment_seed)} if views else None
    fingerprint = {
        "format": _WORK_FORMAT,
        "index_hash": index.index_hash,
        "labels_hash": index.labels_hash,
        "content_hash": index.content_hash,
        "arch": run.meta["arch"],
        "weights_sha256": run.weights_sha256,
        "views": int(views),
        "replay": replay,
        "columns": None if columns is None else columns.tolist(),
        "batch_size": int(batch_size),  # batch composition can change float results; resume only with the same
        "torch": torch.__version__,
    }
    work = _Work(partial_dir(out), fingerprint, resume)
    images = load_images(index)
    logits = _compute(run, images, views, replay, batch_size, work, progress, columns)
    teacher = {
        "arch": run.meta["arch"],
        "weights_sha256": run.weights_sha256,
        "weights": run.weights_path.name,
        "run": str(Path(run_dir)),
    }
    if columns is not None:  # a teacher of more classes: which of its outputs the store holds
        teacher["classes_selected"] = {"teacher_classes": len(run.meta["classes"]), "by": "name"}
    # Wall time over all sessions of a resumed export (the work directory keeps the earlier sessions' time).
    extra = {"build_seconds": round(work.previous_seconds + time.perf_counter() - t0, 3)}
    store = write_store(
        out, logits, index, teacher=teacher, preprocessing=recipe, dtype=dtype, replay=replay, extra=extra, topk=topk
    )
    del logits  # release the memmap before its file goes
    work.remove()
    return store


class _Work:
    """The work directory of one export: a float32 memmap being filled and the committed progress."""

    def __init__(self, path: Path, fingerprint: dict[str, Any], resume: bool) -> None:
        self.path, self.fingerprint = path, fingerprint
        self.done, self.previous_seconds = 0, 0.0
        self._started = time.perf_counter()
        if path.exists() and not path.is_dir():
            raise StillroomError(f"{path}: exists and is not a directory; remove it to export here")
        state = self._read() if resume else None
        if state is None:
            shutil.rmtree(path, ignore_errors=True)
        else:
            self.done, self.previous_seconds = int(state["done"]), float(state.get("seconds", 0.0))
        self.array: np.ndarray | None = None

    def _read(self) -> dict[str, Any] | None:
        """The committed progress, when it belongs to this very export and its memmap is there; else None."""
        try:
            state = read_json(self.path / _PROGRESS)
        except StillroomError:
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            return None
        if not isinstance(state.get("done"), int) or state["done"] < 0 or not (self.path / _LOGITS).is_file():
            return None
        return state

    def open(self, shape: tuple[int, ...]) -> np.ndarray:
        """The (views*N, K) float32 memmap: reopened when resuming, else created (a fresh file)."""
        path = self.path / _LOGITS
        if self.done:
            try:
                arr = np.lib.format.open_memmap(path, mode="r+")
            except (ValueError, OSError, EOFError):
                arr = None
            if arr is not None and arr.shape == shape and arr.dtype == np.float32:
                self.array = arr
                return arr
            self.done, self.previous_seconds = 0, 0.0  # unreadable or of another shape: start over
        self.path.mkdir(parents=True, exist_ok=True)
        self.array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        return self.array

    def commit(self, done: int) -> None:
        # Data first (msync), then the count that declares it valid (atomic replace): never the other way round.
        assert self.array is not None
        self.array.flush()
        seconds = self.previous_seconds + time.perf_counter() - self._started
        atomic_write_json(
            self.path / _PROGRESS, {"fingerprint": self.fingerprint, "done": int(done), "seconds": round(seconds, 3)}
        )
        self.done = done

    def remove(self) -> None:
        self.array = None
        shutil.rmtree(self.path, ignore_errors=True)


@torch.no_grad()
def _compute(
    run,
    images: np.ndarray,
    views: int,
    replay: dict | None,
    batch_size: int,
    work: _Work,
    progress: Callable[..., None] | None,
    columns: np.ndarray | None = None,
) -> np.ndarray:
    """(N, K), or (V, N, K) with views, float32 logits, filled into the work memmap from its committed row on.

    Flat unit u = v * N + r is view v of row r; batches never straddle two views, so every committed count is a
    batch boundary of the uninterrupted run and a resumed export computes exactly the same batches."""
    n, n_views = len(images), max(views, 1)
    total = n_views * n
    aug = get_augment(replay["augment"], {}) if replay else None
    normalizer = run.normalizer
    model, channels_last = batch_inference_model(run.model)  # on the CPU a channels-last copy: ~1.6x faster
    model.eval()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    k = _num_outputs(run, images, normalizer) if columns is None else len(columns)
    pick = None if columns is None else torch.from_numpy(columns)
    arr = work.open((total, k))
    done, last_commit = work.done, time.monotonic()
    rows = np.arange(n)
    while done < total:
        v, start = divmod(done, n)
        stop = min(start + batch_size, n)
        if aug is None:
            x = next(iter_batches(images, rows[start:stop], normalizer, batch_size, channels_last))
        else:
            # (B, C, S, S) uint8: exactly what IndexDataset serves for (seed, row, view)
            seed = replay["augment_seed"]
            raw = torch.from_numpy(np.array(images[start:stop]))
            raw = augment_batch(aug, raw, [augment_rng(seed, r, v) for r in range(start, stop)])
            x = normalizer(raw.to(next(normalizer.buffers()).device)).contiguous(memory_format=layout)
        out = model(x).float().cpu()
        arr[done : done + stop - start] = (out if pick is None else out[:, pick]).numpy()
        done += stop - start
        if done == total or time.monotonic() - last_commit >= COMMIT_SECONDS:
            work.commit(done)
            last_commit = time.monotonic()
        if progress:
            progress("export", done, total)
    return arr.reshape(n_views, n, k) if views else arr


def _teacher_columns(teacher_classes: list[str], index, run_path: Path) -> np.ndarray | None:
    """None when the teacher's outputs are the index's classes (or those of its sink-less part: a K-class teacher
    on a merged index); else, for a teacher trained on more classes, its output column of each index class, by
    name, so the store holds a teacher of exactly the index's classes (the softmax over them is the teacher's
    distribution given that the image is one of them)."""
    classes = index.classes
    sink = index_sink(index)
    if teacher_classes == classes or (sink == len(classes) - 1 and teacher_classes == classes[:-1]):
        return None
    wanted = classes[:-1] if sink == len(classes) - 1 and "ood" not in teacher_classes else classes
    column = {c: i for i, c in enumerate(teacher_classes)}
    missing = [c for c in wanted if c not in column]
    if missing:
        raise StillroomError(
            f"{index.root}: class list differs from the teacher's ({run_path}): it has no output for "
            f"{len(missing)} of the index's classes, e.g. {missing[:3]}"
        )
    return np.array([column[c] for c in wanted], dtype=np.int64)


def _num_outputs(run, images: np.ndarray, normalizer) -> int:
    """K, the teacher's logit count (a K-class teacher on an index with a sink has one column fewer)."""
    if len(images) == 0:
        raise StillroomError("export_softlabels: the index has no rows")
    x = next(iter_batches(images, np.arange(1), normalizer, 1))
    return int(run.model(x).shape[-1])
