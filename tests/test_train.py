"""The one training loop end to end on a tiny drawn-shapes dataset: teacher -> export -> check -> distil ->
evaluate; determinism; resume; cached vs online teachers; refusal of misaligned soft labels."""

from __future__ import annotations

import json
import shutil
from dataclasses import astuple

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stillroom._io import StillroomError
from stillroom.config import config_from_dict
from stillroom.data.dataset import Normalizer, load_images
from stillroom.data.index import IndexRow, write_index
from stillroom.distill.losses import build_loss
from stillroom.distill.teachers import CachedTeachers, OnlineTeachers
from stillroom.evaluate.runner import evaluate_run
from stillroom.pipeline import train
from stillroom.softlabels.export import export_softlabels


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def _interrupted_then_resumed(raw: dict, out, after: int):
    """Train ``raw`` into ``out``, stop it (KeyboardInterrupt) after epoch ``after``, resume it; the run directory."""

    def stop(phase, done, total, record=None):
        if phase == "epoch" and done == after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config_from_dict(raw), out, progress=stop)
    return train(config_from_dict(raw), out, resume=True)


def test_teacher_learns_and_writes_a_complete_run(teacher_run, shapes_index):
    for name in ("config.json", "config.yaml", "model.json", "state.json", "best.safetensors", "final.safetensors"):
        assert (teacher_run / name).is_file(), name
    m = _metrics(teacher_run)
    test = m["splits"]["test"]
    assert set(test) == {"best", "final"}  # REFERENCE 6: both best-validation and last-epoch weights reported
    assert test["best"]["top1"] > 0.6  # 4 classes: chance is 0.25
    assert len(test["best"]["per_class_f1"]) == 4 and "confused_pairs" in test["best"]
    assert (teacher_run / test["best"]["confusion_matrix_file"]).is_file()
    assert 1 <= m["best_epoch"] <= 6
    history = json.loads((teacher_run / "state.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 7))
    meta = json.loads((teacher_run / "model.json").read_text())
    assert meta["display_names"] == meta["classes"]  # drawn shapes have no species names


def test_distillation_end_to_end_and_cache_is_checked(teacher_run, shapes_index, tmp_path, tiny_config):
    store = export_softlabels(teacher_run, shapes_index.root, tmp_path / "store")
    assert store.logits.shape == (len(shapes_index), 4)
    raw = tiny_config(
        shapes_index.root,
        "kd",
        epochs=6,
        loss={"name": "kd", "params": {"kd_weight": 0.5, "temperature": 4.0}},
        teachers={"cached": [str(store.path)]},
    )
    run = train(config_from_dict(raw), tmp_path / "kd")
    report = json.loads((run / "alignment_check.json").read_text())
    assert report["ok"] is True
    assert _metrics(run)["splits"]["test"]["best"]["top1"] > 0.5  # clearly above chance (0.25)
    # model.json records the values the loss ran with, defaults filled (issue 17), not only what the config said
    loss_params = json.loads((run / "model.json").read_text())["loss_params"]
    assert loss_params["kd_weight"] == 0.5 and loss_params["temperature"] == 4.0
    assert loss_params["multi_teacher"] == "fused" and "label_smoothing" in loss_params


def test_bad_loss_parameter_fails_before_the_run_directory_exists(shapes_index, tmp_path, tiny_config):
    raw = tiny_config(shapes_index.root, "bad", loss={"name": "ce", "params": {"label_smoothing": 2.0}})
    with pytest.raises(StillroomError, match="label_smoothing"):
        train(config_from_dict(raw), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_training_refuses_a_store_of_another_index(teacher_run, shapes_index, tmp_path, tiny_config):
    store = export_softlabels(teacher_run, shapes_index.root, tmp_path / "store")
    # Same images, one row moved to the end: a reordered index.
    other = tmp_path / "reordered"
    shutil.copytree(shapes_index.root, other, ignore=shutil.ignore_patterns(".cache"))
    rows = [
        IndexRow(p, int(lab), n, str(s), g, h)
        for p, lab, n, s, g, h in zip(
            shapes_index.paths, shapes_index.labels, shapes_index.label_names, shapes_index.splits,
            shapes_index.groups, shapes_index.sha256, strict=True,
        )
    ]  # fmt: skip
    rows = rows[1:] + rows[:1]
    write_index(other, rows, shapes_index.classes, shapes_index.recipe)
    raw = tiny_config(
        other, "kd_bad", loss={"name": "kd", "params": {}}, teachers={"cached": [str(store.path)]}, epochs=1
    )
    with pytest.raises(StillroomError, match=r"row 0"):
        train(config_from_dict(raw), tmp_path / "kd_bad")
    assert not (tmp_path / "kd_bad" / "last.safetensors").exists()  # stopped before the first step
    assert json.loads((tmp_path / "kd_bad" / "alignment_check.json").read_text())["ok"] is False


def test_same_seed_twice_gives_identical_metrics_and_weights(shapes_index, tmp_path, tiny_config):
    runs = [train(config_from_dict(tiny_config(shapes_index.root, f"r{i}")), tmp_path / f"r{i}") for i in range(2)]
    a, b = (_metrics(r)["splits"]["test"] for r in runs)
    assert a["best"]["top1"] == b["best"]["top1"] and a["final"]["nll"] == b["final"]["nll"]
    wa, wb = (load_file(r / "final.safetensors") for r in runs)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bf16_autocast_only_where_asked_and_supported(teacher_run, shapes_index, tmp_path, tiny_config, monkeypatch):
    from stillroom.train import trainer

    cpu = torch.device("cpu")
    assert not trainer._use_bf16("off", cpu) and not trainer._use_bf16("auto", cpu)  # auto: bfloat16 on GPUs only
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert not trainer._use_bf16("bf16", cpu)  # emulated bfloat16 is slower than float32: fall back
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert trainer._use_bf16("bf16", cpu)
    # with native bfloat16 (forced here) the step runs under autocast; weights stay float32; model.json says so
    enabled, autocast = [], torch.autocast

    def spy(*args, **kwargs):
        enabled.append(kwargs.get("enabled"))
        return autocast(*args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    run = train(config_from_dict(tiny_config(shapes_index.root, "bf16", epochs=1, amp="bf16")), tmp_path / "bf16")
    assert enabled and all(enabled)
    assert _metrics(run)["splits"]["test"]["final"]["top1"] > 0.25  # learns (4 classes)
    assert {v.dtype for v in load_file(run / "final.safetensors").values() if v.is_floating_point()} == {torch.float32}
    assert json.loads((run / "model.json").read_text())["amp"] == "bf16"
    assert json.loads((teacher_run / "model.json").read_text())["amp"] == "off"


def test_resume_after_interruption_equals_uninterrupted(shapes_index, tmp_path, tiny_config, cut_after):
    raw = tiny_config(shapes_index.root, "res", epochs=3)
    full = train(config_from_dict(raw), tmp_path / "full")
    cut_after(raw, tmp_path / "cut", 2)
    with pytest.raises(StillroomError, match="--resume"):
        train(config_from_dict(raw), tmp_path / "cut")
    resumed = train(config_from_dict(raw), tmp_path / "cut", resume=True)
    wa, wb = load_file(full / "final.safetensors"), load_file(resumed / "final.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _metrics(full)["splits"]["test"]["final"]["nll"] == _metrics(resumed)["splits"]["test"]["final"]["nll"]


def test_weight_average_is_what_is_saved_and_resumes_exactly(shapes_index, tmp_path, tiny_config):
    raw = {**tiny_config(shapes_index.root, "ema", epochs=3), "ema": {"half_life": 0.5, "start_epoch": 1}}
    full = train(config_from_dict(raw), tmp_path / "full")
    final = load_file(full / "final.safetensors")
    trained = {k[6:]: v for k, v in load_file(full / "last.safetensors").items() if k.startswith("model.")}
    # the saved weights are the average, not the last step's weights (BN statistics are re-estimated for them)
    weights = [k for k, v in final.items() if v.is_floating_point() and "running" not in k]
    assert any(not torch.equal(final[k], trained[k]) for k in weights)
    assert _metrics(full)["splits"]["test"]["final"]["top1"] > 0.25  # learns (4 classes)

    resumed = _interrupted_then_resumed(raw, tmp_path / "cut", after=2)
    wb = load_file(resumed / "final.safetensors")
    assert all(torch.equal(final[k], wb[k]) for k in final)  # the average is part of the resumable state


@pytest.mark.parametrize(
    "ema, other, match",
    [
        ({"half_life": 1.0}, {"precise_bn": {"enabled": False}}, "precise_bn"),
        ({"half_life": 1.0, "start_epoch": 3}, {}, "start_epoch"),
        ({"half_life": -1.0}, {}, "half_life"),
    ],
)
def test_weight_average_config_is_checked(shapes_index, tiny_config, ema, other, match):
    with pytest.raises(StillroomError, match=match):
        config_from_dict({**tiny_config(shapes_index.root, "ema", epochs=3), "ema": ema, **other})


def test_online_and_cached_teachers_give_the_same_loss(teacher_run, shapes_index, tmp_path):
    store = export_softlabels(teacher_run, shapes_index.root, tmp_path / "store")
    cached = CachedTeachers([store.path], shapes_index)
    online = OnlineTeachers([teacher_run], shapes_index)
    images = load_images(shapes_index)
    rows = torch.arange(0, 40)
    x = torch.from_numpy(np.asarray(images[rows.numpy()]))  # un-augmented uint8 batch
    t_cached, t_online = cached(x, rows), online(x, rows)
    assert torch.allclose(t_cached, t_online, atol=1e-5)
    loss = build_loss("kd", kd_weight=0.7, temperature=4.0)
    student = torch.randn(40, 4)
    y = torch.from_numpy(shapes_index.labels[rows.numpy()])
    a, b = loss(student, t_cached, y), loss(student, t_online, y)
    assert torch.allclose(a["loss_kd"], b["loss_kd"], atol=1e-6)
    assert not any(p.requires_grad for r in online.runs for p in r.model.parameters())


def test_teacher_of_more_classes_exports_the_index_classes(
    teacher_run, shapes_index, tmp_path, tiny_config, class_subset
):
    keep = [3, 1]  # the teacher's classes 3 and 1, in this order, are the subset index's 0 and 1
    sub = class_subset(shapes_index, keep, tmp_path / "sub")
    store = export_softlabels(teacher_run, sub.root, tmp_path / "store")
    full = export_softlabels(teacher_run, shapes_index.root, tmp_path / "full")
    rows = [i for i, y in enumerate(shapes_index.labels) if int(y) in keep]
    assert store.logits.shape == (len(sub), 2)
    np.testing.assert_allclose(np.asarray(store.logits), np.asarray(full.logits)[rows][:, keep], rtol=1e-5, atol=1e-5)
    assert store.manifest["teacher"]["classes_selected"] == {"teacher_classes": 4, "by": "name"}
    raw = {
        **tiny_config(sub.root, "kd_sub", epochs=1),
        "loss": {"name": "kd"},
        "teachers": {"cached": [str(store.path)]},
    }
    assert (train(config_from_dict(raw), tmp_path / "kd") / "final.safetensors").is_file()  # a student takes it
    # a class the teacher never learned: refused, naming it
    rows = sub.rows()
    renamed = ["species_x", sub.classes[1]]
    write_index(sub.root, [IndexRow(r.path, r.label, renamed[r.label], *astuple(r)[3:]) for r in rows], renamed,
                sub.recipe)  # fmt: skip
    with pytest.raises(StillroomError, match="no output for 1 of the index's classes, e.g. \\['species_x'\\]"):
        export_softlabels(teacher_run, sub.root, tmp_path / "bad")
    # drawn another way (other padding): refused even though the teacher knows the classes
    write_index(sub.root, rows, sub.classes, {**sub.recipe, "padding": 0.5})
    with pytest.raises(StillroomError, match="padding"):
        export_softlabels(teacher_run, sub.root, tmp_path / "bad2")


def test_evaluate_refuses_other_index_without_flag(teacher_run, tmp_path):
    from stillroom.data.synthetic import build_shapes

    other = build_shapes(tmp_path / "other", n_per_class=10, size=32, num_classes=4, seed=5)
    # a copy: evaluating on another index rewrites the run's metrics.json, which other tests read as the teacher's
    run = shutil.copytree(teacher_run, tmp_path / "teacher")
    with pytest.raises(StillroomError, match="allow-other-index"):
        evaluate_run(run, index=other)
    out = evaluate_run(run, index=other, allow_other_index=True, splits=("test",), weights=("best",))
    assert out["index_hash"] == other.index_hash


def test_normalizer_uses_recipe_statistics(shapes_index):
    norm = Normalizer.from_recipe(shapes_index.recipe)
    images = load_images(shapes_index)
    x = norm(torch.from_numpy(np.asarray(images[shapes_index.split_indices("train")])))
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2


def test_progressive_resizing_trains_small_first_and_ends_full_size(shapes_index, tmp_path, tiny_config, monkeypatch):
    from stillroom.train import trainer

    sides, downscale = [], trainer.downscale

    def spy(x, side, binary):
        out = downscale(x, side, binary)
        sides.append((tuple(out.shape[-2:]), binary, set(out.unique().tolist()) <= {0, 255}))
        return out

    monkeypatch.setattr(trainer, "downscale", spy)
    raw = tiny_config(shapes_index.root, "prog", epochs=3)
    raw["schedule"]["progressive"] = {"size": 16, "epochs": 2}
    run = train(config_from_dict(raw), tmp_path / "prog")
    steps = len(shapes_index.split_indices("train")) // raw["batch_size"]
    assert sides == [((16, 16), True, True)] * (2 * steps)  # the first two epochs only, binary masks stay binary
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r.get("train_size") for r in log] == [16, 16, None]
    assert _metrics(run)["splits"]["test"]["final"]["top1"] > 0.25  # learns (4 classes), evaluated at 32 px
    # the low-resolution side must be below the data's (32 px here): an error before any epoch
    raw["schedule"]["progressive"] = {"size": 32, "epochs": 1}
    with pytest.raises(StillroomError, match="progressive.size 32 must be below the data's size 32"):
        train(config_from_dict(raw), tmp_path / "too_big")
    assert not (tmp_path / "too_big" / "log.jsonl").exists()


def test_cutmix_function_matching_online_resumes_exactly(teacher_run, shapes_index, tmp_path, tiny_config, monkeypatch):
    """mix.mode=cutmix with an online teacher: the teacher scores the very mixed batch the student trains on
    (function matching), the CE term takes both labels by pixel share, and an interrupted run resumes to the same
    weights (the mixing draws are a function of seed and epoch)."""
    from stillroom.train import trainer

    seen: list[tuple[torch.Tensor, float]] = []
    mix, call = trainer.mix_batch, OnlineTeachers.__call__
    teacher_inputs: list[torch.Tensor] = []

    def spy_mix(x, *args):
        out = mix(x, *args)
        seen.append((out[0].clone(), out[2]))
        return out

    def spy_teacher(self, x, rows, views=None):
        teacher_inputs.append(x.clone())
        return call(self, x, rows, views)

    monkeypatch.setattr(trainer, "mix_batch", spy_mix)
    monkeypatch.setattr(OnlineTeachers, "__call__", spy_teacher)
    raw = tiny_config(
        shapes_index.root,
        "fm",
        epochs=3,
        loss={"name": "kd", "params": {"kd_weight": 0.5, "temperature": 4.0}},
        teachers={"online": [str(teacher_run)]},
        mix={"mode": "cutmix", "alpha": 1.0},
    )
    full = train(config_from_dict(raw), tmp_path / "full")
    assert len(seen) == len(teacher_inputs) > 0 and any(lam < 1.0 for _, lam in seen)
    assert all(torch.equal(m, t) for (m, _), t in zip(seen, teacher_inputs, strict=True))
    assert _metrics(full)["splits"]["test"]["best"]["top1"] > 0.5  # learns (4 classes) from mixed images
    assert json.loads((full / "config.json").read_text())["mix"] == {"mode": "cutmix", "alpha": 1.0, "prob": 1.0}

    resumed = _interrupted_then_resumed(raw, tmp_path / "cut", after=1)
    wa, wb = load_file(full / "final.safetensors"), load_file(resumed / "final.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_mixing_refuses_cached_stores_and_old_runs_still_resume(shapes_index, tmp_path, tiny_config):
    from stillroom.train.trainer import config_differs

    raw = tiny_config(shapes_index.root, "mixc", teachers={"cached": ["some/store"]}, mix={"mode": "cutmix"})
    with pytest.raises(StillroomError, match="teachers.online"):
        config_from_dict(raw)
    # a run saved before the `mix` field existed is the same config as today's default (no mixing)
    cfg = config_from_dict(tiny_config(shapes_index.root, "old"))
    (tmp_path / "old").mkdir()
    saved = json.loads(cfg.model_dump_json())
    del saved["mix"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(saved))
    assert not config_differs(cfg, tmp_path / "old")
    other = config_from_dict({**tiny_config(shapes_index.root, "old"), "mix": {"mode": "mixup"}})
    assert config_differs(other, tmp_path / "old")
