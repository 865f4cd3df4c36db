"""Batched, un-augmented inference over rows of an index (evaluation, soft-label export, BN re-estimation)."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

__all__ = ["batch_inference_model", "inference_device", "iter_batches", "predict_logits"]


def inference_device() -> torch.device:
    """Where batch inference (evaluation, soft-label export, selection) runs: the first GPU when there is one."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def batch_inference_model(model: nn.Module) -> tuple[nn.Module, bool]:
    """The module batch inference runs, and whether its input batches go channels-last. On the CPU: a channels-last
    copy (``model`` itself is left as it is), because oneDNN's convolutions are much faster in that layout: batches
    of 256 at 64 px took 1.6x less time for resnet18, 1.3-1.6x for mobilenet_v3_small (2 threads, AMD EPYC;
    ``python benchmarks/bench_inference_layout.py``). A model already in that layout (the trainer's own, with
    ``channels_last: true``) is used as it is, without a copy. Elsewhere ``model`` itself, NCHW."""
    first = next(model.parameters(), None)
    if first is None or first.device.type != "cpu":
        return model, False
    if all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4):
        return model, True
    return copy.deepcopy(model).to(memory_format=torch.channels_last), True


def iter_batches(
    images: np.ndarray, rows: np.ndarray, normalizer: nn.Module, batch_size: int, channels_last: bool = False
) -> Iterator[torch.Tensor]:
    """Yield normalized float batches of ``images[rows]`` in row order, on the device of ``normalizer``'s buffers
    (the model's device: callers move both together)."""
    device = next(normalizer.buffers()).device
    for start in range(0, len(rows), batch_size):
        x = torch.from_numpy(np.asarray(images[rows[start : start + batch_size]])).to(device)
        x = normalizer(x)
        yield x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict_logits(
    model: nn.Module, normalizer: nn.Module, images: np.ndarray, rows: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Raw logits (len(rows), K) float32 of ``model`` in eval mode, no augmentation, rows kept in order."""
    was_training = model.training
    net, channels_last = batch_inference_model(model)
    net.eval()
    try:
        out = [net(x).float().cpu() for x in iter_batches(images, rows, normalizer, batch_size, channels_last)]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
