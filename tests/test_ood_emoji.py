"""The emoji OOD builder, the ID + OOD merge and the shortcut probe (REFERENCE 1.2; seed 000 §2.5).

SVGs are written by the tests into a fake ``@iconify-json`` tarball with the real package layout
(``package/icons.json``, ``package/metadata.json`` categories, ``package/info.json``); one slow test fetches a real
package with ``npm pack``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from _deploy import write_tgz
from stillroom._io import StillroomError, read_json
from stillroom.cli.data import _outline, register
from stillroom.data.fetch import sri_sha512
from stillroom.data.index import load_index, update_index_meta
from stillroom.data.merge import merge_with_sink
from stillroom.data.ood_emoji import (
    DEFAULT_MATCHED_LIMITS,
    GEN5_NATIVE_SIDE_QUANTILES,
    ICONIFY_EMOJI_SETS,
    _gen5_native_pool,
    audit_mask,
    build_ood_emoji,
    concept_name,
    effective_resolution,
    mask_topology,
    matched_limits,
    read_iconify,
    sprite_like,
)
from stillroom.data.outline import Outline
from stillroom.data.shortcuts import probe_index, shortcut_probe
from stillroom.data.synthetic import build_shapes

pytest.importorskip("resvg_py")

# 32 x 32 view box, like fluent-emoji-flat
GOOD = {
    "blob": '<ellipse cx="16" cy="16" rx="13" ry="10" fill="#f80"/>',
    "square": '<rect x="5" y="5" width="22" height="22" fill="#0a0"/>',
    "triangle": '<path fill="#00f" d="M16 3L29 28H3z"/>',
    "house": '<path fill="#a52" d="M16 3l13 11v15H3V14z"/>',
    "pill": '<rect x="4" y="10" width="24" height="12" rx="6" fill="#e0e"/>',
}
BAD = {
    "donut": ('<circle cx="16" cy="16" r="9.5" fill="none" stroke="#c60" stroke-width="7"/>', ["holes"]),
    "two-dots": (
        '<circle cx="8" cy="16" r="6" fill="#333"/><circle cx="24" cy="16" r="6" fill="#333"/>',
        ["components"],
    ),
    "tiny-dot": ('<circle cx="16" cy="16" r="2" fill="#000"/>', ["too_small"]),
    "thin-stick": ('<path fill="#753" d="M3 4.5L4.5 3L29 27.5L27.5 29z"/>', ["low_fill"]),
    "three-dots": (
        '<circle cx="5" cy="16" r="4" fill="#333"/><circle cx="16" cy="16" r="4" fill="#333"/>'
        '<circle cx="27" cy="16" r="4" fill="#333"/>',
        ["components"],
    ),
}
# audit="matched" without an ID index allows 2 pieces and 9 holes: these two pass it, the seed000 audit fails them
MATCHED_ONLY = ("donut", "two-dots")


def _fake_iconify(path: Path, prefix: str = "fake") -> Path:
    icons = {name: {"body": body} for name, body in GOOD.items()}
    icons.update({name: {"body": body} for name, (body, _) in BAD.items()})
    icons["blob-dark-skin-tone"] = {"body": GOOD["blob"]}  # a tone variant: skipped by default
    icons["old-blob"] = {"body": GOOD["blob"], "hidden": True}
    icons["sym-square"] = {"body": GOOD["square"]}
    files = {
        "package/icons.json": {"prefix": prefix, "icons": icons, "aliases": {}, "width": 32, "height": 32},
        "package/metadata.json": {
            "categories": {
                "Objects": ["blob", "square", "donut", "tiny-dot", "old-blob", "blob-dark-skin-tone"],
                "Animals & Nature": ["triangle", "house", "pill", "two-dots", "thin-stick", "three-dots"],
                "Symbols": ["sym-square"],
            }
        },
        "package/info.json": {"prefix": prefix, "license": {"title": "MIT", "spdx": "MIT"}},
        "package/package.json": {"name": f"@iconify-json/{prefix}", "version": "1.0.0"},
    }
    return write_tgz(path, files)


@pytest.fixture(scope="module")
def fake_tarball(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[str, str]]:
    path = _fake_iconify(tmp_path_factory.mktemp("npm") / "iconify-json-fake-1.0.0.tgz")
    return path, ("@iconify-json/fake@1.0.0", sri_sha512(path))


@pytest.fixture(scope="module")
def ood_index(fake_tarball, tmp_path_factory: pytest.TempPathFactory):
    path, pin = fake_tarball
    out = tmp_path_factory.mktemp("ood") / "ood64"
    return build_ood_emoji(
        out, size=64, tarballs=[path], packages=[pin], categories=("Objects", "Animals & Nature"), workers=1,
        progress=False, audit="seed000",
    )  # fmt: skip


@pytest.fixture(scope="module")
def ood_matched(fake_tarball, tmp_path_factory: pytest.TempPathFactory):
    path, pin = fake_tarball
    out = tmp_path_factory.mktemp("ood") / "ood64m"
    return build_ood_emoji(
        out, size=64, tarballs=[path], packages=[pin], categories=("Objects", "Animals & Nature"), workers=1,
        progress=False,
    )  # fmt: skip


# --- audit, on masks drawn here ------------------------------------------------------------------------------


def _canvas(n: int = 24) -> np.ndarray:
    return np.full((n, n), 255, dtype=np.uint8)


def test_topology_of_hand_drawn_masks():
    ring = _canvas()
    ring[4:20, 4:20] = 0
    ring[9:15, 9:15] = 255
    t = mask_topology(ring)
    assert (t["components"], t["holes"]) == (1, 1)
    assert t["fill"] == pytest.approx((256 - 36) / 256)
    assert t["perimeter"] == 4 * 16 + 4 * 6

    two = _canvas()
    two[2:8, 2:8] = 0
    two[12:20, 12:20] = 0
    assert audit_mask(two) == ["components"]

    # a diagonal touch joins pieces (8-connected object) and does not close a hole (4-connected background)
    diag = _canvas()
    diag[5:10, 5:10] = 0
    diag[10:15, 10:15] = 0
    assert mask_topology(diag)["components"] == 1
    corner = _canvas()
    corner[4:12, 4:12] = 0
    corner[7, 7] = 255  # a one-pixel hole is a hole
    assert audit_mask(corner) == ["holes"]

    stick = _canvas(40)
    for i in range(40):
        stick[i, max(0, i - 1) : i + 1] = 0  # two-pixel diagonal: fill ~ 2/40
    assert audit_mask(stick) == ["low_fill"]
    assert audit_mask(_canvas()) == ["empty"]
    assert audit_mask(ring) == ["holes"]
    # the matched audit's limits: a ring and two pieces pass, three pieces or too many holes do not
    assert audit_mask(ring, max_components=2, max_holes=1) == []
    assert audit_mask(two, max_components=2, max_holes=0) == []
    three = two.copy()
    three[2:6, 16:20] = 0
    assert audit_mask(three, max_components=2, max_holes=9) == ["components"]
    assert audit_mask(corner, max_components=2, max_holes=0) == ["holes"]
    assert audit_mask(stick, max_components=9, max_holes=9) == ["low_fill"]  # fill is checked in both modes


def test_matched_limits_are_id_quantiles():
    ring = _canvas()
    ring[4:20, 4:20] = 0
    ring[6:9, 6:9] = ring[6:9, 12:15] = ring[12:15, 6:9] = 255  # three holes
    blob = _canvas()
    blob[4:20, 4:20] = 0
    pieces = blob.copy()
    pieces[9:15, 2:22] = 255  # cut in two
    stack = np.stack([blob] * 16 + [ring] * 2 + [pieces] * 2)  # 10% with 3 holes, 10% with 2 pieces
    assert matched_limits(stack, 0.95) == {"max_components": 2, "max_holes": 3}
    assert matched_limits(stack, 0.5) == {"max_components": 1, "max_holes": 0}  # never stricter than seed 000
    assert matched_limits(np.stack([blob] * 4)) == {"max_components": 1, "max_holes": 0}
    with pytest.raises(StillroomError, match="quantile"):
        matched_limits(stack, 0.0)
    with pytest.raises(StillroomError, match="non-empty"):
        matched_limits(np.zeros((0, 8, 8), np.uint8))


def test_effective_resolution_recovers_native_pixel_art():
    rng = np.random.default_rng(0)
    native = rng.random((20, 14)) < 0.5
    native[0] = native[-1] = True  # no two equal consecutive rows at the borders of the box
    native[:, 0] = native[:, -1] = True
    while True:  # make every consecutive row and column differ, so the native count is exactly 20
        same_r = np.flatnonzero((native[1:] == native[:-1]).all(1))
        same_c = np.flatnonzero((native[:, 1:] == native[:, :-1]).all(0))
        if not len(same_r) and not len(same_c):
            break
        for r in same_r:
            native[r + 1, 1] = ~native[r + 1, 1]
        for c in same_c:
            native[1, c + 1] = ~native[1, c + 1]
    enlarged = np.kron(native, np.ones((3, 3), dtype=bool))  # 60 x 42, like an enlarged sprite
    assert effective_resolution(enlarged) == 20
    assert effective_resolution(np.where(enlarged, 0, 255).astype(np.uint8)) == 20
    assert effective_resolution(np.zeros((5, 5), bool)) == 0


def test_sprite_like_downscales_then_preprocesses():
    yy, xx = np.mgrid[:400, :400]
    disc = (yy - 200) ** 2 + (xx - 200) ** 2 < 150**2  # smooth, 300 px across
    out = sprite_like(disc, side=12, size=64)
    assert out.shape == (64, 64) and out.dtype == np.uint8 and set(np.unique(out)) <= {0, 255}
    assert effective_resolution(out) <= 12  # staircase of a 12-pixel native mask
    fine = sprite_like(disc, side=46, size=64)
    assert effective_resolution(fine) > effective_resolution(out)
    # a native side above the 46-pixel object of a 64 px image: binarized at 80, then BOX-reduced like a sprite
    big = sprite_like(disc, side=80, size=64)
    assert big.shape == (64, 64) and effective_resolution(big) <= 46
    with pytest.raises(StillroomError, match="no object"):
        sprite_like(np.zeros((10, 10), bool), 5, 64)


@pytest.mark.parametrize(
    ("name", "concept"),
    [
        ("artist-medium-dark-skin-tone", "artist"),
        ("kiss-man-man-dark-skin-tone-light-skin-tone", "kiss-man-man"),
        ("artist-medium-dark", "artist"),  # fluent style, all five siblings exist
        ("traffic-light", "traffic-light"),
        ("red-apple", "red-apple"),
    ],
)
def test_concept_name(name, concept):
    fluent = frozenset({"artist-medium-dark"})
    assert concept_name(name, fluent) == concept


# --- the builder on the fake package -------------------------------------------------------------------------


def test_read_iconify_layout(fake_tarball):
    path, _ = fake_tarball
    s = read_iconify(path)
    assert s.prefix == "fake" and s.license == "MIT" and (s.width, s.height) == (32, 32)
    assert "Objects" in s.categories and s.icons["blob"]["body"] == GOOD["blob"]


def test_gen5_native_pool_follows_the_measured_quantiles():
    pool = _gen5_native_pool()
    table = dict(GEN5_NATIVE_SIDE_QUANTILES)
    for q in (5, 25, 50, 75, 95):
        assert abs(np.percentile(pool, q) - table[q]) <= 1
    assert pool.min() == table[1] and pool.max() == table[99]


def test_builder_audit_rejects_exactly_the_right_ones(ood_index):
    audit = ood_index.meta["audit"]
    assert audit["mode"] == "seed000" and ood_index.recipe["audit"] == "seed000"
    assert (audit["thresholds"]["max_components"], audit["thresholds"]["max_holes"]) == (1, 0)
    rejected = {r["icon"]: r["reasons"] for r in audit["rejected_icons"]}
    assert rejected == {name: reasons for name, (_, reasons) in BAD.items()}
    assert audit["rejected_by_reason"] == {
        "render_error": 0, "empty": 0, "too_small": 1, "components": 2, "holes": 1, "low_fill": 1,
    }  # fmt: skip
    assert audit["candidates"] == len(GOOD) + len(BAD) and audit["passed"] == len(GOOD)
    per_set = audit["per_set"]["fake"]
    assert per_set["skipped_tone_variants"] == 1 and per_set["hidden"] == 1
    assert sorted(ood_index.extra["icon"]) == sorted(GOOD)  # sym-square (Symbols) never considered


def test_matched_audit_keeps_a_ring_and_two_pieces(ood_matched):
    audit = ood_matched.meta["audit"]
    assert audit["mode"] == "matched" and ood_matched.recipe["audit"] == "matched"
    th = audit["thresholds"]
    assert {k: th[k] for k in DEFAULT_MATCHED_LIMITS} == DEFAULT_MATCHED_LIMITS and th["from"].startswith("default")
    rejected = {r["icon"]: r["reasons"] for r in audit["rejected_icons"]}
    assert rejected == {name: reasons for name, (_, reasons) in BAD.items() if name not in MATCHED_ONLY}
    assert audit["rejected_by_reason"] == {
        "render_error": 0, "empty": 0, "too_small": 1, "components": 1, "holes": 0, "low_fill": 1,
    }  # fmt: skip
    assert audit["passed"] == len(GOOD) + len(MATCHED_ONLY)
    assert sorted(ood_matched.extra["icon"]) == sorted([*GOOD, *MATCHED_ONLY])
    donut = ood_matched.extra["icon"].index("donut")
    img = np.asarray(__import__("PIL.Image").Image.open(ood_matched.image_path(donut)))
    assert mask_topology(img)["holes"] == 1


def test_matched_audit_limits_from_the_id_index(fake_tarball, id64, tmp_path):
    from stillroom.data.dataset import load_images

    path, pin = fake_tarball
    index = build_ood_emoji(
        tmp_path / "o", size=64, id_index=id64, tarballs=[path], packages=[pin], workers=1, progress=False,
        categories=("Objects", "Animals & Nature"), probe=False,
    )  # fmt: skip
    th = index.meta["audit"]["thresholds"]
    want = matched_limits(load_images(id64)[id64.split_indices("train"), 0])
    assert {k: th[k] for k in want} == want and th["from"].startswith("id-index")
    assert index.recipe["resolution_target"]["index_hash"] == id64.index_hash
    with pytest.raises(StillroomError, match="audit must be one of"):
        build_ood_emoji(tmp_path / "p", size=64, tarballs=[path], packages=[pin], progress=False, audit="loose")


def test_builder_index_layout(ood_index):
    assert ood_index.classes == ["ood"] and set(ood_index.labels.tolist()) == {0}
    assert ood_index.groups == ood_index.extra["icon"]  # group = emoji name
    assert sorted(ood_index.splits.tolist()) == ["test", "train", "train", "train", "val"]  # 5 names, 80/10/10
    recipe = ood_index.recipe
    assert recipe["size"] == 64 and recipe["channels"] == 1 and recipe["split"] == "by-emoji-name"
    assert recipe["resolution_target"]["from"] == "gen5-measured" and 0 < recipe["std"][0] < 0.5
    for i in range(len(ood_index)):
        img = np.asarray(__import__("PIL.Image").Image.open(ood_index.image_path(i)))
        assert img.shape == (64, 64) and set(np.unique(img)) <= {0, 255}
        assert audit_mask(img) == []
        assert 32 <= int(ood_index.extra["side"][i]) <= 97  # gen-V native sides, not capped at the 46 px object
    assert (ood_index.root / "contact_sheet.png").is_file()


def test_builder_refuses_unknown_tarball_and_missing_category(fake_tarball, tmp_path):
    path, pin = fake_tarball
    with pytest.raises(StillroomError, match="matches none of the pinned"):
        build_ood_emoji(tmp_path / "a", size=64, tarballs=[path], progress=False)
    with pytest.raises(StillroomError, match="categories 'Flags' not found"):
        build_ood_emoji(tmp_path / "b", size=64, tarballs=[path], packages=[pin], categories=("Flags",),
                        workers=1, progress=False)  # fmt: skip


# --- merge ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def id64(tmp_path_factory: pytest.TempPathFactory):
    return build_shapes(tmp_path_factory.mktemp("id64"), n_per_class=10, size=64, num_classes=3, seed=1)


def test_merge_keeps_id_recipe_and_appends_sink(id64, ood_index, tmp_path):
    merged = merge_with_sink(id64, ood_index, tmp_path / "merged")
    k = id64.num_classes
    assert merged.classes == [*id64.classes, "ood"] and merged.recipe["sink_class"] == k
    for key in ("size", "channels", "mean", "std"):  # teachers trained on the ID index see identical inputs
        assert merged.recipe[key] == id64.recipe[key]
    assert merged.recipe["ood_source"]["index_hash"] == ood_index.index_hash
    n_id = len(id64)
    assert merged.paths[:n_id] == id64.paths and merged.labels[:n_id].tolist() == id64.labels.tolist()
    assert merged.splits[:n_id].tolist() == id64.splits.tolist() and merged.groups[:n_id] == id64.groups
    assert set(merged.labels[n_id:].tolist()) == {k} and set(merged.label_names[n_id:]) == {"ood"}
    assert merged.groups[n_id:] == ood_index.groups and merged.splits[n_id:].tolist() == ood_index.splits.tolist()
    assert merged.extra["source"] == ["id"] * n_id + ["ood"] * len(ood_index)
    assert all(p.startswith("ood/") for p in merged.paths[n_id:])
    load_index(merged.root, verify_files=True)  # every file present with its hash


def test_merge_refusals(id64, ood_index, tmp_path):
    merged = merge_with_sink(id64, ood_index, tmp_path / "m")
    with pytest.raises(StillroomError, match="already has an OOD sink"):
        merge_with_sink(merged, ood_index, tmp_path / "m2")
    small = build_shapes(tmp_path / "id32", n_per_class=4, size=32, num_classes=2)
    with pytest.raises(StillroomError, match="size=64 differs"):
        merge_with_sink(small, ood_index, tmp_path / "m3")


# --- shortcut probe ------------------------------------------------------------------------------------------


def _squares(n: int, hole: bool, rng: np.random.Generator) -> np.ndarray:
    out = np.full((n, 32, 32), 255, dtype=np.uint8)
    for i in range(n):
        a, b = rng.integers(3, 8, size=2)
        c, d = rng.integers(24, 29, size=2)
        out[i, a:c, b:d] = 0
        if hole:
            out[i, a + 6 : a + 6 + rng.integers(2, 6), b + 6 : b + 6 + rng.integers(2, 6)] = 255
    return out


def test_shortcut_probe_flags_a_topology_shortcut_and_not_noise():
    rng = np.random.default_rng(0)
    splits = np.array((["train"] * 3 + ["val", "test"]) * 48)
    images = np.concatenate([_squares(120, True, rng), _squares(120, False, rng)])
    is_ood = np.r_[np.zeros(120, bool), np.ones(120, bool)]
    res = shortcut_probe(images, is_ood, splits)
    assert res["max_auroc"]["topology"] > 0.95
    assert "Shortcut danger" in res["summary"] and "topology" in res["summary"]
    same = shortcut_probe(np.concatenate([_squares(120, False, rng), _squares(120, False, rng)]), is_ood, splits)
    assert max(same["max_auroc"].values()) < 0.8 and "No strong shortcut" in same["summary"]
    # issue 16: the result and its summary give the size and the 0.70 bar, met or not
    assert res["size"] == same["size"] == images.shape[-1] and res["bar"] == same["bar"] == 0.70
    assert res["passes_bar"]["topology"] is False and res["passes"] is False
    assert same["passes"] is (max(same["max_auroc"].values()) <= 0.70)
    assert (
        res["summary"].startswith(f"At {images.shape[-1]} px: topology AUROC")
        and "bar (both <= 0.70) is NOT met" in res["summary"]
    )
    assert "is met" in same["summary"] if same["passes"] else "NOT met" in same["summary"]
    # a hole changes the 8x8 coverage too: the shape reference sees it (tests/test_outline.py has the reverse case)
    assert res["shape_reference"]["max_auroc"] > 0.9 and "Shape reference" in res["summary"]
    with pytest.raises(StillroomError, match="both ID and OOD"):
        shortcut_probe(images, np.ones(240, bool), splits)


def test_probe_index_writes_index_json(id64, ood_index, tmp_path):
    merged = merge_with_sink(id64, ood_index, tmp_path / "merged")
    # the fake OOD set has one test row; enough for the probe
    res = probe_index(merged)
    again = load_index(merged.root)
    assert again.meta["shortcut_probe"] == json.loads(json.dumps(res))
    assert again.index_hash == merged.index_hash and again.content_hash == merged.content_hash
    assert again.meta["merge"] == merged.meta["merge"]  # other metadata survives the rewrite


def test_cli_merge_and_probe(id64, ood_index, tmp_path):
    app, data_app, build_app = typer.Typer(), typer.Typer(), typer.Typer()
    data_app.add_typer(build_app, name="build")
    app.add_typer(data_app, name="data")
    register(data_app, build_app, app)
    runner = CliRunner()
    out = tmp_path / "cli_merged"
    res = runner.invoke(app, ["data", "merge-sink", str(id64.root), str(ood_index.root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["data", "probe-shortcuts", str(out)])
    assert res.exit_code == 0, res.output
    assert "shortcut probe (topology)" in res.output and "shortcut_probe" in read_json(out / "index.json")


def test_canonical_outline_on_the_ood_side(fake_tarball, id64, ood_index, tmp_path):
    """Issue 16: the OOD set takes the same canonical rendering after its sprite-like step, records it, and must
    share it with its ID index (``--outline auto`` takes the ID index's)."""
    path, pin = fake_tarball
    kw = dict(tarballs=[path], packages=[pin], categories=("Objects", "Animals & Nature"), workers=1, progress=False,
              audit="seed000")  # fmt: skip
    canon = build_ood_emoji(tmp_path / "canon", size=64, outline=Outline(), **kw)
    assert canon.recipe["outline"] == Outline().recipe() and canon.content_hash != ood_index.content_hash
    assert "outline" not in ood_index.recipe
    with pytest.raises(StillroomError, match="one rendering"):
        build_ood_emoji(tmp_path / "mismatch", size=64, id_index=id64, outline=Outline(), **kw)
    with pytest.raises(StillroomError, match="outline"):
        merge_with_sink(id64, canon, tmp_path / "merged")
    # the CLI's --outline: auto follows the ID index, canonical takes --outline-grid / --outline-sigma
    assert _outline("auto", 32, 0.8, id64.root) is None and _outline("auto", 32, 0.8) is None
    assert _outline("canonical", 24, 0.5) == Outline(grid=24, sigma=0.5) and _outline("none", 24, 0.5) is None
    update_index_meta(canon.root, recipe={**canon.recipe, "outline": Outline(grid=20).recipe()})
    assert _outline("auto", 32, 0.8, canon.root) == Outline(grid=20)
    with pytest.raises(StillroomError, match="--outline 'smooth'"):
        _outline("smooth", 32, 0.8)


def test_merge_requires_one_class_ood(id64, tmp_path):
    two = build_shapes(tmp_path / "two", n_per_class=4, size=64, num_classes=2)
    with pytest.raises(StillroomError, match="one class"):
        merge_with_sink(id64, two, tmp_path / "m")


# --- the real thing ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_npm_fetch_of_one_package(tmp_path):
    from stillroom.data.fetch import fetch_npm_package

    spec, integrity = ICONIFY_EMOJI_SETS[1]  # twemoji, 1.5 MB
    path = fetch_npm_package(spec, integrity, cache_dir=tmp_path)
    s = read_iconify(path, spec, integrity)
    assert s.prefix == "twemoji" and s.license == "CC-BY-4.0"
    for cat in ("Objects", "Travel & Places", "Animals & Nature", "People & Body", "Food & Drink", "Activities"):
        assert s.categories[cat] and all(n in s.icons for n in s.categories[cat])
