"""The canonical index: hashes tie index.json to index.csv; corrupt CSVs are clear errors naming file and row."""

import os

import pytest

from stillroom._io import StillroomError, sha256_lines
from stillroom.data.index import IndexRow, load_index, update_index_meta, write_index

CLASSES = ["a", "b"]


def _rows(n=4):
    return [IndexRow(f"img/{i}.png", i % 2, CLASSES[i % 2], "train", f"g{i}", f"{i:064x}") for i in range(n)]


def test_hashes_follow_seed001_definition(tmp_path):
    idx = write_index(tmp_path, _rows(), CLASSES, {"size": 8})
    assert idx.index_hash == sha256_lines(f"img/{i}.png" for i in range(4))
    assert idx.labels_hash == sha256_lines([0, 1, 0, 1])
    assert oct(os.stat(tmp_path / "index.csv").st_mode & 0o777) != "0o600"  # not private-only


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.replace("path,label", "file,label"), "missing column"),
        (lambda t: t.replace("img/1.png", "img/0.png"), "duplicate path"),
        (lambda t: t.replace("img/2.png,0,", "img/2.png,7,"), "out of range"),
        (lambda t: t.replace("img/2.png,0,", "img/2.png,x,"), "not an integer"),
        (lambda t: t.replace(",train,", ",trian,", 1), "split"),
        (lambda t: t.replace("img/3.png", "../3.png"), "relative"),
        (lambda t: t.replace("img/3.png", "img/9.png"), "does not match index.json"),
    ],
)
def test_corrupt_csv_is_named(tmp_path, mutate, message):
    write_index(tmp_path, _rows(), CLASSES, {"size": 8})
    csv = tmp_path / "index.csv"
    csv.write_text(mutate(csv.read_text()))
    with pytest.raises(StillroomError, match=message) as err:
        load_index(tmp_path)
    assert "index" in str(err.value)


def test_update_meta_keeps_hashes_and_refuses_derived_keys(tmp_path):
    idx = write_index(tmp_path, _rows(), CLASSES, {"size": 8})
    new = update_index_meta(tmp_path, leakage_probe={"summary": "x"})
    assert new.meta["leakage_probe"] == {"summary": "x"} and new.index_hash == idx.index_hash
    with pytest.raises(StillroomError, match="index_hash"):
        update_index_meta(tmp_path, index_hash="0" * 64)


def test_verify_files_detects_changed_image(tmp_path):
    from stillroom._io import sha256_bytes

    (tmp_path / "img").mkdir()
    rows = []
    for i in range(2):
        data = f"png{i}".encode()
        (tmp_path / f"img/{i}.png").write_bytes(data)
        rows.append(IndexRow(f"img/{i}.png", i, CLASSES[i], "train", f"g{i}", sha256_bytes(data)))
    write_index(tmp_path, rows, CLASSES, {"size": 8})
    load_index(tmp_path, verify_files=True)
    (tmp_path / "img/1.png").write_bytes(b"changed")
    with pytest.raises(StillroomError, match="content changed"):
        load_index(tmp_path, verify_files=True)
