"""Feature-based post-hoc OOD scores (KNN, ASH, SCALE through pytorch-ood): the backbone/head cut reproduces the
model, scores are oriented higher = ID, and `evaluate --ood-split` reports them next to the logit scores."""

import json

import numpy as np
import pytest
import torch

from stillroom.evaluate.feature_ood import RMD_VIEWS, feature_scores, split_model
from stillroom.models.factory import create_model

pytest.importorskip("pytorch_ood")


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "resnet18", "timm:resnet10t", "efficientnet_b0"])
def test_backbone_then_head_is_the_model(arch):
    torch.manual_seed(0)
    model = create_model(arch, 1, 7, 32).eval()
    x = torch.randn(3, 1, 32, 32)
    backbone, head = split_model(model)
    with torch.no_grad():
        maps = backbone(x)
        assert maps.ndim == 4
        assert torch.allclose(head(maps), model(x), atol=1e-5)


def test_a_vit_is_skipped_with_a_reason():
    model = create_model("vit_tiny", 1, 5, 32).eval()
    x = [torch.randn(4, 1, 32, 32)]
    out = feature_scores(model, lambda: iter(x), lambda: iter(x * 5), num_id_classes=5, knn_k=2)
    assert "skipped" in out and "4-D" in out["skipped"]


def test_scores_are_pytorch_ood_outlier_scores_negated():
    from pytorch_ood.detector import ASH, KNN, SCALE, EnergyBased

    from stillroom.evaluate.feature_ood import ASH_PERCENTILE, SCALE_PERCENTILE

    torch.manual_seed(0)
    model = create_model("mobilenet_v3_small", 1, 6, 32).eval()
    fit = [torch.randn(16, 1, 32, 32) for _ in range(2)]
    query = [torch.randn(8, 1, 32, 32)]
    out = feature_scores(model, lambda: iter(query), lambda: iter(fit), num_id_classes=5, knn_k=3)
    backbone, head = split_model(model)

    def energy5(z):  # K+1 layout: 5 ID columns, the 6th is the sink
        return EnergyBased.score(z[:, :5])

    with torch.no_grad():
        maps = backbone(query[0])
        ash = ASH(backbone, head, variant="ash-s", percentile=ASH_PERCENTILE, detector=energy5).predict(query[0])
        scale = SCALE(backbone, head, percentile=SCALE_PERCENTILE, detector=energy5).predict(query[0])
        feats = torch.cat([torch.flatten(torch.nn.functional.adaptive_avg_pool2d(backbone(x), 1), 1) for x in fit])
        knn = KNN(None, k=3).fit_features(feats, torch.zeros(len(feats), dtype=torch.long))
        knn_raw = knn.predict_features(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(maps, 1), 1))
    np.testing.assert_allclose(out["scores"]["ash"], -ash.double().numpy(), rtol=1e-5)
    np.testing.assert_allclose(out["scores"]["scale"], -scale.double().numpy(), rtol=1e-5)
    np.testing.assert_allclose(out["scores"]["knn"], -knn_raw.double().numpy(), rtol=1e-5)
    assert out["params"]["knn"]["fit_rows"] == 32


def test_knn_ranks_training_like_rows_above_noise():
    torch.manual_seed(0)
    model = create_model("resnet18", 1, 3, 32).eval()
    base = torch.zeros(1, 1, 32, 32)
    base[..., 8:24, 8:24] = 1.0
    fit = [base + 0.05 * torch.randn(32, 1, 32, 32)]
    near = base + 0.05 * torch.randn(8, 1, 32, 32)
    far = 3.0 * torch.randn(8, 1, 32, 32)
    out = feature_scores(model, lambda: iter([near, far]), lambda: iter(fit), num_id_classes=3, knn_k=5)
    s = out["scores"]["knn"]
    assert s[:8].min() > s[8:].max()  # higher = more in-distribution


def test_evaluate_open_set_reports_feature_scores(teacher_run, ood_only, tmp_path):
    import shutil

    from stillroom.evaluate.ood import evaluate_open_set
    from stillroom.evaluate.ood_table import load_ood_reports, ood_table_rows

    run = tmp_path / "run"
    shutil.copytree(teacher_run, run)
    evaluate_open_set(run, split="test", weights=("best",), ood_index=ood_only.root)
    report = json.loads((run / "ood_metrics.json").read_text())["splits"]["test"]["best"]
    for name in ("knn", "ash", "scale", "rmd", "energy"):
        assert 0.0 <= report["scores"][name]["auroc"] <= 1.0
    params = report["feature_scores"]["params"]
    assert params["knn"]["fit_rows"] > 0
    assert params["rmd"]["fit_rows"] == params["knn"]["fit_rows"] and params["rmd"]["views"] == RMD_VIEWS
    methods = {row["score"] for row in ood_table_rows(load_ood_reports([run]))}
    assert {"knn", "ash", "scale", "rmd"} <= methods


def test_non_finite_feature_scores_rank_as_most_ood_and_are_counted():
    """ASH-S gives 0 / 0 = NaN for an all-zero feature map (seen on a real K+1 student): such a row is ranked the
    most OOD-like and counted, instead of failing the whole open-set evaluation."""
    from stillroom.evaluate.feature_ood import finite_scores

    s, bad = finite_scores(np.array([0.5, np.nan, -2.0, np.inf, 1.0]))
    assert bad == 2 and np.isfinite(s).all() and s[1] == s[3] == -2.0
    same, none = finite_scores(np.array([1.0, 2.0]))
    assert none == 0 and same.tolist() == [1.0, 2.0]


def _rmd_oracle(fit: np.ndarray, labels: np.ndarray, query: np.ndarray) -> np.ndarray:
    """-min_k [d_k - d_0] in numpy (Ren et al. 2021 §3): class means with one shared covariance, one background
    Gaussian; any common scale of the two covariances leaves the difference's ranking, so both are sums."""
    classes = np.unique(labels)
    mu = np.stack([fit[labels == c].mean(0) for c in classes])
    centred = fit - mu[np.searchsorted(classes, labels)]
    prec = np.linalg.inv(centred.T @ centred + 1e-6 * np.eye(fit.shape[1]))
    mu0 = fit.mean(0)
    prec0 = np.linalg.inv((fit - mu0).T @ (fit - mu0) + 1e-6 * np.eye(fit.shape[1]))
    d0 = np.einsum("nd,de,ne->n", query - mu0, prec0, query - mu0)
    dk = np.stack([np.einsum("nd,de,ne->n", query - m, prec, query - m) for m in mu], 1)
    return -(dk - d0[:, None]).min(1)


def _pooled(model, batches):
    backbone, _ = split_model(model)
    with torch.no_grad():
        return torch.cat([torch.flatten(torch.nn.functional.adaptive_avg_pool2d(backbone(x), 1), 1) for x in batches])


def test_rmd_matches_a_numpy_oracle_and_skips_without_labels():
    torch.manual_seed(0)
    model = create_model("resnet18", 1, 4, 32).eval()
    fit = [torch.randn(300, 1, 32, 32) for _ in range(2)]  # more rows than the 512 features: a proper covariance
    query = [torch.randn(12, 1, 32, 32)]
    labels = np.arange(600) % 4 + 3  # any label values: classes are taken as they come
    out = feature_scores(model, lambda: iter(query), lambda: iter(fit), num_id_classes=4, knn_k=3, fit_labels=labels)
    want = _rmd_oracle(_pooled(model, fit).double().numpy(), labels, _pooled(model, query).double().numpy())
    np.testing.assert_allclose(out["scores"]["rmd"], want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    assert out["params"]["rmd"]["views"] == 0 and out["params"]["rmd"]["classes"] == 4
    bare = feature_scores(model, lambda: iter(query), lambda: iter(fit), num_id_classes=4, knn_k=3)
    assert "rmd" not in bare["scores"] and "skipped" in bare["params"]["rmd"]
    with pytest.raises(ValueError, match="fit labels"):
        feature_scores(model, lambda: iter(query), lambda: iter(fit), 4, knn_k=3, fit_labels=labels[:-1])


def test_rmd_fits_the_views_too_and_they_widen_the_classes():
    """Views enter RMD's fit with their rows' labels (KNN keeps the clean rows); a query drawn like the views scores
    higher once the detector has seen such drawings."""
    torch.manual_seed(0)
    model = create_model("resnet18", 1, 3, 32).eval()
    fit = [torch.randn(600, 1, 32, 32)]
    views = [f + 2.0 for f in fit] * 2  # two "re-drawn" copies of every row, view after view
    labels = np.arange(600) % 3
    query = [torch.randn(10, 1, 32, 32) + 2.0]
    clean = feature_scores(model, lambda: iter(query), lambda: iter(fit), 3, knn_k=3, fit_labels=labels)
    wide = feature_scores(model, lambda: iter(query), lambda: iter(fit), 3, knn_k=3, fit_labels=labels,
                          fit_views=lambda: iter(views))  # fmt: skip
    assert wide["params"]["rmd"]["views"] == 2 and wide["params"]["knn"]["fit_rows"] == 600
    np.testing.assert_array_equal(wide["scores"]["knn"], clean["scores"]["knn"])
    assert np.median(wide["scores"]["rmd"]) > np.median(clean["scores"]["rmd"])
    want = _rmd_oracle(_pooled(model, fit + views).double().numpy(), np.tile(labels, 3),
                       _pooled(model, query).double().numpy())  # fmt: skip
    np.testing.assert_allclose(wide["scores"]["rmd"], want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    with pytest.raises(ValueError, match="whole copies"):
        feature_scores(model, lambda: iter(query), lambda: iter(fit), 3, knn_k=3, fit_labels=labels,
                       fit_views=lambda: iter([views[0][:7]]))  # fmt: skip


def test_style_views_are_redrawn_silhouettes_and_repeatable():
    from stillroom.data.dataset import Normalizer
    from stillroom.evaluate.feature_ood import style_view_batches

    rng = np.random.default_rng(0)
    images = np.full((5, 1, 32, 32), 255, dtype=np.uint8)
    for i in range(5):
        y, x = rng.integers(4, 12, size=2)
        images[i, 0, y : y + 14, x : x + 12] = 0
    norm = Normalizer([0.5], [0.25])
    rows = np.array([4, 1, 3])
    a = torch.cat(list(style_view_batches(images, rows, norm, batch_size=2, views=3)))
    b = torch.cat(list(style_view_batches(images, rows, norm, batch_size=3, views=3)))
    assert a.shape == (9, 1, 32, 32) and torch.equal(a, b)  # same views whatever the batch size
    clean = norm(torch.from_numpy(images[rows]))
    assert not torch.equal(a[:3], clean) or not torch.equal(a[3:6], clean)  # re-drawn, not copies
