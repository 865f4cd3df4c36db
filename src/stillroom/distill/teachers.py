"""Where teacher logits come from during distillation: cached soft-label stores or teachers run online.

Both return raw teacher logits of shape (M, B, K) for a batch, so a loss cannot tell them apart; on un-augmented
batches they give the same loss (tested), which is how the cache is checked. Replay stores (issue 7) hold logits
of V augmented views per row and are looked up by (row, view); on the same augmented batch they equal the online
teacher's logits (tested). Teachers are frozen by construction (STYLE 3): eval mode, ``requires_grad_(False)``,
forward under ``torch.no_grad()``, never in an optimizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from stillroom._io import StillroomError
from stillroom.data.index import DatasetIndex
from stillroom.runs import LoadedRun, load_run
from stillroom.softlabels.check import require_aligned
from stillroom.softlabels.store import SoftLabelStore, teacher_logits_for

__all__ = ["CachedTeachers", "OnlineTeachers", "build_teachers"]


class CachedTeachers:
    """Logits looked up by index row from aligned stores. Before the first step ``require_aligned`` checks the
    alignment and the values (one pass over each memory-mapped store: every logit finite and within
    ``MAX_ABS_LOGIT``), so training never starts on a store with NaN, inf or absurd logits."""

    def __init__(
        self,
        store_dirs: list[Path],
        index: DatasetIndex,
        alignment_json: Path | None = None,
        replay: dict[str, Any] | None = None,
    ) -> None:
        self.stores = [SoftLabelStore.open(p) for p in store_dirs]
        self.report = require_aligned(self.stores, index, out_json=alignment_json, replay=replay)

    @property
    def views(self) -> int:
        """Augmented views per row in the stores (0: un-augmented logits)."""
        return self.stores[0].views

    def __len__(self) -> int:
        return len(self.stores)

    def __call__(self, x_uint8: torch.Tensor, rows: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        return teacher_logits_for(self.stores, rows, views)


class OnlineTeachers:
    """Teacher runs evaluated on the very (augmented) batch the student sees; exact but costly."""

    def __init__(self, run_dirs: list[Path], index: DatasetIndex, weights: str = "best") -> None:
        self.runs: list[LoadedRun] = [load_run(p, weights) for p in run_dirs]
        recipe = index.recipe
        for run in self.runs:
            r = run.meta["recipe"]
            if (r.get("size"), r.get("channels")) != (recipe.get("size"), recipe.get("channels")):
                raise StillroomError(
                    f"{run.path}: teacher expects {r.get('channels')}x{r.get('size')}px input, the dataset has "
                    f"{recipe.get('channels')}x{recipe.get('size')}px"
                )
            if run.meta["classes"] != index.classes[: len(run.meta["classes"])]:
                raise StillroomError(
                    f"{run.path}: teacher classes differ from the dataset's classes (a teacher trained on more "
                    "classes teaches through a cached store: `stillroom softlabels export` keeps the dataset's)"
                )
            run.model.eval().requires_grad_(False)

    def __len__(self) -> int:
        return len(self.runs)

    @torch.no_grad()
    def __call__(self, x_uint8: torch.Tensor, rows: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack([run.model(run.normalizer(x_uint8)).float() for run in self.runs])


def build_teachers(
    cached: list[Path],
    online: list[Path],
    index: DatasetIndex,
    alignment_json: Path | None = None,
    replay: dict[str, Any] | None = None,
) -> CachedTeachers | OnlineTeachers | None:
    """``replay``: the student's ``{"augment": name, "augment_seed": seed}``, checked against replay stores."""
    if cached and online:
        raise StillroomError("teachers: use either cached stores or online runs in one run, not both")
    if cached:
        return CachedTeachers(cached, index, alignment_json, replay)
    if online:
        return OnlineTeachers(online, index)
    return None
