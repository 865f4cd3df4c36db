"""Emoji OOD set, fetch step: the pinned iconify packages, their icons and the candidate list (REFERENCE 1.2;
seed 000 §2.5, whose COCO masks we replace by vector emoji; pipeline in ``ood_emoji``).

``ICON_SOURCES`` names every icon source the same pipeline builds (issue 16 item 2: more and different OOD shapes):
``emoji`` (the three emoji sets below, categories ``CATEGORIES``) and ``game-icons`` (``GAME_ICON_SETS``:
``@iconify-json/game-icons``, CC-BY-3.0, 4,134 single-colour filled silhouettes of objects, creatures and symbols,
no categories, so every icon is a candidate). A set without categories is read with an empty category map and
listed by sorted icon name (``categories=None``).

Three pinned npm packages (``ICONIFY_EMOJI_SETS``: fluent-emoji-flat MIT, twemoji CC-BY-4.0, noto Apache-2.0) are
fetched (``fetch.fetch_npm_package``, verified against the pin) or taken from local tarballs matched by integrity
(``resolve_tarballs``), read (``read_iconify``) and listed in a fixed order, set then category then name
(``list_candidates``). Skin-tone variants are skipped by default: ``concept_name`` maps them to the neutral emoji,
which also serves as the split group.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stillroom._io import StillroomError
from stillroom.data.fetch import fetch_npm_package, read_tar_members, sri_sha512

__all__ = [
    "ICONIFY_EMOJI_SETS",
    "GAME_ICON_SETS",
    "CATEGORIES",
    "ICON_SOURCES",
    "IconSource",
    "IconSet",
    "Candidate",
    "read_iconify",
    "concept_name",
    "fluent_tone_names",
    "resolve_tarballs",
    "load_icon_sets",
    "list_candidates",
]

# (npm spec, dist.integrity), checked with `npm view <spec> dist.integrity` and against `npm pack` output.
ICONIFY_EMOJI_SETS: tuple[tuple[str, str], ...] = (
    (
        "@iconify-json/fluent-emoji-flat@1.2.6",
        "sha512-RY47RgPb47fYUiyrA64sIOL0+UU02s29sXpNBbIQRBUlPlfNFTKUmZDERGuxDs/7yNGWqQYvuaSYM1M4fRXlUw==",
    ),
    (
        "@iconify-json/twemoji@1.2.5",
        "sha512-uKpuIEV0v6K5BW3Mjdyl+XKFVAbbcPxAgifKvEMtZoUZB5+YiY5zaMm2uNNCxyXzAWU9yNLlj41WU6/mvgALsw==",
    ),
    (
        "@iconify-json/noto@1.2.9",
        "sha512-DQiuXENbun41ch+XPSV55H9FaWKpHTyz46YIKtSaKYD4fIDDzL1tR6H4np/T38jfrTAeI3rcKF0mqHYeZVAuaw==",
    ),
)
# game-icons.net silhouettes (CC-BY-3.0: attribution "GameIcons, https://game-icons.net", recorded in the recipe)
GAME_ICON_SETS: tuple[tuple[str, str], ...] = (
    (
        "@iconify-json/game-icons@1.2.4",
        "sha512-/HDDZxowXgDJcOEwPspUCq5RuDdl25OyZKdtxqqiPJQNTrWIym7r4StLzIVs77DyNzOWWhH5wDqwYR3WHeDfkg==",
    ),
)
CATEGORIES = ("Objects", "Travel & Places", "Animals & Nature", "People & Body", "Food & Drink", "Activities")
_ICONIFY_DEFAULT_SIDE = 16  # iconify JSON: width/height default to 16 when absent
_TONES = r"(?:light|medium-light|medium|medium-dark|dark)"
_TONE_SUFFIX = re.compile(rf"(?:-{_TONES}-skin-tone)+$")  # twemoji, noto: "...-medium-dark-skin-tone"
_FLUENT_TONE = re.compile(rf"-{_TONES}$")  # fluent: "artist-medium-dark" (only when all five siblings exist)
_FLUENT_TONE_NAMES = ("light", "medium-light", "medium", "medium-dark", "dark")


@dataclass(frozen=True)
class IconSource:
    """A named OOD icon source: its pinned packages and the categories to keep (None: every icon)."""

    packages: tuple[tuple[str, str], ...]
    categories: tuple[str, ...] | None


ICON_SOURCES: dict[str, IconSource] = {
    "emoji": IconSource(ICONIFY_EMOJI_SETS, CATEGORIES),
    "game-icons": IconSource(GAME_ICON_SETS, None),
}


@dataclass(frozen=True)
class IconSet:
    spec: str
    integrity: str
    prefix: str
    license: str
    width: float
    height: float
    icons: dict[str, dict[str, Any]]  # name -> {"body", "width"?, "height"?, "left"?, "top"?, ...}
    categories: dict[str, list[str]]


@dataclass(frozen=True)
class Candidate:
    """One icon to render: where it comes from, the concept it stands for (its split group) and its fields."""

    set_index: int  # position in the list of icon sets
    name: str  # icon name in its set
    concept: str  # ``concept_name``: skin tones removed
    category: str
    source: str  # "<prefix>:<name>" for messages
    icon: tuple[tuple[str, Any], ...]  # the iconify icon's fields, sorted (hashable, pickles to workers)
    default_wh: tuple[float, float]  # the set's default width / height


def read_iconify(tarball: str | Path, spec: str = "", integrity: str = "", require_categories: bool = True) -> IconSet:
    """Read an ``@iconify-json/*`` tarball: ``package/icons.json`` (prefix, icons, aliases, default width/height),
    ``package/metadata.json`` (``categories``: name -> icon names; an empty map when absent and not
    ``require_categories``) and ``package/info.json`` (license)."""
    wanted = {"package/icons.json", "package/metadata.json", "package/info.json"}
    try:
        found: dict[str, Any] = {k: json.loads(v.decode("utf-8")) for k, v in read_tar_members(tarball, wanted).items()}
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StillroomError(f"{tarball}: a package JSON file is not valid JSON ({err})") from None
    if "package/icons.json" not in found:
        raise StillroomError(f"{tarball}: no package/icons.json; not an @iconify-json package")
    data = found["package/icons.json"]
    if not isinstance(data.get("icons"), dict):
        raise StillroomError(f"{tarball}: package/icons.json has no 'icons' mapping")
    categories = found.get("package/metadata.json", {}).get("categories") or data.get("categories")
    if categories is None and not require_categories:
        categories = {}
    if not isinstance(categories, dict):
        raise StillroomError(f"{tarball}: no emoji categories (package/metadata.json 'categories')")
    icons = dict(data["icons"])
    for name, alias in (data.get("aliases") or {}).items():  # plain aliases point at a parent icon's body
        parent, hops = alias.get("parent"), 0
        while parent in (data.get("aliases") or {}) and hops < 8:
            parent, hops = data["aliases"][parent].get("parent"), hops + 1
        if name not in icons and parent in data["icons"]:
            icons[name] = {**data["icons"][parent], **{k: v for k, v in alias.items() if k != "parent"}}
    info = found.get("package/info.json", {})
    return IconSet(
        spec=spec,
        integrity=integrity,
        prefix=str(data.get("prefix", Path(str(tarball)).stem)),
        license=str((info.get("license") or {}).get("spdx", "")),
        width=float(data.get("width", _ICONIFY_DEFAULT_SIDE)),
        height=float(data.get("height", _ICONIFY_DEFAULT_SIDE)),
        icons=icons,
        categories={str(k): list(v) for k, v in categories.items()},
    )


def concept_name(name: str, fluent_tones: frozenset[str] = frozenset()) -> str:
    """The emoji concept a set's icon name stands for: skin-tone suffixes removed.

    ``...-medium-dark-skin-tone`` (twemoji, noto; repeated for couples) always; a fluent-style bare suffix
    (``-dark``, ``-medium-light``...) only for names in ``fluent_tones`` (those whose five tone siblings all exist,
    so ``traffic-light`` stays itself).
    """
    base = _TONE_SUFFIX.sub("", name)
    if base == name and name in fluent_tones:
        base = _FLUENT_TONE.sub("", name)
    return base


def fluent_tone_names(names: Sequence[str]) -> frozenset[str]:
    """The names among ``names`` that carry a fluent-style tone suffix: all five tone siblings are present."""
    have = set(names)
    out = set()
    for n in names:
        m = _FLUENT_TONE.search(n)
        if m:
            base = n[: m.start()]
            if all(f"{base}-{t}" in have for t in _FLUENT_TONE_NAMES):
                out.add(n)
    return frozenset(out)


def resolve_tarballs(
    packages: Sequence[tuple[str, str]], tarballs: Sequence[str | Path] | Mapping[str, str | Path] | None
) -> dict[str, Path | None]:
    """Map each pinned spec to a local tarball given by the user (matched by integrity), or None (fetch/cache)."""
    out: dict[str, Path | None] = {spec: None for spec, _ in packages}
    if tarballs is None:
        return out
    if isinstance(tarballs, Mapping):
        for spec, path in tarballs.items():
            if spec not in out:
                raise StillroomError(f"tarball for {spec!r}: not one of the pinned sets {', '.join(out)}")
            out[spec] = Path(path)
        return out
    by_sri = {integrity: spec for spec, integrity in packages}
    for path in tarballs:
        path = Path(path)
        if not path.is_file():
            raise StillroomError(f"{path}: tarball not found")
        spec = by_sri.get(sri_sha512(path))
        if spec is None:
            raise StillroomError(
                f"{path}: matches none of the pinned emoji packages ({', '.join(out)}); wrong version or corrupt"
            )
        out[spec] = path
    return out


def load_icon_sets(
    packages: Sequence[tuple[str, str]],
    tarballs: Sequence[str | Path] | Mapping[str, str | Path] | None,
    cache_dir: str | Path | None,
    require_categories: bool = True,
) -> list[IconSet]:
    """Every pinned package, from the given tarballs, the cache or ``npm pack`` (verified), read in pin order."""
    local = resolve_tarballs(packages, tarballs)
    sets = []
    for spec, integrity in packages:
        path = fetch_npm_package(spec, integrity, tarball=local[spec], cache_dir=cache_dir)
        sets.append(read_iconify(path, spec, integrity, require_categories=require_categories))
    return sets


def list_candidates(
    sets: Sequence[IconSet], categories: Sequence[str] | None, tone_variants: bool
) -> tuple[list[Candidate], dict[str, dict[str, Any]]]:
    """The icons to render in a fixed order (set, then category, then name) and, per set prefix, what was listed and
    left out (``listed``, ``skipped_tone_variants``, ``missing_icon``, ``hidden``). ``categories=None``: every icon
    of the set, by sorted name, category ``""``. Raises when a set lacks one of ``categories`` or no icon is left."""
    candidates: list[Candidate] = []
    audit_sets: dict[str, dict[str, Any]] = {}
    for s, iconset in enumerate(sets):
        missing_cats = [c for c in categories or () if c not in iconset.categories]
        if missing_cats:
            raise StillroomError(
                f"{iconset.spec}: categories {', '.join(map(repr, missing_cats))} not found; it has "
                f"{', '.join(map(repr, iconset.categories))}"
            )
        if categories is None:
            names = [("", n) for n in sorted(iconset.icons)]
        else:
            names = [(c, n) for c in categories for n in iconset.categories[c]]
        fluent = fluent_tone_names([n for _, n in names])
        seen: set[str] = set()
        skipped = missing = hidden = 0
        for category, name in names:
            if name in seen:
                continue
            seen.add(name)
            concept = concept_name(name, fluent)
            if concept != name and not tone_variants:
                skipped += 1
                continue
            icon = iconset.icons.get(name)
            if icon is None or "body" not in icon:
                missing += 1
                continue
            if icon.get("hidden"):
                hidden += 1
                continue
            candidates.append(
                Candidate(
                    set_index=s,
                    name=name,
                    concept=concept,
                    category=category,
                    source=f"{iconset.prefix}:{name}",
                    icon=tuple(sorted(icon.items())),
                    default_wh=(iconset.width, iconset.height),
                )
            )
        audit_sets[iconset.prefix] = {
            "spec": iconset.spec,
            "listed": len(seen),
            "skipped_tone_variants": skipped,
            "missing_icon": missing,
            "hidden": hidden,
        }
    if not candidates:
        raise StillroomError(f"no icon found in categories {', '.join(categories or ('(all)',))}")
    return candidates, audit_sets
