"""The order in which an epoch visits the train rows: a seeded random permutation, or batches built of classmates.

``GlobalBatchSampler`` (the default) shuffles all rows; ``ClassBatchSampler`` (``data.per_class: k``) builds every
batch from runs of ``k`` rows of one class, the "P x K" batches of metric learning (Hermans, Beyer and Leibe 2017,
"In Defense of the Triplet Loss", §2: P classes x K images each). Why here: a term that pulls the features of
classmates together (``distill.losses.supcon``) only acts on the classmates a batch holds. With 151 species and the
demo's batches of 64 rows drawn at random, an anchor finds a classmate in about a third of its batches, and a
drawing of its species in *another style* (the box icons: 14% of the train rows when the artwork is held out) in
about one in seventeen, so the pull it was meant to add across styles (issue 14 item 1) hardly happens. Within a
class, the ``k`` rows of a run are taken round-robin over the class's groups (animations, another artist's drawings:
the index's ``group`` column), so each run mixes drawings and views wherever a class has several.

Measured (BENCHMARKS "The paper's projection head and batches of classmates", the demo's student, 3 seeds): batches
of 4 classmates cost the distilled student 4.6 points of val top-1 and 7.0 on a held-out drawing style, with or
without a term on classmates, so 0 stays the default; k is for metric-learning-style training.

Every row is visited at most once per epoch: a class's rows that do not fill a last run of ``k`` are left out of
that epoch (others next time, as the shuffles change), so an epoch is a little shorter than with the default order.
Both samplers cut the epoch into global batches and give rank ``r`` the ``r``-th contiguous slice of each (DDP), so
a run of ``k`` never straddles two ranks when ``batch_size / world_size`` is a multiple of ``k``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from stillroom._io import StillroomError

__all__ = ["ClassBatchSampler", "GlobalBatchSampler"]


class GlobalBatchSampler(Sampler[int]):
    """This rank's samples of an epoch: ``randperm(n)`` from a generator seeded with ``seed``, cut into
    ``n // batch_size`` global batches (the remainder dropped, as ``drop_last``), rank r taking the r-th contiguous
    ``batch_size // world_size`` slice of each. Load with ``DataLoader(batch_size=batch_size // world_size)``.

    With one process the order equals ``RandomSampler(generator=seeded)`` + ``drop_last``. torch's
    ``DistributedSampler`` is not used because its permutation (seeded by seed + epoch, strided over ranks, padded)
    differs from the single-process order, so an N-process run could not be compared with a 1-process one.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise StillroomError(
                f"batch_size {batch_size} is not divisible by the world size {world_size}: each rank must take an "
                "equal share of every global batch"
            )
        if not 0 <= rank < world_size:
            raise StillroomError(f"rank {rank} is not in 0..{world_size - 1}")
        self.n, self.batch_size, self.seed, self.rank, self.world_size = n, batch_size, seed, rank, world_size
        self.local = batch_size // world_size
        self.steps = self.visited() // batch_size

    def visited(self) -> int:
        """How many rows an epoch's order holds (before the cut into whole batches)."""
        return self.n

    def order(self) -> torch.Tensor:
        """The epoch's row order (positions 0..n-1), ``visited()`` long."""
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed))

    def __iter__(self) -> Iterator[int]:
        perm = self.order()
        batches = perm[: self.steps * self.batch_size].view(self.steps, self.batch_size)  # (steps, batch_size)
        shard = batches[:, self.rank * self.local : (self.rank + 1) * self.local]  # (steps, local)
        return iter(shard.reshape(-1).tolist())

    def __len__(self) -> int:
        return self.steps * self.local


class ClassBatchSampler(GlobalBatchSampler):
    """Batches of runs of ``per_class`` rows of one class (module docstring). ``labels`` and ``groups``: one per
    position of the dataset (rows without a class, label < 0, form runs among themselves)."""

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        groups: Sequence[str],
        batch_size: int,
        per_class: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if per_class < 2:
            raise StillroomError(f"data.per_class must be >= 2 (0: the usual random order), got {per_class}")
        if (batch_size // max(world_size, 1)) % per_class:
            raise StillroomError(
                f"batch_size {batch_size} over {world_size} process(es) is not a multiple of data.per_class "
                f"{per_class}: a batch must hold whole runs of one class"
            )
        self.labels, self.groups = np.asarray(labels), np.asarray(groups)
        if len(self.labels) != len(self.groups):
            raise StillroomError(f"{len(self.labels)} labels but {len(self.groups)} groups")
        self.per_class = per_class
        super().__init__(len(self.labels), batch_size, seed, rank, world_size)
        if self.steps == 0:
            raise StillroomError(
                f"data.per_class {per_class}: the {self.n} rows give {self.visited()} rows in whole runs of one class, "
                f"fewer than one batch of {batch_size}"
            )

    def visited(self) -> int:
        _, counts = np.unique(self.labels, return_counts=True)
        return int((counts // self.per_class).sum() * self.per_class)

    def order(self) -> torch.Tensor:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 0x706B])
        k, runs = self.per_class, []
        for c in np.unique(self.labels):
            rows = np.flatnonzero(self.labels == c)
            by_group = [
                rng.permutation(rows[self.groups[rows] == g]) for g in rng.permutation(np.unique(self.groups[rows]))
            ]
            # round-robin over the class's groups: the first row of every group, then the second, ...
            width = max(len(r) for r in by_group)
            mixed = np.concatenate([[r[i] for r in by_group if i < len(r)] for i in range(width)]).astype(np.int64)
            runs.extend(mixed[j * k : (j + 1) * k] for j in range(len(mixed) // k))
        runs = [runs[i] for i in rng.permutation(len(runs))]
        return torch.from_numpy(np.concatenate(runs))
