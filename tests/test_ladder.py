"""Strictness ladder (seed 000 §4.2; REFERENCE 5): each tier on hand-built logits, the fit against a brute-force
reference, persistence and the report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stillroom._io import StillroomError
from stillroom.deploy.ladder import Ladder, NotFittedError, ladder_report


def _row(top: int, value: float, k: int = 4, second: float = 0.0) -> np.ndarray:
    """Logits with ``value`` on class ``top`` and ``second`` on the next class, 0 elsewhere."""
    z = np.zeros(k)
    z[(top + 1) % k] = second
    z[top] = value
    return z


def _members(*rows_per_member: list[np.ndarray]) -> list[np.ndarray]:
    return [np.stack(rows) for rows in rows_per_member]


# --- each tier, ensemble of three (t1 = 6, t2 = 9 as in the paper, set by hand) -----------------------------------

ENSEMBLE_CASES = {
    # name: (member top-1 classes, max logit of every member, expected verdict, expected reason)
    "weak signal": ((0, 0, 0), 3.0, "reject", "weak-signal"),
    "risk zone, unanimous": ((1, 1, 1), 7.0, "accept", "agreement"),
    "risk zone, disagreement": ((1, 1, 2), 7.0, "uncertain", "risk-zone-disagreement"),
    "strong, unanimous": ((2, 2, 2), 12.0, "accept", "agreement"),
    "strong, moderate disagreement": ((2, 2, 3), 12.0, "uncertain", "moderate-disagreement"),
    "strong, extreme disagreement": ((0, 1, 2), 12.0, "reject", "extreme-disagreement"),
    "risk zone, extreme disagreement": ((0, 1, 2), 7.0, "uncertain", "risk-zone-disagreement"),
}


@pytest.mark.parametrize("case", list(ENSEMBLE_CASES))
def test_ensemble_tiers(case):
    votes, value, verdict, reason = ENSEMBLE_CASES[case]
    logits = [np.stack([_row(v, value)]) for v in votes]  # 3 members x (1, 4)
    lad = Ladder.from_thresholds(6.0, 9.0, n_members=3, num_classes=4)
    assert lad.decide(logits) == [(verdict, reason)]


def test_ensemble_prediction_is_the_soft_vote():
    # Members 0 and 1 say class 2 weakly, member 2 says class 3 very strongly: the mean softmax picks class 3.
    m = [np.array([[0, 0, 10.0, 9.9]]), np.array([[0, 0, 10.0, 9.9]]), np.array([[0, 0, 0, 14.0]])]
    lad = Ladder.from_thresholds(6.0, 9.0, n_members=3, num_classes=4)
    det = lad.decide_detailed(m)[0]
    assert det["votes"] == [2, 2, 3] and det["pred"] == 3
    assert det["mu"] == pytest.approx((10 + 10 + 14) / 3)
    assert (det["verdict"], det["reason"]) == ("uncertain", "moderate-disagreement")


SINGLE_CASES = {
    # name: (max logit, second logit, verdict, reason); t1 = 4, t2 = 8, margin = 2
    "weak signal": (3.0, 0.0, "reject", "weak-signal"),
    "risk zone, clear margin": (6.0, 3.0, "accept", "agreement"),
    "risk zone, small margin": (6.0, 5.0, "uncertain", "risk-zone-disagreement"),
    "strong, clear margin": (12.0, 1.0, "accept", "agreement"),
    "strong, small margin": (12.0, 11.0, "uncertain", "moderate-disagreement"),
    "strong, tie (never extreme with one model)": (12.0, 12.0, "uncertain", "moderate-disagreement"),
    "margin exactly at the threshold": (6.0, 4.0, "accept", "agreement"),
}


@pytest.mark.parametrize("case", list(SINGLE_CASES))
def test_single_model_tiers(case):
    top, second, verdict, reason = SINGLE_CASES[case]
    lad = Ladder.from_thresholds(4.0, 8.0, n_members=1, num_classes=4, margin=2.0)
    assert lad.decide(_row(0, top, second=second)[None]) == [(verdict, reason)]


def test_sink_wins_rejects_and_other_rules_ignore_the_sink_column():
    lad = Ladder.from_thresholds(4.0, 8.0, n_members=1, num_classes=3, margin=1.0, sink=True)
    sink_top = np.array([[5.0, 0.0, 0.0, 20.0]])  # K = 3 ID classes + sink
    strong_id = np.array([[9.0, 0.0, 0.0, 2.0]])
    assert lad.decide(np.concatenate([sink_top, strong_id])) == [("reject", "ood-sink"), ("accept", "agreement")]
    # mu is computed on the ID columns only: 5, not 20.
    assert lad.signals(sink_top)["mu"][0] == 5.0


# --- fitting --------------------------------------------------------------------------------------------------


def _reference_t1(mu: np.ndarray, eligible: np.ndarray, target: float) -> float:
    """Brute force: the largest candidate t in mu such that mean(eligible & mu >= t) >= target."""
    best = -math.inf
    for t in np.unique(mu):
        if np.mean(eligible & (mu >= t)) >= target - 1e-12:
            best = max(best, t)
    return best


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9])
def test_ensemble_fit_matches_brute_force(target):
    rng = np.random.default_rng(0)
    n, k = 200, 6
    base = rng.normal(0, 1, (n, k))
    base[np.arange(n), rng.integers(0, k, n)] += rng.uniform(2, 12, n)
    members = [base + rng.normal(0, 0.8, (n, k)) for _ in range(3)]
    lad = Ladder().fit(members, target_accept=target)
    s = lad.signals(members)
    assert lad.t1_ == pytest.approx(_reference_t1(s["mu"], s["agree"], target))
    assert lad.fit_summary_["id"]["accept"] >= target
    assert lad.margin_ is None and lad.t1_ <= lad.t2_
    # t2 is the median of mu over the ID samples that clear t1.
    assert lad.t2_ == pytest.approx(np.quantile(s["mu"][s["mu"] >= lad.t1_], 0.5))


def test_single_model_fit_splits_the_budget():
    rng = np.random.default_rng(1)
    n = 400
    z = rng.normal(0, 1, (n, 5))
    z[np.arange(n), rng.integers(0, 5, n)] += rng.uniform(0, 10, n)
    lad = Ladder(weak_share=0.5).fit(z, target_accept=0.9)
    s = lad.signals(z)
    # Half of the 10% budget goes to weak signal: exactly floor(0.05 * n) samples lie below t1 (continuous data).
    assert int((s["mu"] < lad.t1_).sum()) == math.floor(0.05 * n)
    accepted = (s["mu"] >= lad.t1_) & (s["margin"] >= lad.margin_)
    assert accepted.sum() == math.ceil(0.9 * n)  # continuous margins: no ties, the target is hit exactly
    assert lad.fit_summary_["id"]["accept"] == pytest.approx(0.9)
    assert lad.decide(z).count(("accept", "agreement")) == accepted.sum()


def test_fit_is_monotone_in_the_target():
    rng = np.random.default_rng(2)
    members = [rng.normal(0, 3, (300, 4)) for _ in range(2)]
    members[1] = members[0] + rng.normal(0, 0.5, (300, 4))
    t1 = [Ladder().fit(members, target_accept=a).t1_ for a in (0.3, 0.5, 0.7)]
    assert t1[0] >= t1[1] >= t1[2]


def test_unreachable_target_warns_and_keeps_the_loosest_threshold():
    # Two members that disagree on half of the samples: at most 50% can be accepted.
    a = np.tile(np.eye(4)[[0, 1]] * 10, (10, 1))
    b = a.copy()
    b[::2] = np.eye(4)[[2]] * 10
    with pytest.warns(UserWarning, match="unreachable"):
        lad = Ladder().fit([a, b], target_accept=0.9)
    assert lad.fit_summary_["id"]["accept"] == pytest.approx(0.5)


def test_fit_reports_ood_rejection():
    rng = np.random.default_rng(3)
    id_logits = np.eye(4)[rng.integers(0, 4, 100)] * rng.uniform(8, 12, (100, 1))
    ood_logits = rng.normal(0, 1, (50, 4))
    lad = Ladder().fit(id_logits, target_accept=0.95, ood_logits_list=ood_logits)
    assert lad.fit_summary_["n_ood"] == 50
    assert lad.fit_summary_["ood"]["reject"] == 1.0  # OOD max logits (~2) are far below t1 (~8)


# --- persistence, errors, report ------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    z = rng.normal(0, 4, (100, 5))
    lad = Ladder(strong_quantile=0.3).fit(z, target_accept=0.8)
    path = lad.save(tmp_path / "ladder.json", extra={"members": [{"sha256": "abc"}]})
    back = Ladder.load(path)
    assert (back.t1_, back.t2_, back.margin_, back.strong_quantile) == (lad.t1_, lad.t2_, lad.margin_, 0.3)
    assert back.decide(z) == lad.decide(z)
    assert back.extra_ == {"members": [{"sha256": "abc"}]}


def test_errors():
    with pytest.raises(NotFittedError):
        Ladder().decide(np.zeros((1, 3)))
    lad = Ladder.from_thresholds(1.0, 2.0, n_members=2, num_classes=3)
    with pytest.raises(StillroomError, match="2 member"):
        lad.decide(np.zeros((1, 3)))
    with pytest.raises(StillroomError, match="3 ID classes"):
        lad.decide([np.zeros((1, 4)), np.zeros((1, 4))])
    with pytest.raises(StillroomError, match="non-finite"):
        lad.decide([np.full((1, 3), np.nan)] * 2)
    with pytest.raises(StillroomError, match="shape"):
        lad.decide([np.zeros((1, 3)), np.zeros((2, 3))])
    with pytest.raises(StillroomError, match="target_accept"):
        Ladder().fit(np.zeros((3, 3)), target_accept=1.5)
    with pytest.raises(StillroomError, match="margin"):
        Ladder.from_thresholds(1.0, 2.0, n_members=1, num_classes=3)


def test_ladder_report_by_hand():
    lad = Ladder.from_thresholds(4.0, 8.0, n_members=1, num_classes=4, margin=2.0)
    id_logits = np.stack(
        [
            _row(0, 10.0),  # accept, correct
            _row(1, 10.0),  # accept, wrong (label 0)
            _row(2, 6.0, second=5.0),  # uncertain, correct
            _row(3, 2.0),  # reject, correct
        ]
    )
    labels = np.array([0, 0, 2, 3])
    ood = np.stack([_row(0, 9.0), _row(1, 1.0), _row(2, 6.0, second=5.5), _row(3, 0.5)])
    rep = ladder_report(lad, id_logits, labels, ood)
    assert rep["id"]["coverage"] == 0.5 and rep["id"]["uncertain"] == 0.25 and rep["id"]["reject"] == 0.25
    assert rep["id"]["selective_accuracy"] == 0.5
    assert rep["id"]["accuracy"] == 0.75
    assert rep["id"]["accuracy_accept_or_uncertain"] == pytest.approx(2 / 3)
    # of the three read right one is accepted, of the one misread one: coverage = 0.75 * 1/3 + 0.25 * 1
    assert rep["id"]["coverage_correct"] == pytest.approx(1 / 3) and rep["id"]["coverage_misread"] == 1.0
    assert rep["id"]["counts"] == {"accept": 2, "uncertain": 1, "reject": 1}
    assert rep["ood"] == {
        "n": 4,
        "counts": {"accept": 1, "uncertain": 1, "reject": 2},
        "acceptance": 0.25,
        "uncertain": 0.25,
        "rejection": 0.5,
        "reasons": {"agreement": 1, "weak-signal": 2, "risk-zone-disagreement": 1},
    }
    assert rep["thresholds"] == {"t1": 4.0, "t2": 8.0, "margin": 2.0, "n_members": 1, "signal": "maxlogit"}


def test_ladder_report_applies_the_structure_gate_first():
    """What the service does: a silhouette outside the structure gate is rejected ("no-structure") whatever its
    logits; the report counts it the same way (issue 18)."""
    lad = Ladder.from_thresholds(4.0, 8.0, n_members=1, num_classes=4, margin=2.0)
    id_logits = np.stack([_row(0, 10.0), _row(1, 10.0), _row(2, 6.0, second=5.0), _row(3, 2.0)])
    labels = np.array([0, 0, 2, 3])
    ood = np.stack([_row(0, 9.0), _row(1, 1.0)])
    rep = ladder_report(
        lad, id_logits, labels, ood, id_structure_ok=np.array([False, True, True, True]),
        ood_structure_ok=np.array([False, True]),
    )  # fmt: skip
    assert rep["id"]["counts"] == {"accept": 1, "uncertain": 1, "reject": 2}
    assert rep["id"]["reasons"]["no-structure"] == 1 and rep["id"]["selective_accuracy"] == 0.0
    assert rep["ood"]["acceptance"] == 0.0 and rep["ood"]["reasons"] == {"no-structure": 1, "weak-signal": 1}
    with pytest.raises(StillroomError, match="structure verdicts"):
        ladder_report(lad, id_logits, labels, id_structure_ok=np.array([True]))


def test_ladder_report_nothing_accepted_warns():
    lad = Ladder.from_thresholds(100.0, 200.0, n_members=1, num_classes=3, margin=0.0)
    with pytest.warns(UserWarning, match="no ID sample accepted"):
        rep = ladder_report(lad, np.eye(3), np.arange(3))
    assert math.isnan(rep["id"]["selective_accuracy"])
    assert rep["id"]["coverage_correct"] == 0.0 and math.isnan(rep["id"]["coverage_misread"])  # nothing misread


# --- structure gate: silhouettes with no shape structure are rejected before the model's verdict -----------------


@pytest.fixture(scope="module")
def gate_data(tmp_path_factory):
    """A structure gate fitted on drawn discs, triangles and crosses (train split) at 32 px, and the index."""
    from stillroom.data.dataset import load_images
    from stillroom.data.synthetic import build_shapes
    from stillroom.deploy.structure import StructureGate, served_masks

    idx = build_shapes(tmp_path_factory.mktemp("gate"), n_per_class=40, size=32, seed=3,
                       kinds=("disc", "triangle", "cross"))  # fmt: skip
    images = load_images(idx)
    masks = served_masks(images[idx.split_indices("train")], 32, 0.2)
    return StructureGate.fit(masks, quantile=0.001, fit_data="drawn shapes"), idx, images


def _served(png: bytes, size: int = 32) -> np.ndarray:
    import io

    from PIL import Image

    from stillroom.data.preprocess import object_mask, preprocess_mask

    return preprocess_mask(object_mask(Image.open(io.BytesIO(png))), size, padding=0.2)


def test_structure_features_by_hand():
    from stillroom.deploy.structure import silhouette_features

    m = np.full((3, 10, 10), 255, dtype=np.uint8)
    m[0, 2:6, 1:9] = 0  # a filled 4 x 8 rectangle
    m[1, np.arange(10), np.arange(10)] = 0  # the diagonal
    f = silhouette_features(m)  # the third one is empty
    np.testing.assert_allclose(f["fill"], [1.0, 0.1, 0.0])
    np.testing.assert_allclose(f["aspect"], [0.5, 1.0, 0.0])
    np.testing.assert_allclose(f["share"], [0.32, 0.1, 0.0])
    np.testing.assert_allclose(silhouette_features(m[0] == 0)["fill"], [1.0])  # boolean masks: True is object


@pytest.mark.parametrize("key", ["full_square", "full_frame", "opaque_frame_rgba", "horizontal_line",
                                 "diagonal_line", "hairline"])  # fmt: skip
def test_structure_gate_rejects_the_shapeless_corpus(gate_data, key):
    import _bad_inputs as bad

    gate = gate_data[0]
    problems = gate.problems(_served(bad.SHAPELESS[key].make()))
    assert problems, (key, gate.features(_served(bad.SHAPELESS[key].make())), gate)
    assert all("training range" in p or "no object pixel" in p for p in problems)


def test_structure_gate_keeps_in_distribution_images(gate_data):
    from stillroom.deploy.structure import served_masks

    gate, idx, images = gate_data
    assert gate.reject_rate(served_masks(images[idx.split_indices("train")], 32, 0.2)) <= 6 * 0.001 + 1e-9
    assert gate.reject_rate(served_masks(images[idx.split_indices("val")], 32, 0.2)) <= 0.1
    # Fitted, not written down: a dataset of filled squares keeps filled squares.
    import _bad_inputs as bad
    from stillroom.deploy.structure import StructureGate

    squares = np.stack([_served(bad.full_square(), 32)] * 12)
    assert StructureGate.fit(squares).problems(squares[0]) == []


def test_ladder_round_trip_with_and_without_structure_gate(tmp_path, gate_data):
    import json

    import _bad_inputs as bad

    gate = gate_data[0]
    z = np.random.default_rng(0).normal(0, 4, (50, 4))
    lad = Ladder().fit(z, target_accept=0.9)
    lad.structure_ = gate
    back = Ladder.load(lad.save(tmp_path / "ladder.json", extra={"members": [{"sha256": "abc"}]}))
    assert back.structure_.ranges == gate.ranges and back.structure_.size == 32
    assert back.extra_ == {"members": [{"sha256": "abc"}]}
    black = _served(bad.full_frame())
    assert back.structure_problems(black) and back.decide(z) == lad.decide(z)
    # A ladder.json written before the gate existed still loads and works, without a gate.
    old = {k: v for k, v in json.loads((tmp_path / "ladder.json").read_text()).items() if k != "structure_gate"}
    (tmp_path / "old.json").write_text(json.dumps(old))
    legacy = Ladder.load(tmp_path / "old.json")
    assert legacy.structure_ is None and legacy.structure_problems(black) == [] and legacy.decide(z) == lad.decide(z)
    # A damaged gate is named, never ignored.
    broken = {**old, "structure_gate": {**gate.to_dict(), "features": {"fill": [0.9, 0.1]}}}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(StillroomError, match="broken.json: structure gate"):
        Ladder.load(tmp_path / "broken.json")
    with pytest.raises(StillroomError, match="fitted on 32x32"):
        back.structure_problems(np.zeros((16, 16), dtype=np.uint8))


def test_no_structure_reason_is_described():
    from stillroom.deploy.ladder import REASONS, describe

    assert "no-structure" in REASONS and "structure" in describe("no-structure")
