"""Plumbing the dataset builders share (REFERENCE 1.3: a dataset is a directory holding ``index.json``).

``sprites``, ``ood_emoji`` and ``merge`` build into ``<out_dir>.tmp-<pid>`` beside the target (``new_build_dir``)
and swap the finished build in with ``install_build`` (``_io.replace_dir``: the old dataset moves aside, is restored
if the swap fails and is deleted after it); ``check_out_dir`` refuses, before any work, an output directory that is
neither absent, empty nor a previous Stillroom dataset. ``import_folder`` keeps its own, stricter check (the output
must also lie outside the source folder) but shares ``is_dataset_dir`` and the swap.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stillroom._io import StillroomError, read_json, replace_dir
from stillroom.data.index import FORMAT

__all__ = ["is_dataset_dir", "check_out_dir", "new_build_dir", "install_build", "rmtree", "default_workers"]


def is_dataset_dir(path: Path) -> bool:
    """True when ``path/index.json`` is a readable Stillroom dataset index (its ``format`` is ``index.FORMAT``)."""
    meta_path = path / "index.json"
    try:
        return meta_path.is_file() and read_json(meta_path).get("format") == FORMAT
    except (StillroomError, AttributeError):
        return False


def check_out_dir(out_dir: Path) -> None:
    """Raise ``StillroomError`` unless ``out_dir`` is absent, an empty directory or a previous Stillroom dataset."""
    if out_dir.exists() and not out_dir.is_dir():
        raise StillroomError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_dataset_dir(out_dir):
        raise StillroomError(
            f"{out_dir}: directory is not empty and is not a Stillroom dataset (no valid index.json);"
            " refusing to overwrite it, choose another output directory"
        )


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` at ``dst`` (parents made), or copy it where the file systems differ or links are refused:
    derived datasets (merges, transfer sets) share their images with the source without copying them."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def new_build_dir(out_dir: Path) -> Path:
    """Create (empty) and return ``<out_dir>.tmp-<pid>``, the build directory beside ``out_dir``; a leftover of a
    crashed build by a process of the same pid is removed first."""
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def install_build(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the finished build ``tmp`` (``_io.replace_dir``), deleting the old one with ``rmtree``.

    A crash between the two renames leaves the old dataset intact as ``.<name>.old-<pid>-<random>`` beside it, never
    a half-built one under ``out_dir``.
    """
    replace_dir(tmp, out_dir, remove=rmtree)


def rmtree(path: Path) -> None:
    """``shutil.rmtree`` (errors ignored) with the per-class image folders removed by a thread pool.

    Unlinking is latency-bound on virtual disks (measured here: 46 s for a 25k-file dataset with one thread, 1.1 s
    with 16), and the threads spend their time in the kernel, outside the GIL.
    """
    images = path / "images"
    if images.is_dir():
        subdirs = [Path(e.path) for e in os.scandir(images) if e.is_dir(follow_symlinks=False)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda d: shutil.rmtree(d, ignore_errors=True), subdirs))
    shutil.rmtree(path, ignore_errors=True)


def default_workers() -> int:
    """Decoding processes when the caller gives none: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
