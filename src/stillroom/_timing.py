"""The one timing loop of the package: the latency benchmarks (``deploy``) and the report's short trade-off timing
(``evaluate.tradeoff``) time calls the same way; and what the host did to a wall time (``cpu_times``,
``steal_share``). Below every layer, like ``_io``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["time_calls", "cpu_model", "cpu_times", "steal_share"]


def time_calls(
    fn: Callable[[], Any],
    warmup: int,
    repeats: int,
    max_seconds: float,
    min_runs: int = 5,
    warmup_seconds: float = 0.0,
) -> np.ndarray:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls (and then more until ``warmup_seconds`` have
    passed): ``repeats`` calls or ``max_seconds``, whichever comes first, but at least ``min_runs``."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    while time.perf_counter() - start < warmup_seconds:
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < min_runs or time.perf_counter() - start < max_seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return np.asarray(times)


def cpu_times(stat: str | Path = "/proc/stat") -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs so far, from the ``cpu`` line of Linux's ``/proc/stat`` (fields: user nice
    system idle iowait irq softirq steal ...; guest time is already inside user); None where there is no such file or
    line (other systems)."""
    try:
        line = Path(stat).read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if len(line) < 9 or line[0] != "cpu":
        return None
    fields = [int(v) for v in line[1:9]]
    return fields[7], sum(fields)


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of the CPU time between two ``cpu_times`` readings that the hypervisor gave to other machines (steal):
    a wall time measured while it is high says more about the neighbours than about the code. None when unknown."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The CPU's model name (the first ``model name`` line of Linux's ``/proc/cpuinfo``), None where unknown: hosts
    of one "2-core box" differ about 2x in speed, so a wall time needs the host it was measured on beside it."""
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return " ".join(value.split())
    return None
