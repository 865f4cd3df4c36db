"""Orchestration over the pipeline stages: train-then-evaluate (``train``), sweeps and the demo.

This layer sits above ``report`` and below ``cli`` (import-linter contract in pyproject.toml): it may import
every stage, and no stage imports it. ``train`` is what ``stillroom train`` runs: the one training loop
(``train.trainer``) with the loss and teachers of ``distill.objective``, then ``evaluate.runner.evaluate_run`` on
the validation and test splits, which writes ``metrics.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stillroom.config import TrainConfig
from stillroom.data.index import DatasetIndex
from stillroom.distill.losses import check_loss_config
from stillroom.distill.objective import build_objective
from stillroom.train import trainer

__all__ = ["train"]


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: trainer.Progress | None = None,
    source: str | None = None,
) -> Path:
    """Train ``cfg`` into ``out_dir`` (``train.trainer.train``), then evaluate best and final weights on the val and
    test splits into ``metrics.json``; return the run directory. ``resume`` continues an interrupted run;
    ``source`` (e.g. the config file) prefixes a config error, else ``run '<name>'``."""

    # a bad loss name, parameter or teacher set fails before anything is written
    check_loss_config(cfg, source=source or f"run {cfg.name!r}")

    def evaluate(run_dir: Path, index: DatasetIndex, images: np.ndarray) -> None:
        from stillroom.evaluate.runner import evaluate_run  # late: matplotlib and sklearn load only when needed

        evaluate_run(run_dir, splits=(cfg.data.val_split, cfg.data.test_split), index=index, images=images)

    return trainer.train(cfg, out_dir, resume, progress, objective=build_objective, on_finished=evaluate)
