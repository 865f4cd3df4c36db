"""What the training loop writes: safetensors weights and the resumable training state, atomically.

The run directory's layout and reading a finished run back are ``stillroom.runs`` (``Run``, ``load_run``). Nothing
here unpickles: weights and optimizer tensors are safetensors, the loop state JSON in the file's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import nn

from stillroom._io import StillroomError, atomic_write_bytes, sha256_file
from stillroom.runs import read_safetensors

__all__ = ["save_weights", "save_training_state", "load_training_state"]


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage and non-contiguous views; clone makes each tensor its own.
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> str:
    """Atomically write the model's state_dict as safetensors; return the file's sha256."""
    atomic_write_bytes(path, st_save(_tensors(model.state_dict()), metadata=metadata))
    return sha256_file(path)


def save_training_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: torch.Tensor,
    state: dict[str, Any],
    ema: nn.Module | None = None,
    loss: nn.Module | None = None,
) -> None:
    """Weights, optimizer buffers, the torch RNG state (dropout), the loop state (epoch, history, best), the
    weight average (``ema``, when the run keeps one) and the loss's own weights (``loss``: supcon's projection head;
    none for most losses) in one safetensors file, so that a crash between two writes can never pair weights with
    the wrong epoch."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    if loss is not None:
        tensors.update({f"loss.{k}": v for k, v in loss.state_dict().items()})
    for pid, pstate in optimizer.state_dict()["state"].items():
        for name, value in pstate.items():
            tensors[f"optim.{pid}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["rng.torch"] = rng
    atomic_write_bytes(path, st_save(_tensors(tensors), metadata={"state": json.dumps(state)}))


def load_training_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: nn.Module | None = None,
    loss: nn.Module | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Restore model, optimizer, the weight average (``ema``) and the loss's weights (``loss``) in place; return
    (torch RNG state, loop state). A state saved before the average started (or without one) leaves ``ema`` as it
    is: it starts at its first update. A loss with weights must find them all (strict), as the model must."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            state = json.loads((fh.metadata() or {})["state"])
    except Exception as err:  # SafetensorError (a pickle or torn file), missing file, no/garbled state metadata
        raise StillroomError(f"{path}: not a resumable training state ({err})") from None
    tensors = read_safetensors(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None and any(k.startswith("ema.") for k in tensors):
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    if loss is not None:
        try:
            loss.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("loss.")})
        except RuntimeError as err:  # a state from a run whose loss had other weights (e.g. another head width)
            raise StillroomError(f"{path}: the loss's weights do not match this run's loss ({err})") from None
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    sd = optimizer.state_dict()
    optimizer.load_state_dict({"state": opt_state, "param_groups": sd["param_groups"]})
    return tensors["rng.torch"], state
