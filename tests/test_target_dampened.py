"""Target-dampened open-set loss (seed 000 §2.4; REFERENCE 2): golden values, the OOD rule, and a tiny end-to-end run
(K-class teacher, synthetic OOD sink, K+1 student, open-set report)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import typer
from scipy.special import rel_entr
from scipy.special import softmax as sp_softmax
from typer.testing import CliRunner

from stillroom._io import StillroomError, read_json
from stillroom.config import config_from_dict
from stillroom.data.index import IndexRow, write_index
from stillroom.data.merge import merge_with_sink
from stillroom.data.synthetic import build_shapes
from stillroom.distill.losses import build_loss, resolve_loss_params
from stillroom.distill.losses.target_dampened import GAMMA_GRID, TargetDampenedParams

# sample 1 (ID, y = 0): z = (1, 2, 0.5), teacher t = (2, 0.5); sample 2 (OOD, y = K = 2): z = (0.5, 0, 1.5)
Z = torch.tensor([[1.0, 2.0, 0.5], [0.5, 0.0, 1.5]], dtype=torch.float64)
T_LOGITS = torch.tensor([[[2.0, 0.5], [9.0, -9.0]]], dtype=torch.float64)  # the OOD row's teacher must not matter
Y = torch.tensor([0, 2])


def test_golden_values_by_hand():
    # CE(z1, 0) over all 3 columns; KL at T = 2 over the 2 ID columns only; CE(z2, sink)
    ce1 = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5)) - 1.0
    p_s = [math.exp(0.5) / (math.exp(0.5) + math.exp(1.0)), math.exp(1.0) / (math.exp(0.5) + math.exp(1.0))]
    p_t = [math.exp(1.0) / (math.exp(1.0) + math.exp(0.25)), math.exp(0.25) / (math.exp(1.0) + math.exp(0.25))]
    kl1 = sum(a * math.log(a / b) for a, b in zip(p_t, p_s, strict=True))
    ce2 = math.log(math.exp(0.5) + 1.0 + math.exp(1.5)) - 1.5
    assert (ce1, kl1, ce2) == pytest.approx((1.4643687841079447, 0.186179352034448, 0.4643687841079449), abs=1e-12)

    loss = build_loss("target_dampened", kd_weight=0.3, temperature=2.0, ood_weight=7.8)
    out = loss(Z, T_LOGITS, Y)
    assert set(out) == {"loss_ce", "loss_kd", "loss_ood"}
    # every term is a mean over the whole batch of B = 2
    assert out["loss_ce"].item() == pytest.approx(0.7 * ce1 / 2, abs=1e-12)
    assert out["loss_kd"].item() == pytest.approx(0.3 * 2.0**2 * kl1 / 2, abs=1e-12)
    assert out["loss_ood"].item() == pytest.approx(7.8 * ce2 / 2, abs=1e-12)
    assert (out["loss_ce"] + out["loss_kd"] + out["loss_ood"]).item() == pytest.approx(
        0.5125290744377806 + 0.11170761122066879 + 1.8110382580209852, abs=1e-12
    )


def test_match_logits_regresses_the_id_columns_on_id_rows_only():
    # ID row: z[:K] = (1, 2), teacher (2, 0.5): squared errors 1, 2.25 -> mean 1.625; the OOD row (teacher 9, -9)
    # adds nothing; CE and the sink term are those of match = "kl"; the temperature is not read
    kl = build_loss("target_dampened", kd_weight=0.3, temperature=2.0, ood_weight=7.8)
    lg = build_loss("target_dampened", kd_weight=0.3, temperature=2.0, ood_weight=7.8, match="logits")
    a, b = kl(Z, T_LOGITS, Y), lg(Z, T_LOGITS, Y)
    assert b["loss_kd"].item() == pytest.approx(0.3 * 1.625 / 2, abs=1e-12)
    assert b["loss_ce"] == a["loss_ce"] and b["loss_ood"] == a["loss_ood"]
    other_t = build_loss("target_dampened", kd_weight=0.3, temperature=9.0, ood_weight=7.8, match="logits")
    assert other_t(Z, T_LOGITS, Y)["loss_kd"] == b["loss_kd"]
    # several teachers: their mean logits; the sink column never enters the MSE
    two = torch.cat([T_LOGITS - 1.0, T_LOGITS + 1.0])
    assert lg(Z, two, Y)["loss_kd"].item() == pytest.approx(b["loss_kd"].item(), abs=1e-12)
    z = Z.clone().requires_grad_(True)
    lg(z, T_LOGITS, Y)["loss_kd"].backward()
    assert z.grad[0, 2] == 0 and torch.count_nonzero(z.grad[1]) == 0
    with pytest.raises(StillroomError, match="match"):
        build_loss("target_dampened", match="mse")


def test_ood_sample_contributes_only_g_ce_toward_the_sink():
    z = Z[1:].clone().requires_grad_(True)
    loss = build_loss("target_dampened")  # seed000: g = 7.8
    out = loss(z, torch.randn(3, 1, 2, dtype=torch.float64), Y[1:])
    assert out["loss_ce"].item() == 0.0 and out["loss_kd"].item() == 0.0
    assert out["loss_ood"].item() == pytest.approx(7.8 * F.cross_entropy(Z[1:], Y[1:]).item(), abs=1e-12)
    sum(out.values()).backward()
    expected = 7.8 * (torch.softmax(Z[1:], 1) - F.one_hot(Y[1:], 3))  # d(g CE)/dz
    torch.testing.assert_close(z.grad, expected)
    # the teachers' opinion of an OOD image never enters the loss
    other = loss(Z, T_LOGITS * torch.tensor([1.0, 0.0])[None, :, None] + torch.tensor([0.0, 5.0])[None, :, None], Y)
    torch.testing.assert_close(sum(other.values()), sum(loss(Z, T_LOGITS, Y).values()))


def test_matches_scipy_with_two_teachers_fused():
    g = torch.Generator().manual_seed(0)
    k = 5
    z = torch.randn(12, k + 1, generator=g, dtype=torch.float64) * 2
    t = torch.randn(2, 12, k, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, k + 1, (12,), generator=g)
    y[:3] = k  # some OOD rows for sure
    a, temp, gamma = 0.3, 4.0, 7.8
    out = build_loss("target_dampened")(z, t, y)
    zn, tn, yn = z.numpy(), t.numpy(), y.numpy()
    is_id = yn != k
    ce = -(zn - np.log(np.exp(zn).sum(1, keepdims=True)))[np.arange(12), yn]
    p_t = sp_softmax(tn / temp, axis=2).mean(0)  # fused: mean of the teachers' probabilities
    kl = rel_entr(p_t, sp_softmax(zn[:, :k] / temp, axis=1)).sum(1)
    assert out["loss_ce"].item() == pytest.approx((1 - a) * ce[is_id].sum() / 12, abs=1e-10)
    assert out["loss_kd"].item() == pytest.approx(a * temp**2 * kl[is_id].sum() / 12, abs=1e-10)
    assert out["loss_ood"].item() == pytest.approx(gamma * ce[~is_id].sum() / 12, abs=1e-10)


def test_preset_seed000_and_overrides():
    assert TargetDampenedParams.presets["seed000"] == {"kd_weight": 0.3, "temperature": 4.0, "ood_weight": 7.8}
    assert GAMMA_GRID == (0.0, 4.0, 7.8, 10.0)
    for loss in (build_loss("target_dampened"), build_loss("target_dampened", preset="seed000")):
        p = loss.params
        assert (p.preset, p.kd_weight, p.temperature, p.ood_weight) == ("seed000", 0.3, 4.0, 7.8) and loss.needs_teacher
    balanced = build_loss("target_dampened", preset="balanced").params
    assert (balanced.kd_weight, balanced.temperature, balanced.ood_weight) == (0.3, 4.0, 1.0)
    over = build_loss("target_dampened", preset="seed000", ood_weight=4.0)
    assert (over.params.kd_weight, over.params.ood_weight) == (0.3, 4.0)
    with pytest.raises(StillroomError, match=r"preset must be one of \('seed000', 'balanced'\), got 'paper'"):
        build_loss("target_dampened", preset="paper")
    with pytest.raises(StillroomError, match="ood_weight"):
        build_loss("target_dampened", gamma=7.8)
    with pytest.raises(StillroomError, match=r"kd_weight must be in \[0, 1\]"):
        build_loss("target_dampened", kd_weight=1.5)
    for bad in (0, True, 2.0):
        with pytest.raises(StillroomError, match="sink_index must be an integer >= 1"):
            build_loss("target_dampened", sink_index=bad)


def test_recipe_is_read_as_preset_with_a_warning():
    # finished runs' config.json say "recipe"; they must still load, and resolve under the new name
    with pytest.warns(FutureWarning, match="'recipe' is deprecated"):
        old = build_loss("target_dampened", recipe="seed000", ood_weight=4.0)
    assert old.params == build_loss("target_dampened", preset="seed000", ood_weight=4.0).params
    with pytest.warns(FutureWarning):
        resolved = resolve_loss_params("target_dampened", {"recipe": "seed000"})
    assert resolved == {
        "preset": "seed000",
        "kd_weight": 0.3,
        "temperature": 4.0,
        "ood_weight": 7.8,
        "sink_index": None,
        "match": "kl",
    }
    with pytest.raises(StillroomError, match="preset must be one of"), pytest.warns(FutureWarning):
        build_loss("target_dampened", recipe="paper")
    with pytest.raises(StillroomError, match="recipe is the deprecated name of preset"), pytest.warns(FutureWarning):
        build_loss("target_dampened", recipe="seed000", preset="seed000")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m", [1, 2, 5])
def test_kd_term_uses_the_shared_fused_target(dtype, m):
    # the teachers' mean probability now comes from _multi.teacher_targets(mode="fused"); the former inline formula
    # logsumexp_m(log p_m) - log M gives the same loss (bit for bit with one teacher, to rounding otherwise)
    g = torch.Generator().manual_seed(m)
    k = 6
    z = torch.randn(16, k + 1, generator=g, dtype=dtype) * 2
    t = torch.randn(m, 16, k + 2, generator=g, dtype=dtype) * 4  # wider teacher: restricted to its first K columns
    y = torch.randint(0, k + 1, (16,), generator=g)
    temp, a = 4.0, 0.3
    out = build_loss("target_dampened", kd_weight=a, temperature=temp)(z, t, y)
    log_target = torch.logsumexp(F.log_softmax(t[:, :, :k] / temp, dim=2), dim=0) - math.log(m)  # (B, K)
    kl = F.kl_div(F.log_softmax(z[:, :k] / temp, dim=1), log_target, reduction="none", log_target=True).sum(1)
    ref = a * temp**2 * torch.where(y != k, kl, kl.new_zeros(())).sum() / 16
    if m == 1:
        assert torch.equal(out["loss_kd"], ref)
    else:
        tol = 1e-6 if dtype == torch.float32 else 1e-14
        torch.testing.assert_close(out["loss_kd"], ref, rtol=tol, atol=0)


def test_without_teachers_when_kd_weight_is_zero():
    loss = build_loss("target_dampened", kd_weight=0.0)
    assert loss.needs_teacher is False
    out = loss(Z, None, Y)
    assert out["loss_kd"].item() == 0.0
    torch.testing.assert_close(out["loss_ce"] + out["loss_ood"], loss(Z, T_LOGITS, Y)["loss_ce"] + out["loss_ood"])
    with pytest.raises(StillroomError, match="needs teacher logits"):
        build_loss("target_dampened")(Z, None, Y)


def test_shapes_are_checked():
    loss = build_loss("target_dampened")
    with pytest.raises(StillroomError, match="teachers have 1 classes"):
        loss(Z, T_LOGITS[:, :, :1], Y)
    with pytest.raises(StillroomError, match="targets must be in 0..2"):
        loss(Z, T_LOGITS, torch.tensor([0, 3]))
    with pytest.raises(StillroomError, match="sink must be the last"):
        build_loss("target_dampened", sink_index=1)(Z, T_LOGITS, Y)
    # a K+1 teacher is restricted to its K ID columns
    wide = torch.cat([T_LOGITS, torch.full((1, 2, 1), 50.0, dtype=torch.float64)], dim=2)
    torch.testing.assert_close(loss(Z, wide, Y)["loss_kd"], loss(Z, T_LOGITS, Y)["loss_kd"])


# --- end to end ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def merged_shapes(shapes_index, tmp_path_factory: pytest.TempPathFactory):
    """The teacher's 4 shape classes + drawn rings and bars as the OOD sink (class 4)."""
    other = build_shapes(tmp_path_factory.mktemp("other"), n_per_class=30, size=32, seed=5, kinds=("ring", "bar"))
    rows = [
        IndexRow(p, 0, "ood", str(s), g, h)
        for p, s, g, h in zip(other.paths, other.splits, other.groups, other.sha256, strict=True)
    ]
    ood = write_index(other.root, rows, ["ood"], other.recipe)
    return merge_with_sink(shapes_index, ood, tmp_path_factory.mktemp("merged") / "merged")


def test_end_to_end_k_plus_one_student(teacher_run, merged_shapes, tiny_config, tmp_path):
    from stillroom.evaluate.ood import ood_report
    from stillroom.evaluate.ood_table import ood_table_markdown, ood_table_rows
    from stillroom.pipeline import train
    from stillroom.softlabels.export import export_softlabels

    store = export_softlabels(teacher_run, merged_shapes.root, tmp_path / "store")
    assert store.num_classes == 4 and store.num_samples == len(merged_shapes)  # K-class teacher, no sink column
    raw = tiny_config(
        merged_shapes.root, "student_td", epochs=3,
        loss={"name": "target_dampened", "params": {"preset": "seed000"}},
        teachers={"cached": [str(store.path)]},
    )  # fmt: skip
    run = train(config_from_dict(raw), tmp_path / "student_td")
    assert read_json(run / "model.json")["num_classes"] == 5
    assert read_json(run / "alignment_check.json")["ok"]
    log = [line for line in (run / "log.jsonl").read_text().splitlines() if line]
    assert "loss_ood" in log[-1]

    report = ood_report(run, merged_shapes)
    assert report["has_sink"] and report["num_id_classes"] == 4
    assert set(report["scores"]) - {"knn", "ash", "scale", "rmd"} == {"msp", "maxlogit", "energy", "odin", "sink"}
    assert report["scores"]["sink"]["auroc"] > 0.5
    assert 0.0 <= report["ood_rejection_rate"] <= 1.0 and 0.0 <= report["closed_set"]["top1"] <= 1.0
    assert report["conventions"]["orientation"].startswith("higher score = more in-distribution")
    table = ood_table_markdown(ood_table_rows([report, report]))
    assert "| Sink 1 - p_sink (target-dampened) |" in table and "± 0.0000" in table

    # kd_weight = 0: the scratch + sink baseline trains without any teacher
    raw0 = tiny_config(merged_shapes.root, "student_sink_only", epochs=1, loss={"name": "target_dampened",
                       "params": {"kd_weight": 0.0}})  # fmt: skip
    run0 = train(config_from_dict(raw0), tmp_path / "student_sink_only")
    assert ood_report(run0, merged_shapes)["has_sink"]

    # the K-class teacher is evaluated on the same merged index: baselines only, no sink score
    teacher = ood_report(teacher_run, merged_shapes)
    assert not teacher["has_sink"] and "sink" not in teacher["scores"] and not teacher["trained_on_this_index"]

    from stillroom.cli.data import register

    app, data_app, build_app = typer.Typer(), typer.Typer(), typer.Typer()
    register(data_app, build_app, app)
    app.add_typer(data_app, name="data")
    grid = ["--odin-grid-T", "1", "--odin-grid-T", "1000", "--odin-grid-eps", "0", "--odin-grid-eps", "0.0014"]
    res = CliRunner().invoke(app, ["evaluate-ood", str(run), "--ood-split", "test", "--tune-odin", *grid])
    assert res.exit_code == 0, res.output
    saved = read_json(run / "ood_metrics.json")
    assert saved["splits"]["test"]["best"]["odin"]["tuned_on"] == "val"
    assert saved["odin_tuning"]["best"]["split"] == "val" and len(saved["odin_tuning"]["best"]["grid"]) == 4
    res = CliRunner().invoke(app, ["ood-table", str(run), "--markdown", str(tmp_path / "table.md")])
    assert res.exit_code == 0, res.output
    assert "ODIN" in (tmp_path / "table.md").read_text()
