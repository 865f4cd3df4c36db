"""Feature-based post-hoc OOD scores (KNN, ASH, SCALE through pytorch-ood): the backbone/head cut reproduces the
model, scores are oriented higher = ID, and `evaluate --ood-split` reports them next to the logit scores."""

import json

import numpy as np
import pytest
import torch

from stillroom.evaluate.feature_ood import feature_scores, split_model
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
    for name in ("knn", "ash", "scale", "energy"):
        assert 0.0 <= report["scores"][name]["auroc"] <= 1.0
    assert report["feature_scores"]["params"]["knn"]["fit_rows"] > 0
    methods = {row["score"] for row in ood_table_rows(load_ood_reports([run]))}
    assert {"knn", "ash", "scale"} <= methods


def test_non_finite_feature_scores_rank_as_most_ood_and_are_counted():
    """ASH-S gives 0 / 0 = NaN for an all-zero feature map (seen on a real K+1 student): such a row is ranked the
    most OOD-like and counted, instead of failing the whole open-set evaluation."""
    from stillroom.evaluate.feature_ood import finite_scores

    s, bad = finite_scores(np.array([0.5, np.nan, -2.0, np.inf, 1.0]))
    assert bad == 2 and np.isfinite(s).all() and s[1] == s[3] == -2.0
    same, none = finite_scores(np.array([1.0, 2.0]))
    assert none == 0 and same.tolist() == [1.0, 2.0]
