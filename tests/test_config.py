"""Typed configs: unknown keys and wrong types are errors that name the field; overrides; no code execution."""

import pytest

from stillroom._io import StillroomError
from stillroom.config import apply_overrides, config_from_dict, load_config


def test_defaults_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\ndata: {index: some/dir}\nschedule: {epochs: 3}\n")
    cfg = load_config(p, ["schedule.epochs=5", "loss.params.kd_weight=0.3", "loss.name=kd"])
    assert cfg.schedule.epochs == 5 and cfg.loss.name == "kd" and cfg.loss.params == {"kd_weight": 0.3}
    assert cfg.model.name == "mobilenet_v3_small" and cfg.precise_bn.enabled


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"data": {"index": "x"}, "batch_sise": 3}, "batch_sise"),
        ({"data": {"index": "x"}, "schedule": {"epochs": "many"}}, "schedule.epochs"),
        ({"data": {"index": "x"}, "optim": {"name": "lbfgs"}}, "optim.name"),
        ({"name": "../escape", "data": {"index": "x"}}, "name"),
        ({}, "data"),
    ],
)
def test_bad_fields_are_named(raw, field):
    with pytest.raises(StillroomError, match=field.replace(".", r"\.")):
        config_from_dict(raw, source="c.yaml")


def test_amp_off_as_yaml_reads_it(tmp_path):
    """YAML 1.1 reads a bare `off` as false; `amp: off` and `--set amp=off` mean float32, other values stay errors."""
    p = tmp_path / "c.yaml"
    p.write_text("name: a\ndata: {index: x}\namp: off\n")
    assert load_config(p).amp == "off"
    assert load_config(p, ["amp=bf16"]).amp == "bf16" and load_config(p, ["amp=off"]).amp == "off"
    with pytest.raises(StillroomError, match="amp"):
        load_config(p, ["amp=true"])


def test_yaml_cannot_construct_python_objects(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\ndata: {index: x}\n")
    with pytest.raises(StillroomError, match="not valid YAML"):
        load_config(p)


def test_override_syntax_error():
    with pytest.raises(StillroomError, match="key=value"):
        apply_overrides({}, ["no_equals"])


def test_set_reads_exponent_floats_as_numbers():
    # PyYAML (YAML 1.1) reads "1e-5" as a string; a loss parameter would then fail its own numeric check
    from stillroom.config import apply_overrides

    out = apply_overrides({}, ["loss.params.eps=1e-5", "optim.lr=5E-4", "name=1e5x"])
    assert out["loss"]["params"]["eps"] == 1e-5 and out["optim"]["lr"] == 5e-4 and out["name"] == "1e5x"


def test_progressive_resizing_leaves_the_last_epoch_at_full_size():
    raw = {"data": {"index": "x"}, "schedule": {"epochs": 4, "progressive": {"size": 32, "epochs": 3}}}
    assert config_from_dict(raw).schedule.progressive.epochs == 3
    raw["schedule"]["progressive"]["epochs"] = 4
    with pytest.raises(StillroomError, match="schedule: .*must be below epochs"):
        config_from_dict(raw, source="c.yaml")


def test_every_committed_run_config_validates():
    """Each run config under configs/ (sweep files, with `base:` / `variants:`, excepted) loads: a typo or a field
    combination the schema refuses (e.g. mixing with cached stores) fails here, not hours into a benchmark."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1] / "configs"
    checked = 0
    for path in sorted(root.rglob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "variants" in raw or "base" in raw or "grid" in raw:
            continue
        load_config(path)
        checked += 1
    assert checked >= 10
