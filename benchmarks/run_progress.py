"""One line per run directory under RUNS_DIR: epochs done, last train / val top-1, seconds per epoch and training
images per second (from log.jsonl), and the test top-1 once metrics.json exists. Used to follow long benchmark runs
(benchmarks/gpu_seed000.sh) and to report their wall times.

    python benchmarks/run_progress.py artifacts/seed000_649/runs [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run_summary(run: Path) -> dict:
    history = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    state = json.loads((run / "state.json").read_text()) if (run / "state.json").is_file() else {}
    out: dict = {"run": run.name, "epochs": len(history), "of": cfg.get("schedule", {}).get("epochs")}
    if history:
        last = history[-1]
        val = [r for r in history if "val_top1" in r]
        out["train_top1"] = round(last["train_top1"], 4)
        out["val_top1"] = round(val[-1].get("val_id_top1", val[-1]["val_top1"]), 4) if val else None
        out["train_s_per_epoch"] = round(sum(r["train_seconds"] for r in history) / len(history), 1)
        out["wall_s"] = round(sum(r["epoch_seconds"] for r in history), 1)
    out["best_epoch"] = state.get("best", {}).get("epoch")
    metrics = run / "metrics.json"
    if metrics.is_file():
        out["test_top1"] = json.loads(metrics.read_text())["splits"]["test"]["best"]["top1"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs_dir", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = [run_summary(p) for p in sorted(args.runs_dir.iterdir()) if (p / "log.jsonl").is_file()]
    for r in rows:
        print("  ".join(f"{k}={v}" for k, v in r.items()))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
