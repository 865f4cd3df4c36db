"""``stillroom demo``: the whole pipeline on Gen-1 silhouettes (species 1-151, 64 px), end to end.

build data -> train a resnet18 teacher (seed 0) -> export its logits of 4 restyled views per image (a replay store)
+ strictly check it -> train a mobilenet_v3_small from scratch and one distilled from the teacher on the replayed
views (LumiNet) -> evaluate -> the trade-off (``evaluate.tradeoff``: parameters, weights size, batch-1 CPU latency,
test accuracy of the teacher (and of the ensemble when there are several) and the students, share of the teacher's
top-1 kept, leakage probe, top-1 on the species' box icons by another artist; ``tradeoff.json``, about 2 s per
model) -> report.md and the self-contained report.html, both opening with that trade-off.
Every run is an ordinary ``stillroom train`` config (written to ``<out>/configs``), so each step can be repeated
by hand. Finished steps are reused when the demo is run again (runs resume; the data build is skipped when its
index is complete; a run trained under another config is moved aside and trained again), so an interrupted demo
continues where it stopped. The teacher trains with all of torch's threads, then the two students side by side
(``jobs``, one torch thread each on 2 cores; ``_train_all`` says why). ``teacher_seeds`` with more seeds trains
that many teachers side by side and distills from all of them (fused).

Budget (DEMO_BUDGET, below) on the 2-core CPU box: ``make demo`` from a fresh clone must stay under 15 minutes on an
idle machine: it trains the longest recipe of ``plan.TIERS`` predicted to fit on the machine it runs on.
``budget="quick"`` (``quick=True``) shrinks everything to a smoke test; ``budget="patient"`` trains the same
pipeline long enough to be limited by the data instead of the clock (PATIENT_BUDGET: about an hour on the same box);
``budget="best"`` trains the best student measured here, from three 60-epoch teachers (BEST_BUDGET: about 2 hours).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import yaml

from stillroom._io import StillroomError, atomic_write_text
from stillroom._progress import console, parallel_progress, training_progress
from stillroom._timing import cpu_times, steal_share
from stillroom.config import config_from_dict
from stillroom.data.index import DatasetIndex
from stillroom.pipeline.demo_data import demo_dataset
from stillroom.pipeline.plan import TIERS, plan_epochs, replan_students

__all__ = ["run_demo", "BUDGETS", "BEST_BUDGET", "DEMO_BUDGET", "PATIENT_BUDGET"]

# `make demo`, fresh clone, idle 2-core box: 11.9-14.6 min on recent hosts, up to 21.7 min without bfloat16 (README).
DEMO_BUDGET = {
    "species": (1, 151),
    "size": 64,
    # Epochs with `--minutes 0`. One resnet18 teacher for 12 epochs on both threads instead of two for 7 side by side
    # (same wall time): a better teacher (test 93.9% vs 86.0 / 87.8%, ensemble 88.3%) and student (91.68 +- 0.81% vs
    # 87.97 +- 0.48% test, val +4.0, 3 of 3 seeds; BENCHMARKS "One teacher for the demo's teacher budget").
    "teacher_epochs": 12,
    "student_epochs": 20,
    "tiers": TIERS,  # (teacher, student) epochs: the longest predicted to fit wall_minutes here (pipeline/plan.py)
    "teacher_seeds": (0,),
    "teacher_model": "resnet18",
    # both students (scratch and distilled); ``student_start: imagenet`` starts them from the pinned ImageNet weights
    # (``model.pretrained``; EfficientNet-Lite only, models/pretrained.py), None from random weights
    "student_model": "mobilenet_v3_small",
    "student_start": None,
    # bfloat16 autocast for the teacher's training step where the CPU has native bfloat16 (AMX / AVX512-BF16;
    # float32 elsewhere): 555 vs 710 s, students' val level, test -0.8 (3 seeds; BENCHMARKS "A bfloat16 teacher for
    # the demo"). Students stay float32: bfloat16 slows mobilenet_v3_small's depthwise layers on the CPU.
    "teacher_amp": "bf16",
    # validate at the last epoch only (~12 s each): it was the best val epoch of every 10- and 12-epoch teacher run
    "teacher_eval_every": 12,
    # restyle (stroke thickness, re-rendering at other resolutions; data/augment.py) at batch 64: same clean val
    # top-1 as silhouette at batch 128, ~30 points more on the outline-rewrite proxy (BENCHMARKS "Restyle by
    # default"); at batch 128 it has too few steps in 24 epochs (val -12.8 points)
    "batch_size": 64,
    "augment": "restyle",
    # The KD student learns from a replay store (issue 7: the teachers' logits of V fixed restyled views per image)
    # instead of the clean images' logits, which disagree with the restyled views it sees (KD fell below scratch: 78.1
    # vs 79.7%, 3 seeds); V = 4 gives 84.3% (BENCHMARKS "The demo's KD student learns from replayed views"). 0 = clean
    # images' logits. Costs one teacher forward per view and image (~45 s per teacher).
    "replay_views": 4,
    # The distilled student's loss: LumiNet (seed 002; REFERENCE 6 parameters as in configs/crossview151/sweep.yaml,
    # warm-up 2 epochs) on those views. Chosen on val over 3 seeds on the demo's split and teachers
    # (`bash benchmarks/block_151.sh`): val 88.2 vs 85.3% for KD (a 0.5, T 4) and 83.1% for DKD; test 89.1 vs 84.3%.
    "student_loss": {
        "name": "luminet",
        "params": {"kd_scale": 578.0, "temperature": 4.0, "eps": 1e-5, "warmup_epochs": 2, "multi_teacher": "fused"},
    },
    # every 4th epoch (~5 s of a one-thread student each): the best-val epoch is picked among 4, 8, .., 20
    "student_eval_every": 4,
    # The species drawn a second time, by another hand: their official artwork (`data build style-artwork`, one
    # drawing per species) as labelled train rows, this many copies each (each copy restyled afresh). Teachers of
    # the demo recipe read the box icons, a third style neither data set has, better with them (BENCHMARKS "A second
    # drawing of each served species"). 0 (or the package unavailable): the sprites only.
    "second_style_repeat": 8,
    "latency_seconds": 1.0,  # timed batch-1 calls per model in the trade-off (after 0.3 s of warm-up)
    "wall_minutes": 15,  # what `make demo` may take on the 2-core box; the report says whether this run did
}
STUDENT_SEED = 0  # both students; replay stores are exported with it as their augment seed
QUICK_BUDGET = {
    **DEMO_BUDGET,
    "species": (1, 12),
    "size": 32,
    "teacher_epochs": 2,
    "student_epochs": 3,
    "replay_views": 2,
    "tiers": (),
    "student_eval_every": 1,
    "latency_seconds": 0.5,
    "wall_minutes": None,
}
# Patient teachers and students (Beyer et al. 2022: consistent views, long schedules), the recipe of
# benchmarks/block_patient.sh (configs/block151/patient.yaml): 32 teacher epochs instead of 12, 16 replayed views
# instead of 4, 96 student epochs instead of 20. Measured there (BENCHMARKS "The block split with patient teachers
# and students", variant lum_t32x1_e96): 96-epoch students of one 32-epoch teacher, 97.85-98.20% test on 3 seeds
# (the 1-NN probe: 96.1%), this budget's recipe (one teacher, DEMO_BUDGET's teacher_seeds).
PATIENT_BUDGET = {
    **DEMO_BUDGET,
    "teacher_epochs": 32,
    "student_epochs": 96,
    "tiers": (),
    "replay_views": 16,
    "teacher_eval_every": 4,
    "student_eval_every": 4,
    "teacher_amp": "off",  # float32, as its 3-seed figures were measured (bfloat16 was measured on 12 epochs only)
    "wall_minutes": None,  # about an hour (module docstring), no promise
}
# The best student measured on the demo's data (BENCHMARKS "The larger student on the CPU, from three teachers"):
# three resnet18 teachers of the demo's recipe trained 60 epochs each (bfloat16 where native, validated at the end),
# one 4-view replay store each, fused by the LumiNet student loss; the students are efficientnet_lite0 (3.56 M
# parameters) from ImageNet weights, 60 epochs. Measured there with `benchmarks/pretrained_teacher.sh` (3 seeds):
# ID test 98.80 +- 0.10%, icons val / test 33.04 +- 1.74 / 42.12 +- 1.05% against 34.78 / 43.64% for the three
# teachers' mean softmax; the mobilenet_v3_small student of the same store keeps 85% of one teacher's icons figure,
# this one 95-97% of the three's. About 2 hours on the 2-core box (teachers two side by side, ~33 s an epoch).
BEST_BUDGET = {
    **DEMO_BUDGET,
    "teacher_seeds": (0, 1, 2),
    "teacher_epochs": 60,
    "student_epochs": 60,
    "tiers": (),
    "teacher_eval_every": 60,
    "student_eval_every": 60,
    "student_model": "efficientnet_lite0",
    "student_start": "imagenet",
    "wall_minutes": None,
}
BUDGETS = {"demo": DEMO_BUDGET, "quick": QUICK_BUDGET, "patient": PATIENT_BUDGET, "best": BEST_BUDGET}
#: run-name abbreviations of the students' models (the demo's runs keep their historical names)
_SHORT = {"mobilenet_v3_small": "mnv3s", "efficientnet_lite0": "lite0"}


def _config(
    name: str, index: Path, model: str, epochs: int, seed: int, budget: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": name,
        "data": {"index": str(index)},
        "model": {"name": model},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"epochs": epochs, "warmup_epochs": 1},
        "batch_size": budget["batch_size"],
        "augment": budget["augment"],
        "seed": seed,
    }
    cfg.update(extra)
    return cfg


def _teacher_config(index: Path, seed: int, epochs: int, budget: dict[str, Any]) -> dict[str, Any]:
    model, extra = budget["teacher_model"], {"eval_every": budget["teacher_eval_every"], "amp": budget["teacher_amp"]}
    return _config(f"teacher_{model}_s{seed}", index, model, epochs, seed, budget, **extra)


def student_name(budget: dict[str, Any]) -> str:
    """The students' run-name stem: ``student_mnv3s`` for the demo's, ``student_lite0_pt`` for ``best``'s."""
    model = budget["student_model"]
    return f"student_{_SHORT.get(model, model)}{'_pt' if budget['student_start'] else ''}"


def _student_config(name: str, index: Path, epochs: int, budget: dict[str, Any], **extra: Any) -> dict[str, Any]:
    raw = _config(name, index, budget["student_model"], epochs, STUDENT_SEED, budget,
                  eval_every=budget["student_eval_every"], **extra)  # fmt: skip
    if budget["student_start"]:
        raw["model"]["pretrained"] = budget["student_start"]
    return raw


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


def _train_all(
    raws: list[dict[str, Any]], config_dir: Path, runs_dir: Path, jobs: int = 1
) -> dict[str, tuple[Path, float]]:
    """Train (or reuse) every run; ``jobs`` > 1 trains that many at once in spawned processes, each with its share
    of torch's threads. Returns {name: (run dir, wall seconds of its training, 0 when reused)}.

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
    jobs = min(jobs, len(todo))
    if jobs <= 1:
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

    threads = max(1, torch.get_num_threads() // jobs)
    console.print(f"[dim]training {len(todo)} runs in {jobs} processes, {threads} torch thread(s) each[/]")
    ctx = multiprocessing.get_context("spawn")
    failures: list[str] = []
    with ctx.Manager() as manager, parallel_progress([raw["name"] for raw, _, _ in todo]) as updates:
        q = manager.Queue()
        with training_pool(jobs, threads) as pool:
            futures = {pool.submit(_train_worker, raw, str(p), str(r), q): (raw["name"], r) for raw, p, r in todo}
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
    teachers: list[Path], index: DatasetIndex, budget: dict[str, Any], alignment_json: Path, timings: dict[str, float]
) -> tuple[list[Any], dict[str, Any]]:
    """Export every teacher's store for the KD student and check them strictly against the index (and, for replay
    stores, against the views the student will re-create: its augmentation and seed). ``budget["replay_views"]``
    = V > 0: V augmented views per image (RUN/softlabels/<hash>_replay_v<V>); 0: the clean images' logits."""
    from stillroom.data.augment import augment_name
    from stillroom.softlabels.check import require_aligned
    from stillroom.softlabels.export import export_softlabels

    views = budget["replay_views"]
    replay = {"augment": augment_name(budget["augment"], index.recipe), "augment_seed": STUDENT_SEED} if views else None
    stores = []
    for run in teachers:
        t0 = time.perf_counter()
        name = f"{index.index_hash[:12]}_replay_v{views}" if views else index.index_hash[:12]
        store = export_softlabels(
            run,
            index.root,
            run / "softlabels" / name,
            views=views,
            augment=budget["augment"],
            augment_seed=STUDENT_SEED,
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
) -> Path:
    """Run the demo pipeline into ``out``; return the path of the written report. ``budget_name``: one of
    ``BUDGETS`` ("demo", the 15-minute default; "quick", also ``quick=True``; "patient"). ``augment`` / ``batch_size``
    override the budget's training recipe for every model (teachers and students alike); ``replay_views`` the
    number of replayed views the KD student's targets come from (0: the clean images' logits); ``jobs`` how many
    runs train at once (default: 2 when torch has at least 2 threads: the two students side by side, and the
    teachers when there are several; 1: one after the other in this process). ``minutes``: the wall time to plan
    the epochs for (default the budget's ``wall_minutes``; 0: the budget's fixed epochs; ``pipeline.plan``)."""
    from stillroom.data.style_icons import style_icons_or_none
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
        return _teacher_config(index.root, seed, epochs, budget)

    def student_raw(name: str, epochs: int, **extra: Any) -> dict[str, Any]:
        return _student_config(name, index.root, epochs, budget, **extra)

    probes = (teacher_raw(budget["teacher_seeds"][0], 1), student_raw(f"{s_name}_scratch", 1))
    plan = plan_epochs(out / "plan.json", budget, index, minutes, time.perf_counter() - t_start, probes)

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
    style, why = style_icons_or_none(out / "data" / f"style_icons_{sprites.root.name}", sprites, tarball is not None)
    if style is None:
        console.print(f"[yellow]other-artist figures skipped[/]: {why}", highlight=False)
    # measured on every run of the demo, reused runs too: latency belongs to this machine now, not to the first run
    measure_tradeoff(teacher_runs, student_runs, index, out / TRADEOFF_FILE, latency_seconds=budget["latency_seconds"],
                     style_index=style)  # fmt: skip
    timings["tradeoff"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    steal = steal_share(cpu_start, cpu_times())  # a measurement, not a setting: beside the wall time, not in budget
    runs = {**teacher_runs, **student_runs}
    report = write_demo_report(out / "report.md", index, runs, alignment, timings, budget, cpu_steal_share=steal)
    html_report = write_html_report(out, out / "report.html")
    console.print(f"[bold green]html report:[/] {html_report}")
    return report
