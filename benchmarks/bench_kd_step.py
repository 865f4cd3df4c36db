"""KD train-step throughput: CE only vs cached logits vs replayed views vs online teacher ensembles, one process.

    python benchmarks/bench_kd_step.py                   # 64 and 128 px, batch 64, 2 threads (about 4-6 min)
    python benchmarks/bench_kd_step.py --write           # also replace the bench-kd-step section of BENCHMARKS.md
    python benchmarks/bench_kd_step.py --index DIR       # your own dataset instead of the drawn shapes

Every variant runs the trainer's step on the same student architecture (``--student``, same initial weights):
a batch from ``DataLoader(IndexDataset(..., augment), num_workers=0)`` (the trainer's default), teacher logits,
``normalizer`` -> student forward (channels_last, as the trainer's default config) -> the registered loss (``ce``,
or ``kd`` with its defaults) -> backward -> optimizer step (the trainer's SGD groups); the trainer's per-step
bookkeeping (LR schedule, running sums) is left out. Variants:

- ``ce``: student cross-entropy only, no teacher;
- ``cached``: ``kd`` from an aligned float32 store, looked up through ``distill.teachers.CachedTeachers``;
- ``cached top-10``: the same from a top-10 compressed store (rows rebuilt on lookup);
- ``replay``: ``kd`` from a replay store of ``--views`` views: ``IndexDataset`` draws a view per row and re-creates
  exactly that augmented image, and ``CachedTeachers`` looks up (row, view);
- ``online xM``: ``kd`` with ``distill.teachers.OnlineTeachers`` of M untrained ``--teacher-arch`` runs evaluated on
  the student's batch (untrained weights: only speed is measured).

Stores hold random logits and teachers untrained weights: the step's cost does not depend on their values.
Variants run round-robin (``--rounds`` rounds of steps each) after ``--warmup`` steps each, so drift of the machine
load spreads over all of them; reported: median seconds per step (load + teacher + student), images/s, the ratio
to ``ce``, and the mean split into loading, teacher and student parts. The loader alone (no model) is timed with
``num_workers`` 0 and 1 and compared with the CE step's images/s: the loader must never be the bottleneck.

The dataset is ``build_shapes`` (6 classes) in a temporary directory, one per size, or ``--index DIR``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from stillroom._io import atomic_write_json, replace_marked_section
from stillroom.config import TrainConfig
from stillroom.data.augment import augment_name, get_augment
from stillroom.data.dataset import IndexDataset, Normalizer, load_images
from stillroom.data.index import DatasetIndex, load_index
from stillroom.data.synthetic import build_shapes
from stillroom.distill.losses import build_loss
from stillroom.distill.teachers import CachedTeachers, OnlineTeachers
from stillroom.models.factory import create_model
from stillroom.softlabels.store import write_store
from stillroom.train.checkpoint import save_weights
from stillroom.train.trainer import _optimizer  # the trainer's parameter groups, so the step is the trainer's

BEGIN, END = "<!-- bench-kd-step:begin -->", "<!-- bench-kd-step:end -->"
TITLE = "## KD step throughput (`benchmarks/bench_kd_step.py`)"
GOAL = 1.1  # issue "Speed and scale": cached and replay steps <= 1.1x the CE-only step
TOPK = 10
TRAIN_DEFAULTS = TrainConfig(data={"index": "."})  # the trainer's defaults: SGD groups, channels_last, determinism


def untrained_run(run_dir: Path, index: DatasetIndex, arch: str, seed: int = 0) -> Path:
    """A run directory with untrained ``arch`` weights that ``load_run`` / ``OnlineTeachers`` accept."""
    channels, size = int(index.recipe.get("channels", 1)), int(index.recipe["size"])
    torch.manual_seed(seed)
    model = create_model(arch, channels, index.num_classes, size)
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {"arch": arch, "in_chans": channels, "num_classes": index.num_classes, "img_size": size}
    atomic_write_json(run_dir / "model.json", {**meta, "classes": index.classes, "recipe": index.recipe})
    save_weights(model.eval(), run_dir / "best.safetensors")
    return run_dir


class Variant:
    """One way of getting teacher logits, with its own student copy, optimizer and endless batch stream."""

    def __init__(
        self,
        name: str,
        dataset: IndexDataset,
        teachers: Any,
        loss_name: str,
        student: torch.nn.Module,
        normalizer: Normalizer,
        batch: int,
        replay: bool = False,
    ) -> None:
        self.name, self.dataset, self.teachers, self.replay = name, dataset, teachers, replay
        self.loss = build_loss(loss_name)
        self.normalizer, self.batch = normalizer, batch
        self.channels_last = TRAIN_DEFAULTS.channels_last
        self.model = student.to(memory_format=torch.channels_last) if self.channels_last else student
        self.optimizer = _optimizer(TRAIN_DEFAULTS, self.model)
        self.batches = self._stream()
        self.times: list[tuple[float, float, float]] = []  # (load, teacher, student) seconds per timed step

    def _stream(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch = 0
        while True:  # a fresh epoch (new views, new order) whenever the loader runs out, as in training
            self.dataset.set_view(epoch)
            gen = torch.Generator().manual_seed(epoch)
            yield from DataLoader(self.dataset, batch_size=self.batch, shuffle=True, generator=gen, drop_last=True)
            epoch += 1

    def step(self, timed: bool) -> None:
        t0 = time.perf_counter()
        x, y, rows, views = next(self.batches)
        t1 = time.perf_counter()
        t_logits = None if self.teachers is None else self.teachers(x, rows, views if self.replay else None)
        t2 = time.perf_counter()
        self.model.train()
        xn = self.normalizer(x)
        if self.channels_last:
            xn = xn.contiguous(memory_format=torch.channels_last)
        logits = self.model(xn)
        loss = sum(self.loss(logits.float(), t_logits, y, epoch=0).values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        t3 = time.perf_counter()
        if timed:
            self.times.append((t1 - t0, t2 - t1, t3 - t2))

    def summary(self) -> dict[str, Any]:
        totals = [sum(t) for t in self.times]
        med = statistics.median(totals)
        parts = np.mean(np.array(self.times), axis=0)
        return {
            "variant": self.name,
            "steps": len(totals),
            "median_s": med,
            "min_s": min(totals),
            "max_s": max(totals),
            "img_s": self.batch / med,
            "load_s": float(parts[0]),
            "teacher_s": float(parts[1]),
            "student_s": float(parts[2]),
        }


def loader_rate(dataset: IndexDataset, batch: int, workers: int, batches: int) -> float:
    """Images/s of the DataLoader alone (augmented uint8 batches, no model), after one warm-up batch."""
    dataset.set_view(0)
    loader = DataLoader(
        dataset, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0), drop_last=True,
        num_workers=workers, persistent_workers=workers > 0,
    )  # fmt: skip
    done, t0, it = 0, 0.0, None
    while done < batches:
        it = iter(loader) if it is None else it
        try:
            next(it)
        except StopIteration:
            it = None
            continue
        if t0 == 0.0:  # the first batch pays the worker start-up: not part of the steady rate
            t0 = time.perf_counter()
        else:
            done += 1
    return done * batch / (time.perf_counter() - t0)


def bench_size(index: DatasetIndex, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """All variants on one dataset; returns the per-variant summaries and the loader rates."""
    recipe = index.recipe
    channels, size = int(recipe.get("channels", 1)), int(recipe["size"])
    images, rows = load_images(index), np.arange(len(index))
    if len(rows) < args.batch:
        raise SystemExit(f"{index.root}: {len(rows)} images, fewer than one batch of {args.batch}")
    aug_name = augment_name("auto", recipe)
    aug, normalizer = get_augment(aug_name, recipe), Normalizer.from_recipe(recipe)
    k, n = index.num_classes, len(index)
    rng = np.random.default_rng(0)
    teacher = {"arch": args.teacher_arch, "weights_sha256": "0" * 64}
    replay = {"augment": aug_name, "augment_seed": 0}
    write_store(work / "cached", rng.normal(size=(n, k)).astype(np.float32), index, teacher, recipe)
    if k > TOPK:
        write_store(work / "topk", rng.normal(size=(n, k)).astype(np.float32), index, teacher, recipe, topk=TOPK)
    write_store(
        work / "replay", rng.normal(size=(args.views, n, k)).astype(np.float32), index, teacher, recipe, replay=replay
    )
    runs = [untrained_run(work / f"teacher{m}", index, args.teacher_arch, seed=m) for m in range(max(args.teachers))]

    def plain() -> IndexDataset:
        return IndexDataset(images, index.labels, rows, aug, seed=0)

    torch.manual_seed(0)
    init = create_model(args.student, channels, k, size)
    specs: list[tuple[str, IndexDataset, Any, str, bool]] = [
        ("ce (student only)", plain(), None, "ce", False),
        ("kd, cached logits", plain(), CachedTeachers([work / "cached"], index), "kd", False),
    ]
    if k > TOPK:
        specs.append((f"kd, cached top-{TOPK} logits", plain(), CachedTeachers([work / "topk"], index), "kd", False))
    replay_ds = IndexDataset(images, index.labels, rows, aug, seed=0, replay_views=args.views, draw_seed=0)
    specs.append(
        (f"kd, replayed views (V={args.views})", replay_ds, CachedTeachers([work / "replay"], index, replay=replay),
         "kd", True)
    )  # fmt: skip
    for m in sorted(set(args.teachers)):
        specs.append((f"kd, online {m}x {args.teacher_arch}", plain(), OnlineTeachers(runs[:m], index), "kd", False))
    variants = []
    for name, ds, teachers, loss, is_replay in specs:
        student = create_model(args.student, channels, k, size)
        student.load_state_dict(init.state_dict())  # same initial weights for every variant
        variants.append(Variant(name, ds, teachers, loss, student, normalizer, args.batch, is_replay))

    for v in variants:
        for _ in range(args.warmup):
            v.step(timed=False)
    per_round = max(1, -(-args.steps // args.rounds))
    for _ in range(args.rounds):
        for v in variants:
            for _ in range(per_round):
                if len(v.times) < args.steps:
                    v.step(timed=True)
    results = [v.summary() for v in variants]
    base = results[0]["median_s"]
    for r in results:
        r["ratio"] = r["median_s"] / base
    loader = {w: loader_rate(plain(), args.batch, w, args.loader_batches) for w in (0, 1)}
    return {"size": size, "channels": channels, "num_images": n, "num_classes": k, "results": results,
            "loader_img_s": loader, "dataset": str(index.root)}  # fmt: skip


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def render(res: dict[str, Any], command: str) -> str:
    lines = [
        BEGIN,
        f"Command: `{command}`",
        "",
        f"Measured {res['measured_at']} on {res['cpu']} ({os.cpu_count()} CPUs visible), torch {res['torch']}, "
        f"{res['threads']} threads; student {res['student']}, batch {res['batch']}; {res['warmup']} warm-up steps "
        f"then {res['steps']} timed steps per variant in {res['rounds']} round-robin rounds. Load average "
        f"(1/5/15 min) before {'/'.join(map(str, res['load_before']))}, after {'/'.join(map(str, res['load_after']))}"
        " (after includes the benchmark's own threads).",
        "",
        "Step = loading an augmented batch (`num_workers=0`) + teacher logits + student forward/backward/optimizer "
        "step; 'load / teacher / student' are mean seconds of the three parts. Stores hold random logits and "
        "teachers are untrained (speed only).",
    ]
    for entry in res["sizes"]:
        base = entry["results"][0]
        lines += [
            "",
            f"### {entry['size']} px ({entry['channels']}x{entry['size']}x{entry['size']}, {entry['num_images']} "
            f"images, {entry['num_classes']} classes)",
            "",
            "| variant | median s/step | min-max s | img/s | vs CE only | load / teacher / student s |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for r in entry["results"]:
            lines.append(
                f"| {r['variant']} | {r['median_s']:.3f} | {r['min_s']:.3f}-{r['max_s']:.3f} | {r['img_s']:.0f} "
                f"| {r['ratio']:.2f}x | {r['load_s']:.4f} / {r['teacher_s']:.4f} / {r['student_s']:.4f} |"
            )
        goal = [r for r in entry["results"] if r["variant"].startswith(("kd, cached", "kd, replayed"))]
        verdict = ", ".join(f"{r['variant']} {r['ratio']:.2f}x" for r in goal)
        met = all(r["ratio"] <= GOAL for r in goal)
        ce_compute = res["batch"] / base["student_s"] if base["student_s"] else float("inf")
        ld = entry["loader_img_s"]
        lines += [
            "",
            f"Goal (cached and replay <= {GOAL}x the CE-only step): **{'met' if met else 'missed'}** ({verdict}).",
            f"Loader alone: {ld[0]:.0f} img/s with `num_workers=0`, {ld[1]:.0f} img/s with `num_workers=1`; the "
            f"CE-only step trains {base['img_s']:.0f} img/s (student part alone {ce_compute:.0f} img/s), so the "
            f"loader is {'not ' if min(ld.values()) > ce_compute else ''}the bottleneck"
            f" ({min(ld.values()) / ce_compute:.1f}x headroom at the slower setting).",
        ]
    lines.append(END)
    return "\n".join(lines)


def update_md(path: Path, section: str) -> Path:
    """Replace the text between the markers of ``path``; or append a titled section at the end."""
    return replace_marked_section(path, BEGIN, END, section, f"{TITLE}\n\n{section}\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="image sizes of the synthetic data")
    p.add_argument("--index", type=Path, help="use this dataset (its own size) instead of synthetic shapes")
    p.add_argument("--n-per-class", type=int, default=64, help="synthetic images per class (6 classes)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--student", default="mobilenet_v3_small")
    p.add_argument("--teacher-arch", default="resnet18")
    p.add_argument("--teachers", type=int, nargs="+", default=[1, 3, 5], help="online ensemble sizes")
    p.add_argument("--views", type=int, default=4, help="views in the replay store")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--rounds", type=int, default=2, help="round-robin rounds the timed steps are spread over")
    p.add_argument("--loader-batches", type=int, default=20, help="batches timed for the loader alone")
    p.add_argument("--write", action="store_true", help="replace the bench-kd-step section of --md")
    p.add_argument("--md", type=Path, default=Path("BENCHMARKS.md"))
    args = p.parse_args(argv)
    # restored on return, so a caller (the smoke test's pytest session) keeps its own settings
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    saved_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(TRAIN_DEFAULTS.deterministic, warn_only=True)  # as the trainer sets it
    try:
        return _run(args, argv)
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved_warn)


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    load_before = os.getloadavg()
    sizes = []
    with tempfile.TemporaryDirectory(prefix="bench_kd_step.") as tmp:
        work = Path(tmp)
        if args.index is not None:
            indexes = [load_index(args.index)]
        else:
            indexes = [
                build_shapes(work / f"shapes{s}", n_per_class=args.n_per_class, size=s, num_classes=6, seed=0)
                for s in args.sizes
            ]
        for index in indexes:
            size_dir = work / f"work{index.recipe['size']}"
            entry = bench_size(index, args, size_dir)
            sizes.append(entry)
            for r in entry["results"]:
                print(
                    f"{entry['size']:4d}px  {r['variant']:34s} median {r['median_s']:.3f} s  {r['img_s']:6.0f} img/s  "
                    f"{r['ratio']:.2f}x  (load {r['load_s']:.3f} teacher {r['teacher_s']:.3f} "
                    f"student {r['student_s']:.3f})"
                )
            print(f"{entry['size']:4d}px  loader alone: " + ", ".join(
                f"num_workers={w} {v:.0f} img/s" for w, v in entry["loader_img_s"].items()))  # fmt: skip
    res = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "student": args.student,
        "batch": args.batch,
        "warmup": args.warmup,
        "steps": args.steps,
        "rounds": args.rounds,
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "sizes": sizes,
    }
    print(f"load average before {res['load_before']}, after {res['load_after']}")
    if args.write:
        command = " ".join(["python benchmarks/bench_kd_step.py", *(shlex.quote(a) for a in argv)])
        print(f"updated {update_md(args.md, render(res, command))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
