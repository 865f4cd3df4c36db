"""Rendering-only shortcut probe on the emoji shapes (issue 16 item 1): the same shapes on both sides, two renderings.

Every emoji icon of the OOD categories is rendered once with resvg (256 px) and brought to ``size`` two ways: as
pixel art (``sprite_like``: BOX-reduced to a native side drawn from the gen-V sprite distribution, then enlarged,
the OOD builder's path) and smooth (the render straight into ``preprocess_mask``). The shortcut probe then tries to
tell the two renderings apart, fitted on the train emoji names and scored on the test names (both renderings of a
name share its split, so shape cannot help). The same is repeated with both renderings taken through the canonical
outline (``outline.Outline``). Near 0.5 = the rendering leaves no trace the probe can find.

    OMP_NUM_THREADS=1 nice python benchmarks/outline_render_probe.py --size 64 --size 128 --variant g32s0.8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stillroom.data.emoji_audit import MIN_CANVAS_FRACTION
from stillroom.data.emoji_render import icon_svg, render_mask
from stillroom.data.emoji_resolution import gen5_native_pool, sprite_like
from stillroom.data.emoji_source import CATEGORIES, ICONIFY_EMOJI_SETS, list_candidates, load_icon_sets
from stillroom.data.emoji_write import split_by_name
from stillroom.data.outline import Outline, render_silhouette
from stillroom.data.shortcuts import shortcut_probe
from stillroom.data.topology import object_box


def parse_variant(name: str) -> Outline | None:
    """``none`` or ``g<grid>s<sigma>`` (as in ``outline_variants.py``)."""
    if name == "none":
        return None
    grid, sigma = name[1:].split("s")
    return Outline(grid=int(grid), sigma=float(sigma))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, action="append")
    ap.add_argument("--variant", action="append")
    ap.add_argument("--out", type=Path, default=Path("artifacts/render_exp/render_probe.json"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes, variants = args.size or [64, 128], ["none", *(args.variant or ["g32s0.8"])]
    candidates, _ = list_candidates(load_icon_sets(ICONIFY_EMOJI_SETS, None, None), CATEGORIES, False)
    masks, names = [], []
    for c in candidates:
        try:
            m = render_mask(icon_svg(dict(c.icon), *c.default_wh, 256), source=c.source)
        except Exception:  # noqa: BLE001  (a render error is a skipped icon, as in the builder)
            continue
        box = object_box(m)
        if box is None or max(box.shape) < MIN_CANVAS_FRACTION * max(m.shape):
            continue
        masks.append(m)
        names.append(c.concept)
    rng = np.random.default_rng(args.seed)
    natives = rng.choice(gen5_native_pool(), size=len(masks))
    splits, _ = split_by_name(names, args.seed)
    is_smooth = np.r_[np.zeros(len(masks), bool), np.ones(len(masks), bool)]
    results = {}
    for size in sizes:
        for name in variants:
            outline = parse_variant(name)
            pixel_art = [sprite_like(m, int(n), size, outline=outline) for m, n in zip(masks, natives, strict=True)]
            smooth = [render_silhouette(m, size, outline=outline) for m in masks]
            probe = shortcut_probe(np.stack(pixel_art + smooth), is_smooth, np.r_[splits, splits], seed=args.seed)
            results[f"{size}/{name}"] = {k: probe[k] for k in ("max_auroc", "auroc", "shape_reference", "n_test")}
            best = probe["max_auroc"]
            print(f"{size:4d} {name:10s} pixel art vs smooth, same emoji: topology {best['topology']:.3f} edge"
                  f" {best['edge']:.3f} (n_test {probe['n_test']})", flush=True)  # fmt: skip
    args.out.write_text(json.dumps({"icons": len(masks), "results": results}, indent=1))


if __name__ == "__main__":
    main()
