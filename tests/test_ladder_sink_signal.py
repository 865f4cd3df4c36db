"""The ladder's sink signal (issue 16 items 4-5): the graded log-odds of a K+1 model's ID classes against its OOD sink,
thresholded like the other signals, weighed by "auto", saved and loaded; refused without a sink class.

References are computed here from scipy's softmax and scikit-learn's AUROC, not from the code under test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

from stillroom._io import StillroomError
from stillroom.deploy.ladder import ALL_SIGNALS, SINK_SIGNALS, Ladder, describe
from stillroom.evaluate.ood import sink_score

K = 10  # ID classes; the models below have K + 1 columns


def _case(seed: int = 0, n: int = 400, no: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(ID val, OOD val) K+1 logits whose ID columns come from one distribution on both sides (every ID-column score
    is at chance), while the sink column sits ~3 logits higher on the OOD rows: only the sink separates."""
    rng = np.random.default_rng(seed)

    def draw(m: int, sink_mu: float) -> np.ndarray:
        z = rng.normal(0.0, 1.0, (m, K + 1))
        z[np.arange(m), rng.integers(0, K, m)] += 4.0  # a confident ID class on both sides
        z[:, K] = rng.normal(sink_mu, 1.0, m)
        return z

    return draw(n, -1.0), draw(no, 2.0)


def _reference_log_odds(z: np.ndarray) -> np.ndarray:
    p = softmax(z, axis=1)[:, -1]
    return np.log1p(-p) - np.log(p)


def test_sink_score_is_the_log_odds_of_the_sink_probability():
    zi, zo = _case()
    lad = Ladder(sink=True)
    for z in (zi, zo):
        np.testing.assert_allclose(lad.signals(z, signal="sink")["score"], _reference_log_odds(z), rtol=1e-9)
    # two members: the mean of the members' log-odds
    both = lad.signals([zi, zi + 0.5 * (np.arange(K + 1) == K)], signal="sink")["score"]
    np.testing.assert_allclose(both, _reference_log_odds(zi) - 0.25, rtol=1e-9, atol=1e-12)


def test_sink_score_ranks_like_evaluates_sink_score_and_does_not_saturate():
    zi, zo = _case(1)
    lad = Ladder(sink=True)
    y = np.r_[np.ones(len(zi)), np.zeros(len(zo))]
    ours = np.r_[lad.signals(zi, signal="sink")["score"], lad.signals(zo, signal="sink")["score"]]
    theirs = np.r_[sink_score(torch.from_numpy(zi)).numpy(), sink_score(torch.from_numpy(zo)).numpy()]
    assert roc_auc_score(y, ours) == pytest.approx(roc_auc_score(y, theirs), abs=1e-12)
    # a sink 50 and 60 logits below the top class: 1 - p_sink is 1.0 for both in float64, the log-odds keep them apart
    z = np.zeros((2, K + 1))
    z[:, 0] = [50.0, 60.0]
    assert sink_score(torch.from_numpy(z)).numpy().tolist() == [1.0, 1.0]
    s = lad.signals(z, signal="sink")["score"]
    assert np.isfinite(s).all() and s[1] - s[0] == pytest.approx(10.0, abs=1e-6)


def test_auto_weighs_the_sink_and_keeps_it_when_it_separates_best():
    zi, zo = _case(2)
    lad = Ladder(sink=True, signal="auto").fit(zi, target_accept=0.95, ood_logits_list=zo)
    sel = lad.fit_summary_["signal"]
    assert lad.signal_ == "sink" and sel["chosen"] == "sink"
    assert set(sel["val_auroc"]) == {"maxlogit", "energy", "msp", "sink", "fused"}  # fused: sink with maxlogit
    want = roc_auc_score(
        np.r_[np.ones(len(zi)), np.zeros(len(zo))], np.r_[_reference_log_odds(zi), _reference_log_odds(zo)]
    )
    assert sel["val_auroc"]["sink"] == pytest.approx(want, abs=1e-9) and want > 0.9
    assert max(sel["val_auroc"][k] for k in ("maxlogit", "energy", "msp")) < 0.65
    # the operating point: 95% of ID val accepted, and far more OOD rejected than by the sink's argmax alone
    assert lad.fit_summary_["id"]["accept"] >= 0.95
    argmax_only = Ladder(sink=True).fit(zi, target_accept=0.95, ood_logits_list=zo).fit_summary_
    assert lad.fit_summary_["ood"]["reject"] > argmax_only["ood"]["reject"] + 0.2
    # a K-class ladder never offers it
    k_only = Ladder(signal="auto").fit(zi[:, :K], ood_logits_list=zo[:, :K]).fit_summary_["signal"]
    assert "sink" not in k_only["val_auroc"]


def test_sink_signal_rejects_graded_inputs_the_argmax_rule_lets_through():
    lad = Ladder.from_thresholds(1.0, 2.0, n_members=1, num_classes=K, margin=0.0, sink=True, signal="sink")
    z = np.full((3, K + 1), -30.0)
    z[:, 0] = 5.0
    z[:, K] = [0.0, 4.5, 6.0]  # log-odds ~ +5, ~ +0.5 (the ID class still tops the argmax), ~ -1 (the sink tops it)
    assert softmax(z, axis=1).argmax(axis=1).tolist() == [0, 0, K]
    assert lad.decide(z) == [("accept", "agreement"), ("reject", "weak-signal"), ("reject", "ood-sink")]
    # the default signal (max ID logit 5 on every row) would accept the second row
    plain = Ladder.from_thresholds(1.0, 2.0, n_members=1, num_classes=K, margin=0.0, sink=True)
    assert plain.decide(z)[1] == ("accept", "agreement")


@pytest.mark.parametrize("where", ["fit", "from_thresholds"])
def test_sink_signal_needs_a_sink_class(where):
    zi, zo = _case(3)
    with pytest.raises(StillroomError, match="sink"):
        if where == "fit":
            Ladder(sink=False, signal="sink").fit(zi[:, :K])
        else:
            Ladder.from_thresholds(0.0, 1.0, n_members=1, num_classes=K, margin=0.0, sink=False, signal="sink")


def test_sink_ladder_round_trips_and_a_tampered_file_is_refused(tmp_path):
    zi, zo = _case(4)
    lad = Ladder(sink=True, signal="sink").fit(zi, ood_logits_list=zo)
    path = lad.save(tmp_path / "ladder.json")
    d = json.loads(path.read_text())
    assert d["format"] == "stillroom-ladder/2" and d["signal"] == "sink" and d["params"]["sink"] is True
    back = Ladder.load(path)
    assert back.signal_ == "sink" and back.decide(zo) == lad.decide(zo) and back.decide(zi) == lad.decide(zi)
    d["params"]["sink"] = False
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(StillroomError, match="bad.json.*sink"):
        Ladder.load(tmp_path / "bad.json")


def test_sink_signal_is_listed_and_worded():
    assert SINK_SIGNALS == ("sink",) and "sink" in ALL_SIGNALS
    assert "log-odds" in describe("weak-signal", 1, signal="sink")
