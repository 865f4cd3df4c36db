"""The ladder's signal (issue 16 item 4; REFERENCE 4-5): maxlogit / energy / msp / auto, chosen by validation AUROC,
saved, loaded, and old ladder.json files without the field deciding exactly as before.

The synthetic logits set each score by hand: with K classes, the top class at ``m`` and the K - 1 others at
``r = m + log((exp(L) - 1) / (K - 1))`` give max logit ``m``, MSP ``exp(-L)`` and energy ``m + L`` exactly, so each
case can make one score separate ID from OOD and the others not. The expected AUROCs come from scikit-learn on those
hand formulas (scipy's logsumexp for energy), not from the code under test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from sklearn.metrics import roc_auc_score

from stillroom._io import StillroomError
from stillroom.deploy.ladder import SIGNALS, Ladder, describe

K = 20


def _logits(rng: np.random.Generator, m: np.ndarray, L: np.ndarray) -> np.ndarray:
    """(N, K) logits with max logit ``m``, -log(MSP) = ``L`` (0 < L < log K) and energy ``m + L``."""
    n = len(m)
    rest = m + np.log(np.expm1(L) / (K - 1))
    z = np.repeat(rest[:, None], K, axis=1)
    z[np.arange(n), rng.integers(0, K, n)] = m
    return z


def _case(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(ID val logits, OOD val logits) on which the score ``name`` separates and the other two do not."""
    rng = np.random.default_rng(seed)
    n, no = 300, 200
    u = rng.uniform
    mu_id, l_id, mu_ood, l_ood = {
        # max logit alike (4-6) on both sides; ID spreads its mass (L 2.5), OOD is peaked (L ~ 0.1): energy wins,
        # MSP is inverted
        "energy": (u(4, 6, n), u(2.4, 2.6, n), u(4, 6, no), u(0.05, 0.2, no)),
        # ID max logit 8-10, OOD 4-6; L alike on both sides: maxlogit separates, energy = m + L overlaps a little
        "maxlogit": (u(8, 10, n), u(0.1, 2.9, n), u(4, 6, no), u(0.1, 2.9, no)),
        # max logit alike; ID peaked, OOD flat: MSP separates, energy is inverted
        "msp": (u(2, 6, n), u(0.05, 0.3, n), u(2, 6, no), u(1.5, 2.9, no)),
    }[name]
    return _logits(rng, mu_id, l_id), _logits(rng, mu_ood, l_ood)


def _reference_scores(z: np.ndarray) -> dict[str, np.ndarray]:
    return {"maxlogit": z.max(axis=1), "energy": logsumexp(z, axis=1), "msp": softmax(z, axis=1).max(axis=1)}


def _auroc(name: str, zi: np.ndarray, zo: np.ndarray) -> float:
    si, so = _reference_scores(zi)[name], _reference_scores(zo)[name]
    return roc_auc_score(np.r_[np.ones(len(si)), np.zeros(len(so))], np.r_[si, so])


@pytest.mark.parametrize("winner", SIGNALS)
def test_auto_keeps_the_signal_with_the_highest_val_auroc(winner):
    zi, zo = _case(winner)
    lad = Ladder(signal="auto").fit(zi, target_accept=0.95, ood_logits_list=zo)
    sel = lad.fit_summary_["signal"]
    for name in SIGNALS:
        assert sel["val_auroc"][name] == pytest.approx(_auroc(name, zi, zo), abs=1e-12), name
    others = [sel["val_auroc"][n] for n in SIGNALS if n != winner]
    assert sel["val_auroc"][winner] > max(others) + 1e-4  # the case is built so that it wins clearly
    assert lad.signal_ == sel["chosen"] == winner and sel["requested"] == "auto"
    assert "highest validation AUROC" in sel["reason"] and (sel["n_id"], sel["n_ood"]) == (300, 200)
    assert lad.thresholds()["signal"] == winner and f"signal={winner}" in repr(lad)
    # The thresholds are the single-model rules on the chosen score: floor(weak_share * 5%) of ID below t1.
    score = _reference_scores(zi)[winner]
    np.testing.assert_allclose(lad.signals(zi)["score"], score, rtol=1e-12)
    assert lad.t1_ == pytest.approx(np.sort(score)[math.floor(0.5 * 0.05 * 300)], rel=1e-12)
    assert lad.fit_summary_["id"]["accept"] >= 0.95 and lad.fit_summary_["ood"]["reject"] == 1.0


def test_auto_beats_a_fixed_max_logit_where_energy_separates():
    zi, zo = _case("energy")
    fixed = Ladder().fit(zi, target_accept=0.95, ood_logits_list=zo)
    auto = Ladder(signal="auto").fit(zi, target_accept=0.95, ood_logits_list=zo)
    assert fixed.signal_ == "maxlogit" and auto.signal_ == "energy"
    assert fixed.fit_summary_["ood"]["reject"] < 0.2 < 0.99 < auto.fit_summary_["ood"]["reject"]
    # A fixed signal records every candidate's AUROC too, and says it was not chosen by them.
    assert fixed.fit_summary_["signal"]["val_auroc"] == auto.fit_summary_["signal"]["val_auroc"]
    assert fixed.fit_summary_["signal"]["reason"] == "set by the caller (signal='maxlogit')"


def test_auto_ties_keep_maxlogit():
    # One-hot logits of equal height: every score ranks ID and OOD the same way (AUROC 1 for all three).
    zi = np.eye(4)[np.arange(40) % 4] * 9.0
    zo = np.eye(4)[np.arange(20) % 4] * 1.0
    lad = Ladder(signal="auto").fit(zi, target_accept=0.9, ood_logits_list=zo)
    assert set(lad.fit_summary_["signal"]["val_auroc"].values()) == {1.0} and lad.signal_ == "maxlogit"


def test_auto_without_ood_falls_back_to_maxlogit_and_says_why():
    rng = np.random.default_rng(5)
    z = rng.normal(0, 4, (200, 6))
    auto = Ladder(signal="auto").fit(z, target_accept=0.9)
    plain = Ladder().fit(z, target_accept=0.9)
    sel = auto.fit_summary_["signal"]
    assert auto.signal_ == sel["chosen"] == "maxlogit" and "val_auroc" not in sel
    assert "without OOD validation logits" in sel["reason"]
    assert auto.thresholds() == plain.thresholds() and auto.decide(z) == plain.decide(z)
    # An empty OOD set is no OOD set for the choice.
    empty = Ladder(signal="auto").fit(z, target_accept=0.9, ood_logits_list=np.zeros((0, 6)))
    assert empty.signal_ == "maxlogit" and "without OOD" in empty.fit_summary_["signal"]["reason"]


def test_fixed_energy_ensemble_scores_are_the_mean_over_members():
    rng = np.random.default_rng(6)
    base = rng.normal(0, 3, (50, 5))
    members = [base + rng.normal(0, 0.1, (50, 5)) for _ in range(3)]  # mostly unanimous: the target is reachable
    lad = Ladder(signal="energy").fit(members, target_accept=0.8)
    assert lad.fit_summary_["id"]["accept"] >= 0.8
    expected = np.mean([logsumexp(m, axis=1) for m in members], axis=0)
    np.testing.assert_allclose(lad.signals(members)["score"], expected, rtol=1e-12)
    assert lad.fit_summary_["signal"] == {
        "requested": "energy", "reason": "set by the caller (signal='energy')", "chosen": "energy",
    }  # fmt: skip


def test_sink_columns_are_left_out_of_the_signal():
    # K = 3 ID classes + sink: energy and MSP see the ID columns only (REFERENCE 4), as the max logit does.
    z = np.array([[2.0, 1.0, 0.0, 30.0], [5.0, 0.0, 0.0, -3.0]])
    for name in SIGNALS:
        lad = Ladder.from_thresholds(0.0, 1.0, n_members=1, num_classes=3, margin=0.0, sink=True, signal=name)
        np.testing.assert_allclose(lad.signals(z)["score"], _reference_scores(z[:, :3])[name], rtol=1e-12)


def test_round_trip_keeps_the_signal_and_the_decisions(tmp_path):
    zi, zo = _case("energy", seed=1)
    lad = Ladder(signal="auto").fit(zi, target_accept=0.95, ood_logits_list=zo)
    path = lad.save(tmp_path / "ladder.json", extra={"members": [{"sha256": "abc"}]})
    d = json.loads(path.read_text())
    # Not maxlogit: the format is bumped so that code older than the signal refuses the file.
    assert d["format"] == "stillroom-ladder/2" and d["signal"] == "energy"
    assert d["fit_summary"]["signal"]["chosen"] == "energy" and set(d["fit_summary"]["signal"]["val_auroc"]) == {
        *SIGNALS
    }
    back = Ladder.load(path)
    assert back.signal_ == "energy" and back.signal == "auto" and back.extra_ == {"members": [{"sha256": "abc"}]}
    assert back.thresholds() == lad.thresholds() and back.fit_summary_ == lad.fit_summary_
    both = np.concatenate([zi, zo])
    assert back.decide(both) == lad.decide(both)
    assert back.decide_detailed(both) == lad.decide_detailed(both)


def test_a_maxlogit_ladder_keeps_the_old_file_layout(tmp_path):
    zi, zo = _case("maxlogit")
    d = json.loads(Ladder(signal="auto").fit(zi, ood_logits_list=zo).save(tmp_path / "l.json").read_text())
    # Older code reads it: format /1 and the constructor params it knows (Ladder(**params)).
    assert d["format"] == "stillroom-ladder/1" and set(d["params"]) == {"sink", "weak_share", "strong_quantile"}


# A ladder.json as written before the signal existed (format /1, no "signal", no requested signal in the summary).
OLD_LADDER = {
    "format": "stillroom-ladder/1",
    "params": {"sink": False, "weak_share": 0.5, "strong_quantile": 0.5},
    "t1": 4.0, "t2": 8.0, "margin": 2.0, "n_members": 1, "num_classes": 4, "target_accept": 0.95,
    "fit_summary": {"n_val": 10, "id": {"accept": 0.95, "uncertain": 0.0, "reject": 0.05, "reasons": {}}},
    "members": [{"run": "runs/x", "weights": "best", "sha256": "abc"}],
}  # fmt: skip


def test_old_ladder_file_loads_as_maxlogit_and_decides_as_before(tmp_path):
    path = tmp_path / "ladder.json"
    path.write_text(json.dumps(OLD_LADDER))
    lad = Ladder.load(path)
    assert lad.signal_ == "maxlogit" and lad.signal == "maxlogit" and lad.thresholds()["signal"] == "maxlogit"
    # The rules of the old ladder by hand (t1 = 4, t2 = 8, margin = 2 on the max logit): energy would have
    # accepted the first row (logsumexp 4.1 > 4) and msp would have rejected them all.
    z = np.array(
        [
            [3.9, 1.9, 0.0, 0.0],  # max logit below t1
            [6.0, 3.0, 0.0, 0.0],  # risk zone, clear margin
            [6.0, 5.0, 0.0, 0.0],  # risk zone, small margin
            [12.0, 11.0, 0.0, 0.0],  # strong, small margin
        ]
    )
    assert lad.decide(z) == [
        ("reject", "weak-signal"),
        ("accept", "agreement"),
        ("uncertain", "risk-zone-disagreement"),
        ("uncertain", "moderate-disagreement"),
    ]
    rng = np.random.default_rng(7)
    z = rng.normal(2, 4, (300, 4))
    ref = Ladder.from_thresholds(4.0, 8.0, n_members=1, num_classes=4, margin=2.0)
    assert lad.decide(z) == ref.decide(z)
    assert [d["score"] for d in lad.decide_detailed(z)] == [d["mu"] for d in lad.decide_detailed(z)]
    # Saved again, it is still an old-layout file.
    again = json.loads(lad.save(tmp_path / "again.json").read_text())
    assert again["format"] == "stillroom-ladder/1" and again["signal"] == "maxlogit"


def test_signal_errors(tmp_path):
    with pytest.raises(StillroomError, match="maxlogit, energy, msp, sink, knn, rmd, fused, auto, got 'odin'"):
        Ladder(signal="odin")
    with pytest.raises(StillroomError, match="from_thresholds: signal must be one of maxlogit, energy, msp"):
        Ladder.from_thresholds(1.0, 2.0, n_members=1, num_classes=3, margin=0.0, signal="auto")
    # energy thresholds in a /1 file would be read as max-logit thresholds by old code: refused as malformed
    (tmp_path / "bad.json").write_text(json.dumps({**OLD_LADDER, "signal": "energy"}))
    with pytest.raises(StillroomError, match="signal 'energy' in format"):
        Ladder.load(tmp_path / "bad.json")
    (tmp_path / "v9.json").write_text(json.dumps({**OLD_LADDER, "format": "stillroom-ladder/9"}))
    with pytest.raises(StillroomError, match="expected"):
        Ladder.load(tmp_path / "v9.json")
    zi, zo = _case("energy")
    with pytest.raises(StillroomError, match="ood_logits_list has 1 member"):
        Ladder(signal="auto").fit(zi, ood_logits_list=zo[:, :5])


def test_describe_names_the_signal():
    assert describe("weak-signal") == "max logit below t1: too weak to trust"
    assert describe("weak-signal", 1, "energy").startswith("energy (logsumexp of the ID logits) below t1")
    assert "t1 <= max softmax < t2" in describe("risk-zone-disagreement", 1, "msp")
    assert describe("weak-signal", 3, "energy").startswith("mean energy")
    with pytest.raises(StillroomError, match="unknown ladder signal"):
        describe("weak-signal", 1, "auto")
