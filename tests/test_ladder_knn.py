"""The ladder's knn signal (issue 16 item 4): ``deploy.knn`` against pytorch-ood's KNN (evaluation's reference),
``auto`` choosing knn when features separate ID from OOD and logits do not, the bank file (``.npy``, sha256), the
features export (``model_features.onnx``), run-level fitting equal to evaluation's KNN, and the service.

Run-level tests use the session's exported ``teacher_run`` (tests/_deploy.py) in linked copies.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from stillroom._io import StillroomError
from stillroom.deploy.knn import KNN_K, KNNScorer, knn_score, l2_normalize
from stillroom.deploy.ladder import ALL_SIGNALS, SIGNALS, SINK_SIGNALS, Ladder, describe, knn_bank_path

OLD_LADDER = {  # a ladder.json written before signals existed (format /1, no signal, no knn)
    "format": "stillroom-ladder/1",
    "params": {"sink": False, "weak_share": 0.5, "strong_quantile": 0.5},
    "t1": 1.0,
    "t2": 2.0,
    "margin": 0.1,
    "n_members": 1,
    "num_classes": 3,
    "target_accept": 0.95,
}

#: what auto weighs for a K-class model (no sink column), in tie-breaking order
K_CLASS_SIGNALS = tuple(n for n in ALL_SIGNALS if n not in SINK_SIGNALS)


def _pytorch_ood_knn(train: np.ndarray, feats: np.ndarray, k: int) -> np.ndarray:
    """Evaluation's score (``evaluate.feature_ood``): minus pytorch-ood's KNN outlier score."""
    torch = pytest.importorskip("torch")
    detector = pytest.importorskip("pytorch_ood.detector")
    knn = detector.KNN(None, k=k).fit_features(torch.from_numpy(train), torch.zeros(len(train), dtype=torch.long))
    return -knn.predict_features(torch.from_numpy(feats)).double().numpy()


@pytest.mark.parametrize("k", [1, KNN_K, 37])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_knn_score_equals_pytorch_ood(k, dtype):
    rng = np.random.default_rng(k)
    train = np.abs(rng.standard_normal((300, 24))).astype(np.float32)  # post-activation features are >= 0
    feats = np.abs(rng.standard_normal((50, 24))).astype(np.float32) * rng.uniform(0.1, 5, (50, 1)).astype(np.float32)
    feats[3] = 0.0  # a zero vector: the norm clamp keeps it finite (distance 1 to every unit row)
    ref = _pytorch_ood_knn(train, feats, k)
    got = KNNScorer(k).fit(train.astype(dtype)).score(feats.astype(dtype))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[3], -1.0, atol=1e-6)
    # the formula by hand: minus the k-th smallest Euclidean distance between unit vectors
    z, b = l2_normalize(feats).astype(np.float64), l2_normalize(train).astype(np.float64)
    d = np.sqrt(((z[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(got, -np.sort(d, axis=1)[:, k - 1], rtol=1e-9, atol=1e-7)


def test_knn_k_is_evaluations():
    from stillroom.evaluate.feature_ood import KNN_K as EVAL_K

    assert KNN_K == EVAL_K == 10


def test_knn_input_errors():
    with pytest.raises(StillroomError, match="more than k = 10 rows, got 10"):
        KNNScorer().fit(np.ones((10, 4)))
    with pytest.raises(StillroomError, match="non-finite"):
        KNNScorer().fit(np.full((20, 4), np.nan))
    with pytest.raises(StillroomError, match="dimension 3"):
        knn_score(np.ones((2, 3)), l2_normalize(np.ones((20, 4))))
    with pytest.raises(StillroomError, match="before scoring"):
        KNNScorer().score(np.ones((2, 4)))


def _separable_case(n_id: int = 200, n_ood: int = 200, k: int = 6, d: int = 16, seed: int = 0):
    """Logits that do not tell ID from OOD (same distribution) and features that do: ID features lie near the
    training bank's direction, OOD ones point elsewhere."""
    rng = np.random.default_rng(seed)
    zi, zo = rng.normal(0, 2, (n_id, k)), rng.normal(0, 2, (n_ood, k))
    centre = np.zeros(d)
    centre[: d // 2] = 3.0
    other = np.zeros(d)
    other[d // 2 :] = 3.0
    train = np.abs(centre + rng.normal(0, 1, (500, d)))
    fi = np.abs(centre + rng.normal(0, 1, (n_id, d)))
    fo = np.abs(other + rng.normal(0, 1, (n_ood, d)))
    return zi, zo, fi, fo, KNNScorer().fit(train)


def test_auto_picks_knn_when_features_separate_and_logits_do_not():
    zi, zo, fi, fo, knn = _separable_case()
    lad = Ladder(signal="auto").fit(zi, ood_logits_list=zo, val_features=fi, ood_features=fo, knn=knn)
    sel = lad.fit_summary_["signal"]
    assert set(sel["val_auroc"]) == set(K_CLASS_SIGNALS) - {"rmd"}  # no RMD scorer given
    assert lad.signal_ == "knn" and lad.knn_ is knn and sel["knn"]["bank_rows"] == 500
    assert sel["val_auroc"]["knn"] > 0.99 and max(sel["val_auroc"][n] for n in SIGNALS) < 0.6
    assert lad.fit_summary_["ood"]["reject"] > 0.95  # the weak-signal rule now rejects the OOD rows
    # the score the thresholds judge is the KNN score, equal to pytorch-ood's
    np.testing.assert_allclose(lad.signals(zi, features=fi)["score"], knn.score(fi), rtol=1e-12)
    np.testing.assert_allclose(
        [d["score"] for d in lad.decide_detailed(zi[:20], features=fi[:20])],
        _pytorch_ood_knn(knn.bank_, fi[:20].astype(np.float32), KNN_K),
        rtol=1e-5,
    )
    assert "KNN score" in describe("weak-signal", 1, "knn")
    with pytest.raises(StillroomError, match="needs the penultimate features"):
        lad.decide(zi)
    # without features auto behaves as before: logit signals only, no bank kept
    plain = Ladder(signal="auto").fit(zi, ood_logits_list=zo)
    assert set(plain.fit_summary_["signal"]["val_auroc"]) == set(SIGNALS) and plain.signal_ in SIGNALS
    assert plain.knn_ is None
    with pytest.raises(StillroomError, match="signal='knn' needs knn="):
        Ladder(signal="knn").fit(zi)


def test_knn_ladder_file_bank_sha256_and_old_ladders(tmp_path):
    zi, zo, fi, fo, knn = _separable_case()
    lad = Ladder(signal="knn").fit(zi, ood_logits_list=zo, val_features=fi, ood_features=fo, knn=knn)
    path = lad.save(tmp_path / "ladder.json")
    bank = knn_bank_path(path)
    assert bank.name == "ladder_knn_bank.npy"
    d = json.loads(path.read_text())
    assert d["format"] == "stillroom-ladder/3" and d["signal"] == "knn"
    import hashlib

    assert d["knn"]["bank_sha256"] == hashlib.sha256(bank.read_bytes()).hexdigest()
    assert d["knn"]["k"] == KNN_K and d["knn"]["bank_shape"] == [500, 16]
    stored = np.load(bank, allow_pickle=False)
    np.testing.assert_array_equal(stored, knn.bank_)
    back = Ladder.load(path)
    assert back.signal_ == "knn" and back.decide(zo, features=fo) == lad.decide(zo, features=fo)
    # a bank changed after the fit is refused, never scored with
    tampered = stored.copy()
    tampered[0, 0] += 0.5
    np.save(bank, tampered, allow_pickle=False)
    with pytest.raises(StillroomError, match="sha256 differs"):
        Ladder.load(path)
    bank.unlink()
    with pytest.raises(StillroomError, match="bank is missing"):
        Ladder.load(path)
    # a logit-signal ladder saved over it removes the stale bank; old files still load and decide as before
    lad.save(path)
    Ladder(signal="energy").fit(zi).save(path)
    assert not bank.exists()
    (tmp_path / "old.json").write_text(json.dumps(OLD_LADDER))
    old = Ladder.load(tmp_path / "old.json")
    assert old.signal_ == "maxlogit" and old.knn_ is None
    # a knn ladder in another format, or a bank name that leaves the folder, is refused
    d2 = {**d, "format": "stillroom-ladder/2"}
    (tmp_path / "fmt.json").write_text(json.dumps(d2))
    with pytest.raises(StillroomError, match="signal 'knn' in format"):
        Ladder.load(tmp_path / "fmt.json")
    d3 = {**d, "knn": {**d["knn"], "bank_file": "../x.npy"}}
    (tmp_path / "esc.json").write_text(json.dumps(d3))
    with pytest.raises(StillroomError, match="plain .npy file name"):
        Ladder.load(tmp_path / "esc.json")


def test_features_export_skips_a_model_without_a_cut(tmp_path):
    pytest.importorskip("onnxruntime")
    from stillroom.deploy.onnx_export import export_features_onnx
    from stillroom.models.factory import create_model

    vit = create_model("vit_tiny", in_chans=1, num_classes=3, img_size=32)
    (tmp_path / "model_features.onnx").write_bytes(b"stale")
    rec = export_features_onnx(vit, tmp_path, (1, 32, 32), np.zeros((2, 1, 32, 32), np.float32), threads=1)
    assert "4-D feature map" in rec["skipped"] and not (tmp_path / "model_features.onnx").exists()


# --- run level: export, fit, report, serve ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(teacher_run, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from _deploy import exported_run

    return exported_run(teacher_run, tmp_path_factory.mktemp("deploy"))


@pytest.fixture(scope="module")
def knn_run(run, tmp_path_factory, ood_only):
    """A linked copy of the exported run with a knn ladder fitted on the ood_only val rows."""
    from _deploy import link_run
    from stillroom.deploy.run_ladder import fit_run_ladder

    copy = link_run(run, tmp_path_factory.mktemp("knn") / "run", extra=("export",))
    lad = fit_run_ladder(copy, ood_index=ood_only.root, signal="knn")
    return copy, lad


def test_export_writes_features_model_with_parity(run):
    from stillroom._io import sha256_file

    exp = json.loads((run / "export" / "export.json").read_text())
    feats = exp["features"]
    assert feats["ok"] and feats["file"] == "model_features.onnx" and feats["outputs"] == ["logits", "features"]
    assert feats["sha256"] == sha256_file(run / "export" / "model_features.onnx")
    par = feats["parity"]
    assert par["logits"]["max_abs_diff"] <= par["atol"] and par["features"]["max_abs_diff"] <= par["atol"]
    assert par["features"]["n"] == exp["parity"]["fp32"]["n"] and feats["feature_dim"] == 512  # resnet18
    assert exp["models"]["fp32"]["file"] == "model.onnx"  # unchanged: logits only
    import onnxruntime as ort

    outs = [o.name for o in ort.InferenceSession(str(run / "export" / "model.onnx")).get_outputs()]
    assert outs == ["logits"]


def test_run_knn_ladder_equals_evaluations_knn(knn_run, ood_only):
    """The ladder's score on val rows equals evaluate.feature_ood's pytorch-ood KNN (same rows, k, features)."""
    pytest.importorskip("pytorch_ood")
    from stillroom.data.dataset import load_images
    from stillroom.evaluate.feature_ood import feature_scores
    from stillroom.models.inference import iter_batches
    from stillroom.runs import Run

    copy, lad = knn_run
    assert lad.signal_ == "knn" and (copy / "ladder_knn_bank.npy").is_file()
    d = json.loads((copy / "ladder.json").read_text())
    assert d["fit_data"]["knn_bank"]["split"] == "train" and d["knn"]["k"] == KNN_K
    the_run = Run(copy)
    loaded = the_run.load("best", device="cpu")
    idx = the_run.index()
    images = load_images(idx)
    val, train = idx.split_indices("val"), idx.split_indices("train")
    assert d["fit_data"]["knn_bank"]["rows"] == len(train) == d["knn"]["bank_shape"][0]
    ref = feature_scores(
        loaded.model,
        lambda: iter_batches(images, val, loaded.normalizer, 64),
        lambda: iter_batches(images, train, loaded.normalizer, 64),
        num_id_classes=the_run.layout.num_id,
    )["scores"]["knn"]
    from stillroom.deploy.run_ladder import run_features

    logits = the_run.logits("best", val, idx, images)
    got = [r["score"] for r in Ladder.load(copy / "ladder.json").decide_detailed(
        logits, features=run_features(loaded, images, val))]  # fmt: skip
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    from stillroom.deploy.run_ladder import run_ladder_report

    rep = run_ladder_report(copy, split="val", ood_index=ood_only.root)
    assert rep["signal"] == "knn" and rep["ood"]["n"] == len(ood_only.split_indices("val"))


def test_run_auto_weighs_knn_and_int8_refuses_it(run, tmp_path, ood_only):
    from _deploy import link_run
    from stillroom.deploy.run_ladder import fit_run_ladder

    copy = link_run(run, tmp_path / "auto", extra=("export",))
    lad = fit_run_ladder(copy, ood_index=ood_only.root, signal="auto", save=False)
    sel = lad.fit_summary_["signal"]
    assert sel["knn_candidate"] == {"weighed": True} and set(sel["val_auroc"]) == set(K_CLASS_SIGNALS)
    assert lad.signal_ == max(K_CLASS_SIGNALS, key=lambda n: sel["val_auroc"][n])
    with pytest.raises(StillroomError, match="fp32.*only"):
        fit_run_ladder(copy, signal="knn", served="int8")
    bare = link_run(run, tmp_path / "bare")  # no export/: knn cannot be served, so it is not offered
    with pytest.raises(StillroomError, match="cannot be served"):
        fit_run_ladder(bare, signal="knn", save=False)


def test_make_runner_returns_every_output_when_asked(knn_run):
    """The features model has two outputs; ``make_runner(all_outputs=True)`` returns both, on every runtime here,
    equal to ONNX Runtime's (the service's knn path runs through it)."""
    import importlib.util

    from stillroom.deploy.backends import make_runner

    copy, _ = knn_run
    path = copy / "export" / "model_features.onnx"
    exp = json.loads((copy / "export" / "export.json").read_text())
    shape = [1, *exp["input"]["shape"][1:]]
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    ref, _ = make_runner("onnxruntime", path, 1, all_outputs=True)
    logits, feats = ref(x)
    assert logits.shape[0] == 1 and feats.shape == (1, exp["features"]["feature_dim"])
    first, _ = make_runner("onnxruntime", path, 1)
    np.testing.assert_array_equal(first(x), logits)
    if importlib.util.find_spec("openvino"):
        ov, _ = make_runner("openvino", path, 1, all_outputs=True)
        ov_logits, ov_feats = ov(x)
        assert np.abs(ov_logits - logits).max() <= 1e-3 and np.abs(ov_feats - feats).max() <= 1e-3


def test_service_serves_knn_and_refuses_a_tampered_bank(knn_run, tmp_path):
    from PIL import Image

    from _deploy import link_run
    from stillroom.data.index import load_index
    from stillroom.deploy.service import Predictor

    copy, lad = knn_run
    p = Predictor(copy, threads=1)
    assert p.knn and p.model_file.name == "model_features.onnx"
    assert p.runtime["backend"] == "onnxruntime" and "model_features.onnx" in p.runtime["reason"]
    bank = KNNScorer.load(copy, json.loads((copy / "ladder.json").read_text())["knn"])
    idx = load_index(json.loads((copy / "model.json").read_text())["index"])
    for row_id in idx.split_indices("val")[:4]:
        body, row = p.predict((idx.root / idx.paths[row_id]).read_bytes(), "image/png", "x.png")
        assert body["thresholds"]["signal"] == "knn" and body["thresholds"]["t1"] == lad.t1_
        assert body["model"]["file"] == "model_features.onnx"
        mask, _ = p.silhouette(Image.open(idx.root / idx.paths[row_id]), "x")
        _, feats = p.forward(mask)
        assert body["scores"]["ladder_score"] == pytest.approx(float(bank.score(feats)[0]), abs=1e-9)
        if body["reason"] != "no-structure":
            assert body["reason_text"] == describe(body["reason"], 1, "knn")
    exp = json.loads((copy / "export" / "export.json").read_text())
    if exp.get("int8_check", {}).get("ok"):  # a knn ladder as the int8 ladder (hand-made) is refused
        bad = link_run(copy, tmp_path / "int8", extra=("export",))
        dd = json.loads((copy / "ladder.json").read_text())
        dd["knn"]["bank_file"] = "ladder_int8_knn_bank.npy"
        (bad / "ladder_int8_knn_bank.npy").write_bytes((copy / "ladder_knn_bank.npy").read_bytes())
        (bad / "ladder_int8.json").unlink(missing_ok=True)
        (bad / "ladder_int8.json").write_text(json.dumps(dd))
        with pytest.raises(StillroomError, match="knn ladder is served with the fp32"):
            Predictor(bad, model="int8", threads=1)
    # a bank changed after the fit: the service does not start
    bad = link_run(copy, tmp_path / "tampered", extra=("export", "ladder.json"))
    arr = np.load(copy / "ladder_knn_bank.npy", allow_pickle=False).copy()
    arr[0] *= 0.5
    np.save(bad / "ladder_knn_bank.npy", arr, allow_pickle=False)
    with pytest.raises(StillroomError, match="sha256 differs"):
        Predictor(bad, threads=1)


def test_run_fused_ladder_with_a_feature_part_is_fitted_saved_and_served(run, tmp_path, ood_only):
    """A K-class run's fused signal (issue 16 item 4): max logit and the feature score the run gives it (RMD, fitted
    as for the rmd signal; KNN only where no RMD scorer is given: tests/test_ladder_fused_signal.py), standardized on
    ID val; fitted from the run, saved with its Gaussians, served from the features model, and scored by the service
    as recomputed here."""
    from _deploy import link_run
    from stillroom.data.index import load_index
    from stillroom.deploy.rmd import RMDScorer
    from stillroom.deploy.run_ladder import fit_run_ladder, run_ladder_report
    from stillroom.deploy.service import Predictor

    copy = link_run(run, tmp_path / "fused", extra=("export",))
    lad = fit_run_ladder(copy, ood_index=ood_only.root, signal="fused")
    assert lad.fused_["parts"] == ["maxlogit", "rmd"] and lad.uses_rmd and not lad.uses_knn
    d = json.loads((copy / "ladder.json").read_text())
    assert d["format"] == "stillroom-ladder/3" and d["fit_data"]["rmd_fit"]["split"] == "train"
    assert d["knn"] is None and "knn_bank" not in d["fit_data"] and not (copy / "ladder_knn_bank.npy").exists()
    assert run_ladder_report(copy, split="val", ood_index=ood_only.root)["signal"] == "fused"
    p = Predictor(copy, threads=1)
    assert p.knn and p.model_file.name == "model_features.onnx" and d["rmd"]["sha256"] in p.weights.values()
    gaussians = RMDScorer.load(copy, d["rmd"])
    (m0, m1), (s0, s1) = d["fused"]["mean"], d["fused"]["std"]
    idx = load_index(json.loads((copy / "model.json").read_text())["index"])
    from PIL import Image

    for row_id in idx.split_indices("val")[:3]:
        body, _ = p.predict((idx.root / idx.paths[row_id]).read_bytes(), "image/png", "x.png")
        mask, _ = p.silhouette(Image.open(idx.root / idx.paths[row_id]), "x")
        logits, feats = p.forward(mask)
        want = ((float(np.max(logits)) - m0) / s0 + (float(gaussians.score(feats)[0]) - m1) / s1) / 2
        assert body["thresholds"]["signal"] == "fused"
        assert body["scores"]["ladder_score"] == pytest.approx(want, abs=1e-6)
