"""Shortcut probe of a chimera OOD set against its ID index, all kinds together and one kind at a time (issue 16).

``stillroom data probe-shortcuts`` reads a merged index as a whole; this splits the chimera side by ``kind`` (lr,
tb, merge) to say which way of assembling leaves a rendering cue. Same probe (``data.shortcuts.shortcut_probe``),
same splits (ID rows by their split, chimeras by their parents' split).

    python benchmarks/chimera_probe.py artifacts/openset151/id artifacts/openset_loso/ood_chimera
"""

from __future__ import annotations

import argparse

import numpy as np

from stillroom.data.dataset import load_images
from stillroom.data.index import DatasetIndex, load_index
from stillroom.data.shortcuts import shortcut_probe


def kind_probes(idx: DatasetIndex, ch: DatasetIndex, seed: int = 0) -> list[dict]:
    """One row per chimera kind ("all" first, "lr+tb" last): n, topology, edge, shape reference and staircase-fraction
    AUROC."""
    id_img, ch_img = np.asarray(load_images(idx))[:, 0], np.asarray(load_images(ch))[:, 0]
    kinds = np.array(ch.extra["kind"])
    rows = []
    subsets = {"all": np.ones(len(kinds), bool), **{k: kinds == k for k in sorted(set(kinds))}}
    if {"lr", "tb"} <= set(kinds):
        subsets["lr+tb"] = (kinds == "lr") | (kinds == "tb")  # the cuts without the merges
    for name, m in subsets.items():
        p = shortcut_probe(
            np.concatenate([id_img, ch_img[m]]),
            np.r_[np.zeros(len(id_img), bool), np.ones(int(m.sum()), bool)],
            np.r_[idx.splits, ch.splits[m]],
            seed=seed,
        )
        rows.append({
            "kind": name,
            "n": int(m.sum()),
            "topology": p["max_auroc"]["topology"],
            "edge": p["max_auroc"]["edge"],
            "shape": p["shape_reference"]["max_auroc"],
            "staircase": p["single_feature_auroc"]["staircase_fraction"],
        })  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("id_index")
    ap.add_argument("chimera_index")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print("| chimeras | n | topology AUROC | edge AUROC | shape reference | staircase fraction |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in kind_probes(load_index(args.id_index), load_index(args.chimera_index), args.seed):
        print(
            f"| {r['kind']} | {r['n']} | {r['topology']:.3f} | {r['edge']:.3f} | {r['shape']:.3f} | "
            f"{r['staircase']:.3f} |"
        )


if __name__ == "__main__":
    main()
