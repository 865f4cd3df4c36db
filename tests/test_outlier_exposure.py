"""Outlier exposure (``distill.losses.outlier_exposure``): the term against pytorch-ood's, its base loss on the ID
rows only, and a K-class run trained on a merged index (selection on ID val rows, evaluation with the OOD rows)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from stillroom._io import StillroomError, read_json
from stillroom.cli import app
from stillroom.config import config_from_dict
from stillroom.data.merge import merge_with_sink
from stillroom.distill.losses import build_loss, resolve_loss_params
from stillroom.distill.losses.luminet import LumiNetLoss


def _batch(b: int = 12, k: int = 5, n_ood: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, k, generator=g) * 3
    t = torch.randn(1, b, k, generator=g) * 3
    y = torch.randint(0, k, (b,), generator=g)
    y[torch.randperm(b, generator=g)[:n_ood]] = k  # the OOD rows of a merged index carry label K
    return z, t, y


def test_term_is_cross_entropy_to_uniform_mean_over_ood_rows():
    z, t, y = _batch()
    out = build_loss("outlier_exposure", base="ce", oe_weight=0.5)(z, t, y)
    is_ood = y == 5
    uniform = torch.full((int(is_ood.sum()), 5), 1 / 5)
    want = F.cross_entropy(z[is_ood], uniform)  # H(U; softmax(z)), mean over the OOD rows
    torch.testing.assert_close(out["loss_oe"], 0.5 * want)
    torch.testing.assert_close(out["loss_ce"], F.cross_entropy(z[~is_ood], y[~is_ood]))


def test_matches_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    from pytorch_ood.loss import OutlierExposureLoss

    z, t, y = _batch(b=16, n_ood=6, seed=1)
    is_ood = y == 5
    # pytorch-ood marks OOD rows with negative labels and returns CE + alpha * OE per row; the paper (and we) take
    # the two means over their own rows
    per_row = OutlierExposureLoss(alpha=0.7, reduction="none")(z, torch.where(is_ood, -1, y))
    want = per_row[~is_ood].mean() + per_row[is_ood].mean()
    out = build_loss("outlier_exposure", base="ce", oe_weight=0.7)(z, t, y)
    torch.testing.assert_close(out["loss_ce"] + out["loss_oe"], want)


def test_base_sees_the_id_rows_only_with_their_teacher_rows():
    z, t, y = _batch(b=16, n_ood=5, seed=2)
    is_id = y < 5
    out = build_loss("outlier_exposure", base_params={"kd_scale": 10.0})(z, t, y)  # base: luminet
    ref = LumiNetLoss(kd_scale=10.0)(z[is_id], t[:, is_id], y[is_id])
    for name in ("loss_ce", "loss_kd"):
        torch.testing.assert_close(out[name], ref[name])
    # a batch without OOD rows: the base alone, and no OE term
    z2, t2, y2 = _batch(n_ood=0, seed=3)
    out2 = build_loss("outlier_exposure", base="kd")(z2, t2, y2)
    assert out2["loss_oe"].item() == 0.0
    ref2 = build_loss("kd")(z2, t2, y2)
    torch.testing.assert_close(out2["loss_kd"], ref2["loss_kd"])


def test_params_resolve_the_base_and_refuse_bad_ones():
    assert resolve_loss_params("outlier_exposure", {"base": "kd"})["base_params"]["kd_weight"] == pytest.approx(0.5)
    assert not build_loss("outlier_exposure", base="ce").needs_teacher
    assert build_loss("outlier_exposure").needs_teacher  # luminet
    with pytest.raises(StillroomError, match="base must be a K-class loss.*'target_dampened'"):
        build_loss("outlier_exposure", base="target_dampened")
    with pytest.raises(StillroomError, match=r"base_params: loss 'kd': unknown parameter\(s\) 'alpha'"):
        build_loss("outlier_exposure", base="kd", base_params={"alpha": 0.5})
    with pytest.raises(StillroomError, match="targets must be in 0..5"):
        build_loss("outlier_exposure", base="ce")(torch.zeros(2, 5), None, torch.tensor([0, 6]))
    loss = build_loss("outlier_exposure")
    assert loss.num_outputs(5, 4) == 4
    with pytest.raises(StillroomError, match="merge-sink"):
        loss.num_outputs(4, None)


@pytest.fixture(scope="module")
def oe_run(shapes_index, ood_only, tiny_config, tmp_path_factory: pytest.TempPathFactory):
    from stillroom.pipeline import train

    merged = merge_with_sink(shapes_index, ood_only, tmp_path_factory.mktemp("merged_oe") / "merged")
    raw = tiny_config(merged.root, "student_oe", epochs=3, loss={"name": "outlier_exposure", "params": {"base": "ce"}})
    return merged, train(config_from_dict(raw), tmp_path_factory.mktemp("oe_runs") / "student_oe")


def test_k_class_run_on_a_merged_index(oe_run):
    merged, run = oe_run
    meta = read_json(run / "model.json")
    assert meta["num_classes"] == 4 and "ood" not in meta["classes"] and len(meta["classes"]) == 4
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]
    assert all(r["val_ood_rejection"] is None and "loss_oe" in r for r in log)
    best = read_json(run / "state.json")["best"]
    assert best["selected_on"] == "val_id_top1"
    assert best["epoch"] == max(log, key=lambda r: (r["val_id_top1"], -r["val_id_nll"]))["epoch"]
    # the OOD rows of the merged index are scored as OOD against the ID rows, by post-hoc scores (no sink column)
    res = CliRunner().invoke(
        app, ["evaluate", str(run), "--split", "test", "--ood-split", "test", "--no-tune-odin", "--weights", "best"]
    )
    assert res.exit_code == 0, res.output
    rep = read_json(run / "ood_metrics.json")["splits"]["test"]["best"]
    rows = merged.split_indices("test")
    assert not rep["has_sink"] and rep["num_id_classes"] == 4
    assert rep["n_ood"] == int((merged.labels[rows] == 4).sum()) and "sink" not in rep["scores"]
    assert 0.0 <= rep["scores"]["energy"]["auroc"] <= 1.0 and np.isfinite(rep["closed_set"]["top1"])


def test_plain_index_is_refused(shapes_index, tiny_config, tmp_path):
    from stillroom.pipeline import train

    raw = tiny_config(
        shapes_index.root, "oe_plain", epochs=1, loss={"name": "outlier_exposure", "params": {"base": "ce"}}
    )
    with pytest.raises(StillroomError, match="no sink class"):
        train(config_from_dict(raw), tmp_path / "oe_plain")
