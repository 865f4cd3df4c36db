"""The one timing loop of the package: the latency benchmarks (``deploy``) and the report's short trade-off timing
(``evaluate.tradeoff``) time calls the same way. Below every layer, like ``_io``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["time_calls"]


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
