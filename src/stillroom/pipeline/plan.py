"""Epochs that fit a wall-time budget on this machine: the demo's plan.

Why: the same fixed recipe took 5 to 22 minutes on the 2-core hosts this project runs on (BENCHMARKS "The demo plans
its epochs"), so a fixed epoch count either broke the 15-minute budget on slow hosts or left most of it unused on
fast ones, while patience is the lever measured to move what the demo is for: a 24-epoch teacher and 60-epoch
students instead of 12 + 20 give the distilled student +6.4 points of ID test, +12.6 on the outline-rewrite proxy
and +5.2 on the other artist's box icons (BENCHMARKS "Teachers for another artist", 3 seeds). So the demo measures a
training step of each model (``train.pace.step_seconds``), predicts every stage of each recipe in ``TIERS`` and
trains the longest one predicted to finish within ``SHARE`` of the budget; after the teacher and its store it plans
the students again from the time actually left. The plan is saved (``plan.json``) so an interrupted demo resumes the
same recipe.

Stage model (each term in units of a probe epoch, ``steps x step``; factors measured on `make demo` runs, see
``OVERHEAD``): teacher = epochs x (1 + loader) in the teacher's probe epochs + fixed (validation, BatchNorm
re-estimation, test scoring); store export = views x export; students = epochs x (1 + loader) + evaluations + fixed,
the two students side by side in their own processes; then the trade-off and the report. Training epochs are counted
in their own model's probe epochs; the teacher's fixed part, the export and the report in the *student's*: they are
float32 inference and file work on every host, which the teacher's bfloat16 training step (where the CPU has it)
does not speed up, while the student's probe is a float32 step everywhere. Counted in the teacher's probe epochs
they were predicted 2-9 times too long on a host without bfloat16 (the teacher's step 3.8 times slower there, float32
work 2.1 times), and the plan chose a shorter recipe than fitted (BENCHMARKS "The demo's plan on a host without
bfloat16").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stillroom._io import StillroomError, atomic_write_json, read_json
from stillroom._progress import console
from stillroom.config import TrainConfig, config_from_dict

__all__ = [
    "TIERS",
    "MIN_EPOCHS",
    "OVERHEAD",
    "SHARE",
    "Pace",
    "probe_pace",
    "stage_seconds",
    "choose_tier",
    "below_floor",
    "choose_student_epochs",
    "load_or_plan",
    "plan_epochs",
    "replan_students",
    "grow_ceiling",
    "forecast_fixed",
]

# (teacher epochs, student epochs), shortest first. Measured with the demo's own configs, 3 student seeds each
# (BENCHMARKS "The demo's tiers over three seeds"; `benchmarks/demo_tiers.py`): the distilled student's test top-1
# is 79.5% at (6, 10), 82.8% at (8, 12), 92.0% at (12, 20), 95.0% at (16, 30), 96.9% at (20, 40) and 97.2% at
# (24, 60); (10, 16) in "Fewer epochs for the demo's wall time". The floors are for hosts where the fixed recipe
# took 19-22 minutes (a teacher epoch of 50-58 s; "The demo plans its epochs").
TIERS: tuple[tuple[int, int], ...] = ((6, 10), (8, 12), (10, 16), (12, 20), (16, 30), (20, 40), (24, 60))
# The fewest (teacher, student) epochs a plan goes down to when even TIERS[0] is predicted over the budget
# (``below_floor``): a 3-epoch teacher still gives the students a signal to distil; fewer would not be a demo.
MIN_EPOCHS = (3, 5)

# Plan to finish within this share of the budget: hosts of one kind change speed during a run (the same code took
# 11 to 22 minutes on one AMD host), and the probe itself was 15% off once (BENCHMARKS "The demo plans its epochs").
SHARE = 0.8
# Measured on `make demo` at 691fa8b (2026-12-04, AMD EPYC with AVX512-BF16): teacher probe epoch 9.7 s vs 10.0 s
# per trained epoch and 18 s after the last one; student probe epoch 4.7 s vs 5.2 s per epoch beside the other
# student, +1.3 s per validation, 15 s after the last; 4-view store export 24 s; trade-off + report 15 s. Three
# planned demos on that host then read the teacher's probe epoch at 10.0, 8.5 and 7.8 s for 9-10.5 s trained: the
# teacher's factor is their mean ratio, 1.15, not the first run's 1.05 (BENCHMARKS "The demo plans its epochs").
# The teacher's fixed part, the export and the report are the same seconds counted in the student's probe epoch
# (18 / 4.7, 24 / 4 / 4.7, 15 / 4.7): the same predictions on that host. On one without bfloat16 (probe epochs:
# teacher 37.5 s, student 10.0 s) they predict 9.1 min for a 6 + 10 demo that took 8.0 (counted in the teacher's
# probe epochs: 10.7) and 15.3 min for 12 + 20, which took 15.1 there (the module's docstring says why;
# `benchmarks/plan_predict.py` prints every tier's prediction for given probe epochs).
OVERHEAD = {
    "teacher_epoch": 1.15,  # teacher probe epochs
    "teacher_fixed": 3.8,  # student probe epochs, as the two below
    "export_per_view": 1.28,
    "student_epoch": 1.12,
    "student_eval": 0.28,
    "student_fixed": 3.2,
    "report": 3.2,
}


@dataclass(frozen=True)
class Pace:
    """Seconds of one probe epoch (steps per epoch x measured step time) of the teacher and of a student."""

    teacher_epoch: float
    student_epoch: float

    def __post_init__(self) -> None:
        for name, v in asdict(self).items():
            if not (math.isfinite(v) and v > 0):
                raise StillroomError(f"plan: {name} must be a positive number of seconds, got {v}")


def probe_pace(teacher: TrainConfig, student: TrainConfig, student_threads: int = 1) -> Pace:
    """Measured probe epochs: the teacher's step with torch's threads as set (it trains alone), a student's with
    ``student_threads`` (each student trains in its own process beside the other)."""
    from stillroom.train.pace import epoch_seconds

    return Pace(epoch_seconds(teacher), epoch_seconds(student, threads=student_threads))


def stage_seconds(
    pace: Pace, teacher_epochs: int, student_epochs: int, views: int, student_eval_every: int
) -> dict[str, float]:
    """Predicted seconds of each remaining stage of the demo for one recipe."""
    o = OVERHEAD
    evals = math.ceil(student_epochs / max(student_eval_every, 1))
    return {
        # float32 inference and file work (validation, BatchNorm statistics, scoring, export, report) is counted in
        # the student's probe epochs: a float32 step on every host, where the teacher's may run in bfloat16
        "teachers": pace.teacher_epoch * teacher_epochs * o["teacher_epoch"] + pace.student_epoch * o["teacher_fixed"],
        "export": pace.student_epoch * views * o["export_per_view"],
        "students": pace.student_epoch
        * (student_epochs * o["student_epoch"] + evals * o["student_eval"] + o["student_fixed"]),
        "report": pace.student_epoch * o["report"],
    }


def choose_tier(
    pace: Pace, seconds: float, views: int, student_eval_every: int, tiers: tuple[tuple[int, int], ...] = TIERS
) -> tuple[tuple[int, int], dict[str, float]]:
    """The longest tier predicted to fit in ``seconds`` and its stage prediction. When even the shortest does not
    fit, the shortest scaled down (``below_floor``): the budget is the promise, fewer epochs the price."""
    if not tiers:
        raise StillroomError("plan: no tiers to choose from")
    chosen = _longest_that_fits(tiers, pace, seconds, views, student_eval_every)
    if chosen is None:
        chosen = below_floor(pace, seconds, views, student_eval_every, tiers[0])
    return chosen, stage_seconds(pace, *chosen, views, student_eval_every)


def below_floor(
    pace: Pace, seconds: float, views: int, student_eval_every: int, floor: tuple[int, int]
) -> tuple[int, int]:
    """``floor`` (teacher, student epochs) scaled down by one teacher epoch at a time, the students in proportion,
    to the first recipe predicted to fit ``seconds``; ``MIN_EPOCHS`` when none does. Why: on the slowest host
    seen (a teacher epoch 50-58 s) the shortest tier is predicted at ~14 minutes, over the 12 that ``SHARE`` of 15
    allows, and a slower host would break the budget `make demo` promises; fewer epochs keep it, the report says so."""
    t0, s0 = floor
    low_t, low_s = MIN_EPOCHS
    scaled = [(t, max(low_s, min(s0, round(s0 * t / t0)))) for t in range(low_t, t0 + 1)]  # shortest first
    chosen = _longest_that_fits(scaled, pace, seconds, views, student_eval_every)
    return chosen if chosen is not None else (min(low_t, t0), min(low_s, s0))


def _total_seconds(pace: Pace, tier: tuple[int, int], views: int, student_eval_every: int) -> float:
    return sum(stage_seconds(pace, *tier, views, student_eval_every).values())


def _longest_that_fits(
    options: Sequence[tuple[int, int]], pace: Pace, seconds: float, views: int, student_eval_every: int
) -> tuple[int, int] | None:
    """The last of ``options`` (shortest first) predicted to fit in ``seconds``; None when none does."""
    fitting = [t for t in options if _total_seconds(pace, t, views, student_eval_every) <= seconds]
    return tuple(fitting[-1]) if fitting else None


def choose_student_epochs(
    pace: Pace,
    seconds_left: float,
    planned: int,
    student_eval_every: int,
    tiers: tuple[tuple[int, int], ...] = TIERS,
    ceiling: int | None = None,
) -> int:
    """Student epochs once the teacher and its store are done: the most among ``planned`` and the tiers' student
    epochs up to ``ceiling`` (default ``planned``) whose students' stage and report are predicted to fit in
    ``seconds_left``: a plan that ran slow shrinks, one that left time grows up to ``ceiling`` (``grow_ceiling``);
    below the shortest tier, down to ``MIN_EPOCHS``' students (``below_floor``'s reason)."""
    top = max(planned, ceiling or planned)
    floor = min([s for _, s in tiers] + [planned])
    below = range(min(MIN_EPOCHS[1], floor), floor)
    options = sorted({s for _, s in tiers if s <= top} | {planned} | set(below))
    keep = options[0]
    for epochs in options:
        stages = stage_seconds(pace, 0, epochs, 0, student_eval_every)
        if stages["students"] + stages["report"] <= seconds_left:
            keep = epochs
    return keep


def load_or_plan(path: Path, key: dict[str, Any], make: Any) -> dict[str, Any]:
    """The plan saved at ``path`` when it was made for the same ``key`` (budget minutes, views, ...), else
    ``make()``'s plan, saved there with the key. A resumed demo keeps its first plan, so its runs' configs match."""
    if path.is_file():
        try:
            saved = read_json(path)
        except StillroomError:
            saved = None
        if isinstance(saved, dict) and saved.get("key") == key:
            return saved
    plan = {"key": key, **make()}
    atomic_write_json(path, plan)
    return plan


def plan_epochs(
    path: Path, budget: dict[str, Any], index: Any, minutes: float, elapsed: float, probes: tuple[dict, dict]
) -> dict[str, Any] | None:
    """Set ``budget``'s teacher and student epochs to the longest of its ``tiers`` predicted to finish within
    ``SHARE`` of ``minutes`` (``elapsed`` seconds already spent), timing the steps of ``probes`` (the teacher's and a
    student's raw config); the plan is saved at ``path`` and reused by a resumed demo. Returns it; None, leaving the
    budget's fixed epochs, when ``minutes`` is 0, the budget has no tiers or trains several teachers."""
    if not minutes or not budget.get("tiers") or len(budget["teacher_seeds"]) != 1:
        return None
    views, every, tiers = budget["replay_views"], budget["student_eval_every"], tuple(map(tuple, budget["tiers"]))

    def make() -> dict[str, Any]:
        pace = probe_pace(*(config_from_dict(raw) for raw in probes))
        tier, stages = choose_tier(pace, minutes * 60 * SHARE - elapsed, views, every, tiers)
        # what the longest tier would need here: the report tells a user of a short tier how to get it
        longest = (_total_seconds(pace, tiers[-1], views, every) + elapsed) / SHARE / 60
        return {"pace": asdict(pace), "tier": list(tier), "teacher_epochs": tier[0], "student_epochs": tier[1],
                "elapsed": elapsed, "predicted_seconds": stages, "longest_minutes": longest}  # fmt: skip

    key = {"minutes": minutes, "tiers": [list(t) for t in tiers], "views": views, "augment": budget["augment"],
           "batch_size": budget["batch_size"], "index_hash": index.index_hash}  # fmt: skip
    plan = load_or_plan(path, key, make)
    budget.update(teacher_epochs=plan["teacher_epochs"], student_epochs=plan["student_epochs"])
    budget["teacher_eval_every"] = plan["teacher_epochs"]  # validate at the last epoch only, as the fixed recipe
    budget["plan"] = _describe(plan, tiers, minutes)
    console.print(f"[bold]plan:[/] {budget['plan']}", highlight=False)
    return plan


def _describe(plan: dict[str, Any], tiers: tuple[tuple[int, int], ...], minutes: float) -> str:
    """The report's line for ``plan`` (a resumed demo's too, cut students included)."""
    tier = plan.get("tier", [plan["teacher_epochs"], plan["student_epochs"]])
    predicted = sum(plan["predicted_seconds"].values()) + plan["elapsed"]
    fits = f"predicted to fit {SHARE:.0%} of {minutes:g} min here"
    if tuple(tier) in tiers:
        how = f"the longest of {list(tiers)} {fits}"
    elif predicted <= minutes * 60 * SHARE:
        how = f"scaled down from the shortest of {list(tiers)}, the most {fits}"
    else:
        how = f"the fewest a plan allows; even these are not {fits}"
    text = (
        f"{tier[0]} teacher + {tier[1]} student epochs, {how} ({predicted / 60:.1f} min; probe epochs: teacher "
        f"{plan['pace']['teacher_epoch']:.1f} s, student {plan['pace']['student_epoch']:.1f} s)"
    )
    if plan["student_epochs"] < tier[1]:
        text += f"; students cut to {plan['student_epochs']} epochs: the teacher ran slower than predicted"
    elif plan["student_epochs"] > tier[1]:
        text += f"; students grown to {plan['student_epochs']} epochs: the teacher and its store left time"
    if tuple(tier) != tiers[-1] and "longest_minutes" in plan:
        t, s = tiers[-1]
        text += f"; {t} + {s} would need `--minutes {math.ceil(plan['longest_minutes'])}` here"
    return text


def grow_ceiling(tier: tuple[int, int], tiers: tuple[tuple[int, int], ...]) -> int:
    """The most student epochs a planned ``tier`` may grow to when its teacher and store leave time: the most of the
    tiers' student epochs within the longest student-to-teacher ratio the tiers use (60 to 24, 2.5) times the
    teacher's epochs. Why: where the teacher's step is slow against the student's (float32 without native bfloat16:
    the teacher's step 3.8x the bfloat16 host's, the student's 2.1x) the tier that fits leaves minutes no longer tier
    fits in, and the students' epochs are the cheap lever: on one 8-epoch teacher, distilled students of 12 / 16 /
    20 epochs read 84.9 / 87.6 / 89.9% of val and 88.6 / 90.0 / 91.6% of test (3 seeds; BENCHMARKS "The demo's plan
    on a host without bfloat16"), and on a 12-epoch teacher 30 over 20 epochs test +2.7 points (3 of 3 seeds)."""
    tiers = tuple(map(tuple, tiers))
    ratio = max(s / t for t, s in tiers)
    return max([tier[1]] + [s for _, s in tiers if s <= ratio * tier[0]])


def replan_students(
    path: Path, budget: dict[str, Any], plan: dict[str, Any] | None, minutes: float, elapsed: float
) -> None:
    """After the teacher and its store (``elapsed`` seconds in): fewer student epochs when the run so far was
    slower than planned, more (up to ``grow_ceiling``) when it left time (``choose_student_epochs``), saved in the
    plan so a resumed demo keeps the decision."""
    if plan is None or "students_replanned_at" in plan:
        return
    tiers = tuple(map(tuple, budget["tiers"]))
    tier = tuple(plan.get("tier", (plan["teacher_epochs"], plan["student_epochs"])))
    epochs = choose_student_epochs(
        Pace(**plan["pace"]), minutes * 60 * SHARE - elapsed, plan["student_epochs"], budget["student_eval_every"],
        tiers, ceiling=grow_ceiling(tier, tiers),
    )  # fmt: skip
    if epochs < plan["student_epochs"]:
        console.print(f"[yellow]slower than planned: {epochs} student epochs instead of {plan['student_epochs']}[/]")
    elif epochs > plan["student_epochs"]:
        console.print(f"time left: {epochs} student epochs instead of {plan['student_epochs']}", highlight=False)
    plan.update(student_epochs=epochs, students_replanned_at=elapsed)
    budget.update(student_epochs=epochs, plan=_describe(plan, tiers, minutes))
    atomic_write_json(path, plan)


def forecast_fixed(budget: dict[str, Any], probes: tuple[dict, dict]) -> dict[str, float] | None:
    """Predicted minutes of each stage of a budget with fixed epochs, for budgets that carry a ``reference`` (one
    measured run of the same recipe: its stage minutes and the probe epochs of its host); None for the others.

    Why a reference, not the stage model above: ``best`` trains three teachers in rounds of one-thread processes,
    whose pace beside another process the planner's factors were not measured for; scaling a measured run of the
    recipe by this host's probe epochs (teacher stages by the teacher's, students by the student's) carries every
    such factor over. A reference measured with other epochs than the budget's (its ``teacher_epochs`` /
    ``student_epochs``) has its training stages scaled by the ratio too: training time grows with epochs, the stores
    and the rest do not. The line goes to the console and the report (``budget["plan"]``); the epochs are not
    changed."""
    ref = budget.get("reference")
    if not ref or budget.get("tiers"):
        return None
    pace = probe_pace(*(config_from_dict(raw) for raw in probes))
    t, s = pace.teacher_epoch / ref["teacher_probe_s"], pace.student_epoch / ref["student_probe_s"]
    te, se = budget["teacher_epochs"], budget["student_epochs"]
    rte, rse = ref.get("teacher_epochs", te), ref.get("student_epochs", se)
    m = ref["minutes"]
    stages = {"teachers": m["teachers"] * t * te / rte, "export": m["export"] * t,
              "students": m["students"] * s * se / rse, "other": m["other"] * t}  # fmt: skip
    total = sum(stages.values())
    measured = f"{ref['total']:g} min measured on {ref['host']}"
    if (rte, rse) != (te, se):
        measured += f" with {rte} + {rse} epochs (scaled to these)"
    budget["plan"] = (
        f"fixed epochs ({te} teacher + {se} student), predicted {total:.0f} min here (teachers "
        f"{stages['teachers']:.0f}, stores {stages['export']:.0f}, students {stages['students']:.0f}): "
        f"{measured}, scaled by this host's probe epochs (teacher {pace.teacher_epoch:.1f} s vs "
        f"{ref['teacher_probe_s']:g}, student {pace.student_epoch:.1f} s vs {ref['student_probe_s']:g})"
    )
    console.print(f"[bold]plan:[/] {budget['plan']}", highlight=False)
    return {**stages, "total": total}
