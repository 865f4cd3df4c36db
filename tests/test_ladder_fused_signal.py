"""The ladder's fused signal (issue 16 items 3-4): the mean of the max logit, the sink log-odds and the KNN score,
each standardized on the clean ID validation rows, thresholded like the other signals, weighed by "auto", saved and
loaded (with the KNN bank when knn is a part); refused without a second score.

References are computed here from scipy's softmax and logsumexp and scikit-learn's NearestNeighbors and AUROC, not
from the code under test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from stillroom._io import StillroomError
from stillroom.deploy.knn import KNN_K, KNNScorer
from stillroom.deploy.ladder import ALL_SIGNALS, FUSED_PARTS, Ladder, describe, knn_bank_path

KNN_PARTS = ("maxlogit", "sink", "knn")  # FUSED_PARTS with knn as the feature part (rmd: tests/test_ladder_rmd.py)

K = 8  # ID classes; the K+1 models below have a sink column last
D = 12  # feature dimension


def _case(seed: int = 0, n: int = 500, no: int = 200):
    """ID val rows and two OOD groups of a K+1 model with features: group "far" raises the sink column only (ID
    columns and features as ID), group "near" lowers the top ID logit and moves the features (and lowers the sink
    column as much, so its sink log-odds stay as ID). Each single score separates one group; only a score that
    hears both separates the union."""
    rng = np.random.default_rng(seed)

    def logits(m: int, sink_mu: float, top: float) -> np.ndarray:
        z = rng.normal(0.0, 1.0, (m, K + 1))
        z[np.arange(m), rng.integers(0, K, m)] += top
        z[:, K] = rng.normal(sink_mu, 1.0, m)
        return z

    centre = rng.normal(0.0, 1.0, D)
    train_f = centre + 0.3 * rng.normal(size=(600, D))
    zi, fi = logits(n, -1.0, 5.0), centre + 0.3 * rng.normal(size=(n, D))
    z_far, f_far = logits(no, 3.0, 5.0), centre + 0.3 * rng.normal(size=(no, D))
    z_near, f_near = logits(no, -4.0, 2.0), centre + 0.3 * rng.normal(size=(no, D)) + 0.6 * rng.normal(size=D)
    return zi, fi, np.r_[z_far, z_near], np.r_[f_far, f_near], KNNScorer().fit(train_f), train_f


def _reference(z: np.ndarray, f: np.ndarray, train_f: np.ndarray, parts: tuple[str, ...], zi, fi) -> np.ndarray:
    """mean_p (s_p - mean_p(ID val)) / std_p(ID val), every part recomputed with scipy / scikit-learn."""

    def raw(z_, f_):
        out = {"maxlogit": z_[:, :K].max(1), "sink": logsumexp(z_[:, :K], axis=1) - z_[:, K]}
        norm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
        dist, _ = NearestNeighbors(n_neighbors=KNN_K).fit(norm(train_f)).kneighbors(norm(f_))
        out["knn"] = -dist[:, -1]
        return np.stack([out[p] for p in parts])

    ref_id = raw(zi, fi)
    mean, std = ref_id.mean(1, keepdims=True), ref_id.std(1, keepdims=True)
    return ((raw(z, f) - mean) / std).mean(0)


def test_fused_score_is_the_mean_of_id_standardized_parts():
    zi, fi, zo, fo, knn, train_f = _case()
    lad = Ladder(sink=True, signal="fused").fit(zi, val_features=fi, knn=knn)
    assert lad.signal_ == "fused" and lad.fused_["parts"] == list(KNN_PARTS) and lad.uses_knn
    assert set(KNN_PARTS) < set(FUSED_PARTS) and not lad.uses_rmd
    for z, f in ((zi, fi), (zo, fo)):
        want = _reference(z, f, train_f, KNN_PARTS, zi, fi)
        np.testing.assert_allclose(lad.signals(z, features=f)["score"], want, rtol=1e-5, atol=1e-5)
    # on the ID rows the fused score has mean 0 (each part standardized there)
    assert abs(lad.signals(zi, features=fi)["score"].mean()) < 1e-6
    # without knn: the sink and the max logit only
    two = Ladder(sink=True, signal="fused").fit(zi)
    assert two.fused_["parts"] == ["maxlogit", "sink"] and not two.uses_knn
    want = _reference(zo, fo, train_f, ("maxlogit", "sink"), zi, fi)
    np.testing.assert_allclose(two.signals(zo)["score"], want, rtol=1e-9, atol=1e-9)


def test_auto_picks_fused_when_each_part_hears_one_group():
    zi, fi, zo, fo, knn, train_f = _case(1)
    lad = Ladder(sink=True, signal="auto").fit(zi, ood_logits_list=zo, val_features=fi, ood_features=fo, knn=knn)
    sel = lad.fit_summary_["signal"]
    assert set(sel["val_auroc"]) == {"maxlogit", "energy", "msp", "sink", "knn", "fused"}
    assert lad.signal_ == "fused" and sel["fused"] == lad.fused_ and sel["knn"]["bank_rows"] == 600
    y = np.r_[np.ones(len(zi)), np.zeros(len(zo))]
    want = roc_auc_score(y, np.r_[_reference(zi, fi, train_f, KNN_PARTS, zi, fi),
                                  _reference(zo, fo, train_f, KNN_PARTS, zi, fi)])  # fmt: skip
    assert sel["val_auroc"]["fused"] == pytest.approx(want, abs=1e-6)
    assert sel["val_auroc"]["fused"] > max(v for k, v in sel["val_auroc"].items() if k != "fused") + 0.05
    assert lad.fit_summary_["id"]["accept"] >= 0.95
    # the thresholds and the statistics come from the ID rows only: other OOD rows change neither
    other = Ladder(sink=True, signal="fused").fit(
        zi, ood_logits_list=zo[::3], val_features=fi, ood_features=fo[::3], knn=knn
    )
    assert other.fused_ == lad.fused_ and (other.t1_, other.t2_, other.margin_) == (lad.t1_, lad.t2_, lad.margin_)


def test_fused_ladder_round_trips_with_its_bank(tmp_path):
    zi, fi, zo, fo, knn, _ = _case(2)
    lad = Ladder(sink=True, signal="fused").fit(zi, val_features=fi, knn=knn)
    path = lad.save(tmp_path / "ladder.json")
    d = json.loads(path.read_text())
    assert d["format"] == "stillroom-ladder/3" and d["signal"] == "fused" and d["fused"] == lad.fused_
    assert knn_bank_path(path).is_file() and d["knn"]["bank_sha256"]
    back = Ladder.load(path)
    assert back.uses_knn and back.fused_ == lad.fused_
    assert back.decide(zo, features=fo) == lad.decide(zo, features=fo)
    with pytest.raises(StillroomError, match="needs the penultimate features"):
        back.decide(zo)
    # without knn: format /2 and no bank left behind
    Ladder(sink=True, signal="fused").fit(zi).save(path)
    d2 = json.loads(path.read_text())
    assert d2["format"] == "stillroom-ladder/2" and d2["fused"]["parts"] == ["maxlogit", "sink"]
    assert not knn_bank_path(path).exists()
    assert Ladder.load(path).decide(zo) == Ladder(sink=True, signal="fused").fit(zi).decide(zo)
    # tampered records are refused
    for bad, match in (
        ({**d2, "fused": {**d2["fused"], "std": [1.0, 0.0]}}, "malformed fused"),
        ({**d2, "fused": {**d2["fused"], "parts": ["maxlogit", "odin"]}}, "malformed fused"),
        ({**d2, "fused": None}, "malformed fused"),
        ({**d2, "params": {**d2["params"], "sink": False}}, "without a sink class"),
        ({**d2, "format": "stillroom-ladder/3"}, "signal 'fused' in format"),
    ):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(StillroomError, match=match):
            Ladder.load(tmp_path / "bad.json")


def test_fused_needs_a_second_score():
    zi, fi, zo, fo, knn, _ = _case(3)
    with pytest.raises(StillroomError, match="fused' needs a second score"):
        Ladder(signal="fused").fit(zi[:, :K])  # K-class, no knn: maxlogit alone
    k_class = Ladder(signal="fused").fit(zi[:, :K], val_features=fi, knn=knn)  # K-class with knn: two parts
    assert k_class.fused_["parts"] == ["maxlogit", "knn"]
    plain = Ladder(signal="auto").fit(zi[:, :K], ood_logits_list=zo[:, :K])
    assert "fused" not in plain.fit_summary_["signal"]["val_auroc"] and plain.fused_ is None
    with pytest.raises(StillroomError, match="fit it instead"):
        Ladder.from_thresholds(0.0, 1.0, 1, K, margin=0.1, sink=True, signal="fused")
    assert "fused" in ALL_SIGNALS and "standardized" in describe("weak-signal", 1, "fused")
    # a ladder whose auto chose another signal keeps no fused statistics
    sink_only = Ladder(sink=True, signal="sink").fit(zi, ood_logits_list=zo)
    assert sink_only.fused_ is None and sink_only.to_dict()["fused"] is None
