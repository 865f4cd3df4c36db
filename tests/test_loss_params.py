"""Typed loss parameters (issue 17 item 2): one pydantic model per loss, presets, deprecated names still read,
resolved values, and the config check that runs before anything trains (``stillroom sweep`` included)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from stillroom._io import StillroomError
from stillroom.config import config_from_dict, load_config
from stillroom.distill.losses import (
    DEFAULT_TEMPERATURE,
    LOSSES,
    build_loss,
    check_loss_config,
    resolve_loss_params,
)
from stillroom.distill.losses.kd import KDLoss, KDParams
from stillroom.pipeline.sweep import plan_sweep, run_sweep

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _batch(b: int = 8, k: int = 5, m: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, k, generator=g, dtype=torch.float64) * 2,
        torch.randn(m, b, k, generator=g, dtype=torch.float64) * 3,
        torch.randint(0, k, (b,), generator=g),
    )


# --- every registered loss ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOSSES.list())
def test_params_are_strict_frozen_and_resolve_to_json(name):
    cls = LOSSES.get(name)
    assert cls.Params.model_config["extra"] == "forbid" and cls.Params.model_config["frozen"]
    loss = build_loss(name)
    with pytest.raises(Exception, match="frozen"):
        loss.params.__setattr__(next(iter(cls.Params.model_fields)), 0.0)
    resolved = resolve_loss_params(name, {})
    assert json.loads(json.dumps(resolved)) == resolved
    assert not set(resolved) & set(cls.Params.aliases), "deprecated names are read, never written"
    # resolving is idempotent, and the resolved values build the same loss with the same values
    assert resolve_loss_params(name, resolved) == resolved
    again = build_loss(name, **resolved)
    assert again.params == loss.params
    z, t, y = _batch()
    ctx = {"features": torch.randn(len(y), 16)} if cls.needs_features else {}  # supcon: pooled student features
    for key, value in loss(z, t, y, **ctx).items():
        assert torch.equal(again(z, t, y, **ctx)[key], value)


@pytest.mark.parametrize("name", LOSSES.list())
def test_unknown_parameter_is_named(name):
    with pytest.raises(StillroomError, match=rf"loss '{name}': unknown parameter\(s\) 'kd_wieght'; known: "):
        build_loss(name, kd_wieght=0.5)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("kd", {"kd_weight": 2.0}, r"loss 'kd': kd_weight must be in \[0, 1\], got 2.0"),
        ("kd", {"kd_weight": "0.5"}, r"kd_weight must be in \[0, 1\], got '0.5'"),  # no silent string coercion
        ("kd", {"kd_weight": True}, "kd_weight must be in"),
        ("kd", {"temperature": float("inf")}, "temperature must be a finite number > 0, got inf"),
        ("kd", {"temperature": -1}, "temperature must be a finite number > 0"),
        ("kd", {"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\), got 1.0"),
        ("kd", {"multi_teacher": "mean"}, r"multi_teacher must be one of \('fused', 'split', 'logits'\), got 'mean'"),
        ("kd", {"teacher_weights": [0.5, "0.5"]}, "teacher_weights must be non-negative and sum to 1"),
        ("kd", {"preset": "seed001"}, r"unknown parameter\(s\) 'preset'"),  # KD has no presets
        ("luminet", {"kd_scale": float("nan")}, "kd_scale must be a finite number >= 0, got nan"),
        ("luminet", {"eps": 0}, "eps must be a finite number > 0"),
        ("dkd", {"beta": -1.0, "temperature": 0.0}, r"beta must be .*; temperature must be"),  # all at once
        ("target_dampened", {"ood_weight": -1.0}, "ood_weight must be a finite number >= 0"),
    ],
)
def test_bad_values_name_the_loss_and_the_parameter(name, params, match):
    with pytest.raises(StillroomError, match=match):
        build_loss(name, **params)


def test_one_default_temperature():
    assert DEFAULT_TEMPERATURE == 4.0
    assert build_loss("kd").params.temperature == DEFAULT_TEMPERATURE
    assert build_loss("luminet").params.temperature == DEFAULT_TEMPERATURE
    # the presets that cite a T = 4 source (mdistiller DKD, seed 000 §2.4) use the same constant
    assert build_loss("dkd").params.temperature == DEFAULT_TEMPERATURE
    assert build_loss("target_dampened").params.temperature == DEFAULT_TEMPERATURE


def test_a_loss_takes_its_params_model():
    p = KDParams(kd_weight=0.3, temperature=2.0)
    assert KDLoss(p).params is p
    assert build_loss("kd", kd_weight=0.3, temperature=2.0).params == p
    with pytest.raises(StillroomError, match="pass one KDParams or keyword parameters"):
        KDLoss(p, kd_weight=0.5)
    with pytest.raises(StillroomError, match="loss 'dkd': pass one DKDParams or keyword parameters, got KDParams"):
        LOSSES.get("dkd")(p)


# --- presets and deprecated names ---------------------------------------------------------------------------------


def test_dkd_presets_resolve_to_their_own_form():
    ref = resolve_loss_params("dkd", {})
    assert ref == {
        "preset": "reference", "ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0,
        "warmup_epochs": 20.0, "multi_teacher": "fused", "teacher_weights": None,
    }  # fmt: skip
    s01 = resolve_loss_params("dkd", {"preset": "seed001", "beta": 5.0})
    assert s01 == {
        "preset": "seed001", "kd_weight": 0.5, "beta": 5.0, "temperature": 2.0, "warmup_epochs": 0.0,
        "multi_teacher": "fused", "teacher_weights": None,
    }  # fmt: skip
    assert build_loss("dkd", preset="seed001").params.ce_tckd_weights == (0.5, 0.5)


def test_dkd_parameterisation_is_read_as_preset():
    z, t, y = _batch()
    with pytest.warns(FutureWarning, match="'parameterisation' is deprecated and read as 'preset'"):
        old = build_loss("dkd", parameterisation="seed001", beta=5.0)
    new = build_loss("dkd", preset="seed001", beta=5.0)
    assert old.params == new.params
    for key, value in new(z, t, y).items():
        assert torch.equal(old(z, t, y)[key], value)
    with pytest.warns(FutureWarning), pytest.raises(StillroomError, match="preset must be one of"):
        build_loss("dkd", parameterisation="mdistiller")
    with pytest.warns(FutureWarning), pytest.raises(StillroomError, match="deprecated name of preset"):
        build_loss("dkd", parameterisation="seed001", preset="seed001")


def test_luminet_kd_weight_is_read_as_kd_scale():
    z, t, y = _batch()
    with pytest.warns(FutureWarning, match="'kd_weight' is deprecated and read as 'kd_scale'"):
        old = build_loss("luminet", kd_weight=578.0, warmup_epochs=3)
    new = build_loss("luminet", kd_scale=578.0, warmup_epochs=3)
    assert old.params == new.params
    assert torch.equal(old(z, t, y, epoch=1)["loss_kd"], new(z, t, y, epoch=1)["loss_kd"])
    with pytest.warns(FutureWarning):
        resolved = resolve_loss_params("luminet", {"kd_weight": 50})
    assert resolved["kd_scale"] == 50.0 and "kd_weight" not in resolved
    with pytest.warns(FutureWarning), pytest.raises(StillroomError, match="kd_scale must be a finite number >= 0"):
        build_loss("luminet", kd_weight=-1.0)


def test_finished_runs_config_with_old_names_still_loads():
    # the loss section of a config.json written before the renames (crossview sweep, openset students)
    old = {
        "dkd": {"parameterisation": "reference", "ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0,
                "warmup_epochs": 2, "multi_teacher": "fused"},
        "luminet": {"kd_weight": 578.0, "temperature": 4.0, "eps": 1e-5, "warmup_epochs": 2, "multi_teacher": "fused"},
        "target_dampened": {"recipe": "seed000"},
    }  # fmt: skip
    for name, params in old.items():
        cfg = config_from_dict({"data": {"index": "x"}, "loss": {"name": name, "params": params},
                                "teachers": {"cached": ["store"]}})  # fmt: skip
        assert cfg.loss.params == params  # config.py keeps the raw mapping; the loss layer reads it
        with pytest.warns(FutureWarning):
            resolved = check_loss_config(cfg, source="config.json")
        assert resolved == resolve_loss_params(name, {LOSSES.get(name).Params.aliases.get(k, k): v
                                                      for k, v in params.items()})  # fmt: skip


# --- check_loss_config and the repository's configs --------------------------------------------------------------


def _cfg(loss: dict, teachers: list[str] | None = None):
    return config_from_dict({"data": {"index": "x"}, "loss": loss, "teachers": {"cached": teachers or []}})


def test_check_loss_config_names_source_and_key():
    good = _cfg({"name": "kd", "params": {"kd_weight": 0.3}}, ["store"])
    assert check_loss_config(good, "a.yaml")["kd_weight"] == 0.3
    for loss, match in (
        ({"name": "kd", "params": {"kd_weight": 2.0}}, r"^a\.yaml: loss 'kd': kd_weight must be in \[0, 1\]"),
        ({"name": "kd", "params": {"kd_wieght": 0.3}}, r"^a\.yaml: loss 'kd': unknown parameter\(s\) 'kd_wieght'"),
        ({"name": "hinton"}, r"^a\.yaml: unknown loss 'hinton'; known: ce, dkd"),
    ):
        with pytest.raises(StillroomError, match=match):
            check_loss_config(_cfg(loss, ["store"]), "a.yaml")
    with pytest.raises(StillroomError, match=r"^a\.yaml: loss 'kd' needs teachers"):
        check_loss_config(_cfg({"name": "kd"}), "a.yaml")
    with pytest.raises(StillroomError, match=r"^a\.yaml: loss 'ce' ignores teachers"):
        check_loss_config(_cfg({"name": "ce"}, ["store"]), "a.yaml")
    # target-dampened with kd_weight = 0 (scratch + sink) trains without teachers
    assert check_loss_config(_cfg({"name": "target_dampened", "params": {"kd_weight": 0.0}}))["kd_weight"] == 0.0


def test_repository_configs_use_current_names_and_valid_params():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated name left in configs/
        for path in sorted(CONFIGS.rglob("*.yaml")):
            raw = yaml.safe_load(path.read_text())
            if "variants" in raw:  # a sweep file: every cell validated, loss and teachers included
                assert plan_sweep(path, "unused-out-dir"), path
            elif "loss" in raw:  # teachers of some students are set by the benchmark scripts
                cfg = load_config(path)
                resolve_loss_params(cfg.loss.name, cfg.loss.params)


# --- stillroom sweep: a bad variant fails before anything trains --------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"loss.params.kd_weight": 2.0}, r"variant 'bad', seed 0\]: loss 'kd': kd_weight must be in \[0, 1\]"),
        ({"loss.params.kd_wieght": 0.3}, r"variant 'bad', seed 0\]: loss 'kd': unknown parameter\(s\) 'kd_wieght'"),
        ({"loss.params": {"kd_weight": 0.5}, "teachers.cached": []}, r"loss 'kd' needs teachers"),
    ],
)
def test_sweep_with_a_bad_loss_variant_fails_before_training(bad, match, tiny_config, tmp_path, monkeypatch):
    import stillroom.pipeline.sweep as sweep_mod

    base = tiny_config(tmp_path / "index", "base", epochs=1, loss={"name": "kd", "params": {"kd_weight": 0.5}},
                       teachers={"cached": [str(tmp_path / "store")]})  # fmt: skip
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    # the good variant comes first: without the plan-time check it would train before the bad one fails
    spec = {"base": "base.yaml", "seeds": [0, 1], "variants": {"good": {}, "bad": bad}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))

    def no_training(*args, **kwargs):
        raise AssertionError("a run was trained although the sweep has a bad variant")

    monkeypatch.setattr(sweep_mod, "_train_one", no_training)
    out = tmp_path / "out"
    with pytest.raises(StillroomError, match=match):
        plan_sweep(tmp_path / "sweep.yaml", out)
    with pytest.raises(StillroomError, match=match):
        run_sweep(tmp_path / "sweep.yaml", out)
    assert not out.exists(), "no run directory (nor the sweep's own) may be created"


def test_losses_command_lists_what_each_loss_is_and_its_defaults():
    import json as _json

    from typer.testing import CliRunner

    from stillroom.cli import app
    from stillroom.distill.losses import describe_loss

    info = describe_loss("logitnorm")
    assert info["summary"].startswith("LogitNorm (Wei et al., ICML 2022)") and "\n" not in info["summary"]
    assert info["needs_teacher"] and info["params"]["tau"] == pytest.approx(0.04)
    assert not describe_loss("ce")["needs_teacher"]
    res = CliRunner().invoke(app, ["losses", "l*", "--params"], terminal_width=400)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    names = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert names == ["logit_mse", "logitnorm", "luminet"]
    luminet = lines.index(next(line for line in lines if line.startswith("luminet ")))
    assert "[teachers]" in lines[luminet] and "seed 002" in lines[luminet]
    assert _json.loads(lines[luminet + 1]) == resolve_loss_params("luminet", {})
