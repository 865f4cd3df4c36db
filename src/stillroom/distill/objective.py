"""What a run trains against, built from its config: the loss (registry ``distill.losses``) and the teachers
(``distill.teachers``: cached soft-label stores or online runs). ``train.trainer.train`` takes this as its
``objective`` so the training loop never imports the distillation layer above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from stillroom.config import TrainConfig
from stillroom.data.index import DatasetIndex
from stillroom.distill.losses import build_loss, check_loss_config
from stillroom.distill.teachers import build_teachers

__all__ = ["build_objective"]


def build_objective(
    cfg: TrainConfig, index: DatasetIndex, alignment_json: Path | None, replay: dict[str, Any]
) -> tuple[nn.Module, Any]:
    """(loss, teachers or None) for ``cfg`` on ``index``; ``alignment_json``: where the stores' alignment report
    goes (None: not written, e.g. on ranks > 0); ``replay``: the augment name and seed replay stores must match.

    A distillation loss without teachers, or teachers given to a loss that ignores them, is a config error.
    """
    check_loss_config(cfg, source=f"run {cfg.name!r}")  # teachers given exactly when the loss needs them
    loss_fn = build_loss(cfg.loss.name, **cfg.loss.params)
    teachers = build_teachers(cfg.teachers.cached, cfg.teachers.online, index, alignment_json, replay=replay)
    return loss_fn, teachers
