"""Issue 16 item 5, both sides, for K+1 students at the served ladder: another artist's drawings of the ID species
must be accepted (>= 90% at the ladder's 95% ID point) while OOD images of other styles are rejected (AUROC >= 0.95).

``benchmarks/style_openset.sh`` measures this for K-class runs (maxlogit ladder, `stillroom evaluate --index`); the
K+1 students of ``benchmarks/openset_loso.sh`` are served with a sink-aware ladder (``--ladder-signal sink`` or
``fused``, module docstring of ``deploy.ladder``), which ``evaluate --ladder`` does not fit. Per run and signal the
ladder is fitted as ``stillroom export`` fits it: ``Ladder(sink=True, signal=...)`` on the run's clean ID val logits
at 95% (KNN bank for ``fused``: its ID train rows, as ``deploy._run_knn``). Then, per split of ``--style`` (an index
with the ID classes' label ids, e.g. ``data build style-icons``): the share of its images the ladder accepts (verdict
"accept", as ``deploy.style_proxy`` counts it), top-1 over all of them and among the accepted; per ``--ood`` source
(its test rows): the share accepted, the signal's AUROC of clean ID test vs that source and of the style's test rows
vs that source (ID positive; the second is the ranking item 5 asks for: the other-style ID above the other-style OOD).

    python benchmarks/style_accept_kp1.py artifacts/s31/loso_spe_near/runs/loso_*_s0 \\
        --style artifacts/demo/data/style_icons_sprites64_1-151 --ood emoji=DIR --ood game-icons=DIR --md OUT.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
from stillroom.deploy._run_knn import run_features
from stillroom.deploy.knn import KNNScorer
from stillroom.deploy.ladder import Ladder
from stillroom.evaluate.ood import ood_metrics
from stillroom.models.inference import predict_logits
from stillroom.runs import Run

SIGNALS = ("sink", "fused")
BARS = {"accept": 0.90, "auroc": 0.95}


def run_rows(run_dir: Path, style_dir: Path, oods: dict[str, Path], signals: tuple[str, ...]) -> dict:
    """``{signal: {...}}`` for one K+1 run (module docstring)."""
    run = Run(run_dir)
    loaded, index = run.load("best"), run.index()
    k = int(index.recipe["sink_class"])
    style = load_index(style_dir)
    if list(style.classes[:k]) != list(index.classes[:k]):
        raise SystemExit(f"{style_dir}: its label names are not the first {k} classes of {index.root}")
    images = np.asarray(load_images(index))
    val, train, test = (r[index.labels[r] < k] for r in (index.split_indices(s) for s in ("val", "train", "test")))
    sets = {"id_test": (images[test], index.labels[test])}
    style_images = np.asarray(load_images(style))
    for split in ("val", "test"):
        rows = style.split_indices(split)
        sets[f"style_{split}"] = (style_images[rows], style.labels[rows])
    for name, d in oods.items():
        o = load_index(d)
        rows = o.split_indices("test")
        sets[name] = (np.asarray(load_images(o))[rows], None)

    def logits_features(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(len(x))
        return predict_logits(loaded.model, loaded.normalizer, x, rows), run_features(loaded, x, rows)

    z_val, f_val = predict_logits(loaded.model, loaded.normalizer, images, val), run_features(loaded, images, val)
    knn = KNNScorer().fit(run_features(loaded, images, train))
    scored = {name: logits_features(x) for name, (x, _) in sets.items()}
    out = {}
    for signal in signals:
        kw = {"val_features": f_val, "knn": knn} if signal == "fused" else {}
        lad = Ladder(sink=True, signal=signal).fit(z_val, target_accept=0.95, **kw)
        res: dict = {}
        score = {}
        for name, (z, f) in scored.items():
            verdicts = np.array([v for v, _ in lad.decide(z, features=f)])
            score[name] = lad.signals(z, features=f)["score"]
            acc = verdicts == "accept"
            row = {"n": len(z), "accepted": float(acc.mean())}
            y = sets[name][1]
            if y is not None:
                hit = z[:, :k].argmax(1) == y
                row["top1"] = float(hit.mean())
                row["top1_accepted"] = float(hit[acc].mean()) if acc.any() else float("nan")
            res[name] = row
        for name in oods:
            res[name]["auroc_id_test"] = ood_metrics(score["id_test"], score[name])["auroc"]
            res[name]["auroc_style_test"] = ood_metrics(score["style_test"], score[name])["auroc"]
        out[signal] = res
    return out


def markdown(rows: dict, oods: list[str]) -> str:
    head = "| run | signal | ID test accepted % | style accepted val / test % | style top-1 val / test % | "
    head += " | ".join(f"{o}: accepted %, AUROC vs ID test / vs style test" for o in oods) + " |"
    head += " bars met (accepted, AUROC) |"
    lines = [head, "|---|---|" + "---:|" * (3 + len(oods)) + "---|"]
    for run, by_signal in rows.items():
        for signal, r in by_signal.items():
            cells = [run, signal, f"{100 * r['id_test']['accepted']:.1f}"]
            cells.append(f"{100 * r['style_val']['accepted']:.1f} / {100 * r['style_test']['accepted']:.1f}")
            cells.append(f"{100 * r['style_val']['top1']:.1f} / {100 * r['style_test']['top1']:.1f}")
            for o in oods:
                c = r[o]
                cells.append(f"{100 * c['accepted']:.1f}, {c['auroc_id_test']:.3f} / {c['auroc_style_test']:.3f}")
            accept_ok = r["style_test"]["accepted"] >= BARS["accept"]
            auroc_ok = all(r[o]["auroc_id_test"] >= BARS["auroc"] for o in oods)
            cells.append(f"{'yes' if accept_ok else 'no'}, {'yes' if auroc_ok else 'no'}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="K+1 run directories (best weights)")
    ap.add_argument("--style", type=Path, required=True, help="the ID species drawn otherwise (e.g. style-icons)")
    ap.add_argument("--ood", action="append", required=True, help="NAME=DIR of an OOD source of another style")
    ap.add_argument("--signal", action="append", choices=SIGNALS, help="ladder signals (default: sink and fused)")
    ap.add_argument("--md", type=Path, help="also write the table (and a .json beside it) here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    oods = dict(kv.split("=", 1) for kv in args.ood)
    oods = {name: Path(d) for name, d in oods.items()}
    rows = {}
    for run_dir in args.runs:
        rows[run_dir.name] = run_rows(run_dir, args.style, oods, tuple(args.signal or SIGNALS))
        print(f"{run_dir.name}: done", flush=True)
    table = markdown(rows, list(oods))
    print(table)
    if args.md:
        args.md.write_text(table + "\n")
        args.md.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
