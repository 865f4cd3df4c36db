"""``stillroom sweep``: named variants x seeds of one base config, resumable, summarised in one CSV.

Seed 001 §2, §4 and its Appendix compare families over seeds from a ``results_summary.csv`` with one row per run;
this builds that file from ordinary training runs. A sweep file (YAML, validated, unknown keys are errors)::

    name: kd-vs-scratch            # optional
    base: student.yaml             # a train config, relative to this file
    seeds: [0, 1, 2]
    variants:
      scratch: {}
      kd:                          # dotted keys, as `stillroom train --set`; values may be lists or mappings
        loss.name: kd
        loss.params: {kd_weight: 0.5, temperature: 4.0}
        teachers.cached: [runs/teacher/softlabels/ab12cd34ef56]

Each (variant, seed) trains into ``OUT/<variant>/seed<k>/`` (``seed`` and ``name`` are set by the sweep) with the
ordinary trainer and ``resume=True``: a run with ``metrics.json`` is finished and skipped, an interrupted one
continues from its last finished epoch, so re-running the same command completes a sweep. Every config is resolved
and validated before anything trains, loss parameters and teachers included (``distill.losses.check_loss_config``:
a bad ``loss.params`` value or an unknown key in any variant fails the whole sweep at once, not hours in).
``jobs > 1`` trains in that many spawned processes with ``cpu_count // jobs`` torch threads each. After every
finished run ``OUT/results_summary.csv`` is rewritten atomically (``SUMMARY_COLUMNS``; unprefixed metrics are of the
best-validation weights, ``final_*`` of the last epoch, ``*_ts`` after temperature scaling, ``val_*`` on the
validation split the temperature is fitted on; ``wall_seconds`` is the time of the invocation that finished the run,
evaluation included).

Paths inside the base config (``data.index``, teacher stores) resolve from the working directory, exactly as with
``stillroom train``; only ``base`` itself is relative to the sweep file.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stillroom._io import StillroomError, atomic_write_json, atomic_write_text, read_json
from stillroom.config import config_from_dict, read_yaml_mapping, set_dotted
from stillroom.runs import SUMMARY_FILE

__all__ = [
    "SweepSpec",
    "SweepRun",
    "SUMMARY_FILE",
    "SUMMARY_COLUMNS",
    "load_sweep",
    "plan_sweep",
    "run_sweep",
    "set_torch_threads",
]

RUN_INFO_FILE = "sweep_run.json"
_PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_METRICS = ("top1", "top5", "macro_f1", "nll", "ece", "nll_ts", "ece_ts")
SUMMARY_COLUMNS: tuple[str, ...] = (
    ("variant", "seed", "run_dir", "best_epoch", "epochs", "temperature", "final_temperature")
    + tuple(f"{p}{s}_{m}" for p in ("", "final_") for s in ("val", "test") for m in _METRICS)
    + ("wall_seconds", "finished_at")
)


class SweepSpec(BaseModel):
    """The sweep file's schema (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "sweep"
    base: Path = Field(description="base train config, relative to the sweep file")
    seeds: list[int] = Field(min_length=1)
    variants: dict[str, dict[str, Any]] = Field(min_length=1, description="name -> {dotted.key: value}")

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v

    @field_validator("variants")
    @classmethod
    def _plain_variants(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, overrides in v.items():
            if not _PLAIN.match(str(name)):
                raise ValueError(f"variant name {name!r} must be a plain directory name (letters, digits, _ . + -)")
            for key in overrides or {}:
                if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
                    raise ValueError(f"variant {name!r}: {key!r} is not a dotted config key")
                if key in ("seed", "name"):
                    raise ValueError(f"variant {name!r}: {key!r} is set by the sweep; list seeds under 'seeds'")
        return {str(k): dict(o or {}) for k, o in v.items()}


@dataclass(frozen=True)
class SweepRun:
    """One cell of the grid: its resolved, validated config (a JSON-able dict) and its directory."""

    variant: str
    seed: int
    run_dir: Path
    config: dict[str, Any]

    @property
    def finished(self) -> bool:
        return (self.run_dir / "metrics.json").is_file()


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    return read_yaml_mapping(path, what)


def load_sweep(sweep_yaml: str | Path) -> tuple[SweepSpec, dict[str, Any]]:
    """Validate the sweep file; return it and its base config (raw dict, ``base`` resolved from the sweep file)."""
    path = Path(sweep_yaml)
    raw = _read_yaml(path, "sweep file")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        lines = [f"{path}: invalid sweep file"]
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "(root)"
            lines.append(f"  {loc}: {e['msg']}" + (f" (got {e['input']!r})" if e["type"] != "missing" else ""))
        raise StillroomError("\n".join(lines)) from None
    base_path = spec.base if spec.base.is_absolute() else path.parent / spec.base
    return spec, _read_yaml(base_path, "base config")


def plan_sweep(sweep_yaml: str | Path, out_dir: str | Path) -> list[SweepRun]:
    """Every (variant, seed) run of the sweep, in file order (variants, then seeds), each config validated."""
    spec, base = load_sweep(sweep_yaml)
    return _plan(spec, base, sweep_yaml, Path(out_dir))


def _plan(spec: SweepSpec, base: dict[str, Any], sweep_yaml: str | Path, out_dir: Path) -> list[SweepRun]:
    # the loss registry imports torch: imported here, as the trainer is, so reading a sweep file stays light
    from stillroom.distill.losses import check_loss_config

    runs = []
    for variant, overrides in spec.variants.items():
        # values are already parsed by the sweep file's YAML: set them as they are (no string round trip)
        raw = copy.deepcopy(base)
        for k, v in overrides.items():
            try:
                set_dotted(raw, k, copy.deepcopy(v))
            except StillroomError as err:
                raise StillroomError(f"{sweep_yaml}: variant {variant!r}: {err}") from None
        for seed in spec.seeds:
            cell = {**raw, "seed": seed, "name": f"{variant}-seed{seed}"}
            source = f"{sweep_yaml} [variant {variant!r}, seed {seed}]"
            cfg = config_from_dict(cell, source=source)
            check_loss_config(cfg, source=source)  # loss name, parameters and teachers, before anything trains
            runs.append(SweepRun(variant, seed, out_dir / variant / f"seed{seed}", json.loads(cfg.model_dump_json())))
    return runs


def set_torch_threads(threads: int) -> None:
    """Initializer of a spawned training process: its share of the cores (torch alone would take them all, and two
    processes that each spin every core slow each other several times over)."""
    import torch

    torch.set_num_threads(threads)


def training_pool(jobs: int, threads: int) -> ProcessPoolExecutor:
    """``jobs`` training processes with ``threads`` torch threads each, for the sweep and the demo. Spawned, not
    forked: a child forked from a process whose OpenMP pool already runs can hang in its first parallel region."""
    ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(jobs, mp_context=ctx, initializer=set_torch_threads, initargs=(threads,))


def _train_one(config: dict[str, Any], run_dir: str, variant: str, seed: int) -> dict[str, Any]:
    """Train (or resume) one run; record its wall time beside it. Runs in the main or a spawned worker process."""
    from stillroom.pipeline import train

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    train(config_from_dict(config, source=run_dir), run_dir, resume=True)
    info = {
        "variant": variant,
        "seed": seed,
        "wall_seconds": time.perf_counter() - t0,
        "started_at": started,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pid": os.getpid(),
    }
    atomic_write_json(Path(run_dir) / RUN_INFO_FILE, info)
    return info


def _summary_row(run: SweepRun) -> dict[str, Any]:
    metrics = read_json(run.run_dir / "metrics.json")
    info_path = run.run_dir / RUN_INFO_FILE
    info = read_json(info_path) if info_path.is_file() else {}
    row: dict[str, Any] = {
        "variant": run.variant,
        "seed": run.seed,
        "run_dir": str(run.run_dir),
        "best_epoch": metrics.get("best_epoch"),
        "epochs": metrics.get("epochs"),
        "wall_seconds": info.get("wall_seconds"),
        "finished_at": info.get("finished_at"),
    }
    if row["wall_seconds"] is None and (run.run_dir / "state.json").is_file():  # trained outside the sweep
        history = read_json(run.run_dir / "state.json").get("history", [])
        row["wall_seconds"] = sum(h.get("epoch_seconds", 0.0) for h in history)
    data = run.config["data"]
    for label, split in (("val", data["val_split"]), ("test", data["test_split"])):
        for w, prefix in (("best", ""), ("final", "final_")):
            rep = metrics.get("splits", {}).get(split, {}).get(w)
            if rep is None:
                continue
            for m in ("top1", "top5", "macro_f1", "nll"):
                row[f"{prefix}{label}_{m}"] = rep.get(m)
            cal = rep.get("calibration") or {}
            before, after = cal.get("before") or {}, cal.get("after") or {}
            row[f"{prefix}{label}_ece"] = before.get("ece")
            row[f"{prefix}{label}_nll_ts"] = after.get("nll")
            row[f"{prefix}{label}_ece_ts"] = after.get("ece")
            row[f"{prefix}temperature"] = cal.get("temperature")
    return row


def _write_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in SUMMARY_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def run_sweep(
    sweep_yaml: str | Path,
    out_dir: str | Path,
    jobs: int = 1,
    log: Callable[[str], None] | None = None,
    variants: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> Path:
    """Train every unfinished run of the sweep (module docstring); return the path of ``results_summary.csv``.

    ``variants`` / ``seeds`` restrict what is trained now (e.g. 3 seeds for the baselines, 2 for the rest);
    every finished run of the sweep stays in the summary. Runs that fail are reported together at the end
    (``StillroomError``) after the others have finished.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise StillroomError(f"run_sweep: jobs must be a positive integer, got {jobs!r}")
    say = log or (lambda msg: None)
    out_dir = Path(out_dir)
    spec, base = load_sweep(sweep_yaml)
    runs = _plan(spec, base, sweep_yaml, out_dir)
    for name, wanted, known in (("variant", variants, spec.variants), ("seed", seeds, spec.seeds)):
        unknown = sorted(set(wanted or ()) - set(known))
        if unknown:
            raise StillroomError(f"{sweep_yaml}: no {name} {unknown} in the sweep (it has {list(known)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out_dir / "sweep.json",
        {"sweep_file": str(sweep_yaml), "spec": json.loads(spec.model_dump_json()), "base_config": base},
    )
    summary = out_dir / SUMMARY_FILE
    order = {(r.variant, r.seed): i for i, r in enumerate(runs)}
    done: dict[tuple[str, int], dict[str, Any]] = {}

    def finish(run: SweepRun) -> None:
        done[(run.variant, run.seed)] = _summary_row(run)
        _write_summary(summary, [done[k] for k in sorted(done, key=order.__getitem__)])

    todo = []
    for run in runs:
        if run.finished:
            say(f"skip {run.variant} seed {run.seed}: finished ({run.run_dir})")
            finish(run)
        elif (variants is None or run.variant in variants) and (seeds is None or run.seed in seeds):
            todo.append(run)
    if not done:
        _write_summary(summary, [])
    failures: list[str] = []
    jobs = min(jobs, max(1, len(todo)))
    if jobs == 1:
        for run in todo:
            say(f"train {run.variant} seed {run.seed} -> {run.run_dir}")
            try:
                _train_one(run.config, str(run.run_dir), run.variant, run.seed)
            except StillroomError as err:
                failures.append(f"{run.variant} seed {run.seed}: {err}")
                continue
            finish(run)
    elif todo:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        say(f"training {len(todo)} run(s) in {jobs} processes, {threads} torch thread(s) each")
        with training_pool(jobs, threads) as pool:
            futures = {pool.submit(_train_one, r.config, str(r.run_dir), r.variant, r.seed): r for r in todo}
            for fut in as_completed(futures):
                run = futures[fut]
                try:
                    fut.result()
                except StillroomError as err:
                    failures.append(f"{run.variant} seed {run.seed}: {err}")
                    continue
                say(f"finished {run.variant} seed {run.seed}")
                finish(run)
    if failures:
        raise StillroomError(
            f"{len(failures)} sweep run(s) failed (others finished; see {summary}):\n  " + "\n  ".join(failures)
        )
    return summary
