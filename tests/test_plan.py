"""The demo's epoch plan: measured step times, the longest recipe that fits, a slow run cut short, resumes keep
the first plan (pipeline/plan.py, train/pace.py)."""

from __future__ import annotations

import math

import pytest
import torch

from stillroom._io import StillroomError, read_json
from stillroom.config import config_from_dict
from stillroom.pipeline import plan as plan_mod
from stillroom.pipeline.budgets import FUSED_BUDGET
from stillroom.pipeline.demo import BUDGETS, DEMO_BUDGET, PATIENT_BUDGET, QUICK_BUDGET
from stillroom.pipeline.plan import (
    MIN_EPOCHS,
    SHARE,
    TIERS,
    Pace,
    below_floor,
    choose_student_epochs,
    choose_tier,
    forecast_fixed,
    grow_ceiling,
    load_or_plan,
    plan_epochs,
    replan_students,
    stage_seconds,
)
from stillroom.train.pace import epoch_seconds, step_seconds

PACE = Pace(teacher_epoch=10.0, student_epoch=5.0)


def _total(pace, tier, views=4, every=4):
    return sum(stage_seconds(pace, *tier, views, every).values())


def test_stage_prediction_grows_with_every_epoch_and_view():
    base = stage_seconds(PACE, 12, 20, 4, 4)
    assert stage_seconds(PACE, 13, 20, 4, 4)["teachers"] > base["teachers"]
    assert stage_seconds(PACE, 12, 21, 4, 4)["students"] > base["students"]
    assert stage_seconds(PACE, 12, 20, 8, 4)["export"] == pytest.approx(2 * base["export"])
    assert stage_seconds(PACE, 12, 20, 4, 1)["students"] > base["students"]  # more validations
    slow = stage_seconds(Pace(20.0, 10.0), 12, 20, 4, 4)
    assert all(slow[k] == pytest.approx(2 * base[k]) for k in base)  # everything scales with the host


def test_a_teacher_step_without_bfloat16_slows_its_epochs_not_the_float32_stages():
    # a host without native bfloat16 trains the teacher ~4x slower while its float32 work (validation, scoring,
    # export, report) is as fast as the student's step says: only the teacher's epochs may grow
    fast, slow = stage_seconds(PACE, 12, 20, 4, 4), stage_seconds(Pace(4 * PACE.teacher_epoch, 5.0), 12, 20, 4, 4)
    assert slow["export"] == fast["export"] and slow["report"] == fast["report"]
    assert slow["students"] == fast["students"]
    epochs = 12 * plan_mod.OVERHEAD["teacher_epoch"] * PACE.teacher_epoch
    assert slow["teachers"] - fast["teachers"] == pytest.approx(3 * epochs)


def test_tiers_are_ordered_and_contain_the_fixed_recipe():
    assert list(TIERS) == sorted(TIERS) and len(set(TIERS)) == len(TIERS)
    assert (DEMO_BUDGET["teacher_epochs"], DEMO_BUDGET["student_epochs"]) in TIERS
    assert [_total(PACE, t) for t in TIERS] == sorted(_total(PACE, t) for t in TIERS)


@pytest.mark.parametrize("k", range(len(TIERS)))
def test_the_longest_tier_that_fits_is_chosen(k):
    seconds = _total(PACE, TIERS[k]) + 0.5  # fits tier k, not k + 1
    tier, stages = choose_tier(PACE, seconds, 4, 4)
    assert tier == TIERS[k] and sum(stages.values()) <= seconds
    if k:
        assert choose_tier(PACE, _total(PACE, TIERS[k]) - 0.5, 4, 4)[0] == TIERS[k - 1]


@pytest.mark.parametrize("f", [0.05, 0.3, 0.6, 0.95])
def test_a_host_too_slow_for_the_shortest_tier_gets_fewer_epochs_that_fit(f):
    seconds = _total(PACE, MIN_EPOCHS) + f * (_total(PACE, TIERS[0]) - _total(PACE, MIN_EPOCHS))
    (t, s), stages = choose_tier(PACE, seconds, 4, 4)
    assert (t, s) == below_floor(PACE, seconds, 4, 4, TIERS[0])
    assert sum(stages.values()) <= seconds  # the budget holds
    assert MIN_EPOCHS[0] <= t < TIERS[0][0] and MIN_EPOCHS[1] <= s <= TIERS[0][1]
    one_more = (t + 1, max(MIN_EPOCHS[1], round(TIERS[0][1] * (t + 1) / TIERS[0][0])))
    assert _total(PACE, one_more) > seconds  # the most that fits, not just any recipe that does


def test_a_host_too_slow_for_anything_gets_the_fewest_epochs():
    assert choose_tier(Pace(1e4, 1e4), 900.0, 4, 4)[0] == MIN_EPOCHS
    assert choose_tier(PACE, -5.0, 4, 4)[0] == MIN_EPOCHS  # already over budget
    assert below_floor(PACE, -5.0, 4, 4, (2, 3)) == (2, 3)  # never more than the floor itself
    with pytest.raises(StillroomError, match="no tiers"):
        choose_tier(PACE, 900.0, 4, 4, tiers=())


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_pace_must_be_a_positive_time(bad):
    with pytest.raises(StillroomError, match="positive"):
        Pace(teacher_epoch=bad, student_epoch=1.0)


def test_students_keep_their_epochs_on_time_and_shrink_when_late():
    need = stage_seconds(PACE, 0, 60, 0, 4)
    on_time = need["students"] + need["report"] + 1.0
    assert choose_student_epochs(PACE, on_time, 60, 4) == 60
    assert choose_student_epochs(PACE, 10 * on_time, 40, 4) == 40  # never more than planned
    late = stage_seconds(PACE, 0, 30, 0, 4)
    assert choose_student_epochs(PACE, late["students"] + late["report"] + 1.0, 60, 4) == 30
    assert choose_student_epochs(PACE, -100.0, 60, 4) == MIN_EPOCHS[1]
    seven = stage_seconds(PACE, 0, 7, 0, 4)  # below the shortest tier's 10: any count down to MIN_EPOCHS
    assert choose_student_epochs(PACE, seven["students"] + seven["report"] + 0.1, 60, 4) == 7
    assert choose_student_epochs(PACE, -100.0, 4, 4) == 4  # a plan already below MIN_EPOCHS is not raised


def test_students_grow_into_time_left_up_to_the_tiers_ratio():
    # up to 2.5 student epochs per teacher epoch (the 24 + 60 tier's ratio), among the tiers' student epochs
    assert grow_ceiling((8, 12), TIERS) == 20 and grow_ceiling((6, 10), TIERS) == 12
    assert grow_ceiling(TIERS[-1], TIERS) == TIERS[-1][1] and grow_ceiling((20, 40), TIERS) == 40
    assert grow_ceiling((3, 5), TIERS) == 5  # below the floor: nothing within 7.5
    plenty = 1e6
    assert choose_student_epochs(PACE, plenty, 12, 4, TIERS, ceiling=grow_ceiling((8, 12), TIERS)) == 20
    fits = stage_seconds(PACE, 0, 16, 0, 4)
    between = fits["students"] + fits["report"] + 0.1  # 16 fits, 20 does not: the most that fits
    assert choose_student_epochs(PACE, between, 12, 4, TIERS, ceiling=20) == 16
    assert choose_student_epochs(PACE, between - 0.2, 12, 4, TIERS, ceiling=20) == 12
    assert choose_student_epochs(PACE, -100.0, 12, 4, TIERS, ceiling=20) == MIN_EPOCHS[1]  # late: still cut


def test_a_plan_that_left_time_grows_its_students_and_says_so(tmp_path, shapes_index, monkeypatch):
    monkeypatch.setattr(plan_mod, "probe_pace", lambda *cfgs: PACE)
    monkeypatch.setattr(plan_mod, "config_from_dict", lambda raw: raw)
    minutes = (_total(PACE, (8, 12)) + 1.0) / 60 / SHARE  # fits (8, 12), not (10, 16)
    path, b = tmp_path / "plan.json", dict(DEMO_BUDGET)
    plan = plan_epochs(path, b, shapes_index, minutes, 0.0, ({}, {}))
    assert plan["tier"] == [8, 12]
    # the teacher and its store took a fifth of their predicted time: room for 20 student epochs (2.5 x 8)
    done = stage_seconds(PACE, 8, 12, 4, 4)
    replan_students(path, b, plan, minutes, (done["teachers"] + done["export"]) / 5)
    assert b["student_epochs"] == 20 and "students grown to 20 epochs" in b["plan"]
    assert read_json(path)["student_epochs"] == 20
    b2 = dict(DEMO_BUDGET)
    replan_students(path, b2, plan_epochs(path, b2, shapes_index, minutes, 0.0, ({}, {})), minutes, 1e6)
    assert b2["student_epochs"] == 20 and "grown to 20" in b2["plan"]  # resumed: the saved decision holds


def test_a_saved_plan_is_reused_for_the_same_key_only(tmp_path):
    path, calls = tmp_path / "plan.json", []

    def make(n):
        return lambda: calls.append(n) or {"teacher_epochs": n}

    assert load_or_plan(path, {"minutes": 15}, make(1))["teacher_epochs"] == 1
    assert load_or_plan(path, {"minutes": 15}, make(2))["teacher_epochs"] == 1  # resumed: the first plan
    assert load_or_plan(path, {"minutes": 30}, make(3))["teacher_epochs"] == 3  # another budget: planned again
    path.write_text("{not json")
    assert load_or_plan(path, {"minutes": 30}, make(4))["teacher_epochs"] == 4  # a broken file is replaced
    assert calls == [1, 3, 4] and read_json(path)["key"] == {"minutes": 30}


def test_step_seconds_times_the_training_step_and_leaves_no_trace(shapes_index, tiny_config):
    cfg = config_from_dict(tiny_config(shapes_index.root, "pace", model="mobilenet_v3_small", augment="restyle"))
    threads, state = torch.get_num_threads(), torch.get_rng_state()
    seconds = step_seconds(cfg, steps=2, warmup=1, threads=1)
    assert math.isfinite(seconds) and 0 < seconds < 30
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="steps"):
        step_seconds(cfg, steps=0)
    per_epoch = len(shapes_index.split_indices("train")) // 32  # the trainer's full batches
    assert 0 < epoch_seconds(cfg, threads=1) < 30 * per_epoch


@pytest.mark.parametrize("budget,minutes", [(QUICK_BUDGET, 15.0), (PATIENT_BUDGET, 15.0), (DEMO_BUDGET, 0.0)])
def test_fixed_budgets_are_not_planned(budget, minutes, tmp_path, shapes_index):
    b = dict(budget)
    assert plan_epochs(tmp_path / "plan.json", b, shapes_index, minutes, 0.0, ({}, {})) is None
    assert b == budget and not (tmp_path / "plan.json").exists()


def test_the_demo_budget_is_planned_once_and_cut_when_late(tmp_path, shapes_index, monkeypatch):
    probes = []
    monkeypatch.setattr(plan_mod, "probe_pace", lambda *cfgs: probes.append(cfgs) or PACE)
    monkeypatch.setattr(plan_mod, "config_from_dict", lambda raw: raw)
    path, minutes = tmp_path / "plan.json", (_total(PACE, TIERS[-1]) + 30.0) / 60 / SHARE
    b = dict(DEMO_BUDGET)
    plan = plan_epochs(path, b, shapes_index, minutes, 30.0, ({"t": 1}, {"s": 1}))
    assert (b["teacher_epochs"], b["student_epochs"]) == TIERS[-1] and b["teacher_eval_every"] == TIERS[-1][0]
    assert "24 teacher + 60 student epochs" in b["plan"] and len(probes) == 1 and "would need" not in b["plan"]
    b2 = dict(DEMO_BUDGET)
    assert plan_epochs(path, b2, shapes_index, minutes, 30.0, ({}, {})) == plan and len(probes) == 1  # resumed
    # the teacher took all the time: the students shrink to the fewest epochs, and the decision is saved
    replan_students(path, b, plan, minutes, minutes * 60)
    assert b["student_epochs"] == MIN_EPOCHS[1] and "cut to" in b["plan"]
    assert read_json(path)["student_epochs"] == MIN_EPOCHS[1]
    b3 = dict(DEMO_BUDGET)
    saved = plan_epochs(path, b3, shapes_index, minutes, 0.0, ({}, {}))
    replan_students(path, b3, saved, minutes, 0.0)  # a resumed demo keeps the cut
    assert b3["student_epochs"] == MIN_EPOCHS[1] and "cut to" in b3["plan"]  # the resumed report says so too


def test_a_slow_host_plans_below_the_shortest_tier_and_says_so(tmp_path, shapes_index, monkeypatch):
    monkeypatch.setattr(plan_mod, "probe_pace", lambda *cfgs: PACE)
    monkeypatch.setattr(plan_mod, "config_from_dict", lambda raw: raw)
    minutes = 0.7 * _total(PACE, TIERS[0]) / 60 / SHARE  # the shortest tier is predicted over SHARE of it
    b = dict(DEMO_BUDGET)
    plan = plan_epochs(tmp_path / "plan.json", b, shapes_index, minutes, 0.0, ({}, {}))
    t, s = plan["tier"]
    assert (t, s) == (b["teacher_epochs"], b["student_epochs"]) and t < TIERS[0][0] and s <= TIERS[0][1]
    assert f"{t} teacher + {s} student epochs, scaled down from the shortest" in b["plan"]
    need = math.ceil(_total(PACE, TIERS[-1]) / SHARE / 60)  # and how to get the longest tier here
    assert f"{TIERS[-1][0]} + {TIERS[-1][1]} would need `--minutes {need}` here" in b["plan"]
    b2 = dict(DEMO_BUDGET)  # so slow that even MIN_EPOCHS is predicted over: trained, and the line says so
    plan_epochs(tmp_path / "plan2.json", b2, shapes_index, 0.01, 0.0, ({}, {}))
    assert (b2["teacher_epochs"], b2["student_epochs"]) == MIN_EPOCHS and "even these are not predicted" in b2["plan"]


@pytest.mark.parametrize("name", [n for n, b in BUDGETS.items() if b.get("reference")])
def test_a_fixed_budget_with_a_measured_reference_is_forecast_by_this_hosts_probes(name, monkeypatch):
    budget = BUDGETS[name]
    ref = budget["reference"]
    assert ref["total"] == pytest.approx(sum(ref["minutes"].values()), abs=0.05)  # the reference adds up
    # this host: teacher steps twice as slow as the reference host's, student steps as fast
    here = Pace(teacher_epoch=2 * ref["teacher_probe_s"], student_epoch=ref["student_probe_s"])
    probed = []
    monkeypatch.setattr(plan_mod, "probe_pace", lambda *cfgs: probed.append(cfgs) or here)
    monkeypatch.setattr(plan_mod, "config_from_dict", lambda raw: raw)
    b = dict(budget)
    stages = forecast_fixed(b, ({"t": 1}, {"s": 1}))
    m = ref["minutes"]
    # a reference measured with other epochs than the budget's: its training stages scale with the epochs too
    te = budget["teacher_epochs"] / ref.get("teacher_epochs", budget["teacher_epochs"])
    se = budget["student_epochs"] / ref.get("student_epochs", budget["student_epochs"])
    assert stages["teachers"] == pytest.approx(2 * te * m["teachers"])
    assert stages["students"] == pytest.approx(se * m["students"])
    assert stages["total"] == pytest.approx(2 * (te * m["teachers"] + m["export"] + m["other"]) + se * m["students"])
    assert f"predicted {stages['total']:.0f} min here" in b["plan"] and f"{ref['total']:g} min measured" in b["plan"]
    assert (b["teacher_epochs"], b["student_epochs"]) == (budget["teacher_epochs"], budget["student_epochs"])
    assert probed == [({"t": 1}, {"s": 1})]
    assert {"best", "fused"} <= {n for n, b in BUDGETS.items() if b.get("reference")}
    assert ("epochs (scaled to these)" in b["plan"]) == (te != 1 or se != 1)
    for other in (DEMO_BUDGET, QUICK_BUDGET, PATIENT_BUDGET):  # planned, or without a measured run: no forecast
        b = dict(other)
        assert forecast_fixed(b, ({}, {})) is None and b == other
    assert len(probed) == 1  # and no probe for them


def test_a_reference_of_other_epochs_scales_only_the_training_stages(monkeypatch):
    # a reference run with 12-epoch teachers (fused's until its own 80-epoch run was measured) for a budget that trains
    # 80: its teacher stage is 80 / 12 of the measured one on a host like the reference's, the stores (one pass of the
    # finished teachers) and the students as measured
    ref = {**FUSED_BUDGET["reference"], "teacher_epochs": 12, "student_epochs": 80}
    budget = {**FUSED_BUDGET, "reference": ref}
    assert budget["teacher_epochs"] == 80
    monkeypatch.setattr(plan_mod, "probe_pace", lambda *cfgs: Pace(ref["teacher_probe_s"], ref["student_probe_s"]))
    monkeypatch.setattr(plan_mod, "config_from_dict", lambda raw: raw)
    stages = forecast_fixed(budget, ({}, {}))
    m = ref["minutes"]
    assert stages["teachers"] == pytest.approx(m["teachers"] * 80 / 12)
    assert (stages["export"], stages["students"], stages["other"]) == pytest.approx(
        (m["export"], m["students"], m["other"])
    )
    assert (
        "with 12 + 80 epochs (scaled to these)" in budget["plan"]
        and "fixed epochs (80 teacher + 80 student)" in budget["plan"]
    )


def test_the_fused_reference_is_a_measured_run_of_its_own_epochs(monkeypatch):
    # fused's reference is one end-to-end run of the budget as it stands (80 + 80 epochs): no scaling by epochs, and
    # on a host like the reference's the forecast is the measured run
    budget = dict(FUSED_BUDGET)
    ref = budget["reference"]
    assert (ref["teacher_epochs"], ref["student_epochs"]) == (budget["teacher_epochs"], budget["student_epochs"])
    monkeypatch.setattr(plan_mod, "probe_pace", lambda *cfgs: Pace(ref["teacher_probe_s"], ref["student_probe_s"]))
    monkeypatch.setattr(plan_mod, "config_from_dict", lambda raw: raw)
    assert forecast_fixed(budget, ({}, {}))["total"] == pytest.approx(ref["total"], abs=0.05)
    assert "scaled to these" not in budget["plan"] and f"{ref['total']:g} min measured" in budget["plan"]
