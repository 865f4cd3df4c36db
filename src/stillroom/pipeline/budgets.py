"""The demo's budgets (``stillroom demo --budget``) and the run configs each budget gives its teachers and students.

Every budget is the same pipeline (``pipeline.demo``) with other epochs, models and teacher counts; each key says
why it has its value. The config builders turn a budget into ordinary ``stillroom train`` configs, so a demo run
can be repeated by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stillroom._io import StillroomError
from stillroom.pipeline.plan import TIERS

__all__ = [
    "BEST_BUDGET",
    "BUDGETS",
    "DEMO_BUDGET",
    "FUSED_BUDGET",
    "PATIENT_BUDGET",
    "QUICK_BUDGET",
    "STUDENT_LR",
    "STUDENT_SEED",
    "run_config",
    "student_config",
    "student_name",
    "teacher_config",
    "with_student",
]

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
    # peak SGD learning rate of both students (the teacher's recipe too); another ``--student`` architecture takes
    # its own from STUDENT_LR where one was measured (``with_student``)
    "student_lr": 0.05,
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
    # The species drawn by other hands, as labelled train rows: (style, copies of each drawing), each copy restyled
    # afresh (``pipeline.demo_data.STYLE_SETS``): the official artwork (one drawing per species) and the box icons (225
    # drawings). Each style added to the sprites helped the teachers read a style they had not seen, in both
    # directions measured (BENCHMARKS "Each drawing style of the served species, left out in turn": artwork -> icons
    # test +8.8, icons -> artwork +4.0 points, top-5 +12 / +8); a model for an unknown style learns from every style
    # there is, so no held-out style is left to the demo's own report (BENCHMARKS "Every style of the served species
    # in training"). Copies: 4 + 3 (1,279 rows, about the 1,208 of the artwork x 8 alone), so that an epoch costs
    # what it did before the icons (the plan's tier on a slow host); 4 artwork copies read the held-out icons as well
    # as 8 (students, 3 seeds: val +1.2 [-0.9, +4.3], ID val -0.4) and 16 were no better than 8.
    "train_styles": (("artwork", 4), ("icons", 3)),
    "latency_seconds": 1.0,  # timed batch-1 calls per model in the trade-off (after 0.3 s of warm-up)
    "wall_minutes": 15,  # what `make demo` may take on the 2-core box; the report says whether this run did
}
STUDENT_SEED = 0  # both students; replay stores are exported with it as their augment seed
# Peak learning rate of both demo students (scratch and distilled) per architecture trained from random weights, chosen
# on validation at the demo's student recipe (20 epochs, restyle at batch 64, SGD with momentum 0.9, one warm-up epoch,
# cosine decay; the artwork held out; BENCHMARKS "A learning rate per student architecture"). A network from scratch
# learns well only near its own lr: at the demo's 0.05 a RegNetX-200MF scratch twin read 64.1% ID val against 89.4% at
# 0.2 (single runs), so the report's KD-over-scratch line measured the lr, not the teacher. regnetx_002: 0.2 against 0.4
# from scratch (3 seeds: ID val -0.9, artwork val +4.4) and against 0.05 distilled (3 seeds on each of two hosts: ID val
# +0.8 / +2.0, artwork val +0.4 / -0.4). mobilenet_v3_small keeps 0.05: from scratch 0.1 gave ID val +2.3 but the
# artwork -10.5 (single runs), distilled 0.1 gave val -2.15 (3 seeds, the block split). An architecture not listed
# trains at the budget's ``student_lr``, and the demo and its report say so.
STUDENT_LR = {"mobilenet_v3_small": 0.05, "regnetx_002": 0.2}
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
    "train_styles": (("artwork", 8),),  # as measured; the box icons stay the held-out style of its report
}
# The demo's pipeline with its ensemble: three resnet18 teachers of the demo's recipe trained 80 epochs instead of 12
# (seeds 0-2, validated at the end), one 4-view replay store each, fused by the LumiNet student loss, and
# mobilenet_v3_small students trained 80 epochs instead of 20 (validated at the end). Measured with the artwork held
# out (`benchmarks/pretrained_teacher.sh`, BENCHMARKS "Teachers trained as long as the students", 5 student seeds):
# the 80-epoch teachers read the held-out artwork at 70.6 / 75.1% (val / test) against 57.9 / 67.1% for 12 epochs, and
# their students read it at 70.8 / 69.3% against 62.1 / 69.6% for the students of 12-epoch teachers (val +8.7 points,
# 5 of 5 seeds; test level) and 61.8 / 67.2% for 80-epoch students from scratch; on the sprites (ID test) 98.4%
# against 97.4 / 97.9%. With 12-epoch teachers (this budget until 2026-12-07) the teachers added little over the
# scratch twin: the schedule did the work (BENCHMARKS "The scratch twin at 80 epochs"). The trade-off at the served
# ladder: these students accept 59-63% of the held-out artwork, the short teachers' 71-75% (and 15-24% of three OOD
# sets of other styles, where those accepted 40-54%). Five teachers instead of three: no better (-2.6 val, 12-epoch
# teachers). The demo's data: every style in training, as `make demo` (a model for an unknown style learns from every
# style there is); `--train-style icons=3` repeats the measured setting, the artwork held out and scored in the
# report.
FUSED_BUDGET = {
    **DEMO_BUDGET,
    "teacher_seeds": (0, 1, 2),
    "teacher_epochs": 80,
    "teacher_eval_every": 80,
    "student_epochs": 80,
    "tiers": (),
    "student_eval_every": 80,
    "wall_minutes": None,
    # One measured end-to-end run of this budget (`stillroom demo --budget fused --out artifacts/s66/fused
    # --train-style icons=3` at 7276d91, 2026-12-07, its report's wall times: teachers 68.7 min, the first two side by
    # side on one thread each, 40.7, then the third on both, 26.4; stores 2.2; students 11.4; data and trade-off 0.5)
    # and the probe epochs that run measured before it trained (its plan line). Until then the reference was a run
    # with 12-epoch teachers (`--out artifacts/s64/fused`, 23.6 min) scaled by 80 / 12: it forecast 85 min for this
    # run (teachers 71), 3% over. `pipeline.plan.forecast_fixed` scales the reference to another host's probes.
    "reference": {
        "host": "the 2-core AMD EPYC box (2026-12-07)",
        "total": 82.8,
        "minutes": {"teachers": 68.7, "export": 2.2, "students": 11.4, "other": 0.5},
        "teacher_epochs": 80,
        "student_epochs": 80,
        "teacher_probe_s": 15.7,
        "student_probe_s": 7.4,
    },
}
# The best student measured on the demo's data (BENCHMARKS "The larger student on the CPU, from three teachers"):
# three resnet18 teachers of the demo's recipe trained 60 epochs each (bfloat16 where native, validated at the end),
# one 4-view replay store each, fused by the LumiNet student loss; the students are efficientnet_lite0 (3.56 M
# parameters) from ImageNet weights, 60 epochs. Measured there with `benchmarks/pretrained_teacher.sh` (3 seeds):
# ID test 98.80 +- 0.10%, icons val / test 33.04 +- 1.74 / 42.12 +- 1.05% against 34.78 / 43.64% for the three
# teachers' mean softmax; the mobilenet_v3_small student of the same store keeps 85% of one teacher's icons figure,
# this one 95-97% of the three's. 91 min on the 2-core box (`--out artifacts/s46/best`: teachers 53, the third on
# both threads after the first two, students 35; 106 min before the demo's last-round rule, `artifacts/s45/best`).
# Teachers stay resnet18: three 60-epoch resnet18d (ResNet-D) teachers, 23% slower, were not ahead on icons val (1
# of 3 seeds) and their ensemble reads 2 / 1 more icons of 115 / 110 (BENCHMARKS "Teacher architectures").
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
    "train_styles": (("artwork", 8),),  # as measured; the box icons stay the held-out style of its report
    # One measured run of this recipe (`stillroom demo --budget best --out artifacts/s46/best`, its report's wall
    # times) and the probe epochs `run_demo` measures before training, taken on the same host idle (`python
    # benchmarks/probe_budget.py --budget best --index artifacts/s46/best/data/sprites64_1-151_artwork_r8`):
    # `pipeline.plan.forecast_fixed` scales it to the host at hand (`stillroom demo --budget best` prints it).
    "reference": {
        "host": "the 2-core AMD EPYC box (2026-12-05)",
        "total": 90.7,
        "minutes": {"teachers": 52.7, "export": 2.4, "students": 35.3, "other": 0.3},
        "teacher_probe_s": 19.2,
        "student_probe_s": 29.8,
    },
}
BUDGETS = {
    "demo": DEMO_BUDGET,
    "quick": QUICK_BUDGET,
    "fused": FUSED_BUDGET,
    "patient": PATIENT_BUDGET,
    "best": BEST_BUDGET,
}
#: run-name abbreviations of the students' models (the demo's runs keep their historical names)
_SHORT = {"mobilenet_v3_small": "mnv3s", "efficientnet_lite0": "lite0"}


def with_student(budget: dict[str, Any], model: str) -> dict[str, Any]:
    """``budget`` with ``model`` as both students' architecture (``stillroom demo --student``): a name of the model
    registry (``models.factory.MODELS``); an error naming the choices otherwise, or when the budget starts its
    students from ImageNet weights that ``model`` does not have (``models.pretrained.PRETRAINED``). Another model
    than the budget's trains at its own ``STUDENT_LR`` entry where there is one; ``student_lr_tuned`` says whether
    there was (False: the budget's lr, chosen for another network)."""
    from stillroom.models.factory import MODELS
    from stillroom.models.pretrained import PRETRAINED

    if model not in MODELS:
        raise StillroomError(f"demo: unknown student model {model!r}; choose one of {', '.join(MODELS.list())}")
    if budget["student_start"] and model not in PRETRAINED:
        raise StillroomError(
            f"demo: budget {budget.get('name', '?')!r} starts its students from {budget['student_start']} weights, "
            f"which exist for {', '.join(PRETRAINED.list())} only, not {model!r}"
        )
    out = {**budget, "student_model": model}
    # an ImageNet start keeps the budget's lr (measured for its own model); STUDENT_LR was chosen from random weights
    if model != budget["student_model"]:
        lr = None if budget["student_start"] else STUDENT_LR.get(model)
        out["student_lr"] = budget["student_lr"] if lr is None else lr
        out["student_lr_tuned"] = lr is not None
    return out


def run_config(
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


def teacher_config(index: Path, seed: int, epochs: int, budget: dict[str, Any]) -> dict[str, Any]:
    model, extra = budget["teacher_model"], {"eval_every": budget["teacher_eval_every"], "amp": budget["teacher_amp"]}
    return run_config(f"teacher_{model}_s{seed}", index, model, epochs, seed, budget, **extra)


def student_name(budget: dict[str, Any]) -> str:
    """The students' run-name stem: ``student_mnv3s`` for the demo's, ``student_lite0_pt`` for ``best``'s."""
    model = budget["student_model"]
    return f"student_{_SHORT.get(model, model)}{'_pt' if budget['student_start'] else ''}"


def student_config(name: str, index: Path, epochs: int, budget: dict[str, Any], **extra: Any) -> dict[str, Any]:
    extra = {"eval_every": budget["student_eval_every"], **extra}
    raw = run_config(name, index, budget["student_model"], epochs, STUDENT_SEED, budget, **extra)
    raw["optim"]["lr"] = budget["student_lr"]
    if budget["student_start"]:
        raw["model"]["pretrained"] = budget["student_start"]
    return raw
