"""Canonical outline variants on the open-set 151 data (issue 16 item 1): shortcut probe and shape loss per variant.

For each size and variant, builds the ID sprites (species 1-151, block split), the emoji sink against them and the
merged index under ``OUT/<size>/<variant>/``, runs the shortcut probe on the merged index, and measures how much
shape the rendering costs against the plain build of the same size: mean IoU of each ID image with the plain
image of the same frame, the 1-NN pixel probe on the block split (test rows against train) and across views
(front frames as memory, back frames as queries; the generalization number, REFERENCE 1.1). Writes
``OUT/outline_variants.json`` and ``.md``. Builds are reused when present.

    OMP_NUM_THREADS=1 nice python benchmarks/outline_variants.py --out artifacts/render_exp \\
        --size 64 --size 128 --variant none --variant g32s0.8 --variant g24s0.8 --variant g16s0.8

A variant is ``none`` or ``g<grid>s<sigma>`` (``outline.Outline(grid, sigma)``).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
from stillroom.data.leakage import nearest_neighbour_probe
from stillroom.data.merge import merge_with_sink
from stillroom.data.ood_emoji import build_ood_emoji
from stillroom.data.outline import Outline
from stillroom.data.shortcuts import probe_index
from stillroom.data.sprites import build_sprites


def parse_variant(name: str) -> Outline | None:
    if name == "none":
        return None
    m = re.fullmatch(r"g(\d+)s([0-9.]+)", name)
    if not m:
        raise SystemExit(f"variant {name!r}: use none or g<grid>s<sigma>, e.g. g32s0.8")
    return Outline(grid=int(m[1]), sigma=float(m[2]))


def build(out: Path, size: int, outline: Outline | None, workers: int) -> Path:
    if not (out / "id" / "index.json").is_file():
        build_sprites(out / "id", size=size, species=(1, 151), outline=outline, workers=workers, progress=False)
    if not (out / "ood" / "index.json").is_file():
        build_ood_emoji(out / "ood", size=size, id_index=out / "id", outline=outline, workers=workers, progress=False)
    if not (out / "merged" / "index.json").is_file():
        merge_with_sink(out / "id", out / "ood", out / "merged")
    return out / "merged"


def shape_loss(variant_id: Path, plain_id: Path) -> dict:
    idx, ref = load_index(variant_id), load_index(plain_id)
    imgs, ref_imgs = np.asarray(load_images(idx)[:, 0]), np.asarray(load_images(ref)[:, 0])
    where = {p: i for i, p in enumerate(ref.paths)}
    pairs = [(i, where[p]) for i, p in enumerate(idx.paths) if p in where]  # dedup may keep other frames
    a = imgs[[i for i, _ in pairs]] < 128
    b = ref_imgs[[j for _, j in pairs]] < 128
    iou = (a & b).sum((1, 2)) / np.maximum((a | b).sum((1, 2)), 1)
    y, sp = idx.labels, idx.splits
    view = np.asarray(idx.extra["view"])
    tr, te = sp == "train", sp == "test"
    front, back = view == "front", view == "back"
    return {
        "rows": len(idx),
        "paired_rows": len(pairs),
        "iou_mean": float(iou.mean()),
        "iou_p5": float(np.percentile(iou, 5)),
        "nn_block_test": nearest_neighbour_probe(imgs[tr], y[tr], imgs[te], y[te], binary=True)["accuracy"],
        "nn_cross_view": nearest_neighbour_probe(imgs[front], y[front], imgs[back], y[back], binary=True)["accuracy"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("artifacts/render_exp"))
    ap.add_argument("--size", type=int, action="append")
    ap.add_argument("--variant", action="append")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    sizes, variants = args.size or [64, 128], args.variant or ["none", "g32s0.8"]
    if "none" not in variants:
        variants = ["none", *variants]  # the shape-loss reference
    results_path = args.out / "outline_variants.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for size in sizes:
        for name in variants:
            t0 = time.perf_counter()
            root = args.out / str(size) / name
            merged = build(root, size, parse_variant(name), args.workers)
            probe = probe_index(merged)
            loss = shape_loss(root / "id", args.out / str(size) / "none" / "id")
            results[f"{size}/{name}"] = {
                "size": size,
                "variant": name,
                "outline": parse_variant(name).recipe() if name != "none" else "none",
                "probe": {k: probe[k] for k in ("auroc", "max_auroc", "passes", "shape_reference", "n_test")},
                "ood_rows": int(load_index(root / "ood").meta["num_samples"]),
                "shape": loss,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            r = results[f"{size}/{name}"]
            best = probe["max_auroc"]
            print(
                f"{size:4d} {name:10s} topology {best['topology']:.3f} edge {best['edge']:.3f}"
                f" shape-ref {probe['shape_reference']['max_auroc']:.3f} pass {probe['passes']} | IoU"
                f" {loss['iou_mean']:.3f} 1-NN block {loss['nn_block_test']:.3f} cross-view {loss['nn_cross_view']:.3f}"
                f" | OOD {r['ood_rows']} [{r['seconds']}s]",
                flush=True,
            )
            results_path.write_text(json.dumps(results, indent=1))
    lines = [
        "| size | variant | topology AUROC | edge AUROC | bar 0.70 | shape ref (8x8) | OOD rows | mean IoU vs plain |"
        " 1-NN block test | 1-NN cross-view |",
        "|---:|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results.values():
        p, s = r["probe"], r["shape"]
        lines.append(
            f"| {r['size']} | {r['variant']} | {p['max_auroc']['topology']:.3f} | {p['max_auroc']['edge']:.3f} |"
            f" {'met' if p['passes'] else 'not met'} | {p['shape_reference']['max_auroc']:.3f} | {r['ood_rows']} |"
            f" {s['iou_mean']:.3f} | {s['nn_block_test']:.3f} | {s['nn_cross_view']:.3f} |"
        )
    (args.out / "outline_variants.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
