"""`data build ood-creatures`: procedural creatures drawn as pixel art and rendered like the ID images (issue 16).

Checked: a creature is one aliased binary mask whose box's longer side is the native side asked for, made of a body
and parts (more object pixels than its body alone, gaps cut out), drawn the same from the same seed; the built set
renders by the ID recipe, its audit adds up and holds (IoU with the split's ID images, pieces, no duplicates), the
build is deterministic and merges as an OOD index; bad input is refused before anything is written."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from stillroom._io import StillroomError
from stillroom.data.index import load_index
from stillroom.data.merge import merge_with_sink
from stillroom.data.ood_creatures import DROP_REASONS, MAX_PIECES, build_ood_creatures, creature_mask
from stillroom.data.topology import mask_topology


@pytest.mark.parametrize("side", [12, 40, 96])
def test_creature_box_is_the_native_side_and_drawn_aliased(side):
    rng = np.random.default_rng(5)
    for _ in range(20):
        m = creature_mask(rng, side)
        assert m.dtype == bool and abs(max(m.shape) - side) <= 1  # cropped to the box, at the asked scale
        assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()


def test_creatures_are_deterministic_and_varied():
    a = [creature_mask(np.random.default_rng([1, i]), 48) for i in range(30)]
    b = [creature_mask(np.random.default_rng([1, i]), 48) for i in range(30)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    fills = np.array([m.mean() for m in a])
    assert fills.std() > 0.03  # not one template: fill of the box varies
    assert sum(mask_topology(m)["holes"] > 0 for m in a) >= 5  # gaps are cut out of some bodies
    assert all(0.15 < f < 0.9 for f in fills)


def test_creature_mask_refuses_tiny_sides():
    with pytest.raises(StillroomError, match="native_side"):
        creature_mask(np.random.default_rng(0), 4)


@pytest.fixture(scope="module")
def creatures(shapes_index, tmp_path_factory):
    return build_ood_creatures(tmp_path_factory.mktemp("cre") / "c", shapes_index, per_split=15, seed=1)


def test_rendered_by_the_id_recipe(creatures, shapes_index):
    for key in ("size", "channels", "padding"):
        assert creatures.recipe.get(key) == shapes_index.recipe.get(key)
    size = shapes_index.recipe["size"]
    for i in range(len(creatures)):
        img = np.asarray(Image.open(creatures.image_path(i)))
        assert img.shape == (size, size) and set(np.unique(img)) <= {0, 255}
        obj = img < 128
        rows, cols = np.flatnonzero(obj.any(axis=1)), np.flatnonzero(obj.any(axis=0))
        assert abs(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 - size / 1.4) <= 2.5  # padding 0.2, as ID
        assert mask_topology(obj)["components"] <= MAX_PIECES
    assert creatures.recipe["ood_kind"] == "creatures"
    assert creatures.recipe["creatures"]["native_sides_from"] == "ID images"  # not a sprite index
    assert creatures.recipe["source"]["index_hash"] == shapes_index.index_hash


def test_audit_adds_up_and_holds(creatures, shapes_index):
    audit = creatures.meta["audit"]
    drops = sum(audit[f"dropped_{r}"] for r in DROP_REASONS)
    assert audit["candidates"] == audit["kept"] + drops == sum(s["candidates"] for s in audit["per_split"].values())
    for split, sc in audit["per_split"].items():
        assert sc["kept"] == int((creatures.splits == split).sum()) == 15
    digests = [hashlib.sha256(creatures.image_path(i).read_bytes()).hexdigest() for i in range(len(creatures))]
    assert digests == creatures.sha256 and len(set(digests)) == len(digests)
    assert not set(digests) & set(shapes_index.sha256)
    for i in range(0, len(creatures), 5):  # the recorded IoU is the largest with any ID image of the same split
        c = np.asarray(Image.open(creatures.image_path(i))) < 128
        rows = shapes_index.split_indices(creatures.splits[i])
        ious = []
        for r in rows:
            m = np.asarray(Image.open(shapes_index.image_path(r))) < 128
            ious.append((c & m).sum() / max((c | m).sum(), 1))
        assert max(ious) == pytest.approx(float(creatures.extra["iou_max_id"][i]), abs=1e-4)
        assert max(ious) <= audit["iou_max"]
    assert "shortcut_probe" in creatures.meta


def test_deterministic_strict_iou_and_merge(creatures, shapes_index, tmp_path):
    again = build_ood_creatures(tmp_path / "again", shapes_index, per_split=15, seed=1)
    assert again.content_hash == creatures.content_hash and again.index_hash == creatures.index_hash
    strict = build_ood_creatures(tmp_path / "strict", shapes_index, per_split=15, seed=1, iou_max=0.62, probe=False)
    assert strict.meta["audit"]["dropped_too_close"] > creatures.meta["audit"]["dropped_too_close"]
    merged = merge_with_sink(shapes_index, creatures, tmp_path / "merged")
    assert int((merged.labels == shapes_index.num_classes).sum()) == len(creatures)


def test_bad_inputs(shapes_index, creatures, tmp_path):
    with pytest.raises(StillroomError, match="sink"):
        build_ood_creatures(tmp_path / "x", merge_with_sink(shapes_index, creatures, tmp_path / "m"))
    with pytest.raises(StillroomError, match="per_split"):
        build_ood_creatures(tmp_path / "x", shapes_index, per_split=0)
    with pytest.raises(StillroomError, match="iou_max"):
        build_ood_creatures(tmp_path / "x", shapes_index, iou_max=1.0)
    with pytest.raises(StillroomError, match="new directory"):
        build_ood_creatures(shapes_index.root, shapes_index)
    assert not (tmp_path / "x").exists()
    assert load_index(shapes_index.root).index_hash == shapes_index.index_hash


def test_cli(shapes_index, tmp_path):
    from typer.testing import CliRunner

    from stillroom.cli import app

    res = CliRunner().invoke(
        app,
        ["data", "build", "ood-creatures", "--id-index", str(shapes_index.root), "--out", str(tmp_path / "c"),
         "--per-split", "4", "--no-probe", "--seed", "2"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "12 creatures" in res.output and "IoU with an ID image" in res.output
    assert load_index(tmp_path / "c").recipe["creatures"]["seed"] == 2
