"""``stillroom.runs``: the one reader of a run directory (issue 17). Each test uses a real trained run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from stillroom._io import StillroomError, atomic_write_json, read_json
from stillroom.data.synthetic import build_shapes
from stillroom.runs import ClassLayout, Run, index_sink, load_run, read_temperature, split_rows


def test_run_reads_config_layout_weights_and_caches_logits(teacher_run, shapes_index):
    run = Run(teacher_run)
    assert run.config is not None and run.config.name == "teacher" and run.val_split == "val"
    assert run.layout == ClassLayout(4, 4, None) and not run.layout.has_sink
    metrics = read_json(teacher_run / "metrics.json")
    assert run.weights_sha256("best") == metrics["weights"]["best"]["sha256"]
    assert run.load("best") is run.load("best")  # loaded once
    rows = shapes_index.split_indices("test")
    z = run.logits("best", rows, shapes_index, cache_key="test")
    assert z.shape == (len(rows), 4) and run.logits("best", rows, shapes_index, cache_key="test") is z
    # the same numbers as the evaluation that wrote metrics.json
    top1 = float((z.argmax(1) == shapes_index.labels[rows]).mean())
    assert top1 == pytest.approx(metrics["splits"]["test"]["best"]["top1"])
    assert run.trained_on(shapes_index) and run.state()["epoch"] == run.config.schedule.epochs
    with pytest.raises(StillroomError, match="weights must be one of"):
        run.weights_path("last")


def test_run_refuses_what_is_not_a_run_or_not_its_data(teacher_run, tmp_path):
    with pytest.raises(StillroomError, match="model.json: file not found"):
        Run(tmp_path)
    other = build_shapes(tmp_path / "other", n_per_class=4, size=32, seed=1, kinds=("ring", "bar"))
    with pytest.raises(StillroomError, match="classes differ"):
        Run(teacher_run).index(other)
    with pytest.raises(StillroomError, match="not there"):
        Run(teacher_run).index(tmp_path / "nowhere")


def test_class_layout_rule():
    sink_run = {"num_classes": 5, "classes": ["a", "b", "c", "d", "ood"], "recipe": {"sink_class": 4}}
    assert ClassLayout.from_meta(sink_run) == ClassLayout(5, 4, 4)
    # an older K+1 run whose recipe does not record the sink: a last class named "ood"
    assert ClassLayout.from_meta({**sink_run, "recipe": {}}) == ClassLayout(5, 4, 4)
    assert ClassLayout.from_meta({"num_classes": 4, "classes": list("abcd"), "recipe": {}}) == ClassLayout(4, 4, None)


def test_split_rows_and_index_sink(shapes_index):
    assert index_sink(shapes_index) is None
    rows = shapes_index.split_indices("test")
    id_rows, ood_rows = split_rows(shapes_index, "test", None)
    assert np.array_equal(id_rows, rows) and len(ood_rows) == 0
    id_rows, ood_rows = split_rows(shapes_index, "test", 3)  # treat class 3 as the sink label
    assert (shapes_index.labels[ood_rows] == 3).all() and (shapes_index.labels[id_rows] != 3).all()
    assert len(id_rows) + len(ood_rows) == len(rows)


def test_one_temperature_rule(teacher_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(teacher_run, copy, ignore=shutil.ignore_patterns("*.npy", "plots"))
    (copy / "calibration.json").unlink(missing_ok=True)
    assert Run(copy).temperature("best") == (1.0, None)
    sha = Run(copy).weights_sha256("best")
    atomic_write_json(copy / "calibration.json", {"weights": {"best": {"temperature": 1.5, "weights_sha256": sha}}})
    assert Run(copy).temperature("best") == (1.5, "calibration.json [best]")
    assert Run(copy).temperature("final") == (1.0, None)
    atomic_write_json(copy / "calibration.json", {"weights": {"best": {"temperature": 1.5, "weights_sha256": "0"}}})
    with pytest.raises(StillroomError, match="other weights"):
        Run(copy).temperature("best")  # retrained after calibrating: calibrate again
    assert read_temperature(copy, "best") == (1.5, "calibration.json [best]")  # no sha given: not checked
    (copy / "calibration.json").write_text(json.dumps({"temperature": float("nan")}).replace("NaN", "-1"))
    with pytest.raises(StillroomError, match="> 0"):
        Run(copy).temperature("best")


def test_load_run_is_the_run_objects_model(teacher_run):
    loaded = load_run(teacher_run, "final", device="cpu")
    assert loaded.weights_path.name == "final.safetensors" and not loaded.model.training
    assert loaded.classes == Run(teacher_run).classes


def test_same_weights_bytes_are_evaluated_once(teacher_run, shapes_index, tmp_path, monkeypatch):
    """``best`` and ``final`` are often one file's bytes (the last epoch was the best): logits and the BN check are
    computed once for both, and both get the same report. Other bytes are computed again."""
    import stillroom.evaluate.runner as runner_mod
    import stillroom.runs as runs_mod
    from stillroom.evaluate.runner import evaluate_run

    run_dir = tmp_path / "run"
    shutil.copytree(teacher_run, run_dir)
    shutil.copyfile(run_dir / "best.safetensors", run_dir / "final.safetensors")
    calls = {"logits": 0, "bn": 0}
    predict, bn_check = runs_mod.predict_logits, runner_mod._bn_check

    def counting_predict(*a, **k):
        calls["logits"] += 1
        return predict(*a, **k)

    def counting_bn(*a, **k):
        calls["bn"] += 1
        return bn_check(*a, **k)

    monkeypatch.setattr(runs_mod, "predict_logits", counting_predict)
    monkeypatch.setattr(runner_mod, "_bn_check", counting_bn)
    out = evaluate_run(run_dir, splits=("test",), index=shapes_index, plots=False)
    assert calls == {"logits": 2, "bn": 1}  # val (temperature) and test, once for both weights
    best, final = out["splits"]["test"]["best"], out["splits"]["test"]["final"]
    assert best["top1"] == final["top1"] and best["nll"] == final["nll"]
    assert out["weights"]["best"]["bn_check"] == out["weights"]["final"]["bn_check"]
    # distinct bytes: computed for each
    shutil.copyfile(teacher_run / "final.safetensors", run_dir / "final.safetensors")
    if read_json(teacher_run / "metrics.json")["weights"]["best"]["sha256"] != Run(run_dir).weights_sha256("final"):
        calls.update(logits=0, bn=0)
        evaluate_run(run_dir, splits=("test",), index=shapes_index, plots=False)
        assert calls == {"logits": 4, "bn": 2}
