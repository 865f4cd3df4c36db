"""One run directory, read in one place: the typed config, the class layout, weights, logits per split, the
temperature and the ID / OOD rows. Every stage above (train, softlabels, distill, evaluate, deploy, report) reads
finished runs through ``Run``; nothing else opens ``model.json`` or ``config.json`` or works out the sink column.

Layout of a run directory (written by ``train.trainer``; ``evaluate`` and ``deploy`` add their files)::

    config.json            resolved, frozen TrainConfig (``Run.config``)
    config.yaml            the same, for people
    model.json             architecture, channels, classes, recipe, index hashes, BN re-estimation (``Run.meta``)
    state.json             epoch reached, history, best epoch (what --resume continues from)
    last.safetensors       training weights at the end of the last finished epoch (+ optimizer, RNG)
    best.safetensors       best-validation weights, BN re-estimated
    final.safetensors      last-epoch weights, BN re-estimated
    metrics.json           evaluation of best and final weights (``evaluate``)
    calibration.json       fitted temperatures per weights, with their sha256 (``Run.temperature``)

Class layout (REFERENCE 2; seed 000 §2.4): a K-class model has K outputs; an open-set model trained on a merged
index (``data merge-sink``) has K + 1, the last one the OOD sink, whose label in the index is K
(``recipe.sink_class``). ``ClassLayout`` holds that rule once; ``index_sink`` says which label marks OOD rows of an
index (the sink class of a merged index), whatever the model.

This module sits right above ``models`` (import-linter contract in pyproject.toml) and reads weights without
unpickling anything (safetensors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from torch import nn

from stillroom._io import StillroomError, read_json, sha256_file
from stillroom.config import TrainConfig, config_from_dict
from stillroom.data.dataset import Normalizer, load_images
from stillroom.data.index import DatasetIndex, load_index
from stillroom.models.factory import create_model
from stillroom.models.inference import inference_device, predict_logits

__all__ = [
    "Run",
    "LoadedRun",
    "ClassLayout",
    "load_run",
    "load_weights",
    "read_safetensors",
    "index_sink",
    "read_temperature",
    "split_rows",
    "WEIGHT_CHOICES",
    "CONFIG_FILE",
    "MODEL_FILE",
    "STATE_FILE",
    "METRICS_FILE",
    "CALIBRATION_FILE",
    "SUMMARY_FILE",
]

WEIGHT_CHOICES = ("best", "final")
CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.json"
CALIBRATION_FILE = "calibration.json"
#: a sweep directory's table of runs (``pipeline.sweep`` writes it, ``compare`` and ``report`` read it)
SUMMARY_FILE = "results_summary.csv"


# --- weights ------------------------------------------------------------------------------------------------------


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing or malformed file is a ``StillroomError`` naming it."""
    try:
        return st_load(Path(path).read_bytes())
    except FileNotFoundError:
        raise StillroomError(f"{path}: weights file not found") from None
    except Exception as err:  # safetensors raises its own error types for malformed headers
        raise StillroomError(f"{path}: not a valid safetensors file ({err})") from None


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load a safetensors state dict into ``model`` (strict: every key must fit)."""
    state = read_safetensors(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise StillroomError(
            f"{path}: weights do not fit the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model


# --- class layout ---------------------------------------------------------------------------------------------------


def index_sink(index: DatasetIndex) -> int | None:
    """The label of the OOD rows of ``index`` (``recipe.sink_class`` of a merged index), else None."""
    sink = index.recipe.get("sink_class")
    return None if sink is None else int(sink)


def split_rows(index: DatasetIndex, split: str, sink: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(ID rows, OOD rows) of ``split``; OOD rows are those labelled ``sink`` (None: every row is ID)."""
    rows = index.split_indices(split)
    if sink is None:
        return rows, rows[:0]
    is_ood = index.labels[rows] == sink
    return rows[~is_ood], rows[is_ood]


@dataclass(frozen=True)
class ClassLayout:
    """How a model's outputs map to classes: ``num_outputs`` columns, the first ``num_id`` in-distribution classes,
    and ``sink`` = the column of the OOD sink (= ``num_id``) or None for a K-class model."""

    num_outputs: int
    num_id: int
    sink: int | None

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ClassLayout:
        """From ``model.json``: the recipe's ``sink_class`` when the model has a column for it, or a last class
        named "ood" (runs whose recipe does not record the sink)."""
        n = int(meta["num_classes"])
        recipe_sink = (meta.get("recipe") or {}).get("sink_class")
        classes = list(meta.get("classes", []))
        if recipe_sink is not None and int(recipe_sink) == n - 1:
            return cls(n, n - 1, n - 1)
        if recipe_sink is None and classes and classes[-1] == "ood" and len(classes) == n:
            return cls(n, n - 1, n - 1)
        return cls(n, n if recipe_sink is None else min(n, int(recipe_sink)), None)

    @property
    def has_sink(self) -> bool:
        return self.sink is not None


# --- calibration ----------------------------------------------------------------------------------------------


def read_temperature(
    run_dir: str | Path, weights: str = "best", weights_sha256: str | None = None
) -> tuple[float, str | None]:
    """(T, where it came from) for ``weights`` from ``RUN/calibration.json``; (1.0, None) when none is stored.

    The one rule every reader uses (evaluation, calibration, the service). With ``weights_sha256`` a stored entry
    must belong to those weights: a model retrained after calibrating must be calibrated again
    (``StillroomError``). A legacy top-level ``temperature`` key is read as the temperature of every weights file.
    T must be finite and > 0.
    """
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return 1.0, None
    data = read_json(path)
    entries = data.get("weights") if isinstance(data.get("weights"), dict) else {}
    entry = entries.get(weights)
    if entry is not None:
        stored = entry.get("weights_sha256")
        if weights_sha256 is not None and stored not in (None, weights_sha256):
            raise StillroomError(
                f"{path}: the temperature for {weights!r} was fitted on other weights (sha256 {str(stored)[:12]} vs "
                f"{weights_sha256[:12]}); run `stillroom calibrate {Path(run_dir)}` again"
            )
        t, source = entry.get("temperature"), f"{CALIBRATION_FILE} [{weights}]"
    elif "temperature" in data:
        t, source = data["temperature"], CALIBRATION_FILE
    else:
        return 1.0, None
    if isinstance(t, bool) or not (isinstance(t, int | float) and math.isfinite(t) and t > 0):
        raise StillroomError(f"{path}: temperature must be a finite number > 0, got {t!r}")
    return float(t), source


# --- loaded model -------------------------------------------------------------------------------------------------


@dataclass
class LoadedRun:
    """A run's model in eval mode with its normalizer, on one device."""

    path: Path
    model: nn.Module
    normalizer: Normalizer
    meta: dict[str, Any]
    weights_path: Path
    weights_sha256: str

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])


def _check_weights(weights: str) -> str:
    if weights not in WEIGHT_CHOICES:
        raise StillroomError(f"weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}")
    return weights


def load_run(run_dir: str | Path, weights: str = "best", device: str | torch.device | None = None) -> LoadedRun:
    """Rebuild a trained model from its run directory in eval mode (``weights``: best or final), model and
    normalizer on ``device`` (None: ``inference_device()``, the GPU when there is one; ONNX export and latency
    pass "cpu"). Same as ``Run(run_dir).load(weights, device)``."""
    return Run(run_dir).load(weights, device)


# --- the run ------------------------------------------------------------------------------------------------------


class Run:
    """A run directory, read lazily and once: ``meta`` (model.json), ``config`` (typed), ``layout``, weights,
    ``logits`` per (weights, split, index) cached, ``temperature``. Cheap to create; nothing is loaded until
    asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / MODEL_FILE).is_file():
            raise StillroomError(f"{self.path / MODEL_FILE}: file not found; {self.path} is not a run directory")
        self._models: dict[tuple[str, str], LoadedRun] = {}
        self._logits: dict[tuple[str, str, str], np.ndarray] = {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # facts from model.json / config.json
    @cached_property
    def meta(self) -> dict[str, Any]:
        return read_json(self.path / MODEL_FILE)

    @cached_property
    def config(self) -> TrainConfig | None:
        """The run's resolved config, validated (None for a run directory without one, e.g. an imported model)."""
        path = self.path / CONFIG_FILE
        return config_from_dict(read_json(path), source=str(path)) if path.is_file() else None

    @cached_property
    def layout(self) -> ClassLayout:
        return ClassLayout.from_meta(self.meta)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def val_split(self) -> str:
        return self.config.data.val_split if self.config else "val"

    @property
    def train_split(self) -> str:
        return self.config.data.train_split if self.config else "train"

    @property
    def batch_size(self) -> int:
        return self.config.batch_size if self.config else 128

    @property
    def seed(self) -> int:
        return self.config.seed if self.config else 0

    def state(self) -> dict[str, Any]:
        """``state.json`` (epoch reached, history, best), or {} before the first finished epoch."""
        path = self.path / STATE_FILE
        return read_json(path) if path.is_file() else {}

    # data
    def index(self, index: DatasetIndex | str | Path | None = None) -> DatasetIndex:
        """The index the run was trained on (``model.json`` ``index``), or ``index`` if it has the same classes
        (another build of the same dataset)."""
        if isinstance(index, DatasetIndex):
            idx = index
        else:
            path = Path(index) if index is not None else Path(self.meta["index"])
            if not (path / "index.csv").is_file():
                raise StillroomError(f"{self.path}: its dataset {path} is not there; pass the dataset with --index")
            idx = load_index(path)
        if idx.index_hash != self.meta.get("index_hash") and idx.classes != self.classes[: idx.num_classes]:
            raise StillroomError(f"{idx.root}: classes differ from those of {self.path}; cannot use it for this run")
        return idx

    def trained_on(self, index: DatasetIndex) -> bool:
        """Whether ``index`` is the very index (rows and content) the run was trained on."""
        return index.index_hash == self.meta.get("index_hash") and index.content_hash == self.meta.get("content_hash")

    # weights and model
    def weights_path(self, weights: str = "best") -> Path:
        path = self.path / f"{_check_weights(weights)}.safetensors"
        if not path.is_file():
            raise StillroomError(f"{path}: not found; is {self.path} a finished run?")
        return path

    def weights_sha256(self, weights: str = "best") -> str:
        return sha256_file(self.weights_path(weights))

    def load(self, weights: str = "best", device: str | torch.device | None = None) -> LoadedRun:
        """The model of ``weights`` in eval mode on ``device`` (None: ``inference_device()``), loaded once."""
        device = inference_device() if device is None else torch.device(device)
        key = (weights, str(device))
        if key not in self._models:
            wpath = self.weights_path(weights)
            meta = self.meta
            model = create_model(meta["arch"], meta["in_chans"], meta["num_classes"], meta["img_size"])
            load_weights(model, wpath)
            model.to(device).eval()
            normalizer = Normalizer.from_recipe(meta["recipe"]).to(device)
            self._models[key] = LoadedRun(self.path, model, normalizer, meta, wpath, sha256_file(wpath))
        return self._models[key]

    def logits(
        self,
        weights: str,
        rows: np.ndarray,
        index: DatasetIndex,
        images: np.ndarray | None = None,
        cache_key: str | None = None,
    ) -> np.ndarray:
        """(N, num_outputs) float32 logits of ``rows`` of ``index`` (``images``: its decoded images, else loaded);
        with ``cache_key`` (e.g. the split name) the result is kept for the next call with the same key and the
        same weights content: ``best`` and ``final`` are often one file's bytes (the last epoch was the best), and
        their logits are then computed once."""
        run = self.load(weights)
        key = (run.weights_sha256, index.index_hash, cache_key) if cache_key is not None else None
        if key is not None and key in self._logits:
            return self._logits[key]
        out = predict_logits(run.model, run.normalizer, load_images(index) if images is None else images, rows)
        if key is not None:
            self._logits[key] = out
        return out

    # calibration
    def temperature(self, weights: str = "best") -> tuple[float, str | None]:
        """``read_temperature`` for ``weights``, checked against the weights file's current sha256."""
        return read_temperature(self.path, weights, self.weights_sha256(weights))
