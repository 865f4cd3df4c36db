"""``stillroom sweep``: variants x seeds, one directory per run, resumable, summarised in results_summary.csv."""

from __future__ import annotations

import csv
import json
import re

import pytest
import typer
import yaml
from typer.testing import CliRunner

from stillroom._io import StillroomError
from stillroom.config import config_from_dict
from stillroom.pipeline.sweep import SUMMARY_COLUMNS, plan_sweep, run_sweep


def _write_sweep(tmp_path, shapes_index, tiny_config, **spec_extra):
    base = tiny_config(shapes_index.root, "base", epochs=1, precise_bn={"max_images": 64})
    (tmp_path / "cfg").mkdir(exist_ok=True)
    (tmp_path / "cfg" / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {
        "name": "tiny",
        "base": "cfg/base.yaml",  # relative to the sweep file
        "seeds": [0, 1],
        "variants": {
            "plain": {},
            # a mapping value and a scalar value, as dotted keys
            "slow": {"optim": {"name": "adamw", "lr": 0.001, "weight_decay": 0.0}, "batch_size": 24},
        },
        **spec_extra,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_sweep_runs_resumes_skips_and_summarises(shapes_index, tiny_config, tmp_path, monkeypatch):
    sweep = _write_sweep(tmp_path, shapes_index, tiny_config)
    out = tmp_path / "out"
    plan = plan_sweep(sweep, out)
    assert [(r.variant, r.seed) for r in plan] == [("plain", 0), ("plain", 1), ("slow", 0), ("slow", 1)]
    assert plan[2].config["optim"]["lr"] == 0.001 and plan[2].config["batch_size"] == 24
    assert plan[3].config["seed"] == 1 and plan[3].run_dir == out / "slow" / "seed1"

    # an interrupted run: its only epoch finished, evaluation never ran (no metrics.json)
    from stillroom.pipeline import train

    def stop(phase, done, total, record=None):
        if phase == "epoch":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config_from_dict(plan[0].config), plan[0].run_dir, progress=stop)
    assert not (plan[0].run_dir / "metrics.json").exists()

    messages = []
    summary = run_sweep(sweep, out, log=messages.append)
    rows = _rows(summary)
    assert [(r["variant"], int(r["seed"])) for r in rows] == [("plain", 0), ("plain", 1), ("slow", 0), ("slow", 1)]
    assert list(rows[0]) == list(SUMMARY_COLUMNS)
    for row, run in zip(rows, plan, strict=True):
        for name in ("config.json", "config.yaml", "metrics.json", "log.jsonl", "calibration.json", "sweep_run.json"):
            assert (run.run_dir / name).is_file(), (run.run_dir, name)
        metrics = json.loads((run.run_dir / "metrics.json").read_text())
        test = metrics["splits"]["test"]["best"]
        assert float(row["test_macro_f1"]) == pytest.approx(test["macro_f1"])
        assert float(row["test_ece"]) == pytest.approx(test["calibration"]["before"]["ece"])
        assert float(row["test_ece_ts"]) == pytest.approx(test["calibration"]["after"]["ece"])
        assert float(row["temperature"]) == pytest.approx(test["calibration"]["temperature"])
        assert float(row["wall_seconds"]) > 0 and row["final_test_top1"] != ""
        assert json.loads((run.run_dir / "config.json").read_text())["seed"] == run.seed
    # the interrupted run continued from its finished epoch instead of training it again
    assert len((plan[0].run_dir / "log.jsonl").read_text().splitlines()) == 1

    # re-running trains nothing and rewrites the same summary
    import stillroom.train.trainer as trainer

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(trainer, "train", no_training)
    messages.clear()
    assert _rows(run_sweep(sweep, out, log=messages.append)) == rows
    assert sum(m.startswith("skip") for m in messages) == 4

    # the same through the command line
    from stillroom.cli.evaluate import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["sweep", str(sweep), "--out", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert len(re.findall(r"^skip (plain|slow) seed", result.output, flags=re.M)) == 4
    assert _rows(summary) == rows


@pytest.mark.parametrize(
    "change,match",
    [
        ({"colour": "blue"}, "colour"),  # unknown key
        ({"seeds": []}, "seeds"),
        ({"seeds": [1, 1]}, "distinct"),
        ({"variants": {"bad/name": {}}}, "plain directory name"),
        ({"variants": {"v": {"seed": 3}}}, "set by the sweep"),
        ({"variants": {"v": {"schedule.epochs": -1}}}, "schedule.epochs"),  # checked before anything trains
    ],
)
def test_invalid_sweep_files_name_the_field(change, match, shapes_index, tiny_config, tmp_path):
    sweep = _write_sweep(tmp_path, shapes_index, tiny_config)
    spec = yaml.safe_load(sweep.read_text())
    spec.update(change)
    sweep.write_text(yaml.safe_dump(spec))
    with pytest.raises(StillroomError, match=match):
        run_sweep(sweep, tmp_path / "out")
    assert not (tmp_path / "out" / "v").exists()


@pytest.mark.slow
def test_parallel_sweep_matches_serial(shapes_index, tiny_config, tmp_path):
    sweep = _write_sweep(tmp_path, shapes_index, tiny_config)
    spec = yaml.safe_load(sweep.read_text())
    spec["variants"] = {"plain": {}}
    sweep.write_text(yaml.safe_dump(spec))
    import os

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # what each of the 2 workers uses
    try:
        serial = _rows(run_sweep(sweep, tmp_path / "serial"))
    finally:
        torch.set_num_threads(threads)
    parallel = _rows(run_sweep(sweep, tmp_path / "parallel", jobs=2))
    metrics = ("test_top1", "test_macro_f1", "test_nll", "test_ece", "temperature")
    assert [[r[m] for m in metrics] for r in serial] == [[r[m] for m in metrics] for r in parallel]
    assert {
        json.loads((tmp_path / "parallel" / "plain" / f"seed{s}" / "sweep_run.json").read_text())["pid"] for s in (0, 1)
    } != {os.getpid()}
