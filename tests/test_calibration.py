"""Calibration metrics and temperature scaling (REFERENCE 4; seed 001 §4.1.6, §5.2): hand-computed values, an
independent implementation (torchmetrics, test-only dependency), the documented difference at confidence 1.0,
recovery of a known temperature, the grid's lexicographic rule, storage, and the evaluation runner's use of it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from stillroom._io import StillroomError
from stillroom.evaluate.calibration import (
    NotFittedError,
    TemperatureScaler,
    calibration_metrics,
    expected_calibration_error,
    load_temperature,
    select_temperature,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- metrics by hand --------------------------------------------------------------------------------------------


def test_ece_mce_by_hand():
    conf = [0.05, 0.1, 0.5, 0.52, 0.95, 1.0]
    correct = [0, 1, 1, 0, 1, 1]
    ece, mce, bins = expected_calibration_error(conf, correct, n_bins=15)
    # bins (width 1/15): 0.05 -> 0 (gap .05); 0.1 -> 1 (gap .9); 0.5, 0.52 -> 7 (acc .5, conf .51, gap .01);
    # 0.95, 1.0 -> 14, the closed last bin (acc 1, conf .975, gap .025)
    assert ece == pytest.approx((0.05 + 0.9 + 2 * 0.01 + 2 * 0.025) / 6, abs=1e-12)
    assert mce == pytest.approx(0.9)
    assert [b["count"] for b in bins] == [1, 1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 2]
    assert bins[2]["accuracy"] is None and bins[14]["confidence"] == pytest.approx(0.975)


def test_bins_are_half_open_and_the_last_is_closed():
    edges = np.linspace(0, 1, 16)
    _, _, bins = expected_calibration_error(edges, np.ones(16), n_bins=15)
    # each inner edge opens the bin to its right; 0 goes to bin 0, and 1.0 joins 14/15 in the last bin
    assert [b["count"] for b in bins] == [1] * 14 + [2]


def test_mce_ignores_empty_bins():
    # one non-empty bin with gap 0.1: an empty bin (gap undefined) must not count as a gap of 0 or of 1
    ece, mce, _ = expected_calibration_error([0.9, 0.9, 0.9, 0.9, 0.9], [1, 1, 1, 1, 0])
    assert ece == pytest.approx(0.1) and mce == pytest.approx(0.1)


def test_brier_and_nll_by_hand():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    labels = np.array([0, 2])
    p = _softmax(logits)
    brier = ((p[0] - [1, 0, 0]) ** 2).sum() / 2 + ((p[1] - [0, 0, 1]) ** 2).sum() / 2
    nll = -(math.log(p[0, 0]) + math.log(1 / 3)) / 2
    m = calibration_metrics(logits, labels)
    assert m["brier"] == pytest.approx(brier, abs=1e-12)
    assert m["nll"] == pytest.approx(nll, abs=1e-12)
    # uniform row: top-label confidence 1/3, predicted class 0 (lowest id), wrong
    assert set(m) == {"ece", "mce", "brier", "nll"}


def test_nll_uses_log_softmax_on_extreme_logits():
    m = calibration_metrics(np.array([[1000.0, 0.0], [0.0, 1000.0]]), np.array([1, 1]))
    assert math.isfinite(m["nll"]) and m["nll"] == pytest.approx(500.0)  # (1000 + 0) / 2; log(softmax) gives inf


def test_k_plus_one_model_uses_the_renormalized_id_classes():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 5))  # 4 ID classes + sink
    labels = rng.integers(0, 4, 50)
    m = calibration_metrics(logits, labels, num_id_classes=4)
    assert m == calibration_metrics(logits[:, :4], labels)
    p = _softmax(logits)
    p_id = p[:, :4] / p[:, :4].sum(axis=1, keepdims=True)  # renormalized ID probabilities
    brier = ((p_id - np.eye(4)[labels]) ** 2).sum(axis=1).mean()
    assert m["brier"] == pytest.approx(brier, abs=1e-12)
    with pytest.raises(StillroomError, match="in-distribution class ids"):
        calibration_metrics(logits, np.full(50, 4), num_id_classes=4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"logits": np.zeros((3,)), "labels": np.zeros(3, dtype=int)}, "2-D"),
        ({"logits": np.zeros((3, 2)), "labels": np.zeros(2, dtype=int)}, "labels"),
        ({"logits": np.array([[0.0, np.nan]]), "labels": np.zeros(1, dtype=int)}, "finite"),
        ({"logits": np.zeros((2, 3)), "labels": np.array([0, 3])}, "0..2"),
    ],
)
def test_invalid_inputs_name_the_argument(kwargs, match):
    with pytest.raises(StillroomError, match=match):
        calibration_metrics(**kwargs)


def test_ece_rejects_confidences_outside_the_unit_interval():
    with pytest.raises(StillroomError, match=r"\[0, 1\]"):
        expected_calibration_error([0.5, 1.2], [1, 0])


def test_agrees_with_teacher_selection_ece():
    from stillroom.distill.selection import teacher_scores

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(300, 7)) * 2
    labels = rng.integers(0, 7, 300)
    assert calibration_metrics(logits, labels)["ece"] == pytest.approx(teacher_scores(logits, labels)["ece"], 1e-12)


# --- against torchmetrics (independent implementation) ----------------------------------------------------------


@pytest.mark.parametrize("n_bins", [5, 15])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ece_mce_match_torchmetrics(n_bins, dtype):
    tm = pytest.importorskip("torchmetrics.functional.classification")
    rng = np.random.default_rng(n_bins)
    logits = (rng.normal(size=(400, 6)) * 2).astype(dtype)
    labels = rng.integers(0, 6, 400)
    probs = torch.from_numpy(_softmax(logits.astype(np.float64)))
    assert probs.max() < 1.0  # no confidence of exactly 1.0 here: see the next test
    target = torch.from_numpy(labels)
    ours = calibration_metrics(logits, labels, n_bins=n_bins)
    ref_ece = tm.multiclass_calibration_error(probs, target, num_classes=6, n_bins=n_bins, norm="l1")
    ref_mce = tm.multiclass_calibration_error(probs, target, num_classes=6, n_bins=n_bins, norm="max")
    assert ours["ece"] == pytest.approx(float(ref_ece), abs=1e-6)  # torchmetrics works in float32
    assert ours["mce"] == pytest.approx(float(ref_mce), abs=1e-6)


def test_documented_difference_at_confidence_one():
    """torchmetrics puts confidence 1.0 into a 16th bin of its own; ours keeps it in the closed last bin."""
    tm = pytest.importorskip("torchmetrics.functional.classification")
    probs = torch.tensor([[0.95, 0.05], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([0, 1, 0])  # correct, wrong, correct
    conf, correct = probs.max(1).values.numpy(), (probs.argmax(1) == target).numpy()
    ours, _, _ = expected_calibration_error(conf, correct, n_bins=15)
    theirs = float(tm.multiclass_calibration_error(probs, target, num_classes=2, n_bins=15, norm="l1"))
    # ours: one bin [14/15, 1] with accuracy 2/3 and mean confidence (0.95 + 2) / 3
    assert ours == pytest.approx(abs(2 / 3 - 2.95 / 3), abs=1e-12)
    # torchmetrics: {0.95} (gap 0.05, weight 1/3) and {1.0, 1.0} (accuracy 1/2, gap 0.5, weight 2/3)
    assert theirs == pytest.approx(0.05 / 3 + 0.5 * 2 / 3, abs=1e-6)  # torchmetrics computes in float32
    assert abs(ours - theirs) > 0.03
    # without a confidence of exactly 1.0 the two agree
    probs2 = torch.tensor([[0.95, 0.05], [0.99, 0.01], [0.97, 0.03]], dtype=torch.float64)
    ours2, _, _ = expected_calibration_error(probs2.max(1).values.numpy(), (probs2.argmax(1) == target).numpy())
    theirs2 = float(tm.multiclass_calibration_error(probs2, target, num_classes=2, n_bins=15, norm="l1"))
    assert ours2 == pytest.approx(theirs2, abs=1e-6)


# --- temperature scaling ----------------------------------------------------------------------------------------


def _calibrated_sample(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): calibrated at T = 1 by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 2.5
    p = _softmax(z)
    y = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)  # inverse-CDF sampling, one label per row
    return z, y


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_scaler_recovers_a_known_temperature(true_t):
    z, y = _calibrated_sample(20_000, 6, seed=1)
    # logits z * T0 are miscalibrated; dividing them by T0 restores calibration
    scaler = TemperatureScaler().fit(z * true_t, y)
    assert scaler.temperature_ == pytest.approx(true_t, rel=0.05)
    assert scaler.val_nll_after_ < scaler.val_nll_before_
    assert scaler.method_ == "nll" and scaler.n_val_ == 20_000
    after = calibration_metrics(scaler.transform(z * true_t), y)
    assert after["ece"] < calibration_metrics(z * true_t, y)["ece"]


def test_scaler_keeps_t_one_when_scaling_cannot_lower_nll():
    # every row uniform: the NLL is log K at every temperature, so nothing is gained
    z = np.zeros((30, 3))
    y = np.arange(30) % 3
    scaler = TemperatureScaler().fit(z, y)
    assert scaler.temperature_ == 1.0
    assert scaler.val_nll_after_ == pytest.approx(math.log(3))


def test_scaler_stays_inside_its_bounds():
    z = np.array([[3.0, 0.0], [0.0, 3.0]] * 10)
    sharp = TemperatureScaler().fit(z, np.array([0, 1] * 10))  # always right: NLL falls towards 0 as T -> 0
    assert 0.05 <= sharp.temperature_ < 0.1 and sharp.val_nll_after_ < 1e-12  # flat at float precision there
    soft = TemperatureScaler().fit(z, np.array([1, 0] * 10))  # always wrong: NLL falls towards log 2 as T grows
    assert soft.temperature_ == pytest.approx(20.0, rel=1e-3)


def test_transform_before_fit_raises_a_named_error():
    with pytest.raises(NotFittedError, match="fit"):
        TemperatureScaler().transform(np.zeros((2, 3)))
    assert issubclass(NotFittedError, StillroomError)


def test_grid_rule_is_lexicographic():
    cands = [
        {"temperature": 0.8, "nll": 0.90001, "ece": 0.05, "macro_f1": 0.7},
        {"temperature": 0.9, "nll": 0.90002, "ece": 0.04, "macro_f1": 0.7},  # NLL ties at 4 decimals: ECE decides
        {"temperature": 1.0, "nll": 0.95, "ece": 0.01, "macro_f1": 0.9},
    ]
    assert select_temperature(cands)["temperature"] == 0.9
    cands[0]["ece"] = 0.04  # NLL and ECE tie: macro-F1 decides
    cands[0]["macro_f1"] = 0.71
    assert select_temperature(cands)["temperature"] == 0.8
    cands[0]["macro_f1"] = 0.7  # complete tie: the earlier grid entry
    assert select_temperature(cands)["temperature"] == 0.8


@pytest.mark.parametrize("true_t,expected", [(2.0, 1.2), (0.5, 0.8), (1.0, 1.0)])
def test_grid_method_picks_the_seed_grid_point(true_t, expected):
    z, y = _calibrated_sample(5000, 5, seed=2)
    scaler = TemperatureScaler().fit(z * true_t, y, method="grid")
    assert scaler.temperature_ == expected and scaler.method_ == "grid"
    assert [c["temperature"] for c in scaler.grid_] == [0.8, 0.9, 1.0, 1.1, 1.2]
    best = min(scaler.grid_, key=lambda c: c["nll"])
    assert best["temperature"] == expected


def test_save_load_and_load_temperature(tmp_path):
    z, y = _calibrated_sample(2000, 4, seed=3)
    fitted = TemperatureScaler().fit(z * 1.5, y)
    path = tmp_path / "calibration.json"
    fitted.save(path, "best", weights_sha256="a" * 64)
    TemperatureScaler().fit(z, y, method="grid").save(path, "final")
    data = json.loads(path.read_text())
    assert set(data["weights"]) == {"best", "final"} and data["weights"]["best"]["weights_sha256"] == "a" * 64
    loaded = TemperatureScaler.load(path, "best")
    assert loaded.temperature_ == fitted.temperature_
    np.testing.assert_allclose(loaded.transform(z), fitted.transform(z))
    assert load_temperature(tmp_path, "best", weights_sha256="a" * 64) == fitted.temperature_
    with pytest.raises(StillroomError, match="other weights"):
        load_temperature(tmp_path, "best", weights_sha256="b" * 64)
    with pytest.warns(UserWarning, match="T = 1"):
        assert load_temperature(tmp_path / "nowhere") == 1.0


# --- the evaluation runner --------------------------------------------------------------------------------------


def test_evaluation_fits_stores_and_reports_temperature(teacher_run):
    metrics = json.loads((teacher_run / "metrics.json").read_text())
    stored = json.loads((teacher_run / "calibration.json").read_text())["weights"]
    for w in ("best", "final"):
        entry = stored[w]
        assert entry["weights_sha256"] == metrics["weights"][w]["sha256"] and entry["fit_split"] == "val"
        assert entry["val_nll_after"] <= entry["val_nll_before"]
        for split in ("val", "test"):
            cal = metrics["splits"][split][w]["calibration"]
            assert cal["temperature"] == entry["temperature"]
            assert set(cal["before"]) == {"ece", "mce", "brier", "nll", "bins"} and len(cal["before"]["bins"]) == 15
            assert cal["before"]["nll"] == pytest.approx(metrics["splits"][split][w]["nll"], abs=1e-5)
        png = teacher_run / "plots" / f"reliability_test_{w}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (teacher_run / "plots" / "reliability_val_best.png").exists()  # T was fitted there


def test_other_index_uses_the_stored_temperature(teacher_run, tmp_path):
    import shutil

    from stillroom.data.synthetic import build_shapes
    from stillroom.evaluate.runner import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(teacher_run, run)
    other = build_shapes(tmp_path / "other", n_per_class=8, size=32, num_classes=4, seed=7)
    t_best = json.loads((run / "calibration.json").read_text())["weights"]["best"]["temperature"]
    out = evaluate_run(run, index=other, allow_other_index=True, splits=("val",), weights=("best",), plots=False)
    assert out["splits"]["val"]["best"]["calibration"]["temperature"] == t_best
    assert json.loads((run / "calibration.json").read_text())["weights"]["best"]["temperature"] == t_best


def test_other_index_leaves_the_runs_own_metrics(teacher_run, tmp_path):
    """Figures on another dataset go to their own file; the run's metrics.json (read by report and compare) and its
    ladder stay as they were, and refitting the ladder on another dataset is refused."""
    import shutil

    import typer
    from typer.testing import CliRunner

    from stillroom.cli.evaluate import register
    from stillroom.data.synthetic import build_shapes
    from stillroom.evaluate.runner import other_metrics_name

    app = typer.Typer()
    register(app)
    run = tmp_path / "run"
    shutil.copytree(teacher_run, run)
    other = build_shapes(tmp_path / "other", n_per_class=8, size=32, num_classes=4, seed=7)
    fit = CliRunner().invoke(app, ["evaluate", str(run), "--split", "val", "--weights", "best", "--ladder"])
    assert fit.exit_code == 0, fit.output
    own = (run / "metrics.json").read_bytes()
    ladder = (run / "ladder.json").read_bytes()
    result = CliRunner().invoke(
        app, ["evaluate", str(run), "--index", str(other.root), "--split", "val", "--weights", "best"]
    )
    assert result.exit_code == 0, result.output
    assert (run / "metrics.json").read_bytes() == own and (run / "ladder.json").read_bytes() == ladder
    theirs = json.loads((run / other_metrics_name(other)).read_text())
    assert theirs["index_hash"] == other.index_hash and "val" in theirs["splits"]
    # judged by the run's own ladder; another dataset's val is not the rows it was fitted on
    assert theirs["ladder"]["splits"]["val"]["in_sample"] is False
    assert json.loads(own)["ladder"]["splits"]["val"]["in_sample"] is True
    assert (run / f"confusion_val_best_on_other-{other.index_hash[:8]}.npy").is_file()
    result = CliRunner().invoke(app, ["evaluate", str(run), "--index", str(other.root), "--split", "val", "--ladder"])
    assert result.exit_code != 0 and "--ladder" in str(result.exception)


def test_other_index_open_set_leaves_the_runs_own(teacher_run, shapes_index, tmp_path, ood_only):
    """Open-set figures of another ID set (e.g. the species drawn by another artist: val / test rows only) against an
    OOD set go to a file named by both; the run's own ood_metrics.json and its scores files stay as they were; KNN
    is fitted on the run's own train rows, the other set having none."""
    import shutil

    import typer
    from typer.testing import CliRunner

    from stillroom.cli.evaluate import register
    from stillroom.data.index import IndexRow, write_index
    from stillroom.data.synthetic import build_shapes

    app = typer.Typer()
    register(app)
    run = tmp_path / "run"
    shutil.copytree(teacher_run, run)
    other = build_shapes(tmp_path / "other", n_per_class=8, size=32, num_classes=4, seed=7)
    rows = [
        IndexRow(p, int(y), other.classes[y], str(s), g, h)
        for p, y, s, g, h in zip(other.paths, other.labels, other.splits, other.groups, other.sha256, strict=True)
        if s != "train"
    ]
    other = write_index(other.root, rows, other.classes, shapes_index.recipe)  # rendered as the ID set: same inputs
    base = ["evaluate", str(run), "--split", "val", "--weights", "best", "--ood-split", "val", "--no-tune-odin"]
    result = CliRunner().invoke(app, [*base, "--ood-index", str(ood_only.root)])
    assert result.exit_code == 0, result.output
    own = {p.name: p.read_bytes() for p in run.glob("ood_*")}
    vs = f"vs_{ood_only.root.name}-{ood_only.index_hash[:8]}"  # the per-OOD-set copy of the run's own figures
    assert set(own) == {
        "ood_metrics.json",
        "ood_scores_val_best.npz",
        f"ood_metrics_{vs}.json",
        f"ood_scores_val_best_{vs}.npz",
    }
    result = CliRunner().invoke(app, [*base, "--ood-index", str(ood_only.root), "--index", str(other.root)])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in run.glob("ood_*") if p.name in own} == own
    tag = f"on_other-{other.index_hash[:8]}_vs_{ood_only.root.name}-{ood_only.index_hash[:8]}"
    theirs = json.loads((run / f"ood_metrics_{tag}.json").read_text())
    rep = theirs["splits"]["val"]["best"]
    assert rep["n_id"] == len(other.split_indices("val")) and rep["scores_file"] == f"ood_scores_val_best_{tag}.npz"
    assert (run / rep["scores_file"]).is_file() and f"ood_metrics_{tag}.json" in result.output
    if "skipped" not in rep["feature_scores"]:  # pytorch-ood installed (a test dependency)
        assert rep["feature_scores"]["params"]["knn"]["fit_index"] == str(shapes_index.root) and "knn" in rep["scores"]
    pointer = json.loads((run / f"metrics_on_other-{other.index_hash[:8]}.json").read_text())["ood"]
    assert pointer["file"] == f"ood_metrics_{tag}.json"


def test_calibrate_command_switches_to_the_grid(teacher_run, tmp_path):
    import shutil

    import typer
    from typer.testing import CliRunner

    from stillroom.cli.evaluate import register

    run = tmp_path / "run"
    shutil.copytree(teacher_run, run)
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["calibrate", str(run), "--method", "grid", "--weights", "best"])
    assert result.exit_code == 0, result.output
    stored = json.loads((run / "calibration.json").read_text())["weights"]
    assert stored["best"]["method"] == "grid" and stored["best"]["temperature"] in (0.8, 0.9, 1.0, 1.1, 1.2)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["splits"]["test"]["best"]["calibration"]["temperature"] == stored["best"]["temperature"]
    # a later evaluation keeps the chosen method
    from stillroom.evaluate.runner import evaluate_run

    evaluate_run(run, splits=("test",), weights=("best",), plots=False)
    assert json.loads((run / "calibration.json").read_text())["weights"]["best"]["method"] == "grid"
