"""What a run trains against, built from its config: the loss (registry ``distill.losses``) and the teachers
(``distill.teachers``: cached soft-label stores or online runs). ``train.trainer.train`` takes this as its
``objective`` so the training loop never imports the distillation layer above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from stillroom._io import StillroomError
from stillroom.config import TrainConfig
from stillroom.data.index import DatasetIndex
from stillroom.distill.losses import build_loss
from stillroom.distill.teachers import build_teachers

__all__ = ["build_objective"]


def build_objective(
    cfg: TrainConfig, index: DatasetIndex, alignment_json: Path | None, replay: dict[str, Any]
) -> tuple[nn.Module, Any]:
    """(loss, teachers or None) for ``cfg`` on ``index``; ``alignment_json``: where the stores' alignment report
    goes (None: not written, e.g. on ranks > 0); ``replay``: the augment name and seed replay stores must match.

    A distillation loss without teachers, or teachers given to a loss that ignores them, is a config error.
    """
    loss_fn = build_loss(cfg.loss.name, **cfg.loss.params)
    teachers = build_teachers(cfg.teachers.cached, cfg.teachers.online, index, alignment_json, replay=replay)
    if getattr(loss_fn, "needs_teacher", False) and teachers is None:
        raise StillroomError(f"loss {cfg.loss.name!r} needs teachers: set teachers.cached or teachers.online")
    if teachers is not None and not getattr(loss_fn, "needs_teacher", False):
        raise StillroomError(f"loss {cfg.loss.name!r} ignores teachers; remove them or use a distillation loss")
    return loss_fn, teachers
