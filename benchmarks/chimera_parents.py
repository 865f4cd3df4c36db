"""Chimeras from native frames vs from rendered images: the shortcut probe at 64 and 128 px (issue 16 item 1).

For each size, the sprite index of species 1-151 (built when missing), then chimera sets with ``--parents rendered``
and ``--parents native`` for each seed (built when missing: the script resumes), each probed against its ID index per
kind (``chimera_probe.kind_probes``). Prints one table, mean +- sd over the seeds, and writes it to
``<out>/chimera_parents_<sizes>.md``.

    OMP_NUM_THREADS=1 python benchmarks/chimera_parents.py --out artifacts/chimera_parents --size 64 --size 128 \\
        --seed 0 --seed 1 --seed 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling probe script
from chimera_probe import kind_probes  # noqa: E402

from stillroom.data.index import load_index  # noqa: E402
from stillroom.data.ood_chimera import build_ood_chimera  # noqa: E402
from stillroom.data.sprites import build_sprites  # noqa: E402

COLUMNS = ("topology", "edge", "shape")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, action="append", required=True)
    ap.add_argument("--seed", type=int, action="append", required=True)
    args = ap.parse_args()
    lines = [
        "| size | parents | kind | seeds | n (seed 0) | topology AUROC | edge AUROC | 8x8 shape reference |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for size in args.size:
        id_dir = args.out / f"sprites{size}_1-151"
        if not (id_dir / "index.json").is_file():
            build_sprites(id_dir, size=size, species=(1, 151), progress=False)
        idx = load_index(id_dir)
        for parents in ("rendered", "native"):
            per_seed = []
            for seed in args.seed:
                ch_dir = args.out / f"chimera{size}_{parents}_s{seed}"
                if not (ch_dir / "index.json").is_file():
                    build_ood_chimera(ch_dir, idx, seed=seed, parents=parents, probe=False)
                per_seed.append(kind_probes(idx, load_index(ch_dir)))
                print(f"{size} px {parents} seed {seed}: {per_seed[-1][0]}", flush=True)
            for k, row in enumerate(per_seed[0]):
                cells = []
                for col in COLUMNS:
                    v = np.array([rows[k][col] for rows in per_seed])
                    cells.append(f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}")
                lines.append(
                    f"| {size} | {parents} | {row['kind']} | {len(per_seed)} | {row['n']} | " + " | ".join(cells) + " |"
                )
    text = "\n".join(lines) + "\n"
    (args.out / f"chimera_parents_{'_'.join(map(str, args.size))}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
