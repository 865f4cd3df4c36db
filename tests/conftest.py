"""Shared fixtures: a tiny drawn-shapes dataset and a teacher trained on it once per session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from stillroom.config import config_from_dict
from stillroom.data.synthetic import build_shapes

# 2 = the CI machine's cores; STILLROOM_TEST_THREADS=1 runs the suite beside another torch job without OpenMP
# oversubscription (two 2-thread processes on 2 cores slow each other 5-15x). Under pytest-xdist (`make test`: one
# worker per core, at most 4) each worker gets one thread, and so do the subprocesses its tests start (they inherit
# OMP_NUM_THREADS).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(int(os.environ.get("STILLROOM_TEST_THREADS", "2")))


def _tiny_config(index: Path, name: str, model: str = "timm:resnet10t", epochs: int = 2, **extra: Any) -> dict:
    cfg: dict[str, Any] = {
        "name": name,
        "data": {"index": str(index)},
        "model": {"name": model},
        "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01},
        "augment": "none",  # tiny data learns faster unaugmented; augmentation has its own tests
        "schedule": {"epochs": epochs, "warmup_epochs": 0.5},
        "batch_size": 32,
        "seed": 0,
        "precise_bn": {"max_images": 128},
    }
    cfg.update(extra)
    return cfg


def _class_subset(index, keep: list[int], out: Path):
    """A copy of ``index`` (images copied into ``out``) with the rows of classes ``keep`` only, relabelled
    0..len(keep)-1 in that order: a dataset of a subset of a model's classes."""
    import shutil

    from stillroom.data.index import IndexRow, write_index

    rows = []
    for p, y, s, g, h in zip(index.paths, index.labels, index.splits, index.groups, index.sha256, strict=True):
        if int(y) in keep:
            (out / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(index.root / p, out / p)
            rows.append(IndexRow(p, keep.index(int(y)), index.classes[int(y)], str(s), g, h))
    return write_index(out, rows, [index.classes[k] for k in keep], index.recipe)


@pytest.fixture(scope="session")
def class_subset():
    """Factory: ``class_subset(index, keep, out)`` -> the index of classes ``keep`` only, written to ``out``."""
    return _class_subset


@pytest.fixture(scope="session")
def tiny_config():
    """Factory of small, fast run configs on a given index."""
    return _tiny_config


@pytest.fixture(scope="session")
def shapes_index(tmp_path_factory: pytest.TempPathFactory):
    """4 classes x 60 drawn silhouettes at 32 px (36/12/12 per class)."""
    return build_shapes(tmp_path_factory.mktemp("shapes"), n_per_class=60, size=32, num_classes=4, seed=0)


@pytest.fixture(scope="session")
def ood_only(tmp_path_factory: pytest.TempPathFactory):
    """Drawn rings and bars relabelled as one class "ood" (an OOD dataset, as `data build ood-emoji` writes)."""
    from stillroom.data.index import IndexRow, write_index

    other = build_shapes(tmp_path_factory.mktemp("oodset"), n_per_class=30, size=32, seed=5, kinds=("ring", "bar"))
    rows = [
        IndexRow(p, 0, "ood", str(s), g, h)
        for p, s, g, h in zip(other.paths, other.splits, other.groups, other.sha256, strict=True)
    ]
    return write_index(other.root, rows, ["ood"], other.recipe)


@pytest.fixture(scope="session")
def teacher_run(shapes_index, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stillroom.pipeline import train

    out = tmp_path_factory.mktemp("runs") / "teacher"
    raw = _tiny_config(shapes_index.root, "teacher", model="resnet18", epochs=6, optim={"name": "adamw", "lr": 0.002})
    cfg = config_from_dict(raw)
    return train(cfg, out)


def _cut_after(raw: dict, run_dir: Path, epochs: int) -> None:
    """Train ``raw`` into ``run_dir`` and interrupt it (as Ctrl-C would) once ``epochs`` epochs are done."""
    from stillroom.pipeline import train

    def stop(phase, done, total, record=None):
        if phase == "epoch" and done == epochs:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config_from_dict(raw), run_dir, progress=stop)


@pytest.fixture(scope="session")
def cut_after():
    """Factory: ``cut_after(raw, run_dir, epochs)`` trains and interrupts a run after ``epochs`` epochs."""
    return _cut_after
