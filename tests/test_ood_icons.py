"""`data build ood-icons`: another pinned iconify source (game-icons: no categories) through the ood-emoji render,
audit, dedup and split path (issue 16 item 2), named in the recipe so `merge-sink` records it per row."""

from __future__ import annotations

from pathlib import Path

import pytest

from _deploy import write_tgz
from stillroom._io import StillroomError
from stillroom.data.emoji_source import GAME_ICON_SETS, ICON_SOURCES, list_candidates, read_iconify
from stillroom.data.fetch import sri_sha512
from stillroom.data.merge import merge_with_sink, source_name
from stillroom.data.ood_emoji import build_ood_icons

pytest.importorskip("resvg_py")

# 512 x 512 view box and fill="currentColor", like game-icons
ICONS = {
    "anvil": '<path fill="currentColor" d="M40 120h400v80H300v120h100v80H100v-80h100V200H40z"/>',
    "disc": '<circle cx="256" cy="256" r="200" fill="currentColor"/>',
    "spade": '<path fill="currentColor" d="M256 30L460 300H300l40 180H172l40-180H52z"/>',
    "tower": '<path fill="currentColor" d="M150 40h212v432H150z"/>',
    "crown": '<path fill="currentColor" d="M40 400V120l110 120L256 80l106 160l110-120v280z"/>',
    "dot": '<circle cx="256" cy="256" r="6" fill="currentColor"/>',  # a detail: too small on its canvas
}


def _tarball(path: Path, with_categories: bool = False) -> Path:
    files = {
        "package/icons.json": {
            "prefix": "gi",
            "icons": {**{n: {"body": b} for n, b in ICONS.items()}, "old": {"body": ICONS["disc"], "hidden": True}},
            "width": 512,
            "height": 512,
        },
        "package/info.json": {"prefix": "gi", "license": {"title": "CC BY 3.0", "spdx": "CC-BY-3.0"}},
    }
    if with_categories:
        files["package/metadata.json"] = {"categories": {"Things": ["anvil"]}}
    return write_tgz(path, files)


@pytest.fixture(scope="module")
def tgz(tmp_path_factory):
    path = _tarball(tmp_path_factory.mktemp("npm") / "iconify-json-gi-1.0.0.tgz")
    return path, ("@iconify-json/gi@1.0.0", sri_sha512(path))


def test_game_icons_pinned_and_registered():
    assert ICON_SOURCES["game-icons"].packages == GAME_ICON_SETS and ICON_SOURCES["game-icons"].categories is None
    spec, integrity = GAME_ICON_SETS[0]
    assert spec == "@iconify-json/game-icons@1.2.4" and integrity.startswith("sha512-")


def test_set_without_categories(tgz):
    path, (spec, sri) = tgz
    with pytest.raises(StillroomError, match="categories"):
        read_iconify(path, spec, sri)  # the emoji path still insists on its categories
    s = read_iconify(path, spec, sri, require_categories=False)
    assert s.categories == {} and s.license == "CC-BY-3.0" and s.width == 512
    cands, per_set = list_candidates([s], None, tone_variants=False)
    assert [c.name for c in cands] == sorted(ICONS)  # every icon by name; the hidden one left out
    assert {c.category for c in cands} == {""} and per_set["gi"]["hidden"] == 1
    with pytest.raises(StillroomError, match="'Things' not found"):
        list_candidates([s], ("Things",), tone_variants=False)


def test_build_records_the_source_and_audits_alike(tgz, shapes_index, tmp_path):
    path, pin = tgz
    index = build_ood_icons(
        tmp_path / "gi", source="game-icons", size=32, tarballs=[path], packages=[pin], workers=1, progress=False,
        probe=False,
    )  # fmt: skip
    assert index.recipe["ood_kind"] == "game-icons" and index.recipe["categories"] is None
    assert index.recipe["source"][0]["license"] == "CC-BY-3.0"
    audit = index.meta["audit"]
    assert audit["candidates"] == len(ICONS) and audit["rejected_by_reason"]["too_small"] == 1
    assert len(index) == index.meta["dedup"]["kept"] <= audit["passed"] == audit["candidates"] - audit["rejected_total"]
    assert "dot" not in set(index.extra["icon"])
    assert source_name(index) == "game-icons"
    merged = merge_with_sink(shapes_index, [index], tmp_path / "m")  # shapes have no padding step: size must match
    n = len(shapes_index)
    assert set(merged.extra["ood_source"][n:]) == {"game-icons"}


def test_unknown_source(tmp_path):
    with pytest.raises(StillroomError, match="known: emoji, game-icons"):
        build_ood_icons(tmp_path / "x", source="no-such-set")
