"""Classification metrics against scikit-learn and a hand-built confusion matrix."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, top_k_accuracy_score

from stillroom._io import StillroomError
from stillroom.evaluate.metrics import classification_report, topk_accuracy

NAMES = ["a", "b", "c", "d", "e", "f", "g"]


def _data(n: int = 300, k: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels]  # better than chance, far from perfect
    return logits, labels


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_topk_matches_sklearn(k, dtype):
    logits, labels = _data()
    logits = logits.astype(dtype)
    ref = top_k_accuracy_score(labels, logits, k=k, labels=np.arange(7))
    assert topk_accuracy(logits, labels, k) == pytest.approx(ref, abs=1e-12)


def test_topk_clips_k_and_breaks_ties_by_lower_class_id():
    logits, labels = _data(k=3)
    assert topk_accuracy(logits, labels, 10) == 1.0
    flat = np.zeros((6, 3))
    labels = np.array([0, 1, 2, 0, 1, 2])
    assert topk_accuracy(flat, labels, 1) == pytest.approx(2 / 6)  # class 0 wins every tie
    assert topk_accuracy(flat, labels, 2) == pytest.approx(4 / 6)
    # with many ties, top-1 still equals the accuracy of argmax predictions
    ints = np.random.default_rng(1).integers(0, 3, size=(500, 4)).astype(float)
    y = np.random.default_rng(2).integers(0, 4, size=500)
    assert topk_accuracy(ints, y, 1) == pytest.approx(float((ints.argmax(1) == y).mean()))


def test_report_matches_sklearn():
    logits, labels = _data()
    pred = logits.argmax(1)
    rep = classification_report(logits, labels, NAMES)
    assert rep["n"] == 300
    assert rep["top1"] == pytest.approx(float((pred == labels).mean()))
    assert rep["top5"] == pytest.approx(top_k_accuracy_score(labels, logits, k=5, labels=np.arange(7)))
    assert rep["macro_f1"] == pytest.approx(f1_score(labels, pred, average="macro"))
    per = f1_score(labels, pred, average=None, labels=np.arange(7))
    assert list(rep["per_class_f1"].values()) == pytest.approx(per.tolist())
    assert list(rep["per_class_support"].values()) == np.bincount(labels, minlength=7).tolist()
    assert rep["confusion_matrix"] == confusion_matrix(labels, pred, labels=np.arange(7)).tolist()
    worst = sorted(range(7), key=lambda c: (per[c], c))[:5]
    assert [w["id"] for w in rep["worst_classes"]] == worst
    assert [w["class"] for w in rep["worst_classes"]] == [NAMES[c] for c in worst]


def test_absent_classes_are_excluded_from_macro_f1():
    logits, labels = _data()
    labels = np.where(labels == 6, 0, labels)  # class g never occurs in y_true ...
    logits[:5, 6] = 50.0  # ... but is predicted a few times, costing the true classes their recall
    pred = logits.argmax(1)
    rep = classification_report(logits, labels, NAMES)
    assert rep["per_class_f1"]["g"] is None and rep["per_class_support"]["g"] == 0
    assert rep["macro_f1"] == pytest.approx(f1_score(labels, pred, labels=np.arange(6), average="macro"))
    assert "g" not in [w["class"] for w in rep["worst_classes"]]


def test_confused_pairs_on_a_hand_built_confusion():
    # (true, predicted, count): 0<->1 confused 3 + 2 times, 2->3 four times, 0->2 and 3->1 once each
    cells = [(0, 0, 6), (0, 1, 3), (0, 2, 1), (1, 1, 8), (1, 0, 2), (2, 2, 5), (2, 3, 4), (3, 3, 7), (3, 1, 1)]
    labels = np.array([t for t, _, c in cells for _ in range(c)])
    pred = np.array([p for _, p, c in cells for _ in range(c)])
    logits = 5.0 * np.eye(4)[pred]
    rep = classification_report(logits, labels, ["w", "x", "y", "z"], topk=(1,), n_pairs=3)
    # supports: w 10, x 10, y 9, z 8
    assert rep["confused_pairs"] == [
        {"a": "w", "b": "x", "a_id": 0, "b_id": 1, "a_as_b": 3, "b_as_a": 2, "total": 5, "rate": 5 / 20},
        {"a": "y", "b": "z", "a_id": 2, "b_id": 3, "a_as_b": 4, "b_as_a": 0, "total": 4, "rate": 4 / 17},
        # (w, y) and (x, z) tie at 1; the lower pair comes first
        {"a": "w", "b": "y", "a_id": 0, "b_id": 2, "a_as_b": 1, "b_as_a": 0, "total": 1, "rate": 1 / 19},
    ]
    assert rep["confusion_matrix"][0] == [6, 3, 1, 0]
    assert "top5" not in rep and rep["top1"] == pytest.approx(26 / 37)
    assert len(classification_report(logits, labels, ["w", "x", "y", "z"], n_pairs=10)["confused_pairs"]) == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": np.array([0, 1, 7])}, r"labels must be in 0..6"),
        ({"labels": np.array([0, 1])}, r"labels must have shape \(3,\)"),
        ({"labels": np.array([0.0, 1.0, 2.0])}, "integer class ids"),
        ({"logits": np.full((3, 7), np.nan)}, "logits must be finite"),
        ({"logits": np.zeros(7)}, r"logits must be a non-empty 2-D array"),
        ({"class_names": ["a", "b"]}, "class_names has 2 entries, logits 7 columns"),
        ({"topk": (0,)}, "k must be a positive integer"),
    ],
)
def test_validation_names_the_argument(kwargs, match):
    args = {"logits": np.zeros((3, 7)), "labels": np.array([0, 1, 2]), "class_names": NAMES, **kwargs}
    with pytest.raises(StillroomError, match=match):
        classification_report(**args)
