"""Teacher selection (seed 004): metrics by hand, ECE bins by hand, Spearman against scipy, runs and CLI."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from scipy.stats import spearmanr
from typer.testing import CliRunner

from stillroom._io import StillroomError, atomic_write_json
from stillroom.cli.distill import register
from stillroom.distill.selection import DIRECTIONS, _ece, score_teachers, teacher_scores, validate_selection
from stillroom.models.factory import create_model
from stillroom.train.checkpoint import save_weights

# --- metrics by hand -------------------------------------------------------------------------------------------

LOGITS = [[3.0, 1.0, 0.0], [2.0, 4.0, -1.0], [1.0, -2.0, 0.5], [0.5, -1.0, -3.0], [2.0, 0.0, -1.0]]
LABELS = [0, 0, 2, 0, 1]


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_teacher_scores_by_hand():
    s = teacher_scores(np.array(LOGITS), np.array(LABELS))
    # top-1 classes 0, 1, 0, 0, 0 against labels 0, 0, 2, 0, 1
    assert s["n"] == 5 and s["tac"] == pytest.approx(2 / 5)
    # second logits 1, 2, 0.5, -1, 0: rows 3 and 4 (<= 0) are excluded; ratios 3/1, 4/2, 1/0.5
    assert s["r12"] == pytest.approx((3 + 2 + 2) / 3, abs=1e-15)
    assert s["r12_n_excluded"] == 2 and s["r12_excluded_fraction"] == pytest.approx(0.4)
    assert s["margin"] == pytest.approx((2 + 2 + 0.5 + 1.5 + 2) / 5, abs=1e-15)
    assert s["logprob_gap"] == pytest.approx(s["margin"], abs=1e-12)  # log p1 - log p2 = z1 - z2
    probs = [_softmax(r) for r in LOGITS]
    ssp, gap, nll, conf = 0.0, 0.0, 0.0, []
    for p, y in zip(probs, LABELS, strict=True):
        top = sorted(p, reverse=True)
        ssp += abs(top[1] - top[2]) / 2 / 5  # std (ddof 0) of two values = half their distance
        gap += (top[0] - top[1]) / 5
        nll += -math.log(p[y]) / 5
        conf.append(top[0])
    assert s["ssp"] == pytest.approx(ssp, abs=1e-12)
    assert s["prob_gap"] == pytest.approx(gap, abs=1e-12)
    assert s["nll"] == pytest.approx(nll, abs=1e-12)
    # confidences 0.844, 0.876, 0.604, 0.798, 0.844 -> bins 12, 13, 9, 11, 12 (of 15); correct 1, 0, 0, 1, 0
    bins = [math.floor(c * 15) for c in conf]
    assert bins == [12, 13, 9, 11, 12]
    ece = (abs(1 - conf[0] - conf[4]) + abs(0 - conf[1]) + abs(0 - conf[2]) + abs(1 - conf[3])) / 5
    assert s["ece"] == pytest.approx(ece, abs=1e-12)


def test_ece_bins_by_hand():
    # 0.2 and 1.0 sit on bin edges: [lo, hi) puts 0.2 in bin 3 (not with 0.19 in bin 2), 1.0 in the last bin
    conf = np.array([0.19, 0.2, 1.0, 0.95, 0.5, 0.55])
    correct = np.array([0, 1, 0, 1, 1, 0], dtype=bool)
    by_hand = (0.19 + 0.8 + 2 * abs(0.5 - 0.975) + 0.5 + 0.55) / 6
    assert _ece(conf, correct) == pytest.approx(by_hand, abs=1e-12)
    assert _ece(np.array([0.3, 0.9]), np.array([True, False])) == pytest.approx((0.7 + 0.9) / 2)


def test_r12_all_excluded_warns_and_is_nan():
    with pytest.warns(UserWarning, match="r12 is nan"):
        s = teacher_scores(np.array([[1.0, -1.0], [0.0, -2.0]]), np.array([0, 1]))
    assert math.isnan(s["r12"]) and s["r12_n_excluded"] == 2 and s["r12_excluded_fraction"] == 1.0


def test_teacher_scores_validate_inputs():
    with pytest.raises(StillroomError, match="K >= 2"):
        teacher_scores(np.zeros((3, 1)), np.zeros(3, dtype=int))
    with pytest.raises(StillroomError, match="labels"):
        teacher_scores(np.zeros((3, 3)), np.array([0, 1, 3]))
    with pytest.raises(StillroomError, match="finite"):
        teacher_scores(np.array([[np.nan, 1.0]]), np.array([0]))


# --- validate_selection on fake runs ---------------------------------------------------------------------------


def _student(path: Path, top1: float) -> str:
    atomic_write_json(path / "metrics.json", {"splits": {"test": {"best": {"top1": top1}}, "val": {}}})
    return str(path)


def _scores(values: dict[str, list[float]]) -> dict:
    n = len(next(iter(values.values())))
    teachers = [{"run": f"t{i}", **{m: values.get(m, [1.0 * i] * n)[i] for m in DIRECTIONS}} for i in range(n)]
    return {"split": "val", "teachers": teachers}


def test_validate_selection_spearman_matches_scipy_and_hand(tmp_path):
    acc = [0.70, 0.80, 0.75, 0.90, 0.60]
    r12 = [1.5, 1.2, 1.1, 1.0, 2.0]  # ranks 4, 3, 2, 1, 5 vs accuracy ranks 2, 4, 3, 5, 1
    tac = [0.91, 0.95, 0.93, 0.90, 0.99]
    students = [_student(tmp_path / f"s{i}", a) for i, a in enumerate(acc)]
    out = validate_selection([f"t{i}" for i in range(5)], students, scores=_scores({"r12": r12, "tac": tac}))
    d2 = (4 - 2) ** 2 + (3 - 4) ** 2 + (2 - 3) ** 2 + (1 - 5) ** 2 + (5 - 1) ** 2
    rho = 1 - 6 * d2 / (5 * (5**2 - 1))
    c = out["correlations"]["r12"]
    assert c["rho"] == pytest.approx(rho, abs=1e-12)
    ref = spearmanr(r12, acc)
    assert c["rho"] == pytest.approx(ref.statistic, abs=1e-12) and c["p_value"] == pytest.approx(ref.pvalue)
    assert c["rho_oriented"] == pytest.approx(-rho)  # lower r12 is expected to be better
    # exact two-sided p over all 5! pairings, by brute force with scipy
    perm_rhos = [spearmanr(r12, [acc[i] for i in perm]).statistic for perm in itertools.permutations(range(5))]
    assert c["p_value_exact"] == pytest.approx(np.mean(np.abs(perm_rhos) >= abs(rho) - 1e-12), abs=1e-12)
    t = out["correlations"]["tac"]
    assert t["rho"] == pytest.approx(spearmanr(tac, acc).statistic) and t["rho_oriented"] == t["rho"]
    assert out["n_pairs"] == 5 and out["student_metric"] == "test.best.top1"
    assert [p["student_accuracy"] for p in out["pairs"]] == acc


def test_validate_selection_seed_mean(tmp_path):
    # "a,b" = one student trained with two seeds: its accuracy is their mean, and the ranking uses that mean
    acc = [(0.60, 0.70), (0.90, 0.70), (0.50, 0.56)]  # means 0.65, 0.80, 0.53
    students = [
        ",".join(str(_student(tmp_path / f"s{i}_{j}", a)) for j, a in enumerate(pair)) for i, pair in enumerate(acc)
    ]
    out = validate_selection(["t0", "t1", "t2"], students, scores=_scores({"tac": [0.5, 0.9, 0.1]}))
    assert [p["student_accuracy"] for p in out["pairs"]] == pytest.approx([0.65, 0.80, 0.53])
    assert out["correlations"]["tac"]["rho"] == pytest.approx(1.0)
    with pytest.raises(StillroomError, match="metrics.json"):
        validate_selection(["t0", "t1", "t2"], [students[0], students[1], f"{students[2]},{tmp_path / 'none'}"],
                           scores=_scores({"tac": [0.5, 0.9, 0.1]}))  # fmt: skip


def test_validate_selection_errors(tmp_path):
    students = [_student(tmp_path / f"s{i}", 0.5 + i / 10) for i in range(3)]
    scores = _scores({"r12": [1.0, 2.0, 3.0]})
    with pytest.raises(StillroomError, match="at least 3"):
        validate_selection(["t0", "t1"], students[:2], scores=scores)
    with pytest.raises(StillroomError, match="3 teachers but 2 students"):
        validate_selection(["t0", "t1", "t2"], students[:2], scores=scores)
    with pytest.raises(StillroomError, match=r"splits\.val\.best\.top1"):
        validate_selection(["t0", "t1", "t2"], students, student_split="val", scores=scores)
    with pytest.raises(StillroomError, match="no scores for teacher run"):
        validate_selection(["t0", "t1", "t9"], students, scores=scores)
    with pytest.warns(UserWarning, match="constant"):
        out = validate_selection(["t0", "t1", "t2"], students, scores=_scores({"tac": [0.9, 0.9, 0.9]}))
    assert out["correlations"]["tac"]["rho"] is None


# --- score_teachers on fake runs of random-init models ---------------------------------------------------------


@pytest.fixture(scope="module")
def scaled_teachers(shapes_index, tmp_path_factory):
    """One random-init model saved three times with its classifier scaled by 1, 2, 4: logits scale exactly, so
    margin and gaps grow with the scale while TAC and R12 stay the same."""
    torch.manual_seed(0)
    k, size = shapes_index.num_classes, int(shapes_index.recipe["size"])
    model = create_model("timm:resnet10t", 1, k, size).eval()
    root = tmp_path_factory.mktemp("teachers")
    runs = []
    for scale in (1.0, 2.0, 4.0):
        head = create_model("timm:resnet10t", 1, k, size)
        head.load_state_dict(model.state_dict())
        with torch.no_grad():
            fc = head.get_classifier()
            fc.weight.mul_(scale)
            fc.bias.fill_(0.0)
        run = root / f"teacher_x{scale:g}"
        save_weights(head, run / "best.safetensors")
        meta = {"arch": "timm:resnet10t", "in_chans": 1, "num_classes": k, "img_size": size,
                "classes": shapes_index.classes, "recipe": shapes_index.recipe, "index": str(shapes_index.root),
                "index_hash": shapes_index.index_hash, "labels_hash": shapes_index.labels_hash,
                "content_hash": shapes_index.content_hash}  # fmt: skip
        atomic_write_json(run / "model.json", meta)
        runs.append(str(run))
    return runs


def test_score_teachers_on_runs(scaled_teachers):
    out = score_teachers(scaled_teachers, split="val")
    t1, t2, t4 = out["teachers"]
    assert t1["n"] == 12 * 4
    assert t1["tac"] == t2["tac"] == t4["tac"]
    if t1["r12"] is not None:
        assert t2["r12"] == pytest.approx(t1["r12"], rel=1e-5) and t4["r12"] == pytest.approx(t1["r12"], rel=1e-5)
    assert t2["margin"] == pytest.approx(2 * t1["margin"], rel=1e-5)
    assert t4["margin"] == pytest.approx(4 * t1["margin"], rel=1e-5)
    assert out["rankings"]["margin"] == scaled_teachers  # lower margin = expected better teacher
    assert out["rankings"]["prob_gap"] == scaled_teachers
    json.dumps(out, allow_nan=False)  # strict JSON: nan became None


@pytest.mark.filterwarnings("ignore:validate_selection")  # TAC and R12 are constant here by construction
def test_cli_score_and_validate(scaled_teachers, tmp_path):
    app = typer.Typer()
    register(app)

    @app.callback()
    def _main() -> None:  # a callback keeps typer from collapsing a one-command app
        pass

    runner = CliRunner()
    scores_json = tmp_path / "scores.json"
    res = runner.invoke(app, ["score-teachers", *scaled_teachers, "--split", "val", "--out", str(scores_json)])
    assert res.exit_code == 0, res.output
    scores = json.loads(scores_json.read_text())
    assert [t["run"] for t in scores["teachers"]] == scaled_teachers

    students = [_student(tmp_path / f"s{i}", a) for i, a in enumerate([0.9, 0.8, 0.7])]
    out = tmp_path / "validation.json"
    args = ["validate-selection", "--teachers", *scaled_teachers, "--students", *students, "--out", str(out)]
    res = runner.invoke(app, [*args, "--scores", str(scores_json)])
    assert res.exit_code == 0, res.output
    corr = json.loads(out.read_text())["correlations"]
    assert corr["margin"]["rho"] == pytest.approx(-1.0) and corr["margin"]["rho_oriented"] == pytest.approx(1.0)
    # scipy's t approximation says p = 0 for a perfect rank match; 2 of the 3! pairings are that extreme
    assert corr["margin"]["p_value"] == 0.0 and corr["margin"]["p_value_exact"] == pytest.approx(1 / 3)
    assert corr["tac"]["rho"] is None  # one TAC for all three: constant input
    # without --scores the teachers are scored again, with the same result
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["correlations"]["margin"] == corr["margin"]
    res = runner.invoke(app, ["validate-selection", "--teachers", *scaled_teachers[:2], "--students", *students[:2]])
    assert isinstance(res.exception, StillroomError) and "at least 3" in str(res.exception)
