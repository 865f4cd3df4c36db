"""The demo's run configs carry its budget's training recipe (augmentation, batch size) to every model."""

from __future__ import annotations

from pathlib import Path

import pytest

from stillroom._io import StillroomError
from stillroom.config import config_from_dict
from stillroom.pipeline.budgets import (
    BEST_BUDGET,
    BUDGETS,
    DEMO_BUDGET,
    FUSED_BUDGET,
    PATIENT_BUDGET,
    QUICK_BUDGET,
    run_config,
    student_config,
    student_name,
    teacher_config,
)


@pytest.mark.parametrize("budget", list(BUDGETS.values()), ids=list(BUDGETS))
def test_budget_recipe_reaches_every_config(budget):
    raw = run_config("t", Path("data"), "resnet18", 3, 0, budget, eval_every=budget["teacher_eval_every"])
    cfg = config_from_dict(raw)
    assert cfg.augment == budget["augment"] and cfg.batch_size == budget["batch_size"]
    assert cfg.eval_every == budget["teacher_eval_every"] and cfg.schedule.epochs == 3


def test_patient_budget_is_the_demo_recipe_trained_longer():
    """Only the schedule changes (benchmarks/block_patient.sh measured it): same models, data, loss and recipe; the
    teacher trains in float32, as it was measured."""
    changed = {k for k in DEMO_BUDGET if PATIENT_BUDGET[k] != DEMO_BUDGET[k]}
    assert changed == {
        "teacher_epochs", "student_epochs", "replay_views", "teacher_eval_every", "teacher_amp", "wall_minutes",
        "tiers",  # a fixed schedule: nothing to plan
        "train_styles",  # the artwork only, as before the demo added the icons: the icons stay its held-out style
    }  # fmt: skip
    assert PATIENT_BUDGET["teacher_epochs"] > DEMO_BUDGET["teacher_epochs"]
    assert PATIENT_BUDGET["student_epochs"] > DEMO_BUDGET["student_epochs"]
    assert PATIENT_BUDGET["replay_views"] > DEMO_BUDGET["replay_views"]


def test_fused_budget_is_the_demo_recipe_with_three_longer_teachers_and_longer_students():
    """As benchmarks/pretrained_teacher.sh measured it (EPOCHS=80 EPOCHS_S=80): the demo's teacher config for seeds
    0-2, 80 epochs validated at the end, and the demo's student config, 80 epochs validated at the end, from every
    teacher's store; the demo's data (every style)."""
    changed = {k for k in DEMO_BUDGET if FUSED_BUDGET[k] != DEMO_BUDGET[k]}
    assert changed == {
        "teacher_seeds", "teacher_epochs", "teacher_eval_every", "student_epochs", "student_eval_every", "tiers",
        "wall_minutes",
    }  # fmt: skip
    assert FUSED_BUDGET["teacher_seeds"] == (0, 1, 2) and FUSED_BUDGET["student_epochs"] == 80
    teachers = [
        config_from_dict(teacher_config(Path("data"), s, FUSED_BUDGET["teacher_epochs"], FUSED_BUDGET))
        for s in FUSED_BUDGET["teacher_seeds"]
    ]
    assert [t.seed for t in teachers] == [0, 1, 2] and {t.schedule.epochs for t in teachers} == {80}
    assert {t.eval_every for t in teachers} == {80}  # validated once, at the end, as the benchmark's EPOCHS did
    stores = [Path(f"stores/t{s}") for s in FUSED_BUDGET["teacher_seeds"]]
    student = config_from_dict(
        student_config(
            "s", Path("data"), 80, FUSED_BUDGET, loss=FUSED_BUDGET["student_loss"], teachers={"cached": stores}
        )
    )
    assert student.schedule.epochs == 80 and student.eval_every == 80
    assert student.loss.params["multi_teacher"] == "fused" and len(student.teachers.cached) == 3


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"budget_name": "forever"}, "unknown budget 'forever'"),
        ({"quick": True, "budget_name": "patient"}, "contradict"),
        ({"minutes": -1.0}, "minutes must be >= 0"),
        ({"student": "resnet9000"}, "unknown student model 'resnet9000'; choose one of .*regnetx_002"),
        ({"budget_name": "best", "student": "regnetx_002"}, "imagenet weights, which exist for efficientnet_lite0"),
    ],
)
def test_demo_refuses_a_bad_budget_before_any_work(kwargs, match, tmp_path):
    from stillroom._io import StillroomError
    from stillroom.pipeline.demo import run_demo

    with pytest.raises(StillroomError, match=match):
        run_demo(tmp_path / "demo", **kwargs)
    assert not (tmp_path / "demo").exists()


def test_demo_says_when_a_students_network_has_no_measured_learning_rate(capsys, tmp_path):
    """``--student`` with a network that has no STUDENT_LR entry says so before any work (here the run then stops at a
    bad ``jobs``); a network with one says nothing of it."""
    from stillroom._io import StillroomError
    from stillroom.pipeline.demo import run_demo

    for student, noted in (("efficientnet_b0", True), ("regnetx_002", False)):
        with pytest.raises(StillroomError, match="jobs must be >= 1"):
            run_demo(tmp_path / "demo", student=student, jobs=0)
        out = " ".join(capsys.readouterr().err.split())  # the console writes to stderr
        assert ("no learning rate measured for efficientnet_b0" in out) is noted, out
        assert ("KD-over-scratch figure may measure the lr" in out) is noted
    assert not (tmp_path / "demo").exists()


def test_override_is_validated():
    raw = run_config(
        "s", Path("data"), "mobilenet_v3_small", 3, 0, {**DEMO_BUDGET, "augment": "restyle", "batch_size": 64}
    )
    cfg = config_from_dict(raw)
    assert (cfg.augment, cfg.batch_size) == ("restyle", 64)
    with pytest.raises(Exception, match="augment"):
        config_from_dict(run_config("s", Path("data"), "resnet18", 3, 0, {**DEMO_BUDGET, "augment": "sparkles"}))


@pytest.mark.parametrize("views", [0, 2])
def test_demo_soft_labels_are_what_its_kd_student_trains_on(teacher_run, shapes_index, tmp_path, views):
    """The demo's KD targets: replay stores of V restyled views (or clean logits at V = 0), aligned with the index
    and with the views the KD student re-creates; the student's own config trains on them."""
    import shutil

    from stillroom._io import StillroomError
    from stillroom.pipeline import train
    from stillroom.pipeline.demo import STUDENT_SEED, _soft_labels
    from stillroom.softlabels.check import require_aligned

    run = Path(shutil.copytree(teacher_run, tmp_path / "teacher"))
    budget = {**QUICK_BUDGET, "replay_views": views, "augment": "restyle", "batch_size": 32}
    timings: dict[str, float] = {}
    stores, report = _soft_labels([run], shapes_index, budget, tmp_path / "alignment_check.json", timings)
    assert report["ok"] and (tmp_path / "alignment_check.json").is_file() and f"export_{run.name}" in timings
    assert stores[0].views == views and len(stores[0]) == len(shapes_index)
    if views:
        assert report["replay"] == {"augment": "restyle", "augment_seed": STUDENT_SEED}
        with pytest.raises(StillroomError, match="replay mismatch"):  # a student with another seed is refused
            require_aligned(stores, shapes_index, replay={"augment": "restyle", "augment_seed": STUDENT_SEED + 1})
    raw = run_config(
        "kd",
        shapes_index.root,
        "mobilenet_v3_small",
        1,
        STUDENT_SEED,
        budget,
        eval_every=1,
        loss={"name": "kd", "params": {"kd_weight": 0.5, "temperature": 4.0}},
        teachers={"cached": [str(s.path) for s in stores]},
        precise_bn={"max_images": 64},
    )
    out = train(config_from_dict(raw), tmp_path / "kd")
    assert (out / "metrics.json").is_file()


def test_demo_reuses_a_finished_run_only_with_the_same_config(shapes_index, tiny_config, tmp_path):
    """Re-running the demo after its recipe changed must not report a stale run: the old run is moved aside (kept)
    and the new recipe trained; an unchanged finished run is reused."""
    from stillroom.pipeline.demo import _train

    raw = tiny_config(shapes_index.root, "student", epochs=1)
    runs, configs = tmp_path / "runs", tmp_path / "configs"
    first, _ = _train(raw, configs, runs)
    assert (first / "metrics.json").is_file()
    again, seconds = _train(raw, configs, runs)
    assert again == first and seconds == 0.0  # reused
    changed, seconds = _train({**raw, "seed": 1}, configs, runs)
    assert changed == first and seconds > 0.0  # trained again under the same name
    assert read_seed(changed) == 1 and read_seed(runs / "student.old") == 0  # the old run is kept beside it
    _train({**raw, "seed": 2}, configs, runs)
    assert read_seed(runs / "student.old-2") == 1


def read_seed(run: Path) -> int:
    import json

    return json.loads((run / "config.json").read_text())["seed"]


def test_demo_trains_runs_side_by_side_and_reports_every_failure(shapes_index, tiny_config, tmp_path):
    """jobs=2: runs train at once in spawned processes and finish as they would one after the other; a run that
    fails does not stop the others, and the error names it; finished runs are reused without a process. Three runs
    on two jobs: the third trains in a round of its own after the first two (``_rounds``), and still trains when one
    of the first round failed. (One call for all of it: each pool start costs seconds of spawning and importing
    torch.)"""
    from stillroom._io import StillroomError
    from stillroom.pipeline.demo import _train_all

    runs, configs = tmp_path / "runs", tmp_path / "configs"
    raws = [tiny_config(shapes_index.root, f"r{seed}", epochs=1, seed=seed) for seed in (0, 1)]
    bad = {
        **tiny_config(shapes_index.root, "bad", epochs=1),
        "loss": {"name": "kd", "params": {"kd_weight": 0.5, "temperature": 4.0}},
        "teachers": {"cached": [str(tmp_path / "no_such_store")]},
    }
    with pytest.raises(StillroomError, match=r"bad .*no_such_store") as err:
        _train_all([raws[0], bad, raws[1]], configs, runs, jobs=2)
    assert str(err.value).count("\n  ") == 1  # one failure listed: the other runs did not fail
    for raw in raws:  # the other runs finished, each with its own config
        run_dir = runs / raw["name"]
        assert (run_dir / "metrics.json").is_file() and read_seed(run_dir) == raw["seed"]
    done = _train_all(raws, configs, runs, jobs=2)
    assert {name: sec for name, (_, sec) in done.items()} == {"r0": 0.0, "r1": 0.0}  # reused, nothing trained
    assert all(run_dir == runs / name for name, (run_dir, _) in done.items())


def test_demo_rounds_give_a_last_partial_round_the_cores_the_idle_processes_would_leave():
    """Full rounds of ``jobs`` runs share one queue with an even share of the cores each; the runs left over (fewer
    than ``jobs``) train after them on the cores shared among themselves, so no core idles; counts only."""
    from stillroom.pipeline.demo import _rounds

    assert _rounds(3, 2, 2) == [(2, 2, 1), (1, 1, 2)]  # BEST_BUDGET's three teachers: the third on both cores
    assert _rounds(2, 2, 2) == [(2, 2, 1)]  # the demo's two students: unchanged
    assert _rounds(5, 2, 2) == [(4, 2, 1), (1, 1, 2)]
    assert _rounds(7, 3, 6) == [(6, 3, 2), (1, 1, 6)]
    assert _rounds(5, 3, 6) == [(3, 3, 2), (2, 2, 3)]
    assert _rounds(1, 2, 2) == [(1, 1, 2)]  # fewer runs than jobs: one round of them all
    assert _rounds(3, 4, 1) == [(3, 3, 1)]  # never below one thread
    assert sum(count for count, _, _ in _rounds(11, 4, 8)) == 11


def _fake_style_packages(tmp_path, monkeypatch):
    """Both style packages (artwork sdist, icons tarball) as fakes in the offline caches, their pins patched."""
    import shutil

    import stillroom.data.style_artwork as sa
    import stillroom.data.style_icons as si
    from stillroom.data.fetch import npm_tarball_name, sri_sha512
    from test_style_artwork import _sdist
    from test_style_icons import _tarball

    sdist = _sdist(tmp_path / "pokemon-9.9.tar.gz")
    art_pin = ("pokemon==9.9", sri_sha512(sdist))
    cached = tmp_path / "cache" / "pypi" / "pokemon-9.9.tar.gz"  # where the demo looks offline (--tarball given)
    cached.parent.mkdir(parents=True)
    shutil.copy(sdist, cached)
    real_art = sa.build_style_artwork
    monkeypatch.setattr(sa, "POKEMON_ARTWORK", art_pin)  # the fake sdist's pin stands in for the real one
    monkeypatch.setattr(sa, "default_cache_dir", lambda: tmp_path / "cache" / "npm")
    monkeypatch.setattr(sa, "build_style_artwork", lambda *a, **k: real_art(*a, package=art_pin, **k))
    tgz = _tarball(tmp_path / "pokesprite-images-test.tgz")
    icons_pin = ("pokesprite-images@0.0.0-test", sri_sha512(tgz))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    npm = tmp_path / "xdg" / "stillroom" / "npm"
    npm.mkdir(parents=True)
    shutil.copy(tgz, npm / npm_tarball_name(icons_pin[0]))
    real_icons = si.build_style_icons
    monkeypatch.setattr(si, "POKESPRITE_IMAGES", icons_pin)
    monkeypatch.setattr(si, "build_style_icons", lambda *a, **k: real_icons(*a, package=icons_pin, **k))
    return cached


def test_demo_data_adds_the_styles_in_order_reuses_them_and_skips_one_unavailable(tmp_path, monkeypatch):
    """The demo trains on the sprites plus each style of ``train_styles`` (copies as labelled train rows), one
    index per step (``<sprites>_artwork_r3_icons_r2``); a second call reuses every step; another repeat of the last
    style rebuilds that step only; a package that cannot be had leaves its style out, with a note; an unknown
    style is refused."""
    import shutil

    from stillroom.data.transfer import extra_train_sources
    from stillroom.pipeline.demo_data import demo_dataset
    from test_style_icons import _id_index

    budget = {**QUICK_BUDGET, "species": (1, 4), "size": 32, "train_styles": (("artwork", 3), ("icons", 2))}
    sprites_dir = tmp_path / "out" / "data" / "sprites32_1-4"
    _id_index(sprites_dir, [f"species_{i:03d}" for i in range(1, 5)])
    cached = _fake_style_packages(tmp_path, monkeypatch)
    offline = Path("offline.tgz")

    train, sprites, _ = demo_dataset(tmp_path / "out", budget, tarball=offline)
    assert sprites.root == sprites_dir and train.root.name == "sprites32_1-4_artwork_r3_icons_r2"
    added = train.split_indices("train")[len(sprites.split_indices("train")) :]
    assert len(added) == 3 * 3 + 5 * 2  # 3 species drawn as artwork, 5 icons (every split of the icon set)
    sources = extra_train_sources(train.recipe)
    assert [(e["style"], e["repeat"]) for e in sources] == [("official-artwork", 3), ("box-icons", 2)]
    assert list(train.split_indices("test")) == list(sprites.split_indices("test"))
    first_step = (tmp_path / "out" / "data" / "sprites32_1-4_artwork_r3" / "index.json").read_bytes()
    again, _, _ = demo_dataset(tmp_path / "out", budget, tarball=offline)
    assert again.index_hash == train.index_hash
    more = {**budget, "train_styles": (("artwork", 3), ("icons", 4))}
    longer, _, _ = demo_dataset(tmp_path / "out", more, tarball=offline)
    assert longer.root.name == "sprites32_1-4_artwork_r3_icons_r4" and len(longer) == len(train) + 5 * 2
    assert (tmp_path / "out" / "data" / "sprites32_1-4_artwork_r3" / "index.json").read_bytes() == first_step
    plain, _, _ = demo_dataset(tmp_path / "out", {**budget, "train_styles": ()}, tarball=offline)
    assert plain.root == sprites_dir
    cached.unlink()
    shutil.rmtree(tmp_path / "out" / "data" / "style_artwork_sprites32_1-4")
    icons_only, _, _ = demo_dataset(tmp_path / "out", budget, tarball=offline)
    assert icons_only.root.name == "sprites32_1-4_icons_r2"
    with pytest.raises(StillroomError, match="unknown train style 'emoji'"):
        demo_dataset(tmp_path / "out", {**budget, "train_styles": (("emoji", 1),)}, tarball=offline)


def test_the_held_out_style_is_the_one_not_trained_on(tmp_path, monkeypatch):
    """The trade-off scores the box icons when training holds the artwork only, the artwork when it holds the icons
    only, and no style (with the reason, for the report) when it holds both."""
    from stillroom.pipeline.demo_data import demo_dataset, held_out_style
    from test_style_icons import _id_index

    _id_index(tmp_path / "out" / "data" / "sprites32_1-4", [f"species_{i:03d}" for i in range(1, 5)])
    _fake_style_packages(tmp_path, monkeypatch)
    out, offline = tmp_path / "out", Path("offline.tgz")
    budget = {**QUICK_BUDGET, "species": (1, 4), "size": 32}
    picked = {}
    for styles in ((("artwork", 2),), (("icons", 2),), (("artwork", 2), ("icons", 2))):
        train, sprites, _ = demo_dataset(out, {**budget, "train_styles": styles}, tarball=offline)
        style, why = held_out_style(out, train, sprites, offline=True)
        picked[styles[-1][0] if len(styles) == 1 else "both"] = (style.recipe["style"] if style else None, why)
    assert picked["artwork"] == ("box-icons", "")
    assert picked["icons"] == ("official-artwork", "")
    assert picked["both"][0] is None and "no style is left unseen" in picked["both"][1]


def test_best_budget_is_the_measured_recipe():
    """``best`` trains what BENCHMARKS measured as the best student: three 60-epoch resnet18 teachers fused, and
    efficientnet_lite0 students from ImageNet weights for 60 epochs; everything else is the demo's recipe."""
    from stillroom.pipeline.budgets import BEST_BUDGET, student_config, student_name, teacher_config

    changed = {k for k in DEMO_BUDGET if BEST_BUDGET[k] != DEMO_BUDGET[k]}
    assert changed == {
        "teacher_seeds", "teacher_epochs", "student_epochs", "tiers", "teacher_eval_every", "student_eval_every",
        "student_model", "student_start", "wall_minutes", "train_styles",
    }  # fmt: skip
    assert BEST_BUDGET["train_styles"] == (("artwork", 8),)  # as measured: the icons stay its held-out style
    assert BEST_BUDGET["student_loss"]["params"]["multi_teacher"] == "fused"
    teachers = [config_from_dict(teacher_config(Path("d"), s, 60, BEST_BUDGET)) for s in BEST_BUDGET["teacher_seeds"]]
    assert [t.name for t in teachers] == ["teacher_resnet18_s0", "teacher_resnet18_s1", "teacher_resnet18_s2"]
    assert {(t.model.name, t.model.pretrained, t.schedule.epochs, t.amp) for t in teachers} == {
        ("resnet18", None, 60, "bf16")
    }
    assert student_name(BEST_BUDGET) == "student_lite0_pt"
    student = config_from_dict(student_config("student_lite0_pt_kd", Path("d"), 60, BEST_BUDGET))
    assert (student.model.name, student.model.pretrained, student.eval_every) == ("efficientnet_lite0", "imagenet", 60)
    # the demo's own students keep their names and random starts (finished demo runs stay reusable)
    assert student_name(DEMO_BUDGET) == "student_mnv3s"
    demo_student = config_from_dict(student_config("student_mnv3s_kd", Path("d"), 20, DEMO_BUDGET))
    assert (demo_student.model.name, demo_student.model.pretrained) == ("mobilenet_v3_small", None)


def test_train_style_option_parses_copies_none_and_refuses_the_rest():
    """``stillroom demo --train-style``: STYLE=COPIES in order, 'none' for the sprites only, nothing for the
    budget's; a value without copies, or with zero, is refused with the option named."""
    import typer

    from stillroom.cli.train import _train_styles

    assert _train_styles(None) is None and _train_styles([]) is None
    assert _train_styles(["none"]) == []
    assert _train_styles(["artwork=8", "icons=5"]) == [("artwork", 8), ("icons", 5)]
    for bad in ("icons", "icons=0", "icons=x"):
        with pytest.raises(typer.BadParameter, match="--train-style"):
            _train_styles([bad])


@pytest.mark.parametrize(
    ("styles", "message"),
    [
        ([("emoji", 2)], "unknown train style 'emoji'"),
        ([("artwork", 0)], "copies must be a whole number >= 1"),
        ([("icons", 1.5)], "copies must be a whole number >= 1"),
        ([("artwork", 4), ("artwork", 8)], "given twice"),
        (["artwork"], "expected \\(style, copies\\)"),
    ],
)
def test_run_demo_refuses_bad_train_styles_before_any_data(tmp_path, styles, message):
    """A bad ``train_styles`` entry is refused with its name before the demo builds anything (before: an unknown
    style only after the sprite index was built), and ``out`` stays empty."""
    from stillroom.pipeline.demo import run_demo

    out = tmp_path / "demo"
    with pytest.raises(StillroomError, match=message):
        run_demo(out, train_styles=styles, minutes=0)
    assert not out.exists() or not any(out.iterdir())


def test_check_train_styles_keeps_order_and_whole_copies():
    import numpy as np

    from stillroom.pipeline.demo_data import check_train_styles

    assert check_train_styles([("icons", 3), ("artwork", np.int64(4))]) == (("icons", 3), ("artwork", 4))
    assert check_train_styles([]) == ()


def test_student_option_swaps_both_students_architecture_and_names_the_runs_after_it():
    """``stillroom demo --student regnetx_002``: both students (scratch and distilled) are that model, their runs are
    named after it (so a finished mobilenet_v3_small run is never taken for it), and nothing else of the budget
    moves; the budget itself is left as it was."""
    from stillroom.pipeline.budgets import with_student

    budget = with_student({"name": "demo", **DEMO_BUDGET}, "regnetx_002")
    assert {k for k in DEMO_BUDGET if budget[k] != DEMO_BUDGET[k]} == {"student_model", "student_lr"}
    assert DEMO_BUDGET["student_model"] == "mobilenet_v3_small"
    assert student_name(budget) == "student_regnetx_002"
    student = config_from_dict(student_config("student_regnetx_002_kd", Path("d"), 20, budget))
    assert (student.model.name, student.model.pretrained, student.schedule.epochs) == ("regnetx_002", None, 20)
    # ``best`` keeps an ImageNet start for a model that has those weights
    assert with_student({"name": "best", **BEST_BUDGET}, "efficientnet_lite0")["student_start"] == "imagenet"


def test_student_option_trains_each_architecture_at_its_measured_learning_rate():
    """A scratch twin away from its own lr makes KD look better than it is (RegNetX-200MF from scratch: 64.1% ID val at
    the demo's lr 0.05, 89.4% at 0.2): ``--student`` takes the model's STUDENT_LR entry for both students, keeps the
    teachers' lr, and marks a model without an entry as untuned (the budget's lr, a console note, a report caveat);
    the budget's own model and an ImageNet start keep the budget's lr."""
    from stillroom.pipeline.budgets import STUDENT_LR, with_student

    demo = {"name": "demo", **DEMO_BUDGET}
    assert STUDENT_LR[DEMO_BUDGET["student_model"]] == DEMO_BUDGET["student_lr"]
    rx = with_student(demo, "regnetx_002")
    assert (rx["student_lr"], rx["student_lr_tuned"]) == (STUDENT_LR["regnetx_002"], True)
    assert rx["student_lr"] != DEMO_BUDGET["student_lr"]
    for name in ("student_regnetx_002_kd", "student_regnetx_002_scratch"):
        assert config_from_dict(student_config(name, Path("d"), 20, rx)).optim.lr == STUDENT_LR["regnetx_002"]
    assert config_from_dict(teacher_config(Path("d"), 0, 12, rx)).optim.lr == DEMO_BUDGET["student_lr"]
    untuned = with_student(demo, "efficientnet_b0")
    assert (untuned["student_lr"], untuned["student_lr_tuned"]) == (DEMO_BUDGET["student_lr"], False)
    assert "student_lr_tuned" not in with_student(demo, DEMO_BUDGET["student_model"])
    # from ImageNet weights the table (measured from random weights) does not apply: the budget's lr, marked untuned
    lite1 = with_student({"name": "best", **BEST_BUDGET}, "efficientnet_lite1")
    assert (lite1["student_lr"], lite1["student_lr_tuned"]) == (BEST_BUDGET["student_lr"], False)
