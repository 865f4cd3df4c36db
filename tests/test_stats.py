"""Statistics across seeds (REFERENCE 4; seed 001 §5.1): each statistic against scipy or a hand-computed case,
the seed's own numbers reproduced, and a verdict that does not overclaim with few seeds."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest
from scipy import stats as sps

from stillroom._io import StillroomError
from stillroom.evaluate.stats import (
    bootstrap_mean_ci,
    bootstrap_mean_diff_ci,
    cohens_d,
    compare,
    describe,
    permutation_test,
    wilson_interval,
)

# seed 001 §5.1, macro-F1 per seed (fractions)
PAIRWISE = [0.7187765, 0.7161279, 0.7158000]
FOUR_WAY = [0.7226347, 0.7210732, 0.7196643]


def _mean_diff(x, y, axis=-1):
    return np.mean(y, axis=axis) - np.mean(x, axis=axis)


def test_seed_001_section_5_1_reproduced():
    res = compare(PAIRWISE, FOUR_WAY, names=("pairwise KD", "four-way KD"), metric="macro_f1")
    assert res["paired"] is False
    # seed: 0.00423 (= 0.72113 - 0.7169, from rounded means); exactly 0.0042226
    assert res["mean_diff"] == pytest.approx(0.0042226, abs=1e-10)
    assert res["mean_diff"] == pytest.approx(0.00423, abs=1e-5)
    assert res["a"]["mean"] == pytest.approx(0.7169, abs=5e-5) and res["b"]["mean"] == pytest.approx(0.72113, abs=1e-5)
    ci = res["bootstrap_ci"]
    assert ci["low"] == pytest.approx(0.00227, abs=1e-4) and ci["high"] == pytest.approx(0.00620, abs=1e-4)
    # 3 vs 3, fully separated: 2 of the C(6, 3) = 20 relabellings are as extreme (seed: "approximately 0.0998")
    assert res["permutation"]["exact"] and res["permutation"]["p_value"] == pytest.approx(2 / 20, abs=1e-15)
    assert res["permutation"]["n_relabellings"] == 20 and res["permutation"]["min_p"] == pytest.approx(0.1)
    # Cohen's d: sample std (ddof = 1, REFERENCE 4) gives 2.71; the seed's 3.33 matches population variances (3.31)
    assert res["cohens_d"] == pytest.approx(2.7056, abs=1e-3)
    assert cohens_d(PAIRWISE, FOUR_WAY, ddof=0) == pytest.approx(3.33, abs=0.03)
    verdict = res["verdict"]
    assert "little power" in verdict and "not a definitive result" in verdict
    assert "significant" not in verdict


def test_describe_uses_the_sample_std():
    d = describe(PAIRWISE)
    assert d["n"] == 3 and d["mean"] == pytest.approx(statistics.mean(PAIRWISE))
    assert d["std"] == pytest.approx(statistics.stdev(PAIRWISE))  # ddof = 1
    assert math.isnan(describe([0.5])["std"])


@pytest.mark.parametrize("n_a,n_b", [(3, 3), (4, 4), (5, 5)])
def test_two_sided_permutation_matches_scipy_equal_sizes(n_a, n_b):
    rng = np.random.default_rng(n_a)
    a, b = rng.normal(0, 1, n_a), rng.normal(0.8, 1, n_b)
    ours = permutation_test(a, b)
    ref = sps.permutation_test((a, b), _mean_diff, permutation_type="independent", n_resamples=np.inf)
    assert ours["exact"] and ours["p_value"] == pytest.approx(ref.pvalue, abs=1e-12)


@pytest.mark.parametrize("alternative", ["greater", "less"])
def test_one_sided_permutation_matches_scipy_unequal_sizes(alternative):
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, 4), rng.normal(0.5, 1, 6)
    ours = permutation_test(a, b, alternative=alternative)
    ref = sps.permutation_test(
        (a, b), _mean_diff, permutation_type="independent", n_resamples=np.inf, alternative=alternative
    )
    assert ours["p_value"] == pytest.approx(ref.pvalue, abs=1e-12)


@pytest.mark.parametrize("n", [3, 6, 9])
def test_paired_permutation_matches_scipy_sign_flips(n):
    rng = np.random.default_rng(n)
    a = rng.normal(0, 1, n)
    b = a + rng.normal(0.4, 0.5, n)
    ours = permutation_test(a, b, paired=True)
    ref = sps.permutation_test((b - a,), np.mean, permutation_type="samples", n_resamples=np.inf)
    assert ours["p_value"] == pytest.approx(ref.pvalue, abs=1e-12)
    assert ours["n_relabellings"] == 2**n


def test_permutation_by_hand_with_ties():
    # a = [1, 2], b = [3, 3]: observed T = 1.5; of the 6 splits, those with |T*| >= 1.5 are a={1,2} and b={1,2}
    assert permutation_test([1, 2], [3, 3])["p_value"] == pytest.approx(2 / 6)
    splits = list(itertools.combinations(range(4), 2))
    assert len(splits) == 6


def test_monte_carlo_beyond_the_exact_limit():
    rng = np.random.default_rng(11)
    a, b = rng.normal(0, 1, 11), rng.normal(0.9, 1, 11)  # C(22, 11) = 705,432 > EXACT_MAX
    ours = permutation_test(a, b, n_resamples=20_000)
    assert not ours["exact"] and "Monte Carlo" in ours["method"] and ours["n_relabellings"] == 20_000
    ref = sps.permutation_test((a, b), _mean_diff, permutation_type="independent", n_resamples=20_000, rng=1)
    assert ours["p_value"] == pytest.approx(ref.pvalue, abs=0.01)


@pytest.mark.parametrize("paired", [False, True])
def test_bootstrap_ci_matches_scipy(paired):
    rng = np.random.default_rng(5)
    a = rng.normal(0, 1, 8)
    b = a * 0.5 + rng.normal(0.5, 1, 8)
    ours = bootstrap_mean_diff_ci(a, b, B=20_000, paired=paired)
    ref = sps.bootstrap(
        (a, b), _mean_diff, paired=paired, vectorized=True, n_resamples=20_000, method="percentile", rng=0
    ).confidence_interval
    # different random streams: agreement up to Monte Carlo error of the 2.5% / 97.5% quantiles
    width = ref.high - ref.low
    assert ours["low"] == pytest.approx(ref.low, abs=0.03 * width)
    assert ours["high"] == pytest.approx(ref.high, abs=0.03 * width)
    assert ours["diff"] == pytest.approx(np.mean(b) - np.mean(a))


def test_bootstrap_is_reproducible_and_degenerate_for_one_value():
    assert bootstrap_mean_diff_ci(PAIRWISE, FOUR_WAY) == bootstrap_mean_diff_ci(PAIRWISE, FOUR_WAY)
    lo, hi = bootstrap_mean_ci([0.5])
    assert lo == hi == 0.5


def test_cohens_d_by_hand():
    a, b = [1.0, 2.0, 3.0], [3.0, 4.0, 5.0, 6.0]
    s_pooled = math.sqrt((2 * 1.0 + 3 * statistics.variance(b)) / 5)
    assert cohens_d(a, b) == pytest.approx((4.5 - 2.0) / s_pooled)
    with pytest.warns(UserWarning, match="identical"):
        assert math.isnan(cohens_d([1.0, 1.0], [2.0, 2.0]))


def test_wilson_interval_matches_scipy():
    for k, n in ((465, 557), (0, 10), (10, 10), (3, 7)):
        ref = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = wilson_interval(k, n)
        assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)


def test_compare_pairs_by_seed_and_reorders():
    res = compare(PAIRWISE, FOUR_WAY[::-1], seeds_a=[1337, 2025, 42], seeds_b=[42, 2025, 1337])
    assert res["paired"] is True
    assert res["b"]["values"] == FOUR_WAY and res["b"]["seeds"] == [1337, 2025, 42]
    # 3 sign flips: all 8 equally likely, the observed (all positive) and its mirror are the extremes
    assert res["permutation"]["p_value"] == pytest.approx(2 / 8)
    assert "3 of 3 seeds" in res["verdict"] and "little power" in res["verdict"]
    unpaired = compare(PAIRWISE, FOUR_WAY, seeds_a=[1, 2, 3], seeds_b=[4, 5, 6])
    assert unpaired["paired"] is False


def test_verdicts_do_not_overclaim():
    rng = np.random.default_rng(0)
    big_a, big_b = rng.normal(0.70, 0.002, 10), rng.normal(0.72, 0.002, 10)
    strong = compare(big_a, big_b, metric="macro_f1")
    assert "statistically significant" in strong["verdict"] and "little power" not in strong["verdict"]
    # 3 vs 4 can reach p < 0.05 (1/35 one way); with 3 runs on a side it must still say the test has little power
    small = compare([0.70, 0.701, 0.702], [0.72, 0.721, 0.722, 0.723], metric="macro_f1")
    assert small["permutation"]["p_value"] < 0.05
    assert "little power" in small["verdict"] and "significant" not in small["verdict"]
    single = compare([0.7], [0.72])
    assert "not a statistical claim" in single["verdict"]
    null = compare([0.70, 0.71, 0.69, 0.705], [0.70, 0.71, 0.695, 0.70], metric="macro_f1")
    assert "no clear difference" in null["verdict"]
    lower_better = compare([0.9, 0.91, 0.92], [0.8, 0.81, 0.82], metric="nll", higher_is_better=False)
    assert "in favour of B" in lower_better["verdict"]


def test_invalid_inputs():
    with pytest.raises(StillroomError, match="a"):
        permutation_test([], [1.0])
    with pytest.raises(StillroomError, match="paired"):
        permutation_test([1.0, 2.0], [1.0], paired=True)
    with pytest.raises(StillroomError, match="finite"):
        describe([1.0, float("nan")])
    with pytest.raises(StillroomError, match="seeds_a"):
        compare([1.0, 2.0], [1.0, 2.0], seeds_a=[1, 1], seeds_b=[1, 2])


def test_compare_command_on_a_summary_csv(tmp_path):
    import json

    import typer
    from typer.testing import CliRunner

    from stillroom.cli.evaluate import register

    csv_path = tmp_path / "results_summary.csv"
    lines = ["variant,seed,run_dir,test_macro_f1,test_nll"]
    for name, values in (("pairwise", PAIRWISE), ("fourway", FOUR_WAY)):
        lines += [
            f"{name},{seed},runs/{name}/seed{seed},{v},0.9" for seed, v in zip((1337, 2025, 42), values, strict=True)
        ]
    csv_path.write_text("\n".join(lines) + "\n")
    app = typer.Typer()
    register(app)
    args = ["compare", str(tmp_path), "--metric", "macro_f1", "--a", "pairwise", "--b", "fourway"]
    result = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "cmp.json")], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "0.71690" in result.output and "0.72112" in result.output and "little power" in result.output
    saved = json.loads((tmp_path / "cmp.json").read_text())
    # same seeds on both sides: paired by seed, 3 sign flips -> p = 2/8
    assert saved["paired"] is True and saved["permutation"]["p_value"] == pytest.approx(0.25)
    assert saved["metric"] == "test_macro_f1" and saved["a"]["seeds"] == [1337, 2025, 42]
    bad = CliRunner().invoke(app, ["compare", str(csv_path), "--metric", "top9", "--a", "pairwise", "--b", "x"])
    assert isinstance(bad.exception, StillroomError) and "top9" in str(bad.exception)


def test_percentage_points_only_for_fractions():
    frac = compare([0.90, 0.91, 0.92], [0.95, 0.96, 0.97], metric="test_top1")
    assert "+5.00 percentage points" in frac["verdict"]
    # a column already in percent: the difference is stated as is, never as 500 "percentage points"
    pct = compare([90.0, 91.0, 92.0], [95.0, 96.0, 97.0], metric="test_top1")
    assert "percentage points" not in pct["verdict"] and "+5" in pct["verdict"]


def test_compare_command_tables_several_variants_from_several_summaries(tmp_path):
    """Arms run in two batches beside the same baseline runs: one table, the shared baseline rows read once; a row
    that two files hold with other values is refused."""
    import typer
    from typer.testing import CliRunner

    from stillroom.cli.evaluate import register

    def write(name: str, arms: dict[str, list[float]]) -> str:
        lines = ["variant,seed,run_dir,test_top1"]
        for arm, values in arms.items():
            lines += [f"{arm},{seed},runs/{arm}_s{seed},{v}" for seed, v in enumerate(values)]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        return str(tmp_path / name)

    kd = [0.90, 0.91, 0.92]
    one = write("one.csv", {"kd": kd, "x": [0.92, 0.93, 0.91]})
    two = write("two.csv", {"kd": kd, "y": [0.85, 0.86, 0.87]})
    app = typer.Typer()
    register(app)
    args = [
        "compare",
        one,
        two,
        "--metric",
        "top1",
        "--a",
        "kd",
        "--b",
        "x",
        "--b",
        "y",
        "--md",
        str(tmp_path / "t.md"),
    ]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "t.md").read_text().splitlines()
    assert rows[0].startswith("| variant | seeds | mean ± std | difference (points) | 95% CI | seeds ahead |")
    assert rows[2] == "| kd | 3 | 91.00 ± 1.00 |  |  |  |  |"
    assert rows[3].startswith("| x | 3 | 92.00 ± 1.00 | +1.00 | [") and "| 2 of 3 |" in rows[3]
    assert rows[4].startswith("| y | 3 | 86.00 ± 1.00 | -5.00 | [-5.00, -5.00] | 0 of 3 |")
    clash = write("three.csv", {"kd": [0.90, 0.91, 0.95]})
    bad = CliRunner().invoke(app, ["compare", one, clash, "--metric", "top1", "--a", "kd", "--b", "x", "--b", "x"])
    assert isinstance(bad.exception, StillroomError)
    assert "three.csv: variant 'kd' seed 2 differs from the same row of" in str(bad.exception)
