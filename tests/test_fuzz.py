"""Property tests (hypothesis, bounded): preprocessing and the index parser either succeed with a valid result or raise
``StillroomError``; no other exception escapes, whatever the input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from stillroom._io import StillroomError  # noqa: E402
from stillroom.data.index import FORMAT, INDEX_COLUMNS, index_hashes, load_index  # noqa: E402
from stillroom.data.preprocess import object_mask, open_image, preprocess_image, preprocess_mask  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16",
         "I;16B", "F"]  # fmt: skip


def _valid_silhouette(out: np.ndarray, size: int) -> None:
    assert out.shape == (size, size) and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 255}


@FUZZ
@given(
    mask=hnp.arrays(bool, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12)),
    size=st.one_of(st.integers(-2, 40), st.floats(allow_nan=True), st.sampled_from([float("nan"), float("inf")])),
    padding=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-1, 3)),
)
@example(mask=np.array([[True]]), size=1.0, padding=1.0)  # an integral float size reached PIL's resize as a float
def test_preprocess_mask_total(mask, size, padding):
    try:
        out = preprocess_mask(mask, size, padding=padding, source="fuzz")
    except StillroomError:
        return
    _valid_silhouette(out, int(size))


@st.composite
def images(draw) -> Image.Image:
    mode = draw(st.sampled_from(MODES))
    w, h = draw(st.integers(0, 10)), draw(st.integers(0, 10))
    n = len(Image.new(mode, (w, h)).tobytes())
    img = Image.frombytes(mode, (w, h), draw(st.binary(min_size=n, max_size=n)))
    if mode in ("P", "L", "RGB") and draw(st.booleans()):
        img.info["transparency"] = (
            tuple(draw(st.integers(0, 255)) for _ in range(3)) if mode == "RGB" else draw(st.integers(0, 255))
        )
    return img


@FUZZ
@given(img=images(), size=st.integers(1, 24), threshold=st.integers(0, 255))
def test_object_mask_and_preprocess_image_total(img, size, threshold):
    try:
        mask = object_mask(img, source="fuzz", alpha_threshold=threshold)
    except StillroomError:
        return
    assert mask.shape == (img.height, img.width) and mask.dtype == bool
    try:
        out = preprocess_image(img, size, source="fuzz")
    except StillroomError:
        return
    _valid_silhouette(out, size)


def _seed_files() -> list[bytes]:
    rgba = Image.new("RGBA", (16, 12), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (3, 2, 12, 10))
    out = []
    for fmt, img in (("PNG", rgba), ("GIF", rgba.convert("P")), ("BMP", rgba.convert("RGB"))):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


@st.composite
def mutated_files(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_seed_files())))
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@FUZZ
@given(data=st.one_of(mutated_files(), st.binary(max_size=64)))
def test_open_image_on_mangled_files(data):
    try:
        img = open_image(data, "fuzz.png", min_side=1)
    except StillroomError as err:
        assert str(err).startswith("fuzz.png: ")
        return
    with img:
        try:
            preprocess_image(img, 8, source="fuzz.png")
        except StillroomError:
            pass


# --- index parser ----------------------------------------------------------------------------------------------------

CLASSES = ["a", "b", "c"]


def _write_index(root: Path, csv_bytes: bytes, hashes: dict[str, str] | None = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.csv").write_bytes(csv_bytes)
    meta = {
        "format": FORMAT,
        "classes": CLASSES,
        **(hashes or {"index_hash": "", "labels_hash": "", "content_hash": ""}),
    }
    (root / "index.json").write_text(json.dumps(meta))


def _check_loaded(index) -> None:
    assert len(index) > 0 and index.labels.dtype == np.int64
    assert ((index.labels >= 0) & (index.labels < len(CLASSES))).all()
    assert set(index.splits) <= {"train", "val", "test"}
    assert len(set(index.paths)) == len(index.paths)


@FUZZ
@given(text=st.text(max_size=300))
def test_load_index_on_arbitrary_text(tmp_path_factory, text):
    root = tmp_path_factory.mktemp("fz")
    header = ",".join(INDEX_COLUMNS) + "\n"
    for body in (text, header + text):  # with and without a valid header
        _write_index(root, body.encode("utf-8", "surrogatepass"))
        try:
            _check_loaded(load_index(root))
        except StillroomError:
            pass


_CELL = st.one_of(
    st.sampled_from(["train", "val", "test", "0", "1", "2", "-1", "3", "x.png", "../up.png", "/abs.png", "", " 1"]),
    st.text(max_size=8),
)


@st.composite
def index_rows(draw) -> tuple[bytes, dict[str, str]]:
    """A CSV with mostly plausible rows (so parsing gets past the header) and an index.json whose hashes match the
    rows as written, so validation and the success path are reached too."""
    columns = draw(st.permutations(list(INDEX_COLUMNS)))
    columns = columns[: draw(st.integers(len(columns) - 1, len(columns)))] + draw(
        st.lists(st.sampled_from(["frame", "view"]), max_size=1, unique=True)
    )
    n = draw(st.integers(0, 6))
    rows = []
    for i in range(n):
        plausible = {"path": f"img/{i}.png", "label": str(i % 3), "label_name": "a", "split": "train", "group": "g",
                     "sha256": "0" * 64, "frame": "1", "view": "front"}  # fmt: skip
        row = {c: draw(_CELL) if draw(st.integers(0, 9)) == 0 else plausible[c] for c in columns}
        rows.append([row[c] for c in columns])
        if draw(st.integers(0, 8)) == 0:  # a ragged row
            rows[-1] = rows[-1][: draw(st.integers(0, len(columns)))] + draw(st.lists(_CELL, max_size=2))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([columns, *rows])
    full = [dict(zip(columns, r, strict=False)) for r in rows]
    try:
        hashes = index_hashes([r.get("path", "") for r in full], [int(r.get("label", "x")) for r in full],
                              [r.get("sha256", "") for r in full])  # fmt: skip
    except ValueError:
        hashes = None
    return buf.getvalue().encode("utf-8", "surrogatepass"), hashes


@FUZZ
@given(case=index_rows())
def test_load_index_on_structured_rows(tmp_path_factory, case):
    csv_bytes, hashes = case
    root = tmp_path_factory.mktemp("fz")
    _write_index(root, csv_bytes, hashes)
    try:
        _check_loaded(load_index(root))
    except StillroomError:
        pass


@FUZZ
@given(meta=st.one_of(st.text(max_size=40), st.recursive(st.none() | st.integers() | st.text(max_size=5),
                                                          lambda c: st.lists(c, max_size=3)
                                                          | st.dictionaries(st.text(max_size=6), c, max_size=3),
                                                          max_leaves=8)))  # fmt: skip
def test_load_index_on_arbitrary_index_json(tmp_path_factory, meta):
    root = tmp_path_factory.mktemp("fz")
    (root / "index.csv").write_text(",".join(INDEX_COLUMNS) + "\nx.png,0,a,train,g,00\n")
    (root / "index.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    try:
        _check_loaded(load_index(root))
    except StillroomError:
        pass
