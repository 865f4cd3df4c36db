"""`data build style-icons`: the ID species' box icons as an other-style evaluation set (issue 14 item 1, 16 item 5).

Checked on a fake pokesprite tarball: each icon is rendered by the ID index's own call, repeats of a species'
rendering are dropped and counted, a species without icons is listed, odd national ids go to val and even ones to
test, the class list is the ID index's (so runs of that index score it), the 1-NN probe is recorded, rebuilds are
byte-identical, and bad input (a tarball off its pin, a non-species index, the ID index as output) is refused."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stillroom._io import StillroomError
from stillroom.data.fetch import sri_sha512
from stillroom.data.index import IndexRow, load_index, write_index
from stillroom.data.outline import render_silhouette
from stillroom.data.preprocess import object_mask
from stillroom.data.style_icons import build_style_icons

SIZE = 32


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _icon(box: tuple[int, int, int, int], notch: bool = False) -> Image.Image:
    a = np.zeros((56, 68), np.uint8)
    t, x, h, w = box
    a[t : t + h, x : x + w] = 255
    if notch:
        a[t : t + h // 2, x : x + w // 3] = 0
    rgba = np.zeros((56, 68, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = a
    return Image.fromarray(rgba, "RGBA")


ICONS = {  # member -> image; species 4 has none, species 1's gen8 icon repeats its gen7 one
    "pokemon-gen7x/regular/aa.png": _icon((10, 20, 30, 20)),
    "pokemon-gen8/regular/aa.png": _icon((10, 20, 30, 20)),
    "pokemon-gen7x/regular/bb.png": _icon((5, 5, 20, 40)),
    "pokemon-gen8/regular/bb.png": _icon((5, 5, 20, 40), notch=True),
    "pokemon-gen7x/regular/cc.png": _icon((20, 10, 25, 25)),
    "pokemon-gen7x/regular/right/cc.png": _icon((20, 10, 25, 25), notch=True),
    "pokemon-gen7x/shiny/aa.png": _icon((0, 0, 50, 60)),  # never read
}


def _tarball(path: Path) -> Path:
    table = {
        f"{i:03d}": {"idx": f"{i:03d}", "slug": {"eng": s}} for i, s in ((1, "aa"), (2, "bb"), (3, "cc"), (4, "dd"))
    }
    members = {"package/data/pokemon.json": json.dumps(table).encode()}
    members.update({f"package/{k}": _png(v) for k, v in ICONS.items()})
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _id_index(root: Path, classes: list[str]) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for label, cls in enumerate(classes):
        for k, split in enumerate(("train", "train", "val", "test")):
            img = np.full((SIZE, SIZE), 255, np.uint8)
            t, x = rng.integers(2, 12, size=2)
            img[t : t + 14 + label, x : x + 10 + 2 * label] = 0
            rel = f"images/{label}_{k}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            data = _png(Image.fromarray(img, "L"))
            (root / rel).write_bytes(data)
            rows.append(IndexRow(rel, label, cls, split, f"{label}/{k}", hashlib.sha256(data).hexdigest()))
    recipe = {"kind": "silhouette", "size": SIZE, "channels": 1, "padding": 0.2, "mean": [0.8], "std": [0.4]}
    write_index(root, rows, classes, recipe)
    return root


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("icons")
    tgz = _tarball(tmp / "pokesprite-images-test.tgz")
    ids = _id_index(tmp / "id", [f"species_{i:03d}" for i in range(1, 5)])
    return tgz, ("pokesprite-images@0.0.0-test", sri_sha512(tgz)), ids


@pytest.fixture(scope="module")
def built(fake, tmp_path_factory):
    tgz, package, ids = fake
    return build_style_icons(tmp_path_factory.mktemp("out") / "icons", ids, tarball=tgz, package=package)


def test_rows_kinds_duplicates_and_missing(built):
    kinds = {(r, k) for r, k in zip(built.paths, built.extra["kind"], strict=True)}
    assert kinds == {
        ("images/001/gen7.png", "gen7"),
        ("images/002/gen7.png", "gen7"),
        ("images/002/gen8.png", "gen8"),
        ("images/003/gen7.png", "gen7"),
        ("images/003/gen7-right.png", "gen7-right"),
    }
    assert built.meta["duplicates"] == 1 and built.meta["missing"] == ["species_004"]
    assert built.classes == [f"species_{i:03d}" for i in range(1, 5)]
    assert list(built.labels) == [0, 1, 1, 2, 2]


def test_split_by_national_id_parity(built):
    by_label = {int(lab): str(s) for lab, s in zip(built.labels, built.splits, strict=True)}
    assert by_label == {0: "val", 1: "test", 2: "val"}
    assert "train" not in set(built.splits)


def test_rendered_by_the_id_call(built):
    for rel, member in zip(built.paths, built.extra["member"], strict=True):
        want = render_silhouette(object_mask(ICONS[member.removeprefix("package/")]), SIZE, 0.2)
        assert np.array_equal(np.asarray(Image.open(built.root / rel)), want)
    assert built.recipe["size"] == SIZE and built.recipe["source"]["package"] == "pokesprite-images@0.0.0-test"


def test_probe_and_rebuild_identical(fake, built, tmp_path):
    nn = built.meta["nn_probe"]
    assert nn["train"]["n"] == 8 and nn["val"]["n"] == 3 and nn["test"]["n"] == 2
    assert 0.0 <= nn["val"]["accuracy"] <= 1.0
    tgz, package, ids = fake
    again = build_style_icons(tmp_path / "again", ids, tarball=tgz, package=package)
    assert again.content_hash == built.content_hash and again.index_hash == built.index_hash


def test_bad_input_is_refused(fake, tmp_path):
    tgz, package, ids = fake
    with pytest.raises(StillroomError, match="integrity"):
        build_style_icons(tmp_path / "a", ids, tarball=tgz, package=(package[0], "sha512-" + "A" * 86 + "=="))
    other = _id_index(tmp_path / "cats", ["cat", "dog"])
    with pytest.raises(StillroomError, match="species_NNN"):
        build_style_icons(tmp_path / "b", other, tarball=tgz, package=package)
    with pytest.raises(StillroomError, match="new directory"):
        build_style_icons(ids, ids, tarball=tgz, package=package)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert load_index(ids).classes[0] == "species_001"  # the ID index is untouched


def test_pipeline_helper_reuses_builds_offline_from_the_cache_or_skips(fake, tmp_path, monkeypatch):
    """The demo's call: offline and not cached -> (None, why), nothing written; with the package in the npm cache
    it builds; a second call reuses the set built for the same ID index."""
    import stillroom.data.style_icons as si
    from stillroom.data.fetch import npm_tarball_name

    tgz, package, ids = fake
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "style"
    got, why = si.style_icons_or_none(out, load_index(ids), offline=True)
    assert got is None and "not in the npm cache" in why and not out.exists()
    cache = tmp_path / "cache" / "stillroom" / "npm"
    cache.mkdir(parents=True)
    monkeypatch.setattr(si, "POKESPRITE_IMAGES", package)  # the fake tarball's pin stands in for the real one
    (cache / npm_tarball_name(package[0])).write_bytes(tgz.read_bytes())
    monkeypatch.setattr(si, "build_style_icons", lambda *a, **k: build_style_icons(*a, package=package, **k))
    built, why = si.style_icons_or_none(out, load_index(ids), offline=True)
    assert why == "" and built is not None and len(built) == 5
    monkeypatch.setattr(si, "build_style_icons", lambda *a, **k: pytest.fail("rebuilt instead of reused"))
    again, _ = si.style_icons_or_none(out, load_index(ids), offline=True)
    assert again.content_hash == built.content_hash
