"""How long a training step takes on this machine, measured: what a time budget plans its epochs from.

``step_seconds`` runs the trainer's step (augmentation of real training images in one batch, normalization,
forward under the run's autocast, cross-entropy, backward, SGD step) a few times on a fresh copy of the model and
returns the median time of the timed steps. It is the step of ``trainer._train`` without the loader, the teachers'
logits (a table lookup for cached stores) or logging, so an epoch costs a little more than ``steps x step`` (the
planner's ``OVERHEAD`` factors, measured on the demo, account for that; ``pipeline.plan``). ``epoch_seconds`` is
that product, with the trainer's steps per epoch (``drop_last``).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from stillroom.config import TrainConfig
from stillroom.data.augment import augment_batch, augment_rng, get_augment
from stillroom.data.dataset import Normalizer, load_images
from stillroom.data.index import load_index
from stillroom.models.factory import create_model
from stillroom.models.small_maps import use_small_map_convs
from stillroom.train.trainer import _use_bf16

__all__ = ["step_seconds", "epoch_seconds"]


def step_seconds(cfg: TrainConfig, steps: int = 8, warmup: int = 3, threads: int | None = None) -> float:
    """Median seconds of one training step of ``cfg`` (its model, data, augmentation, batch size, autocast and
    memory format) over ``steps`` timed steps after ``warmup`` untimed ones, with ``threads`` torch threads (default:
    as set). Trains a throw-away model; the run's directory and torch's global RNG state are not touched."""
    return _probe(cfg, steps, warmup, threads)[0]


def epoch_seconds(cfg: TrainConfig, threads: int | None = None) -> float:
    """``step_seconds`` x the trainer's steps per epoch (full batches of the train split): one probe epoch."""
    step, steps_per_epoch = _probe(cfg, 8, 3, threads)
    return step * steps_per_epoch


def _probe(cfg: TrainConfig, steps: int, warmup: int, threads: int | None) -> tuple[float, int]:
    """(median step seconds, steps per epoch) of ``cfg``; ``step_seconds`` says what is timed."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"step_seconds: steps must be >= 1 and warmup >= 0, got {steps} and {warmup}")
    index = load_index(cfg.data.index)
    recipe = index.recipe
    channels, size = int(recipe.get("channels", 1)), int(recipe["size"])
    rows = index.split_indices(cfg.data.train_split)
    batch = min(cfg.batch_size, len(rows))
    images, labels = load_images(index), torch.as_tensor(index.labels)
    augment = get_augment(cfg.augment, recipe)
    device = torch.device("cpu")
    use_amp = _use_bf16(cfg.amp, device)
    before = torch.get_num_threads()
    rng_state = torch.get_rng_state()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        net = create_model(cfg.model.name, channels, index.num_classes, size)
        use_small_map_convs(net)
        if cfg.channels_last:
            net = net.to(memory_format=torch.channels_last)
        net.train()
        normalizer = Normalizer.from_recipe(recipe)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        draw = np.random.default_rng(cfg.seed)
        times = []
        for i in range(warmup + steps):
            pick = rows[draw.choice(len(rows), size=batch, replace=False)]
            t0 = time.perf_counter()
            x = torch.from_numpy(np.array(images[pick]))
            if augment is not None:
                x = augment_batch(augment, x, [augment_rng(cfg.seed, int(r), i) for r in pick])
            xn = normalizer(x)
            if cfg.channels_last:
                xn = xn.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_amp):
                logits = net(xn)
            loss = loss_fn(logits.float(), labels[pick])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
        torch.set_rng_state(rng_state)
    return float(np.median(times)), max(len(rows) // batch, 1)
