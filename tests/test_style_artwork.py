"""`data build style-artwork`: the ID species' official artwork as a style set (issue 14 item 1, 16 item 5).

Checked on a fake `pokemon` sdist: a drawing's mask is everything not joined to the border through near-white
paper (white inside the outline stays object, JPEG specks go), each drawing is rendered by the ID index's own call,
odd national ids go to val and even ones to test, a species without a drawing is listed, rebuilds are identical;
the sdist is fetched through pip into a verified cache, and a file off its pin is refused and never cached."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stillroom._io import StillroomError
from stillroom.data import fetch
from stillroom.data.fetch import fetch_pypi_sdist, sri_sha512
from stillroom.data.outline import render_silhouette
from stillroom.data.preprocess import BadImageError
from stillroom.data.style_artwork import artwork_mask, build_style_artwork
from test_style_icons import SIZE, _id_index

SPEC = "pokemon==9.9"


def _drawing(box: tuple[int, int, int, int], hole: bool = False, speck: bool = False) -> np.ndarray:
    """A dark-outlined shape on white paper (RGB), optionally white inside and with a one-pixel speck."""
    rgb = np.full((90, 80, 3), 255, np.uint8)
    t, x, h, w = box
    rgb[t : t + h, x : x + w] = (40, 30, 120)
    if hole:
        rgb[t + 3 : t + h - 3, x + 3 : x + w - 3] = 250  # a white belly, enclosed by the outline
    if speck:
        rgb[85, 5] = (0, 0, 0)
    return rgb


DRAWINGS = {
    1: _drawing((10, 10, 50, 30), hole=True, speck=True),
    2: _drawing((20, 5, 30, 60)),
    3: _drawing((5, 30, 70, 20)),
}


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _sdist(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for sid, rgb in DRAWINGS.items():  # species 4 has no drawing
            data = _jpeg(rgb)
            info = tarfile.TarInfo(f"pokemon-9.9/pokemon/database/images/{sid}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("artwork")
    sdist = _sdist(tmp / "pokemon-9.9.tar.gz")
    ids = _id_index(tmp / "id", [f"species_{i:03d}" for i in range(1, 5)])
    return sdist, (SPEC, sri_sha512(sdist)), ids


def test_mask_keeps_enclosed_white_and_drops_specks():
    m = artwork_mask(_jpeg(DRAWINGS[1]), "d1.jpg")
    assert m[30, 25]  # the white belly inside the outline is object
    assert not m[85, 5] and not m[0, 0]  # the speck and the paper are not
    assert abs(int(m.sum()) - 50 * 30) <= 60  # the whole shape, give or take JPEG ringing on its edge
    with pytest.raises(BadImageError, match="blank"):
        artwork_mask(_jpeg(np.full((40, 40, 3), 255, np.uint8)), "white.jpg")
    with pytest.raises(BadImageError, match="decode"):
        artwork_mask(b"not a jpeg", "bad.jpg")


def test_rows_split_rendering_and_rebuild(fake, tmp_path):
    sdist, package, ids = fake
    built = build_style_artwork(tmp_path / "art", ids, tarball=sdist, package=package)
    assert built.classes == [f"species_{i:03d}" for i in range(1, 5)] and built.meta["missing"] == ["species_004"]
    assert list(built.paths) == [f"images/00{i}/artwork.png" for i in (1, 2, 3)]
    assert [str(s) for s in built.splits] == ["val", "test", "val"]
    assert built.recipe["style"] == "official-artwork" and built.recipe["source"]["package"] == SPEC
    for sid, rel in zip((1, 2, 3), built.paths, strict=True):
        want = render_silhouette(artwork_mask(_jpeg(DRAWINGS[sid]), "x"), SIZE, 0.2)
        assert np.array_equal(np.asarray(Image.open(built.root / rel)), want)
    assert built.meta["nn_probe"]["val"]["n"] == 2
    again = build_style_artwork(tmp_path / "again", ids, tarball=sdist, package=package)
    assert again.content_hash == built.content_hash and again.index_hash == built.index_hash
    with pytest.raises(StillroomError, match="integrity"):
        build_style_artwork(tmp_path / "bad", ids, tarball=sdist, package=(SPEC, "sha512-" + "A" * 86 + "=="))
    assert not (tmp_path / "bad").exists()


def test_fetch_pypi_sdist_verifies_and_caches(fake, tmp_path, monkeypatch):
    sdist, package, _ = fake
    calls = []

    def fake_pip(spec: str, dest: Path) -> Path:
        calls.append(spec)
        out = dest / "pokemon-9.9.tar.gz"
        out.write_bytes(sdist.read_bytes())
        return out

    monkeypatch.setattr(fetch, "_pip_download", fake_pip)
    got = fetch_pypi_sdist(*package, cache_dir=tmp_path)
    assert got == tmp_path / "pokemon-9.9.tar.gz" and got.read_bytes() == sdist.read_bytes()
    assert fetch_pypi_sdist(*package, cache_dir=tmp_path) == got and calls == [SPEC]  # cached: no second download
    with pytest.raises(StillroomError, match="refusing"):
        fetch_pypi_sdist(SPEC, "sha512-" + "B" * 86 + "==", cache_dir=tmp_path / "other")
    assert not list((tmp_path / "other").glob("*.tar.gz"))
    with pytest.raises(StillroomError, match="name==version"):
        fetch_pypi_sdist("pokemon@9.9", package[1], cache_dir=tmp_path)
