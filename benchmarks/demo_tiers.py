"""The demo's epoch tiers over seeds: what a host that plans a given tier gets (issue 14 items 1 and 6).

`make demo` trains the longest (teacher, student) tier of ``pipeline.plan.TIERS`` predicted to fit its budget on the
host (``pipeline/plan.py``), so a slow host gets a short tier. This script trains the demo's own recipe at chosen
tiers, built by the demo's own config builder (``pipeline.budgets.run_config`` with ``DEMO_BUDGET``): one resnet18
teacher (seed 0, bfloat16 where the CPU has it, as the demo), its replay store of the demo's views (augment seed
0), then for each student seed a scratch and a LumiNet KD student (``teachers.replay_seed`` 0, the demo's store).
Every run is scored with its best weights on the index's val and test rows and on another artist's drawings of the
same species (``--style``: the box icons of ``stillroom data build style-icons``, val = odd national ids).

    python benchmarks/demo_tiers.py --index artifacts/demo_plan/data/sprites64_1-151 \\
        --style artifacts/demo_plan/data/style_icons_sprites64_1-151 --out artifacts/s36/tiers \\
        --tier 6x10 --tier 8x12 --seeds 0 1 2
    stillroom compare artifacts/s36/tiers/results_summary.csv --metric test_top1 --a kd_6x10 --b kd_8x12

``--loss-arm NAME=YAML`` adds a distilled arm with another loss (a YAML mapping of ``loss``: name and params), the
same teacher, store and seeds as ``kd``, as variant ``NAME_<tier>``. A wrapper's ``base`` takes its registry defaults,
not the demo's config: the script warns of every parameter of the demo's LumiNet that an arm runs otherwise without
setting it (e.g. ``warmup_epochs``, 0 by default, 2 in the demo), so that two arms differ in the change under test only:

    python benchmarks/demo_tiers.py ... --arms kd --loss-arm \
        'ln04={name: logitnorm, params: {base: luminet, base_params: {warmup_epochs: 2}, tau: 0.04}}'

``--geometry-arm NAME`` adds a distilled arm with the ``kd`` arm's loss whose replay store holds the teacher's
logits on each view *before* its drawing-style changes (augment ``restyle_geometry``, ``teachers.replay_view:
geometry``): the student still trains on the restyled view, its target is the teacher's answer on the drawing as
drawn. Its store is exported once per teacher beside the demo's (``..._replay_v<V>_restyle_geometry``).

``--arm-data NAME=YAML`` sets data options of a loss arm's runs, e.g. batches of classmates (``data.per_class``):

    python benchmarks/demo_tiers.py ... --arms kd --loss-arm 'pk4={name: luminet, params: {warmup_epochs: 2}}' \
        --arm-data 'pk4={per_class: 4}'

Tiers of the same teacher epochs share one teacher (named after the first of them) and its store, so ``--tier 8x12
--tier 8x20`` compares student epochs alone; ``--arms kd`` trains the distilled students only. ``--teacher RUN``
distils from a teacher already trained on ``--index`` (e.g. the demo's own, ``artifacts/demo/runs/teacher_*``)
instead of training one; every tier must then have its epochs. ``--style`` is any other index of the same species
(its columns keep the ``icons_`` names).

Writes ``OUT/results_summary.csv`` (variant, seed, val_top1, test_top1, icons_val_top1, icons_test_top1; the
format of ``stillroom compare``, fractions) and ``OUT/tiers.md`` (mean +- sd over seeds, %). Resumable: finished
runs and stores are reused (the demo's ``_train_all``). Students train two at a time, one torch thread each, as in
the demo.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
import yaml

from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
from stillroom.distill.losses import resolve_loss_params
from stillroom.models.inference import predict_logits
from stillroom.pipeline.budgets import DEMO_BUDGET, STUDENT_SEED, run_config
from stillroom.pipeline.demo import _soft_labels, _train_all
from stillroom.runs import Run

COLUMNS = ("val_top1", "test_top1", "icons_val_top1", "icons_test_top1")


def _tier(text: str) -> tuple[int, int]:
    teacher, student = text.lower().split("x")
    return int(teacher), int(student)


def _score(run_dir: Path, sets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Top-1 (a fraction, as sweeps' summaries hold it) of the run's best weights on each (images, rows, labels)
    set."""
    loaded = Run(run_dir).load("best")
    model, norm = loaded.model.eval(), loaded.normalizer
    return {
        name: float((predict_logits(model, norm, ims, rows).argmax(1) == labels).mean())
        for name, (ims, rows, labels) in sets.items()
    }


def _loss_arm(text: str) -> tuple[str, dict]:
    """NAME=YAML -> (NAME, the loss mapping); the loss is checked when its runs' configs are built."""
    name, sep, spec = text.partition("=")
    loss = yaml.safe_load(spec) if sep else None
    if not name.isidentifier() or name in ("scratch", "kd", "teacher") or not isinstance(loss, dict):
        raise argparse.ArgumentTypeError(
            f"--loss-arm {text!r}: expected NAME=YAML mapping, NAME an identifier other than scratch, kd, teacher"
        )
    return name, loss


def _arm_data(text: str) -> tuple[str, dict]:
    """NAME=YAML -> (NAME, options merged into that arm's ``data`` mapping; checked with its runs' configs)."""
    name, sep, spec = text.partition("=")
    data = yaml.safe_load(spec) if sep else None
    if not isinstance(data, dict) or "index" in data:
        raise argparse.ArgumentTypeError(f"--arm-data {text!r}: expected NAME=YAML mapping of data options but index")
    return name, data


def unset_differences(loss: dict, reference: dict) -> dict[str, tuple]:
    """The parameters in which an arm's loss, or the ``base`` it wraps, runs the ``reference`` loss (the ``kd`` arm's,
    the demo's LumiNet) with other values without the arm setting them: {name: (arm's value, reference's)}. A
    wrapper's base takes the registry's defaults, not the demo's config (LumiNet's warm-up: 0 epochs, not 2), which
    would make the arms differ in more than the change under test."""
    ref = resolve_loss_params(reference["name"], reference.get("params") or {})
    given = dict(loss.get("params") or {})
    resolved = resolve_loss_params(loss["name"], given)
    if loss["name"] == reference["name"]:
        mine, explicit = resolved, given
    elif resolved.get("base") == reference["name"]:
        mine, explicit = resolved["base_params"], dict(given.get("base_params") or {})
    else:
        return {}
    return {k: (mine.get(k), v) for k, v in ref.items() if k not in explicit and mine.get(k) != v}


def mean_sd_rows(rows: list[dict], columns: tuple[str, ...]) -> list[str]:
    """One markdown row per variant, in order: its seed count and each column's mean +- sd over seeds, in %."""
    lines = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        group = [r for r in rows if r["variant"] == variant]
        cells = []
        for c in columns:
            v = 100.0 * np.array([r[c] for r in group])
            cells.append(f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v[0]:.2f}")
        lines.append(f"| {variant} | {len(group)} | " + " | ".join(cells) + " |")
    return lines


def _write(out: Path, rows_out: list[dict]) -> None:
    """results_summary.csv and tiers.md of the rows so far (after every tier: a stopped run keeps them)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results_summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["variant", "seed", *COLUMNS])
        writer.writeheader()
        writer.writerows(rows_out)
    lines = [
        "| variant | seeds | " + " | ".join(f"{c} %" for c in COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(COLUMNS),
        *mean_sd_rows(rows_out, COLUMNS),
    ]
    (out / "tiers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _geometry_stores(teacher: Path, index, budget: dict, out_json: Path) -> list:
    """The teacher's replay store of the demo's views before their style changes (``data.augment.teacher_view``),
    checked against the index and the views a ``replay_view: geometry`` student re-creates."""
    return _soft_labels([teacher], index, budget, out_json, {}, replay_view="geometry")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=Path, required=True, help="the demo's species index")
    ap.add_argument("--style", type=Path, required=True, help="box icons of the same species (data build style-icons)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tier", type=_tier, action="append", required=True, help="TEACHERxSTUDENT epochs, e.g. 6x10")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="student seeds")
    ap.add_argument("--arms", nargs="+", choices=("scratch", "kd"), default=["scratch", "kd"], help="students to train")
    ap.add_argument("--teacher", type=Path, help="a teacher run trained on --index instead of training one")
    ap.add_argument("--loss-arm", type=_loss_arm, action="append", default=[],
                    help="NAME=YAML: a distilled arm with this loss mapping (name, params)")  # fmt: skip
    ap.add_argument("--arm-data", type=_arm_data, action="append", default=[],
                    help="NAME=YAML: data options of loss arm NAME's runs, e.g. 'pk4={per_class: 4}'")  # fmt: skip
    ap.add_argument("--geometry-arm", action="append", default=[],
                    help="NAME: a kd arm, its targets on the views before their style changes")  # fmt: skip
    args = ap.parse_args()
    loss_arms, arm_data = dict(args.loss_arm), dict(args.arm_data)
    if set(arm_data) - set(loss_arms):
        raise SystemExit(f"--arm-data {sorted(set(arm_data) - set(loss_arms))}: no --loss-arm of that name")
    taken = {"scratch", "kd", "teacher", *loss_arms}
    if any(not g.isidentifier() or g in taken for g in args.geometry_arm):
        raise SystemExit(f"--geometry-arm {args.geometry_arm}: names must be new identifiers (taken: {sorted(taken)})")
    arms = [*args.arms, *loss_arms, *args.geometry_arm]
    for name, loss in loss_arms.items():
        for key, (mine, ref) in unset_differences(loss, DEMO_BUDGET["student_loss"]).items():
            print(
                f"warning: --loss-arm {name}: its {DEMO_BUDGET['student_loss']['name']} runs with {key}={mine!r} where "
                f"the kd arm has {ref!r}, not set by the arm: set it (params or base_params) to compare one change"
            )

    budget = dict(DEMO_BUDGET)
    index = load_index(args.index)
    style = load_index(args.style)
    ims, sims = np.asarray(load_images(index)), np.asarray(load_images(style))
    sets = {}
    for name, (im, idx) in {"": (ims, index), "icons_": (sims, style)}.items():
        for split in ("val", "test"):
            rows = idx.split_indices(split)
            sets[f"{name}{split}_top1"] = (im, rows, idx.labels[rows])
    config_dir, runs_dir = args.out / "configs", args.out / "runs"
    rows_out: list[dict] = []
    teachers: dict[int, tuple[Path, list]] = {}  # teacher epochs -> (run, stores): tiers of one teacher share it
    for t_epochs, s_epochs in args.tier:
        tier = f"{t_epochs}x{s_epochs}"
        if args.teacher is not None and t_epochs not in teachers:
            cfg = Run(args.teacher).config
            if cfg is None or cfg.schedule.epochs != t_epochs or Path(cfg.data.index).resolve() != index.root.resolve():
                raise SystemExit(f"--teacher {args.teacher}: not a {t_epochs}-epoch teacher of {index.root}")
            stores, _ = _soft_labels([args.teacher], index, budget, args.out / f"alignment_{tier}.json", {})
            teachers[t_epochs] = (args.teacher, stores)
        if t_epochs not in teachers:
            extra = {"eval_every": t_epochs, "amp": budget["teacher_amp"]}  # the demo validates at the last epoch
            teacher_raw = run_config(f"teacher_{tier}", index.root, "resnet18", t_epochs, 0, budget, **extra)
            teacher = _train_all([teacher_raw], config_dir, runs_dir, jobs=1)[teacher_raw["name"]][0]
            stores, _ = _soft_labels([teacher], index, budget, args.out / f"alignment_{tier}.json", {})
            teachers[t_epochs] = (teacher, stores)
        teacher, stores = teachers[t_epochs]
        geo = {}  # the geometry arms' teachers: the store of the views before their style changes
        if args.geometry_arm:
            geo_stores = _geometry_stores(teacher, index, budget, args.out / f"alignment_{tier}_geometry.json")
            geo = {"cached": [str(s.path) for s in geo_stores], "replay_seed": STUDENT_SEED, "replay_view": "geometry"}
        raws = []
        for seed in args.seeds:
            common = {"eval_every": budget["student_eval_every"]}
            if "scratch" in args.arms:
                raws.append(run_config(f"scratch_{tier}_s{seed}", index.root, "mobilenet_v3_small", s_epochs, seed,
                                       budget, **common))  # fmt: skip
            kd_teachers = {"cached": [str(s.path) for s in stores], "replay_seed": STUDENT_SEED}
            losses = {"kd": budget["student_loss"]} if "kd" in args.arms else {}
            for arm, loss in {**losses, **loss_arms}.items():
                raws.append(run_config(f"{arm}_{tier}_s{seed}", index.root, "mobilenet_v3_small", s_epochs, seed,
                                       budget, loss=loss, teachers=kd_teachers, **common))  # fmt: skip
                raws[-1]["data"].update(arm_data.get(arm, {}))
            for arm in args.geometry_arm:
                raws.append(run_config(f"{arm}_{tier}_s{seed}", index.root, "mobilenet_v3_small", s_epochs, seed,
                                       budget, loss=budget["student_loss"], teachers=geo, **common))  # fmt: skip
        trained = _train_all(raws, config_dir, runs_dir, jobs=2)
        rows_out.append({"variant": f"teacher_{tier}", "seed": 0, **_score(teacher, sets)})
        for seed in args.seeds:
            for kind in arms:
                run_dir = trained[f"{kind}_{tier}_s{seed}"][0]
                rows_out.append({"variant": f"{kind}_{tier}", "seed": seed, **_score(run_dir, sets)})
        _write(args.out, rows_out)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
