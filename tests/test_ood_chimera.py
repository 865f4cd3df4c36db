"""`data build ood-chimera`: near-OOD silhouettes from pairs of different ID species (issue 16 item 2).

Checked: the kinds assemble the parents as described (hand-built masks), chimeras of a split come only from that
split's ID rows and from two species, the rendering matches the ID recipe, the audit drops what it says and its
counts add up, the build is deterministic, and the result merges as an OOD index."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from stillroom._io import StillroomError
from stillroom.data.index import load_index
from stillroom.data.merge import merge_with_sink
from stillroom.data.ood_chimera import DROP_REASONS, build_ood_chimera, chimera_mask, mask_iou


def test_lr_and_tb_cut_where_the_pieces_meet_best():
    """A is a 6-pixel-tall band; B is full height except at column 5, where it matches A's band. Of the cuts 4..6
    (CUT_RANGE of 10), only 5 joins A's column 4 to an equal column of B (0 differing pixels, 4 elsewhere)."""
    a = np.zeros((10, 10), bool)
    a[2:8, :] = True
    b = np.ones((10, 10), bool)
    b[:, 5] = False
    b[2:8, 5] = True
    for seed in range(5):  # a unique best seam: the draw among ties never matters
        lr = chimera_mask(a, b, "lr", np.random.default_rng(seed))
        expected = b.copy()
        expected[:, :5] = a[:, :5]
        assert np.array_equal(lr, expected)
        tb = chimera_mask(a.T, b.T, "tb", np.random.default_rng(seed))  # the same picture turned: top from A
        assert np.array_equal(tb, expected.T)


def test_merge_contains_a_and_touches_it():
    a = np.zeros((16, 16), bool)
    a[4:12, 4:12] = True
    b = np.zeros((16, 16), bool)
    b[3:13, 3:13] = True  # a 10 x 10 square: centred on A's boundary, part of it always lies outside A
    m = chimera_mask(a, b, "merge", np.random.default_rng(0))
    assert m.shape == (32, 32)
    assert np.array_equal(m[8:24, 8:24] & a, a)  # A kept whole, centred in the 2S canvas
    assert m.sum() > a.sum()  # B added something outside A
    from scipy import ndimage

    assert ndimage.label(m, structure=np.ones((3, 3)))[1] == 1  # one piece: B is anchored on A's boundary


def test_chimera_kind_unknown():
    with pytest.raises(StillroomError, match="kind"):
        chimera_mask(np.ones((4, 4), bool), np.ones((4, 4), bool), "swirl", np.random.default_rng(0))


def test_mask_iou_golden():
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[0, 1, 1, 0]], bool)
    assert mask_iou(a, b) == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def chimeras(shapes_index, tmp_path_factory):
    return build_ood_chimera(tmp_path_factory.mktemp("chim") / "c", shapes_index, per_split=20, seed=1)


def test_parents_from_own_split_and_two_species(chimeras, shapes_index):
    pos = {p: i for i, p in enumerate(shapes_index.paths)}
    for i in range(len(chimeras)):
        a, b = pos[chimeras.extra["parent_a"][i]], pos[chimeras.extra["parent_b"][i]]
        split = chimeras.splits[i]
        assert shapes_index.splits[a] == split == shapes_index.splits[b]  # no test pixel reaches training
        assert shapes_index.labels[a] != shapes_index.labels[b]
        assert chimeras.groups[i].startswith(f"{split}/")
        assert chimeras.extra["species_a"][i] == shapes_index.label_names[a]
    for split in ("train", "val", "test"):
        groups = {g for g, s in zip(chimeras.groups, chimeras.splits, strict=True) if s == split}
        other = {g for g, s in zip(chimeras.groups, chimeras.splits, strict=True) if s != split}
        assert not groups & other


def test_rendering_matches_the_id_recipe(chimeras, shapes_index):
    for key in ("size", "channels", "padding"):
        assert chimeras.recipe.get(key) == shapes_index.recipe.get(key)
    img = np.asarray(Image.open(chimeras.image_path(0)))
    size = shapes_index.recipe["size"]
    assert img.shape == (size, size) and set(np.unique(img)) <= {0, 255}
    for i in range(len(chimeras)):  # cropped, centred and padded as preprocess_mask does (padding 0.2)
        obj = np.asarray(Image.open(chimeras.image_path(i))) < 128
        rows, cols = np.flatnonzero(obj.any(axis=1)), np.flatnonzero(obj.any(axis=0))
        longer = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
        assert abs(longer - size / 1.4) <= 2.5  # box 32 / 1.4 = 22.9 before BOX + binarize
        for lo, hi in ((rows[0], rows[-1]), (cols[0], cols[-1])):
            assert abs(lo - (size - 1 - hi)) <= 2.5  # BOX + binarize may shift an edge by a pixel
    assert chimeras.recipe["ood_kind"] == "chimera"
    assert chimeras.recipe["source"]["index_hash"] == shapes_index.index_hash


def test_audit_counts_add_up_and_drops_hold(chimeras):
    audit = chimeras.meta["audit"]
    drops = sum(audit[f"dropped_{r}"] for r in DROP_REASONS)
    assert audit["candidates"] == audit["kept"] + drops == sum(s["candidates"] for s in audit["per_split"].values())
    assert audit["kept"] == len(chimeras) == sum(audit["per_kind"].values())
    for split, sc in audit["per_split"].items():
        assert sc["kept"] == int((chimeras.splits == split).sum())
    ious = np.array([[float(x) for x in chimeras.extra[c]] for c in ("iou_a", "iou_b")])
    assert ious.max() <= audit["iou_max"]
    digests = [hashlib.sha256(chimeras.image_path(i).read_bytes()).hexdigest() for i in range(len(chimeras))]
    assert digests == chimeras.sha256 and len(set(digests)) == len(digests)
    assert "shortcut_probe" in chimeras.meta


def test_recorded_iou_is_recomputed_from_the_files(chimeras, shapes_index):
    pos = {p: i for i, p in enumerate(shapes_index.paths)}
    for i in range(0, len(chimeras), 7):
        c = np.asarray(Image.open(chimeras.image_path(i))) < 128
        a = np.asarray(Image.open(shapes_index.image_path(pos[chimeras.extra["parent_a"][i]]))) < 128
        assert mask_iou(c, a) == pytest.approx(float(chimeras.extra["iou_a"][i]), abs=1e-4)


def test_strict_iou_drops_more_and_build_is_deterministic(shapes_index, chimeras, tmp_path):
    again = build_ood_chimera(tmp_path / "again", shapes_index, per_split=20, seed=1)
    assert again.content_hash == chimeras.content_hash and again.index_hash == chimeras.index_hash
    strict = build_ood_chimera(tmp_path / "strict", shapes_index, per_split=20, seed=1, iou_max=0.6, probe=False)
    assert strict.meta["audit"]["dropped_too_close"] > chimeras.meta["audit"]["dropped_too_close"]
    other = build_ood_chimera(tmp_path / "other", shapes_index, per_split=20, seed=2, probe=False)
    assert other.content_hash != chimeras.content_hash


def test_merges_as_an_ood_index(chimeras, shapes_index, tmp_path):
    merged = merge_with_sink(shapes_index, chimeras, tmp_path / "merged")
    k = shapes_index.num_classes
    assert merged.num_classes == k + 1 and int((merged.labels == k).sum()) == len(chimeras)


def test_bad_inputs(shapes_index, chimeras, tmp_path):
    with pytest.raises(StillroomError, match="sink"):
        build_ood_chimera(tmp_path / "x", merge_with_sink(shapes_index, chimeras, tmp_path / "m"))
    with pytest.raises(StillroomError, match="per_split"):
        build_ood_chimera(tmp_path / "x", shapes_index, per_split=0)
    with pytest.raises(StillroomError, match="iou_max"):
        build_ood_chimera(tmp_path / "x", shapes_index, iou_max=1.5)
    with pytest.raises(StillroomError, match="kinds"):
        build_ood_chimera(tmp_path / "x", shapes_index, kinds=("lr", "spiral"))
    with pytest.raises(StillroomError, match="new directory"):
        build_ood_chimera(shapes_index.root, shapes_index)
    assert load_index(shapes_index.root).index_hash == shapes_index.index_hash


def test_cli(shapes_index, tmp_path):
    from typer.testing import CliRunner

    from stillroom.cli import app

    res = CliRunner().invoke(
        app,
        ["data", "build", "ood-chimera", "--id-index", str(shapes_index.root), "--out", str(tmp_path / "c"),
         "--per-split", "5", "--no-probe", "--kind", "lr", "--max-enlarge", "-1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "candidates" in res.output and "kept" in res.output
    assert set(load_index(tmp_path / "c").extra["kind"]) == {"lr"}
    assert load_index(tmp_path / "c").meta["audit"]["dropped_enlarged"] == 0
    assert load_index(tmp_path / "c").recipe["chimera"]["max_enlarge"] is None


def test_enlarged_drop_is_counted_and_can_be_turned_off(shapes_index, tmp_path):
    kw = dict(per_split=15, seed=3, probe=False, kinds=("lr", "tb"))
    off = build_ood_chimera(tmp_path / "off", shapes_index, max_enlarge=None, **kw)
    strict = build_ood_chimera(tmp_path / "strict", shapes_index, max_enlarge=0, **kw)
    default = build_ood_chimera(tmp_path / "default", shapes_index, **kw)
    assert off.meta["audit"]["dropped_enlarged"] == 0
    assert strict.meta["audit"]["dropped_enlarged"] > 0
    assert strict.recipe["chimera"]["max_enlarge"] == 0 and default.recipe["chimera"]["max_enlarge"] == 1
    for index in (off, strict, default):
        audit = index.meta["audit"]
        assert audit["candidates"] == audit["kept"] + sum(audit[k] for k in audit if k.startswith("dropped_"))


def test_blend_morphs_between_the_parents_at_twice_the_size():
    from stillroom.data.ood_chimera import BLEND_RANGE, BLEND_UPSCALE, DEFAULT_KINDS

    a = np.zeros((16, 16), bool)
    a[6:10, 6:10] = True  # 4 x 4 square
    b = np.zeros((16, 16), bool)
    b[2:14, 2:14] = True  # 12 x 12 square, same centre
    up = np.ones((BLEND_UPSCALE, BLEND_UPSCALE), bool)
    same = chimera_mask(a, a, "blend", np.random.default_rng(0))
    assert same.shape == (32, 32) and np.array_equal(same, np.kron(a, up))  # a morph of A with itself is A
    for seed in range(5):
        m = chimera_mask(a, b, "blend", np.random.default_rng(seed))
        # concentric squares: the morph is a square between them, its side (1 - t) 8 + t 24 at twice the size
        rows = np.flatnonzero(m.any(axis=1))
        side = rows[-1] - rows[0] + 1
        lo, hi = (1 - BLEND_RANGE[0]) * 8 + BLEND_RANGE[0] * 24, (1 - BLEND_RANGE[1]) * 8 + BLEND_RANGE[1] * 24
        assert lo - 2 <= side <= hi + 2 and np.array_equal(m & np.kron(a, up), np.kron(a, up))
    assert not chimera_mask(a, np.zeros_like(a), "blend", np.random.default_rng(0)).any()  # no outline: empty
    assert "blend" not in DEFAULT_KINDS


def test_blend_source_builds_with_its_own_audit(shapes_index, tmp_path):
    blends = build_ood_chimera(tmp_path / "b", shapes_index, per_split=10, seed=2, kinds=("blend",), probe=False)
    audit = blends.meta["audit"]
    assert set(blends.extra["kind"]) == {"blend"} and audit["per_kind"] == {"blend": len(blends)} and len(blends) > 0
    assert audit["candidates"] == audit["kept"] + sum(audit[f"dropped_{r}"] for r in DROP_REASONS)
    assert blends.recipe["chimera"]["blend_upscale"] == 2 and blends.recipe["chimera"]["kinds"] == ["blend"]
    size = int(shapes_index.recipe["size"])
    for path in blends.paths[:5]:
        assert Image.open(blends.root / path).size == (size, size)
    default = build_ood_chimera(tmp_path / "d", shapes_index, per_split=5, seed=2, probe=False)
    assert "blend" not in set(default.extra["kind"]) and "blend_range" not in default.recipe["chimera"]


def test_parents_option_resolves_and_validates(shapes_index, tmp_path):
    from stillroom.data.ood_chimera import resolve_parents, shared_frame

    assert resolve_parents(shapes_index, "auto") == "rendered"  # not a sprite index: no frames to go back to
    with pytest.raises(StillroomError, match="native parents need a sprite index"):
        build_ood_chimera(tmp_path / "n", shapes_index, per_split=4, parents="native")
    with pytest.raises(StillroomError, match="parents must be one of"):
        build_ood_chimera(tmp_path / "x", shapes_index, per_split=4, parents="frames")
    with pytest.raises(StillroomError, match="size_tol"):
        build_ood_chimera(tmp_path / "t", shapes_index, per_split=4, size_tol=0)
    a, b = shared_frame(np.ones((3, 5), bool), np.ones((6, 2), bool))
    assert a.shape == b.shape == (8, 8) and a.sum() == 15 and b.sum() == 12
    assert not (a[0].any() or a[-1].any() or b[:, 0].any() or b[:, -1].any())  # background all round
