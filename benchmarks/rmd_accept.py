"""Relative Mahalanobis against the other post-hoc scores, on both sides of issue 16 (items 3-5).

For each run (a K-class student, a K+1 sink student or a teacher of the species index) and each score, one
threshold: the 5% quantile of the score over the clean ID **val** rows (a ladder's 95% ID target, its weak-signal
rule alone). Then, with no other choice made on any row it reports:

- reject side: AUROC and FPR@95TPR of ID test vs each OOD source's test rows (issue 16 item 3's bars), and the share
  of each source's test rows the threshold accepts;
- accept side: the share of ID test rows accepted clean, under each outline rewrite of ``evaluate.shift`` (mean and
  worst) and of another artist's drawings of the ID species (``--style``, the box icons of ``data build
  style-icons``: item 5's proxy, >= 90% wanted), with top-1 among the accepted icons.

Scores: maxlogit and energy (``evaluate.ood``), the sink's log-odds for a K+1 run (``deploy.ladder``'s sink
signal), and from ``evaluate.feature_ood`` (pytorch-ood): knn, ash and rmd (fitted on the ID train rows and their
``style`` views, as ``stillroom evaluate`` fits it), plus ``rmd_clean``, RMD fitted on the clean train rows alone,
the ablation of the views, and two fusions as the ladder's ``fused`` signal makes them (the mean of the parts, each
standardized on the clean ID val rows): ``fused_rmd_knn`` and ``fused_rmd_maxlogit``. Every feature score is
fitted on the train rows of ``--id-index`` (the K-class index: a K+1 run's own index also holds sink rows, which no
ID score may see).

    python benchmarks/rmd_accept.py --id-index artifacts/demo/data/sprites64_1-151 \\
        --style artifacts/demo/data/style_icons_sprites64_1-151 \\
        --ood blend=artifacts/s31/loso_spe10/ood_blend --ood species=artifacts/s31/loso_spe10/ood_species \\
        --group kd="artifacts/s32/fm/kd_s?" --md artifacts/s34/rmd/rmd.md --json artifacts/s34/rmd/rmd.json

Per-run rows are cached in ``--json`` (keyed by the run's weights sha256): a rerun with more groups only scores
the new runs. Writes nothing into the runs.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
import torch

from stillroom._io import atomic_write_json
from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
from stillroom.deploy.ladder import _sink_log_odds
from stillroom.evaluate.feature_ood import feature_scores, style_view_batches
from stillroom.evaluate.ood import energy, ood_metrics
from stillroom.evaluate.shift import rewrite_images
from stillroom.models.inference import iter_batches, predict_logits
from stillroom.runs import Run

TARGET_ACCEPT = 0.95
LOGIT_SCORES = ("maxlogit", "energy", "sink")
FEATURE_SCORES = ("knn", "ash", "rmd", "rmd_clean", "fused_rmd_knn", "fused_rmd_maxlogit")


def run_row(run_dir: str, id_dir: str, style_dir: str | None, oods: dict[str, str]) -> dict:
    """Every score's threshold, acceptance and AUROC / FPR@95TPR for one run (module docstring)."""
    loaded = Run(run_dir).load("best")
    model, norm = loaded.model.eval(), loaded.normalizer
    index = load_index(id_dir)
    k = index.num_classes
    if list(loaded.meta["classes"][:k]) != index.classes:
        sys.exit(f"{run_dir}: its first {k} classes are not {id_dir}'s")
    ims = np.asarray(load_images(index))
    val, test, train = (index.split_indices(s) for s in ("val", "test", "train"))
    blocks: dict[str, np.ndarray] = {"val": ims[val], "test": ims[test]}
    for name, im in rewrite_images(ims[test]).items():
        blocks[f"rewrite:{name}"] = im
    style_labels = {}
    if style_dir:
        style = load_index(style_dir)
        style_ims = np.asarray(load_images(style))
        for split in ("val", "test"):
            rows = style.split_indices(split)
            blocks[f"style:{split}"], style_labels[split] = style_ims[rows], style.labels[rows]
    for name, d in oods.items():
        o = load_index(d)
        blocks[f"ood:{name}"] = np.asarray(load_images(o))[o.split_indices("test")]
    query = np.concatenate(list(blocks.values()))
    rows = np.arange(len(query))
    logits = predict_logits(model, norm, query, rows)
    has_sink = logits.shape[1] == k + 1
    z = torch.from_numpy(logits[:, :k].astype(np.float64))
    scores = {"maxlogit": z.max(1).values.numpy(), "energy": energy(z).numpy()}
    if has_sink:
        scores["sink"] = _sink_log_odds([logits.astype(np.float64)])
    fit = {"fit_batches": lambda: iter_batches(ims, train, norm, 256), "num_id_classes": k,
           "fit_labels": index.labels[train]}  # fmt: skip
    got = feature_scores(model, lambda: iter_batches(query, rows, norm, 256), **fit,
                         fit_views=lambda: style_view_batches(ims, train, norm, 256))  # fmt: skip
    clean = feature_scores(model, lambda: iter_batches(query, rows, norm, 256), **fit)
    if "skipped" in got:
        sys.exit(f"{run_dir}: feature scores skipped: {got['skipped']}")
    scores.update({n: got["scores"][n] for n in ("knn", "ash", "rmd")}, rmd_clean=clean["scores"]["rmd"])
    val_span = slice(0, len(blocks["val"]))  # the first block: clean ID val

    def fused(*parts: str) -> np.ndarray:  # the ladder's `fused` recipe: mean of parts standardized on clean ID val
        return np.mean([(scores[p] - scores[p][val_span].mean()) / scores[p][val_span].std() for p in parts], axis=0)

    scores.update(fused_rmd_knn=fused("rmd", "knn"), fused_rmd_maxlogit=fused("rmd", "maxlogit"))
    pred = logits[:, :k].argmax(1)
    spans, start = {}, 0
    for name, im in blocks.items():
        spans[name] = slice(start, start + len(im))
        start += len(im)
    out: dict = {"run": run_dir, "weights_sha256": loaded.weights_sha256, "has_sink": has_sink, "scores": {}}
    out["id_test_top1"] = float((pred[spans["test"]] == index.labels[test]).mean())
    for name, s in scores.items():
        t = float(np.quantile(s[spans["val"]], 1.0 - TARGET_ACCEPT))
        acc = {b: float((s[sl] >= t).mean()) for b, sl in spans.items()}
        rw = [v for b, v in acc.items() if b.startswith("rewrite:")]
        row = {"threshold": t, "id_test_accepted": acc["test"], "rewrites_accepted_mean": float(np.mean(rw)),
               "rewrites_accepted_worst": float(np.min(rw)), "ood": {}}  # fmt: skip
        for split, labels in style_labels.items():
            sl = spans[f"style:{split}"]
            ok = s[sl] >= t
            row[f"style_{split}_accepted"] = float(ok.mean())
            row[f"style_{split}_top1_accepted"] = float((pred[sl][ok] == labels[ok]).mean()) if ok.any() else None
        for o in oods:
            m = ood_metrics(s[spans["test"]], s[spans[f"ood:{o}"]])
            row["ood"][o] = {"auroc": m["auroc"], "fpr95": m["fpr_at_95_tpr"], "accepted": acc[f"ood:{o}"]}
        out["scores"][name] = row
    return out


def _ms(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float) * scale
    if not len(v):
        return "-"
    return f"{v.mean():.{digits}f}" if len(v) == 1 else f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def markdown(groups: dict[str, list[dict]], oods: list[str]) -> str:
    """Two tables per group, mean ± sd over its runs: the reject side and the accept side."""
    lines = []
    for g, rows in groups.items():
        names = [n for n in (*LOGIT_SCORES, *FEATURE_SCORES) if all(n in r["scores"] for r in rows)]
        lines += [f"### {g} ({len(rows)} runs; ID test top-1 {_ms([r['id_test_top1'] for r in rows], 100, 2)}%)", ""]
        lines += ["| score | " + " | ".join(f"{o}: AUROC / FPR@95 / accepted %" for o in oods) + " |"]
        lines += ["|---|" + "---:|" * len(oods)]
        for n in names:
            cells = []
            for o in oods:
                m = [r["scores"][n]["ood"][o] for r in rows]
                cells.append(f"{_ms([x['auroc'] for x in m])} / {_ms([x['fpr95'] for x in m])} / "
                             f"{_ms([x['accepted'] for x in m], 100, 1)}")  # fmt: skip
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines += ["", "| score | ID test accepted % | rewrites accepted, mean / worst % | icons accepted, val / test % "
                  "| top-1 among accepted icons, val / test % |", "|---|---:|---:|---:|---:|"]  # fmt: skip
        for n in names:
            s = [r["scores"][n] for r in rows]
            lines.append(
                f"| {n} | {_ms([x['id_test_accepted'] for x in s], 100, 1)} | "
                f"{_ms([x['rewrites_accepted_mean'] for x in s], 100, 1)} / "
                f"{_ms([x['rewrites_accepted_worst'] for x in s], 100, 1)} | "
                f"{_ms([x.get('style_val_accepted') for x in s], 100, 1)} / "
                f"{_ms([x.get('style_test_accepted') for x in s], 100, 1)} | "
                f"{_ms([x.get('style_val_top1_accepted') for x in s], 100, 1)} / "
                f"{_ms([x.get('style_test_top1_accepted') for x in s], 100, 1)} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--id-index", required=True, help="the K-class ID index (fit rows, val threshold, ID test)")
    ap.add_argument("--style", help="another artist's drawings of the ID species (data build style-icons)")
    ap.add_argument("--ood", action="append", default=[], help="NAME=DIR of an OOD source built against the ID index")
    ap.add_argument("--group", action="append", required=True, help="NAME=GLOB of run directories")
    ap.add_argument("--json", required=True, help="per-run rows (a cache: runs already there are not scored again)")
    ap.add_argument("--md", help="markdown tables")
    args = ap.parse_args(argv)
    oods = dict(o.split("=", 1) for o in args.ood)
    cache_path = Path(args.json)
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    groups: dict[str, list[dict]] = {}
    for spec in args.group:
        name, pattern = spec.split("=", 1)
        runs = sorted(glob.glob(pattern))
        if not runs:
            sys.exit(f"--group {spec}: no run matches")
        groups[name] = []
        for run in runs:
            key = f"{Path(run).resolve()}|{Run(run).load('best').weights_sha256}"
            row = cache.get(key)
            if (
                row is None
                or set(row["scores"]["maxlogit"]["ood"]) != set(oods)
                or set(FEATURE_SCORES) - set(row["scores"])
            ):
                print(f"scoring {run}", file=sys.stderr, flush=True)
                cache[key] = run_row(run, args.id_index, args.style, oods)
                atomic_write_json(cache_path, cache)
            groups[name].append(cache[key])
    text = markdown(groups, list(oods))
    if args.md:
        Path(args.md).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
