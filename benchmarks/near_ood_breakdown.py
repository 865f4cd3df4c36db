"""Which near-OOD images get past the ladder (issue 16 item 3): a held-out chimera source's FPR@95TPR broken down by
how close each chimera is to one of its parents and by how it was made.

Per K+1 run ``OUT/runs/loso_<S>_s<seed>`` of ``benchmarks/openset_loso.sh`` and the held-out source's directory
(``--ood S=DIR``, built by ``data build ood-chimera``, whose rows record ``kind`` and ``iou_a`` / ``iou_b``: the IoU of
the rendered chimera with each parent image; the build drops those above 0.85): the ladder's fused signal
(``openset_loso_report.ladder_scores``: max logit, sink and KNN, fitted on clean ID val) on the run's ID test rows and
on the source's test rows, the threshold that 95% of the ID test rows clear (the FPR@95TPR operating point), and the
share of the source's test rows that clear it, per ``kind`` and per bin of ``max(iou_a, iou_b)``. Mean over the runs.

    python benchmarks/near_ood_breakdown.py artifacts/s31/loso_spe_near \\
        --ood chimera-native=artifacts/s31/loso_spe_near/ood_chimera-native --signal fused
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling report module
from openset_loso_report import ladder_scores  # noqa: E402

from stillroom.data.dataset import load_images  # noqa: E402
from stillroom.data.index import load_index  # noqa: E402
from stillroom.runs import Run  # noqa: E402

IOU_BINS = (0.0, 0.6, 0.7, 0.75, 0.8, 0.85)


def breakdown(run_dir: Path, ood_dir: Path, signal: str) -> dict:
    """``{"all": share, "kind": {kind: (share, n)}, "iou": {bin: (share, n)}}`` of one run (module docstring)."""
    index = Run(run_dir).index()
    k = int(index.recipe["sink_class"])
    test = index.split_indices("test")
    id_images = np.asarray(load_images(index)[test[index.labels[test] < k]])
    ood = load_index(ood_dir)
    rows = ood.split_indices("test")
    s_id, s_ood = ladder_scores(run_dir, id_images, np.asarray(load_images(ood)[rows]))[signal]
    passed = s_ood >= np.quantile(s_id, 0.05)  # 95% of the ID test rows clear this threshold
    kind = np.array(ood.extra["kind"])[rows]
    iou = np.maximum(*(np.array(ood.extra[c], dtype=float)[rows] for c in ("iou_a", "iou_b")))
    out: dict = {"all": float(passed.mean()), "kind": {}, "iou": {}}
    for kd in sorted(set(kind)):
        out["kind"][kd] = (float(passed[kind == kd].mean()), int((kind == kd).sum()))
    for lo, hi in zip(IOU_BINS[:-1], IOU_BINS[1:], strict=True):
        m = (iou >= lo) & (iou < hi if hi < IOU_BINS[-1] else iou <= hi)
        out["iou"][f"{lo:.2f}-{hi:.2f}"] = (float(passed[m].mean()) if m.any() else float("nan"), int(m.sum()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="OUT of benchmarks/openset_loso.sh")
    ap.add_argument("--ood", required=True, help="S=DIR: the held-out chimera source and its directory")
    ap.add_argument("--signal", default="fused", choices=("sink", "fused_logits", "fused"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    name, ood_dir = args.ood.split("=", 1)
    runs = sorted(d for d in (args.out / "runs").glob(f"loso_{name}_s*") if (d / "metrics.json").is_file())
    if not runs:
        raise SystemExit(f"{args.out}/runs: no finished loso_{name}_s<seed> run")
    res = {d.name: breakdown(d, Path(ood_dir), args.signal) for d in runs}
    (args.out / f"near_ood_breakdown_{name}_{args.signal}.json").write_text(json.dumps(res, indent=1))
    first = next(iter(res.values()))
    lines = [f"{args.out}, held-out {name}, signal {args.signal}: share of test rows past the 95%-TPR threshold", ""]
    lines += ["| group | n | " + " | ".join(res) + " | mean |", "|---|---:|" + "---:|" * (len(res) + 1)]

    def line(label: str, n: int, shares: list[float]) -> str:
        mean = float(np.nanmean(shares)) if not np.isnan(shares).all() else float("nan")
        return f"| {label} | {n} | " + " | ".join(f"{100 * v:.1f}" for v in [*shares, mean]) + " |"

    lines.append(line("all", sum(n for _, n in first["kind"].values()), [r["all"] for r in res.values()]))
    for part in ("kind", "iou"):
        for key, (_, n) in first[part].items():
            lines.append(line(f"{part} {key}", n, [r[part][key][0] for r in res.values()]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
