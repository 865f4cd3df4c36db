"""Writing a sink source made here (chimeras, creatures): one class ``"ood"``, rendered by an ID index's recipe.

``ood_chimera`` and ``ood_creatures`` draw and audit their images differently, and write them the same way: the
PNGs under ``images/``, an index whose recipe is the ID recipe's rendering (size, channels, padding, outline) plus
``ood_kind``, the builder's parameters under that name and the ID index's hashes, the audit and split note in
``index.json``, the shortcut probe against the ID rows when asked, a contact sheet, all built in a temporary
directory and installed at once (nothing half-written is left where the set should be).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stillroom._io import StillroomError, sha256_bytes
from stillroom.data.builder import check_out_dir, install_build, new_build_dir, rmtree
from stillroom.data.index import DatasetIndex, IndexRow, load_index, update_index_meta, write_index
from stillroom.data.outline import outline_from_recipe
from stillroom.data.stats import silhouette_train_stats

__all__ = ["OODImage", "check_ood_build", "png_bytes", "write_ood_source"]


def check_ood_build(
    out_dir: str | Path, id_index: DatasetIndex | str | Path, per_split: int, iou_max: float, what: str
) -> tuple[Path, DatasetIndex]:
    """The checks every made source shares, before anything is drawn: ``per_split`` a positive integer, ``iou_max``
    in (0, 1), ``id_index`` a plain one-channel silhouette index (no sink) with a recipe size, ``out_dir`` a new or
    dataset directory other than the ID index's. ``what`` names the set in errors ("chimeras"). Returns
    ``(out_dir, id_index)`` as a Path and a loaded index."""
    out_dir = Path(out_dir)
    id_index = id_index if isinstance(id_index, DatasetIndex) else load_index(id_index)
    rid = id_index.recipe
    if isinstance(per_split, bool) or int(per_split) != per_split or per_split < 1:
        raise StillroomError(f"per_split must be a positive integer, got {per_split!r}")
    if not 0 < iou_max < 1:
        raise StillroomError(f"iou_max must be in (0, 1), got {iou_max!r}")
    if "sink_class" in rid or "ood" in id_index.classes:
        raise StillroomError(f"{id_index.root}: has an OOD sink; build {what} from the plain ID index")
    if int(rid.get("channels", 1)) != 1 or "size" not in rid:
        raise StillroomError(f"{id_index.root}: {what} need a one-channel silhouette index with a recipe size")
    if out_dir.resolve() == id_index.root.resolve():
        raise StillroomError(f"{out_dir}: the {what} must go to a new directory, not over the ID index")
    check_out_dir(out_dir)
    return out_dir, id_index


def png_bytes(image: np.ndarray) -> bytes:
    """(S, S) uint8 -> PNG bytes (mode L): what the set stores and hashes."""
    buf = io.BytesIO()
    Image.fromarray(image, "L").save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class OODImage:
    rel: str  # path under the set's root, e.g. images/train/00001.png
    split: str
    group: str
    image: np.ndarray  # (S, S) uint8, as rendered
    data: bytes  # its PNG bytes
    extra: dict[str, str] = field(default_factory=dict)  # extra index columns


def write_ood_source(
    out_dir: str | Path,
    items: list[OODImage],
    id_index: DatasetIndex,
    ood_kind: str,
    params: dict[str, Any],
    split: tuple[str, str],
    audit: dict[str, Any],
    seed: int,
    probe: bool,
    t0: float,
) -> DatasetIndex:
    """Write ``items`` as an OOD set into ``out_dir`` (checked by the caller) and return its index.

    ``params`` goes into the recipe under ``ood_kind``; ``split`` is (method, note); ``seed`` seeds the probe's
    classifiers and is the recipe's ``split_seed``; ``t0`` (``time.perf_counter()`` at the build's start) gives
    ``build_seconds``."""
    rid = id_index.recipe
    size, outline = int(rid["size"]), outline_from_recipe(rid)
    tmp = new_build_dir(Path(out_dir))
    try:
        rows: list[IndexRow] = []
        for it in items:
            (tmp / it.rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / it.rel).write_bytes(it.data)
            rows.append(IndexRow(it.rel, 0, "ood", it.split, it.group, sha256_bytes(it.data), it.extra))
        splits = np.array([it.split for it in items], dtype="<U5")
        white = np.array([int(np.count_nonzero(it.image)) for it in items], dtype=np.int64)
        mean, std = silhouette_train_stats(white, splits == "train", size)
        recipe: dict[str, Any] = {
            "kind": "silhouette",
            "ood_kind": ood_kind,
            "source": {
                "id_index": str(id_index.root),
                "index_hash": id_index.index_hash,
                "content_hash": id_index.content_hash,
            },
            "size": size,
            "channels": 1,
            ood_kind: params,
            "split": split[0],
            "split_seed": int(seed),
            "mean": [mean],
            "std": [std],
        }
        if "padding" in rid:
            recipe["padding"] = rid["padding"]
        if outline is not None:
            recipe["outline"] = outline.recipe()
        split_info = {"method": split[0], "note": split[1]}
        index = write_index(tmp, rows, ["ood"], recipe, {"audit": audit, "split_info": split_info})
        if probe:
            from stillroom.data.emoji_report import dataset_probes

            stack = np.stack([it.image for it in items])  # (M, S, S) uint8
            update_index_meta(tmp, **dataset_probes(stack, splits, id_index, seed))
        from stillroom.data.contact_sheet import make_contact_sheet

        make_contact_sheet(index, tmp / "contact_sheet.png", per_class=24)
        update_index_meta(tmp, build_seconds=round(time.perf_counter() - t0, 2))
        install_build(tmp, Path(out_dir))
    except BaseException:
        rmtree(tmp)
        raise
    return load_index(out_dir)
