"""Run directories: safetensors weights + JSON state, atomic saves, resume, and loading a trained model back.

Layout of a run directory::

    config.json            resolved, frozen TrainConfig
    model.json             architecture, channels, classes, recipe, index hashes, weight sha256s
    state.json             epoch reached, history, best epoch (what --resume continues from)
    last.safetensors       training weights at the end of the last finished epoch (+ optimizer, RNG)
    best.safetensors       best-validation weights, BN re-estimated
    final.safetensors      last-epoch weights, BN re-estimated
    metrics.json           test (and val) metrics of best and final weights

Nothing here unpickles: weights and optimizer tensors are safetensors, the rest JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from stillroom._io import StillroomError, atomic_write_bytes, read_json, sha256_file
from stillroom.data.dataset import Normalizer
from stillroom.models.factory import create_model
from stillroom.models.inference import inference_device

__all__ = ["save_weights", "load_weights", "save_training_state", "load_training_state", "LoadedRun", "load_run"]

WEIGHT_CHOICES = ("best", "final")


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage and non-contiguous views; clone makes each tensor its own.
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> str:
    """Atomically write the model's state_dict as safetensors; return the file's sha256."""
    atomic_write_bytes(path, st_save(_tensors(model.state_dict()), metadata=metadata))
    return sha256_file(path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return st_load(Path(path).read_bytes())
    except FileNotFoundError:
        raise StillroomError(f"{path}: weights file not found") from None
    except Exception as err:  # safetensors raises its own error types for malformed headers
        raise StillroomError(f"{path}: not a valid safetensors file ({err})") from None


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    state = _read_safetensors(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise StillroomError(
            f"{path}: weights do not fit the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model


def save_training_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, rng: torch.Tensor, state: dict[str, Any]
) -> None:
    """Weights, optimizer buffers, the torch RNG state (dropout) and the loop state (epoch, history, best) in one
    safetensors file, so that a crash between two writes can never pair weights with the wrong epoch."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for pid, pstate in optimizer.state_dict()["state"].items():
        for name, value in pstate.items():
            tensors[f"optim.{pid}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["rng.torch"] = rng
    atomic_write_bytes(path, st_save(_tensors(tensors), metadata={"state": json.dumps(state)}))


def load_training_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Restore model and optimizer in place; return (torch RNG state, loop state)."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            state = json.loads((fh.metadata() or {})["state"])
    except Exception as err:  # SafetensorError (a pickle or torn file), missing file, no/garbled state metadata
        raise StillroomError(f"{path}: not a resumable training state ({err})") from None
    tensors = _read_safetensors(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    sd = optimizer.state_dict()
    optimizer.load_state_dict({"state": opt_state, "param_groups": sd["param_groups"]})
    return tensors["rng.torch"], state


@dataclass
class LoadedRun:
    path: Path
    model: nn.Module
    normalizer: Normalizer
    meta: dict[str, Any]
    weights_path: Path
    weights_sha256: str

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])


def load_run(run_dir: str | Path, weights: str = "best", device: str | torch.device | None = None) -> LoadedRun:
    """Rebuild a trained model from its run directory in eval mode (``weights``: best or final), model and
    normalizer on ``device`` (None: ``inference_device()``, the GPU when there is one; ONNX export and latency
    pass "cpu")."""
    run_dir = Path(run_dir)
    if weights not in WEIGHT_CHOICES:
        raise StillroomError(f"weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}")
    meta = read_json(run_dir / "model.json")
    wpath = run_dir / f"{weights}.safetensors"
    if not wpath.is_file():
        raise StillroomError(f"{wpath}: not found; is {run_dir} a finished run?")
    model = create_model(meta["arch"], meta["in_chans"], meta["num_classes"], meta["img_size"])
    load_weights(model, wpath)
    device = inference_device() if device is None else device
    model.to(device).eval()
    normalizer = Normalizer.from_recipe(meta["recipe"]).to(device)
    return LoadedRun(run_dir, model, normalizer, meta, wpath, sha256_file(wpath))
