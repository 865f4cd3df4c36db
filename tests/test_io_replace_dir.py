"""``_io.replace_dir``: the one directory swap behind datasets, soft-label stores and feedback exports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stillroom._io import replace_dir


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _read(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("existing", ["absent", "empty", "full"])
def test_new_directory_takes_the_place_of_the_old(tmp_path, existing):
    out = tmp_path / "out"
    if existing == "empty":
        out.mkdir()
    elif existing == "full":
        _tree(out, {"index.json": "old", "images/a/1.png": "old"})
    tmp = _tree(tmp_path / ".out.tmp", {"index.json": "new", "images/b/2.png": "new"})

    assert replace_dir(tmp, out) == out
    assert _read(out) == {"index.json": "new", "images/b/2.png": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # neither the build nor the old one is left


def test_old_directory_goes_to_the_remover_after_the_swap(tmp_path):
    out = _tree(tmp_path / "out", {"index.json": "old"})
    tmp = _tree(tmp_path / "build", {"index.json": "new"})
    seen = []

    def remove(old: Path) -> None:
        # called once the new directory is in place, with the old one moved aside beside it, still whole
        seen.append((old.parent, old.name, _read(old), _read(out)))

    replace_dir(str(tmp), str(out), remove=remove)
    [(parent, name, old_files, out_files)] = seen
    assert parent == tmp_path and name.startswith(f".out.old-{os.getpid()}-")
    assert old_files == {"index.json": "old"} and out_files == {"index.json": "new"}
    assert _read(tmp_path / name) == {"index.json": "old"}  # deleting it is the remover's job; this one kept it


@pytest.mark.parametrize("error", [OSError("disk on fire"), KeyboardInterrupt()])
def test_failed_swap_restores_the_old_directory(tmp_path, monkeypatch, error):
    out = _tree(tmp_path / "out", {"index.json": "old", "images/a/1.png": "old"})
    tmp = _tree(tmp_path / "build", {"index.json": "new"})
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((Path(src), Path(dst)))
        if Path(src) == tmp:  # the new directory cannot be moved in
            raise error
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(type(error)):
        replace_dir(tmp, out, remove=lambda old: pytest.fail(f"removed {old} although the swap failed"))
    monkeypatch.undo()

    assert [src for src, _ in calls] == [out, tmp, calls[0][1]]  # aside, (fails), back
    assert _read(out) == {"index.json": "old", "images/a/1.png": "old"}
    assert _read(tmp) == {"index.json": "new"}  # the caller cleans its build up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "out"]


def test_failed_swap_without_an_old_directory_just_raises(tmp_path, monkeypatch):
    tmp = _tree(tmp_path / "build", {"index.json": "new"})

    def rename(src, dst):
        raise OSError("no")

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="no"):
        replace_dir(tmp, tmp_path / "out")
    monkeypatch.undo()
    assert not (tmp_path / "out").exists() and _read(tmp) == {"index.json": "new"}
