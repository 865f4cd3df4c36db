"""``stillroom demo``: the whole pipeline on Gen-1 silhouettes (species 1-151, 64 px), end to end.

build data -> train a resnet18 teacher (seed 0) -> export its logits of 4 restyled views per image (a replay store)
+ strictly check it -> train a mobilenet_v3_small from scratch and one distilled from the teacher on the replayed
views (LumiNet) -> evaluate -> the trade-off (``evaluate.tradeoff``: parameters, weights size, batch-1 CPU latency,
test accuracy of the teacher (and of the ensemble when there are several) and the students, share of the teacher's
top-1 kept, leakage probe, top-1 on another artist's drawings of the species when a style is left out of training:
the box icons under ``--train-style artwork=8``; the default trains on every style, and the note says so;
``tradeoff.json``, about 2 s per model) -> report.md and the self-contained report.html, both opening with that
trade-off. The data: the sprites plus the budget's ``train_styles`` (``demo_data``: the official artwork x 4 and the
box icons x 3 for ``make demo``) as labelled train rows of every model.
Every run is an ordinary ``stillroom train`` config (written to ``<out>/configs``), so each step can be repeated
by hand. Finished steps are reused when the demo is run again (runs resume; the data build is skipped when its
index is complete; a run trained under another config is moved aside and trained again), so an interrupted demo
continues where it stopped. The teacher trains with all of torch's threads, then the two students side by side
(``jobs``, one torch thread each on 2 cores; ``_train_all`` says why). ``teacher_seeds`` with more seeds trains
that many teachers side by side, in rounds of ``jobs`` (``_rounds``), and distills from all of them (fused).

Budgets (``pipeline/budgets.py``): on the 2-core CPU box ``make demo`` (DEMO_BUDGET) from a fresh clone must stay
under 15 minutes on an idle machine: it trains the longest recipe of ``plan.TIERS`` predicted to fit on the machine
it runs on. ``budget="quick"`` (``quick=True``) shrinks everything to a smoke test; ``budget="patient"`` trains the
same pipeline long enough to be limited by the data instead of the clock (PATIENT_BUDGET: about an hour on the same
box); ``budget="fused"`` distils the demo's mobilenet_v3_small from three teachers of the demo's recipe trained 80
epochs, fused, for 80 epochs (FUSED_BUDGET: the best reader of a held-out style measured for this student, 83 min
measured on the box); ``budget="best"`` trains the best student measured here, from three 60-epoch teachers
(BEST_BUDGET: 91 min measured).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from stillroom._io import StillroomError, atomic_write_text
from stillroom._progress import console, parallel_progress, training_progress
from stillroom._timing import cpu_times, steal_share
from stillroom.config import config_from_dict
from stillroom.data.index import DatasetIndex
from stillroom.pipeline.budgets import (  # noqa: F401 - the budgets stay importable from here, as before the split
    BEST_BUDGET,
    BUDGETS,
    DEMO_BUDGET,
    PATIENT_BUDGET,
    QUICK_BUDGET,
    STUDENT_SEED,
    student_config,
    student_name,
    teacher_config,
    with_student,
)
from stillroom.pipeline.demo_data import check_train_styles, demo_dataset, held_out_style
from stillroom.pipeline.plan import forecast_fixed, plan_epochs, replan_students

__all__ = ["run_demo", "BUDGETS", "BEST_BUDGET", "DEMO_BUDGET", "PATIENT_BUDGET"]


def _prepare(raw: dict[str, Any], config_dir: Path, runs_dir: Path) -> tuple[Path, Path, bool]:
    """Write the run's config; move aside a run of this name trained under another config. Returns (config file,
    run dir, whether the run is finished and can be reused)."""
    from stillroom.train.trainer import config_differs

    path = config_dir / f"{raw['name']}.yaml"
    atomic_write_text(path, yaml.safe_dump(raw, sort_keys=False))
    cfg = config_from_dict(raw, source=str(path))
    run_dir = runs_dir / cfg.name
    if config_differs(cfg, run_dir):
        # a run of an older demo recipe (e.g. the KD student before replay): keep it, train this recipe afresh
        aside = _free_path(run_dir.with_name(f"{run_dir.name}.old"))
        run_dir.rename(aside)
        console.print(f"[yellow]{run_dir} was trained with another config: moved to {aside}, training again[/]")
    finished = (run_dir / "metrics.json").is_file() and (run_dir / "final.safetensors").is_file()
    if finished:
        console.print(f"[dim]reusing finished run {run_dir}[/]")
    return path, run_dir, finished


def _train_worker(raw: dict[str, Any], source: str, run_dir: str, queue: Any) -> float:
    """Train one run in a spawned process; its progress goes to the parent through ``queue``. Returns wall s."""
    from stillroom.pipeline import train

    def progress(phase: str, done: int, total: int, record: dict | None = None) -> None:
        queue.put((raw["name"], phase, done, total, record))

    t0 = time.perf_counter()
    train(config_from_dict(raw, source=source), Path(run_dir), resume=True, progress=progress)
    return time.perf_counter() - t0


def _rounds(runs: int, jobs: int, cores: int) -> list[tuple[int, int, int]]:
    """How ``runs`` runs train ``jobs`` at a time on ``cores`` torch threads: [(runs, processes, threads each)], in
    order. Full rounds share one queue of ``jobs`` processes with ``cores // jobs`` threads each; the runs of a last,
    partial round (``runs % jobs`` of them) follow with the cores shared among themselves, so that no core idles
    while they train (BEST_BUDGET: the third of three 60-epoch teachers took 31-34 min alone on one thread, 20.3 on
    both; BENCHMARKS "The best recipe in one command"). Decided by counts, not by the clock: a run's thread count
    changes its results in the last bits (float sums split another way), and a run must train the same way however
    fast its neighbours were."""
    jobs = max(1, min(jobs, runs))
    full = runs - runs % jobs
    rounds = [(full, jobs, max(1, cores // jobs))] if full else []
    if full < runs:
        rounds.append((runs - full, runs - full, max(1, cores // (runs - full))))
    return rounds


def _train_all(
    raws: list[dict[str, Any]], config_dir: Path, runs_dir: Path, jobs: int = 1
) -> dict[str, tuple[Path, float]]:
    """Train (or reuse) every run; ``jobs`` > 1 trains that many at once in spawned processes, each with its share
    of torch's threads (``_rounds``: a last, partial round gets the cores the idle processes would leave). Returns
    {name: (run dir, wall seconds of its training, 0 when reused)}. Runs that are finished are reused and do not
    count, so a resumed demo may train a run on another thread count than an uninterrupted one would.

    Why processes: on the 2-core box two one-thread runs side by side beat the same runs one after the other on two
    threads (demo budget, 3 epochs each: mobilenet_v3_small 8.6 s per epoch of both vs 2 x 7.1 s; resnet18 43 vs
    2 x 26 s), because a small model's step does not keep two threads busy and augmentation is single-threaded.
    In the whole demo (fresh clone, idle) the students' stage went from 5.0 to 3.5 min; the teachers' did not gain
    (6.5 vs 6.3 min: their validation and final evaluation run on one thread too), 14 min 12 s -> 11 min 59 s."""
    done: dict[str, tuple[Path, float]] = {}
    todo = []
    for raw in raws:
        path, run_dir, finished = _prepare(raw, config_dir, runs_dir)
        if finished:
            done[raw["name"]] = (run_dir, 0.0)
        else:
            todo.append((raw, path, run_dir))
    if min(jobs, len(todo)) <= 1:
        from stillroom.pipeline import train

        for raw, path, run_dir in todo:
            t0 = time.perf_counter()
            with training_progress(raw["name"]) as progress:
                train(config_from_dict(raw, source=str(path)), run_dir, resume=True, progress=progress)
            done[raw["name"]] = (run_dir, time.perf_counter() - t0)
        return done
    import multiprocessing
    import queue as queue_mod

    from stillroom.pipeline.sweep import training_pool

    ctx = multiprocessing.get_context("spawn")
    failures: list[str] = []
    with ctx.Manager() as manager, parallel_progress([raw["name"] for raw, _, _ in todo]) as updates:
        q = manager.Queue()
        first = 0
        for count, procs, threads in _rounds(len(todo), jobs, torch.get_num_threads()):
            batch, first = todo[first : first + count], first + count
            console.print(f"[dim]training {count} run(s) in {procs} process(es), {threads} torch thread(s) each[/]")
            with training_pool(procs, threads) as pool:
                futures = {pool.submit(_train_worker, raw, str(p), str(r), q): (raw["name"], r) for raw, p, r in batch}
                while True:
                    try:
                        name, *update = q.get(timeout=0.5)
                        updates[name](*update)
                        continue
                    except queue_mod.Empty:
                        pass
                    if all(f.done() for f in futures):
                        break
            for future, (name, run_dir) in futures.items():
                try:
                    done[name] = (run_dir, future.result())
                except Exception as err:  # every run finishes or fails before the demo stops
                    failures.append(f"{name} ({run_dir}): {type(err).__name__}: {err}")
    if failures:
        raise StillroomError("demo: training failed:\n  " + "\n  ".join(failures))
    return done


def _train(raw: dict[str, Any], config_dir: Path, runs_dir: Path) -> tuple[Path, float]:
    """One run, in this process (``_train_all`` with one job)."""
    return _train_all([raw], config_dir, runs_dir)[raw["name"]]


def _free_path(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... : the first name that does not exist yet."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _soft_labels(
    teachers: list[Path],
    index: DatasetIndex,
    budget: dict[str, Any],
    alignment_json: Path,
    timings: dict[str, float],
    replay_view: str = "same",
) -> tuple[list[Any], dict[str, Any]]:
    """Export every teacher's store for the KD student and check them strictly against the index (and, for replay
    stores, against the views the student will re-create: its augmentation and seed). ``budget["replay_views"]``
    = V > 0: V augmented views per image (RUN/softlabels/<hash>_replay_v<V>); 0: the clean images' logits.
    ``replay_view`` (``teachers.replay_view``): "geometry" exports the views before their style changes instead
    (``data.augment.teacher_view``; RUN/softlabels/<hash>_replay_v<V>_<that recipe>, beside the demo's store)."""
    from stillroom.data.augment import augment_name, teacher_view
    from stillroom.softlabels.check import require_aligned
    from stillroom.softlabels.export import export_softlabels

    views = budget["replay_views"]
    augment = teacher_view(augment_name(budget["augment"], index.recipe), replay_view)
    replay = {"augment": augment, "augment_seed": STUDENT_SEED} if views else None
    suffix = "" if replay_view == "same" else f"_{augment}"
    stores = []
    for run in teachers:
        t0 = time.perf_counter()
        name = f"{index.index_hash[:12]}_replay_v{views}{suffix}" if views else index.index_hash[:12]
        store = export_softlabels(
            run, index.root, run / "softlabels" / name, views=views, augment=augment, augment_seed=STUDENT_SEED
        )
        stores.append(store)
        timings[f"export_{run.name}"] = time.perf_counter() - t0
    return stores, require_aligned(stores, index, out_json=alignment_json, replay=replay)


def run_demo(
    out: str | Path = "artifacts/demo",
    tarball: Path | None = None,
    quick: bool = False,
    augment: str | None = None,
    batch_size: int | None = None,
    replay_views: int | None = None,
    jobs: int | None = None,
    budget_name: str = "demo",
    minutes: float | None = None,
    train_styles: Sequence[tuple[str, int]] | None = None,
    student: str | None = None,
) -> Path:
    """Run the demo pipeline into ``out``; return the path of the written report. ``budget_name``: one of ``BUDGETS``
    ("demo", the 15-minute default; "quick", also ``quick=True``; "fused", "patient", "best"). ``augment`` /
    ``batch_size`` override the budget's training recipe for every model (teachers and students alike); ``replay_views``
    the number of replayed views the KD student's targets come from (0: the clean images' logits); ``jobs`` how many
    runs train at once (default: 2 when torch has at least 2 threads: the two students side by side, and the teachers
    when there are several; 1: one after the other in this process). ``minutes``: the wall time to plan the epochs for
    (default the budget's ``wall_minutes``; 0: the budget's fixed epochs; ``pipeline.plan``). ``train_styles``: [(style,
    copies)] of other drawings of the species trained on (``demo_data.STYLE_SETS``; default the budget's, () for the
    sprites only); a style left out is the one the report scores as held out. ``student``: the students' architecture
    (a ``models.factory.MODELS`` name) instead of the budget's ``student_model``; the runs are named after it (the
    fixed budgets' time forecasts were measured with their own student, so they under-forecast a slower one)."""
    from stillroom.evaluate.tradeoff import TRADEOFF_FILE, measure_tradeoff
    from stillroom.report.html import write_html_report
    from stillroom.report.markdown import write_demo_report

    out = Path(out)
    if quick and budget_name not in ("demo", "quick"):
        raise StillroomError(f"demo: quick and budget {budget_name!r} contradict each other; pass one")
    name = "quick" if quick else budget_name
    if name not in BUDGETS:
        raise StillroomError(f"demo: unknown budget {budget_name!r}; choose one of {', '.join(BUDGETS)}")
    budget = {"name": name, **BUDGETS[name]}
    if augment is not None:
        budget["augment"] = augment
    if batch_size is not None:
        budget["batch_size"] = batch_size
    if replay_views is not None:
        if replay_views < 0:
            raise StillroomError(f"demo: replay_views must be >= 0, got {replay_views}")
        budget["replay_views"] = replay_views
    if train_styles is not None:
        budget["train_styles"] = check_train_styles(train_styles)
    if student is not None:
        budget = with_student(budget, student)
        if budget.get("student_lr_tuned") is False:
            console.print(
                f"[yellow]no learning rate measured for {student}[/]: both students train at the budget's "
                f"{budget['student_lr']}, chosen for another network, so the report's KD-over-scratch figure may "
                "measure the lr rather than the teacher (pipeline/budgets.py STUDENT_LR)",
                highlight=False,
            )
    if jobs is None:
        jobs = 2 if torch.get_num_threads() >= 2 else 1
    if jobs < 1:
        raise StillroomError(f"demo: jobs must be >= 1, got {jobs}")
    minutes = (budget["wall_minutes"] if minutes is None else minutes) or 0.0  # 0: the budget's fixed epochs
    if minutes < 0:
        raise StillroomError(f"demo: minutes must be >= 0, got {minutes}")
    budget["wall_minutes"] = minutes or budget["wall_minutes"]  # what the report holds the run to
    t_start, cpu_start = time.perf_counter(), cpu_times()
    timings: dict[str, float] = {}
    console.rule("[bold]1/5 data: species silhouettes")
    index, sprites, timings["data"] = demo_dataset(out, budget, tarball)
    config_dir, runs_dir = out / "configs", out / "runs"

    s_name = student_name(budget)

    def teacher_raw(seed: int, epochs: int) -> dict[str, Any]:
        return teacher_config(index.root, seed, epochs, budget)

    def student_raw(name: str, epochs: int, **extra: Any) -> dict[str, Any]:
        return student_config(name, index.root, epochs, budget, **extra)

    probes = (teacher_raw(budget["teacher_seeds"][0], 1), student_raw(f"{s_name}_scratch", 1))
    plan = plan_epochs(out / "plan.json", budget, index, minutes, time.perf_counter() - t_start, probes)
    if plan is None:  # fixed epochs: how long they take here, for budgets with a measured reference run
        forecast_fixed(budget, probes)

    console.rule("[bold]2/5 teachers")
    teacher_raws = [teacher_raw(seed, budget["teacher_epochs"]) for seed in budget["teacher_seeds"]]
    t0 = time.perf_counter()
    trained = _train_all(teacher_raws, config_dir, runs_dir, jobs)
    timings["teachers"] = time.perf_counter() - t0 if any(sec for _, sec in trained.values()) else 0.0
    teachers = [trained[raw["name"]][0] for raw in teacher_raws]

    views = budget["replay_views"]
    console.rule(
        f"[bold]3/5 soft labels: export{f' ({views} replayed views)' if views else ''} + strict alignment check"
    )
    stores, alignment = _soft_labels(teachers, index, budget, out / "alignment_check.json", timings)

    console.rule("[bold]4/5 students")
    replan_students(out / "plan.json", budget, plan, minutes, time.perf_counter() - t_start)
    scratch_raw = student_raw(f"{s_name}_scratch", budget["student_epochs"])
    kd_raw = student_raw(
        f"{s_name}_kd",
        budget["student_epochs"],
        loss=budget["student_loss"],
        teachers={"cached": [str(s.path) for s in stores]},
    )
    t0 = time.perf_counter()
    trained = _train_all([scratch_raw, kd_raw], config_dir, runs_dir, jobs)
    timings["students"] = time.perf_counter() - t0 if any(sec for _, sec in trained.values()) else 0.0
    scratch, kd = trained[scratch_raw["name"]][0], trained[kd_raw["name"]][0]

    console.rule("[bold]5/5 trade-off + report")
    teacher_runs = {
        f"teacher ({budget['teacher_model']}, seed {s})": run
        for s, run in zip(budget["teacher_seeds"], teachers, strict=True)
    }
    s_label = budget["student_model"] + (", ImageNet start" if budget["student_start"] else "")
    student_runs = {
        f"student scratch ({s_label})": scratch,
        f"student KD ({budget['student_loss']['name']}, {s_label})": kd,
    }
    t0 = time.perf_counter()
    style, why = held_out_style(out, index, sprites, tarball is not None)
    if style is None:
        console.print(f"[yellow]other-artist figures skipped[/]: {why}", highlight=False)
    # measured on every run of the demo, reused runs too: latency belongs to this machine now, not to the first run
    measure_tradeoff(teacher_runs, student_runs, index, out / TRADEOFF_FILE, latency_seconds=budget["latency_seconds"],
                     style_index=style, style_skipped=why or None)  # fmt: skip
    timings["tradeoff"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    steal = steal_share(cpu_start, cpu_times())  # a measurement, not a setting: beside the wall time, not in budget
    runs = {**teacher_runs, **student_runs}
    report = write_demo_report(out / "report.md", index, runs, alignment, timings, budget, cpu_steal_share=steal)
    html_report = write_html_report(out, out / "report.html")
    console.print(f"[bold green]html report:[/] {html_report}")
    return report
