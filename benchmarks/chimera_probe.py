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
from stillroom.data.index import load_index
from stillroom.data.shortcuts import shortcut_probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("id_index")
    ap.add_argument("chimera_index")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    idx, ch = load_index(args.id_index), load_index(args.chimera_index)
    id_img, ch_img = np.asarray(load_images(idx))[:, 0], np.asarray(load_images(ch))[:, 0]
    kinds = np.array(ch.extra["kind"])
    print("| chimeras | n | topology AUROC | edge AUROC | shape reference | staircase fraction |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ["all", *sorted(set(kinds))]:
        m = np.ones(len(kinds), bool) if name == "all" else kinds == name
        p = shortcut_probe(
            np.concatenate([id_img, ch_img[m]]),
            np.r_[np.zeros(len(id_img), bool), np.ones(int(m.sum()), bool)],
            np.r_[idx.splits, ch.splits[m]],
            seed=args.seed,
        )
        print(
            f"| {name} | {int(m.sum())} | {p['max_auroc']['topology']:.3f} | {p['max_auroc']['edge']:.3f} | "
            f"{p['shape_reference']['max_auroc']:.3f} | {p['single_feature_auroc']['staircase_fraction']:.3f} |"
        )


if __name__ == "__main__":
    main()
