"""Statistics across seeds: is variant B better than variant A? (REFERENCE 4; seed 001 §5.1).

Pure functions over per-seed values of one metric. The difference is always B - A.

- ``describe``: n, mean, sample standard deviation (ddof = 1; nan for n = 1).
- ``bootstrap_mean_ci``: percentile bootstrap CI of one variant's mean over seeds (report tables).
- ``wilson_interval``: Wilson score interval of a proportion (e.g. top-1 over n test images: test-set noise only,
  not seed-to-seed variation).
- ``bootstrap_mean_diff_ci``: percentile bootstrap (B = 10,000) of mean(B) - mean(A). Unpaired: A and B are
  resampled independently, with replacement; paired: seeds are resampled, i.e. the per-seed differences. The
  interval is ``np.percentile`` (linear interpolation) at (1 - level) / 2 and (1 + level) / 2, as scipy.stats.bootstrap
  with ``method="percentile"``.
- ``permutation_test``: statistic T = mean(B) - mean(A); two-sided p = share of relabellings with |T*| >= |T|
  (within a relative tolerance of 1e-12 for floating-point ties; one-sided alternatives on request). Unpaired:
  every way of splitting the pooled values into groups of the original sizes; paired: every sign flip of the
  per-seed differences. Exact while the count is <= ``EXACT_MAX`` (200,000: 10 vs 10 seeds, or 17 pairs);
  otherwise Monte Carlo with ``n_resamples`` random relabellings and p = (hits + 1) / (n_resamples + 1), which is
  said in the result. scipy.stats.permutation_test defines the two-sided p as twice the smaller one-sided p; the
  two agree whenever the null distribution is symmetric (paired data, or equal group sizes).
- ``cohens_d``: (mean(B) - mean(A)) / s_pooled, s_pooled^2 = ((n_A - 1) s_A^2 + (n_B - 1) s_B^2) / (n_A + n_B - 2)
  with sample variances (ddof = 1, REFERENCE 4). ``ddof=0`` gives the population-variance variant.
- ``compare``: all of the above plus a verdict in plain words that never overclaims (module constant
  ``FEW_SEEDS``).

Reproducing seed 001 §5.1 (pairwise KD 0.7187765, 0.7161279, 0.7158000 vs four-way 0.7226347, 0.7210732,
0.7196643, unpaired): mean difference 0.0042226; bootstrap 95% CI about [0.0022, 0.0062] (seed: [0.00227, 0.00620]);
exact permutation p = 2/20 = 0.1 (seed: "approximately 0.0998", a Monte Carlo estimate of the same number). The
seed's standard deviations (0.00128, 0.00122) and Cohen's d (3.33) do not follow from its own values with ddof = 1:
the sample standard deviations are 0.00163 and 0.00149 and d = 2.71. Population variances (ddof = 0) give d = 3.31,
close to the seed's figure, so the seed most likely used those; we report the ddof = 1 numbers (REFERENCE 4).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from stillroom._io import StillroomError

__all__ = [
    "EXACT_MAX",
    "FEW_SEEDS",
    "describe",
    "bootstrap_mean_ci",
    "bootstrap_mean_diff_ci",
    "wilson_interval",
    "permutation_test",
    "cohens_d",
    "compare",
]

EXACT_MAX = 200_000  # relabellings enumerated exactly (C(20, 10) = 184,756; 2^17 = 131,072)
FEW_SEEDS = 3  # with at most this many runs per side, every verdict says that the test has little power
_REL_TOL = 1e-12


def _values(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise StillroomError(f"{name}: expected a non-empty 1-D list of numbers, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise StillroomError(f"{name}: values must be finite, got {arr.tolist()}")
    return arr


def _pair(a: Any, b: Any, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = _values(a, "a"), _values(b, "b")
    if paired and len(a) != len(b):
        raise StillroomError(f"paired comparison needs as many values in a as in b, got {len(a)} and {len(b)}")
    return a, b


def describe(values: Any) -> dict[str, Any]:
    """``{"n", "mean", "std"}`` with the sample standard deviation (ddof = 1; nan when n = 1)."""
    v = _values(values, "values")
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else math.nan}


def bootstrap_mean_ci(values: Any, B: int = 10_000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:  # noqa: N803
    """Percentile bootstrap CI ``(low, high)`` of the mean of ``values`` (degenerate for a single value)."""
    v = _values(values, "values")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(B, len(v)))].mean(axis=1)  # (B,)
    low, high = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(low), float(high)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``successes / n``."""
    from scipy.stats import norm

    if n <= 0 or not 0 <= successes <= n:
        raise StillroomError(f"wilson_interval: need 0 <= successes <= n and n > 0, got {successes} of {n}")
    z = float(norm.ppf((1 + level) / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_mean_diff_ci(
    a: Any,
    b: Any,
    B: int = 10_000,
    seed: int = 0,
    paired: bool = False,
    level: float = 0.95,  # noqa: N803
) -> dict[str, Any]:
    """Percentile bootstrap CI of mean(b) - mean(a) (module docstring).

    Returns ``{"diff", "low", "high", "level", "B", "paired", "method": "percentile", "seed"}``.
    """
    a, b = _pair(a, b, paired)
    if not 0 < level < 1:
        raise StillroomError(f"bootstrap_mean_diff_ci: level must be in (0, 1), got {level}")
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 1:
        raise StillroomError(f"bootstrap_mean_diff_ci: B must be a positive integer, got {B!r}")
    rng = np.random.default_rng(seed)
    if paired:
        d = b - a
        stats = d[rng.integers(0, len(d), size=(B, len(d)))].mean(axis=1)  # (B,) mean of resampled differences
    else:
        ra = a[rng.integers(0, len(a), size=(B, len(a)))].mean(axis=1)  # (B,)
        rb = b[rng.integers(0, len(b), size=(B, len(b)))].mean(axis=1)  # (B,)
        stats = rb - ra
    low, high = np.percentile(stats, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return {
        "diff": float(b.mean() - a.mean()),
        "low": float(low),
        "high": float(high),
        "level": level,
        "B": int(B),
        "paired": paired,
        "method": "percentile",
        "seed": seed,
    }


def _count_relabellings(n_a: int, n_b: int, paired: bool) -> int:
    return 2**n_a if paired else math.comb(n_a + n_b, n_a)


def permutation_test(
    a: Any, b: Any, paired: bool = False, n_resamples: int = 100_000, seed: int = 0, alternative: str = "two-sided"
) -> dict[str, Any]:
    """Permutation test of mean(b) - mean(a) (module docstring).

    ``alternative``: "two-sided" (|T*| >= |T|), "greater" (T* >= T) or "less" (T* <= T). Returns ``{"statistic",
    "p_value", "exact", "n_relabellings" (enumerated or drawn), "min_p" (the smallest p-value this design can
    produce), "paired", "alternative", "method" (words)}``.
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise StillroomError(f"permutation_test: alternative must be two-sided, greater or less, got {alternative!r}")
    a, b = _pair(a, b, paired)
    obs = float(b.mean() - a.mean())
    total = _count_relabellings(len(a), len(b), paired)
    exact = total <= EXACT_MAX
    rng = np.random.default_rng(seed)
    if paired:
        d = b - a
        if exact:
            signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))  # (2^n, n)
        else:
            signs = rng.choice((1.0, -1.0), size=(n_resamples, len(d)))
        null = (signs * d).mean(axis=1)
    else:
        pooled = np.concatenate([a, b])
        n, n_a = len(pooled), len(a)
        if exact:
            flat = itertools.chain.from_iterable(itertools.combinations(range(n), n_a))
            idx = np.fromiter(flat, dtype=np.int64, count=total * n_a).reshape(total, n_a)  # (C(n, n_a), n_a)
        else:
            idx = np.argsort(rng.random((n_resamples, n)), axis=1)[:, :n_a]  # (R, n_a): random n_a-subsets
        sum_a = pooled[idx].sum(axis=1)  # sum of the values relabelled as A, per relabelling
        null = (pooled.sum() - sum_a) / (n - n_a) - sum_a / n_a
    tol = abs(obs) * _REL_TOL  # floating-point ties with the observed value count as ties
    if alternative == "two-sided":
        hits = int(np.sum(np.abs(null) >= abs(obs) - tol))
    elif alternative == "greater":
        hits = int(np.sum(null >= obs - tol))
    else:
        hits = int(np.sum(null <= obs + tol))
    if exact:
        p = hits / total
        method = f"exact: all {total:,} {'sign flips' if paired else 'relabellings'}"
        symmetric = alternative == "two-sided" and (paired or len(a) == len(b))
        min_p = 2 / total if symmetric else 1 / total
    else:
        p = (hits + 1) / (n_resamples + 1)
        method = f"Monte Carlo: {n_resamples:,} random {'sign flips' if paired else 'relabellings'}, p = (hits+1)/(R+1)"
        min_p = 1 / (n_resamples + 1)
    return {
        "statistic": obs,
        "p_value": float(min(1.0, p)),
        "exact": exact,
        "n_relabellings": total if exact else int(n_resamples),
        "min_p": float(min(1.0, min_p)),
        "paired": paired,
        "alternative": alternative,
        "method": method,
    }


def cohens_d(a: Any, b: Any, ddof: int = 1) -> float:
    """(mean(b) - mean(a)) / pooled standard deviation (module docstring); nan (with a warning) when undefined."""
    a, b = _values(a, "a"), _values(b, "b")
    if ddof not in (0, 1):
        raise StillroomError(f"cohens_d: ddof must be 0 or 1, got {ddof}")
    dof = len(a) + len(b) - 2 * ddof
    if dof <= 0:
        warnings.warn("cohens_d: not enough values for a pooled standard deviation; returning nan", stacklevel=2)
        return math.nan
    pooled = math.sqrt((len(a) * a.var(ddof=0) + len(b) * b.var(ddof=0)) / dof)
    if pooled == 0:
        warnings.warn("cohens_d: every value is identical within each group; returning nan", stacklevel=2)
        return math.nan
    return float((b.mean() - a.mean()) / pooled)


def _fmt(x: float, metric: str, values: Sequence[float]) -> str:
    """A difference in the metric's units, with percentage points for fractions like top-1 and macro-F1 (only when
    every value lies in [0, 1]: a column already in percent, say 97.2, is not multiplied again)."""
    fraction = all(0.0 <= v <= 1.0 for v in values)
    if fraction and any(k in metric for k in ("top1", "top5", "f1", "acc", "ece", "mce")):
        return f"{x:+.5f} ({100 * x:+.2f} percentage points)"
    return f"{x:+.5g}"


def _verdict(res: dict[str, Any], names: tuple[str, str], metric: str, higher_is_better: bool) -> str:
    a_name, b_name = names
    n_a, n_b = res["a"]["n"], res["b"]["n"]
    diff, ci, perm = res["mean_diff"], res["bootstrap_ci"], res["permutation"]
    values = res["a"]["values"] + res["b"]["values"]
    if n_a == 1 and n_b == 1:
        return (
            f"One run per side: {b_name} minus {a_name} is {_fmt(diff, metric, values)} on {metric}. "
            "A single comparison says nothing about seed-to-seed variation; it is not a statistical claim."
        )
    better = b_name if (diff > 0) == higher_is_better else a_name
    ahead = f", so {better} is ahead on average." if diff != 0 else "."
    parts = [f"Mean {metric} of {b_name} minus {a_name}: {_fmt(diff, metric, values)}{ahead}"]
    a_v, b_v = np.asarray(res["a"]["values"]), np.asarray(res["b"]["values"])
    if res["paired"]:
        parts.append(f"Paired by seed, {b_name} is higher in {int((b_v > a_v).sum())} of {len(a_v)} seeds.")
    elif b_v.min() > a_v.max() or a_v.min() > b_v.max():
        parts.append("The two sets of runs do not overlap: every run of one variant beats every run of the other.")
    excludes = ci["low"] > 0 or ci["high"] < 0
    zero = "excludes zero." if excludes else "includes zero: the data are compatible with no difference."
    level = f"{100 * ci['level']:.0f}%"
    parts.append(f"The {level} bootstrap interval of the difference, [{ci['low']:.5f}, {ci['high']:.5f}], {zero}")
    p = perm["p_value"]
    parts.append(f"Permutation test ({perm['method']}): p = {p:.4g}.")
    n_min = min(n_a, n_b)
    few = n_min <= FEW_SEEDS
    if few:
        runs = f"{n_min} run{'s' if n_min > 1 else ''}"
        parts.append(
            f"With only {runs} per side the test has little power: the smallest p-value it can produce is "
            f"{perm['min_p']:.3g}, and a bootstrap of {n_a} and {n_b} values tends to give too narrow an interval."
        )
    d = res["cohens_d"]
    if not math.isnan(d):
        caveat = " (unstable with so few runs: the pooled spread is barely estimated; for completeness only)"
        parts.append(f"Cohen's d = {d:.2f}{caveat if few else ''}.")
    if excludes and p < 0.05 and not few:
        parts.append(f"Verdict: {better} is better on {metric}; the difference is statistically significant.")
    elif excludes and p < 0.05:
        parts.append(
            f"Verdict: {better} looks better on {metric} and p < 0.05, but with this few runs that is weak, "
            "not definitive, evidence; add seeds before relying on it."
        )
    elif excludes:
        parts.append(
            f"Verdict: a consistent direction in favour of {better}, but not a definitive result; more seeds are "
            "needed for a decisive test."
        )
    else:
        parts.append(f"Verdict: no clear difference on {metric} between {a_name} and {b_name} with these runs.")
    return " ".join(parts)


def compare(
    a_values: Sequence[float],
    b_values: Sequence[float],
    seeds_a: Sequence[int] | None = None,
    seeds_b: Sequence[int] | None = None,
    names: tuple[str, str] = ("A", "B"),
    metric: str = "metric",
    higher_is_better: bool = True,
    B: int = 10_000,  # noqa: N803
    seed: int = 0,
) -> dict[str, Any]:
    """Compare per-seed values of B against A: describe both, bootstrap CI, permutation p, Cohen's d, verdict.

    Paired by seed when both seed lists are given and hold the same seeds (B's values are reordered to A's seeds);
    otherwise unpaired.
    """
    a, b = _values(a_values, "a_values"), _values(b_values, "b_values")
    for s, v, name in ((seeds_a, a, "seeds_a"), (seeds_b, b, "seeds_b")):
        if s is not None and (len(s) != len(v) or len(set(s)) != len(s)):
            raise StillroomError(f"{name}: need {len(v)} distinct seeds, one per value, got {list(s)}")
    paired = seeds_a is not None and seeds_b is not None and set(seeds_a) == set(seeds_b) and len(a) > 1
    if paired:
        pos = {s: i for i, s in enumerate(seeds_b)}
        b = b[[pos[s] for s in seeds_a]]
        seeds_b = list(seeds_a)
    res: dict[str, Any] = {
        "metric": metric,
        "higher_is_better": higher_is_better,
        "paired": paired,
        "a": {
            "name": names[0],
            **describe(a),
            "values": a.tolist(),
            "seeds": None if seeds_a is None else list(seeds_a),
        },
        "b": {
            "name": names[1],
            **describe(b),
            "values": b.tolist(),
            "seeds": None if seeds_b is None else list(seeds_b),
        },
        "mean_diff": float(b.mean() - a.mean()),
        "bootstrap_ci": bootstrap_mean_diff_ci(a, b, B=B, seed=seed, paired=paired),
        "permutation": permutation_test(a, b, paired=paired, seed=seed),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined d is reported as nan and explained in the verdict
        res["cohens_d"] = cohens_d(a, b)
    res["verdict"] = _verdict(res, names, metric, higher_is_better)
    return res
