"""The ladder's rmd signal (issue 16 items 3-4): ``deploy.rmd`` against pytorch-ood's RMD (evaluation's reference),
``auto`` weighing it, the parameters file (``.npz``, sha256), run-level fitting equal to evaluation's ``rmd`` score,
and the service.

Run-level tests use the session's exported ``teacher_run`` (tests/_deploy.py) in linked copies.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stillroom._io import StillroomError
from stillroom.deploy.ladder import SIGNALS, Ladder, describe, rmd_path
from stillroom.deploy.rmd import RMDScorer


def _pytorch_ood_rmd(fit: np.ndarray, labels: np.ndarray, query: np.ndarray) -> np.ndarray:
    from pytorch_ood.detector import RMD

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        det = RMD(None).fit_features(torch.from_numpy(fit), torch.from_numpy(labels).long())
    finally:
        torch.set_default_dtype(default)
    return -det.predict_features(torch.from_numpy(query)).numpy()


def _case(n_id: int = 200, n_ood: int = 200, k: int = 4, d: int = 12, seed: int = 0):
    """Logits that do not tell ID from OOD and features that do: ID rows near their class means, OOD rows half-way
    between two classes (made of ID parts, as chimeras are: near the background Gaussian, far from every class)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 4, (k, d))
    means[:, d // 2 :] = 0.0
    y = np.arange(600) % k
    train = means[y] + rng.normal(0, 1, (600, d)) * np.r_[np.ones(d // 2), 0.1 * np.ones(d - d // 2)]
    yi = np.arange(n_id) % k
    fi = means[yi] + rng.normal(0, 1, (n_id, d)) * np.r_[np.ones(d // 2), 0.1 * np.ones(d - d // 2)]
    a, b = rng.integers(0, k, n_ood), rng.integers(1, k, n_ood)
    fo = (means[a] + means[(a + b) % k]) / 2 + rng.normal(0, 1, (n_ood, d)) * np.r_[
        np.ones(d // 2), 0.1 * np.ones(d - d // 2)
    ]
    zi, zo = rng.normal(0, 2, (n_id, k)), rng.normal(0, 2, (n_ood, k))
    return zi, zo, fi, fo, train, y


def test_rmd_score_equals_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    _, _, fi, fo, train, y = _case()
    scorer = RMDScorer().fit(train, y + 5)  # any label values
    q = np.concatenate([fi, fo])
    np.testing.assert_allclose(scorer.score(q), _pytorch_ood_rmd(train, y, q), rtol=1e-9, atol=1e-9)
    assert scorer.score(fi).mean() > scorer.score(fo).mean()


def test_rmd_input_errors_and_file(tmp_path):
    _, _, fi, _, train, y = _case()
    with pytest.raises(StillroomError, match="labels for"):
        RMDScorer().fit(train, y[:-1])
    with pytest.raises(StillroomError, match="non-finite"):
        RMDScorer().fit(np.full((10, 3), np.nan), np.zeros(10))
    scorer = RMDScorer().fit(train, y)
    with pytest.raises(StillroomError, match="dimension"):
        scorer.score(fi[:, :3])
    rec = scorer.save(tmp_path / "p.npz", fit_rows=600)
    assert rec["classes"] == 4 and rec["dim"] == 12 and rec["fit_rows"] == 600
    back = RMDScorer.load(tmp_path, rec)
    np.testing.assert_array_equal(back.score(fi), scorer.score(fi))
    with pytest.raises(StillroomError, match="plain .npz"):
        RMDScorer.load(tmp_path, {**rec, "file": "../p.npz"})
    (tmp_path / "p.npz").write_bytes((tmp_path / "p.npz").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(StillroomError, match="sha256 differs"):
        RMDScorer.load(tmp_path, rec)


def test_auto_weighs_rmd_and_the_file_round_trips(tmp_path):
    zi, zo, fi, fo, train, y = _case()
    rmd = RMDScorer().fit(train, y)
    lad = Ladder(signal="auto").fit(zi, ood_logits_list=zo, val_features=fi, ood_features=fo, rmd=rmd)
    sel = lad.fit_summary_["signal"]
    assert set(sel["val_auroc"]) == {*SIGNALS, "rmd", "fused"}  # fused: max logit + rmd
    assert lad.signal_ == "rmd" and lad.rmd_ is rmd and sel["rmd"] == {"classes": 4, "dim": 12}
    assert sel["val_auroc"]["rmd"] > 0.95 and max(sel["val_auroc"][n] for n in SIGNALS) < 0.6
    np.testing.assert_allclose(lad.signals(zi, features=fi)["score"], rmd.score(fi), rtol=1e-12)
    assert "relative Mahalanobis" in describe("weak-signal", 1, "rmd")
    with pytest.raises(StillroomError, match="needs the penultimate features"):
        lad.decide(zi)
    assert lad.uses_features and not lad.uses_knn
    path = tmp_path / "ladder.json"
    lad.save(path)
    d = json.loads(path.read_text())
    assert d["format"] == "stillroom-ladder/3" and d["rmd"]["file"] == rmd_path(path).name == "ladder_rmd.npz"
    back = Ladder.load(path)
    assert back.signal_ == "rmd" and back.decide(zo[:30], features=fo[:30]) == lad.decide(zo[:30], features=fo[:30])
    # refit on a logit signal: the parameters file goes
    Ladder(signal="maxlogit").fit(zi).save(path)
    assert not rmd_path(path).exists()
    with pytest.raises(StillroomError, match="signal='rmd' needs"):
        Ladder(signal="rmd").fit(zi, val_features=fi)
    with pytest.raises(StillroomError, match="signal='rmd' needs one member"):
        Ladder.from_thresholds(0.0, 1.0, 1, 4, margin=0.1, signal="rmd")
    hand = Ladder.from_thresholds(-50.0, 0.0, 1, 4, margin=0.0, signal="rmd", rmd=rmd)
    assert hand.signals(zi, features=fi)["score"].shape == (len(zi),)


def test_fused_takes_rmd_as_its_feature_part_and_round_trips(tmp_path):
    """With an RMD scorer, fused = mean of the ID-standardized max logit and RMD score (knn left out, module
    docstring); saved with its Gaussians (sha256 checked), served as fitted; without rmd it keeps knn."""
    from stillroom.deploy.knn import KNNScorer

    zi, zo, fi, fo, train, y = _case()
    rmd, knn = RMDScorer().fit(train, y), KNNScorer().fit(train)
    lad = Ladder(signal="fused").fit(zi, ood_logits_list=zo, val_features=fi, ood_features=fo, rmd=rmd, knn=knn)
    assert lad.fused_["parts"] == ["maxlogit", "rmd"] and lad.uses_rmd and lad.uses_features and not lad.uses_knn
    assert lad.rmd_ is rmd and lad.knn_ is None and lad.fit_summary_["signal"]["rmd"] == {"classes": 4, "dim": 12}
    assert "fused" in lad.fit_summary_["signal"]["val_auroc"]  # weighed by auto too
    ref_id = np.stack([zi.max(1), rmd.score(fi)])
    mean, std = ref_id.mean(1, keepdims=True), ref_id.std(1, keepdims=True)
    want = ((np.stack([zo.max(1), rmd.score(fo)]) - mean) / std).mean(0)
    np.testing.assert_allclose(lad.signals(zo, features=fo)["score"], want, rtol=1e-9, atol=1e-9)
    path = tmp_path / "ladder.json"
    lad.save(path)
    d = json.loads(path.read_text())
    assert d["format"] == "stillroom-ladder/3" and d["rmd"]["file"] == "ladder_rmd.npz" and d["knn"] is None
    back = Ladder.load(path)
    assert back.uses_rmd and back.decide(zo[:30], features=fo[:30]) == lad.decide(zo[:30], features=fo[:30])
    params = rmd_path(path)
    params.write_bytes(params.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(StillroomError, match="sha256 differs"):
        Ladder.load(path)
    only_knn = Ladder(signal="fused").fit(zi, val_features=fi, knn=knn)
    assert only_knn.fused_["parts"] == ["maxlogit", "knn"] and not only_knn.uses_rmd
    only_knn.save(path)
    assert not params.exists()  # a fused ladder without an rmd part removes the Gaussians left there


# --- run level: export, fit, report, serve ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rmd_run(teacher_run, tmp_path_factory, ood_only):
    """A linked copy of the exported run with an rmd ladder fitted on the ood_only val rows."""
    pytest.importorskip("onnxruntime")
    from _deploy import exported_run, link_run
    from stillroom.deploy.run_ladder import fit_run_ladder

    run = exported_run(teacher_run, tmp_path_factory.mktemp("deploy_rmd"))
    copy = link_run(run, tmp_path_factory.mktemp("rmd") / "run", extra=("export",))
    return copy, fit_run_ladder(copy, ood_index=ood_only.root, signal="rmd")


def test_run_rmd_ladder_equals_evaluations_rmd_and_is_served(rmd_run, ood_only):
    """The ladder's score on val rows equals evaluate.feature_ood's pytorch-ood RMD (same rows, views, features);
    the report and the service use it."""
    pytest.importorskip("pytorch_ood")
    from stillroom.data.dataset import load_images
    from stillroom.data.index import load_index
    from stillroom.deploy.run_ladder import run_features, run_ladder_report
    from stillroom.deploy.service import Predictor
    from stillroom.evaluate.feature_ood import feature_scores, style_view_batches
    from stillroom.models.inference import iter_batches
    from stillroom.runs import Run

    copy, lad = rmd_run
    assert lad.signal_ == "rmd" and (copy / "ladder_rmd.npz").is_file()
    d = json.loads((copy / "ladder.json").read_text())
    the_run = Run(copy)
    loaded = the_run.load("best", device="cpu")
    idx = the_run.index()
    images = load_images(idx)
    val, train = idx.split_indices("val"), idx.split_indices("train")
    assert d["fit_data"]["rmd_fit"] == {"index": str(idx.root), "split": "train", "rows": len(train), "views": 4}
    ref = feature_scores(
        loaded.model,
        lambda: iter_batches(images, val, loaded.normalizer, 64),
        lambda: iter_batches(images, train, loaded.normalizer, 64),
        num_id_classes=the_run.layout.num_id,
        fit_labels=idx.labels[train],
        fit_views=lambda: style_view_batches(images, train, loaded.normalizer, 64),
    )["scores"]["rmd"]
    logits = the_run.logits("best", val, idx, images)
    got = [r["score"] for r in Ladder.load(copy / "ladder.json").decide_detailed(
        logits, features=run_features(loaded, images, val))]  # fmt: skip
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
    rep = run_ladder_report(copy, split="val", ood_index=ood_only.root)
    assert rep["signal"] == "rmd" and rep["ood"]["n"] == len(ood_only.split_indices("val"))
    p = Predictor(copy, threads=1)
    assert p.knn and p.model_file.name == "model_features.onnx"
    scorer = RMDScorer.load(copy, d["rmd"])
    index = load_index(json.loads((copy / "model.json").read_text())["index"])
    row_id = index.split_indices("val")[0]
    body, _ = p.predict((index.root / index.paths[row_id]).read_bytes(), "image/png", "x.png")
    assert body["thresholds"]["signal"] == "rmd"
    from PIL import Image

    mask, _ = p.silhouette(Image.open(index.root / index.paths[row_id]), "x")
    _, feats = p.forward(mask)
    assert body["scores"]["ladder_score"] == pytest.approx(float(scorer.score(feats)[0]), rel=1e-6)
