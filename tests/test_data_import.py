"""import-folder, channel stats and contact sheet (REFERENCE 1.1, 1.3). Images are drawn with PIL in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from stillroom._io import StillroomError
from stillroom.data import import_convert as conv
from stillroom.data.contact_sheet import make_contact_sheet, sheet_size
from stillroom.data.import_folder import import_folder
from stillroom.data.index import load_index
from stillroom.data.stats import channel_stats

CLASSES = ("circle", "square", "triangle")
STYLES = ("rgba", "mask", "gray", "rgb")


def _shape(draw: ImageDraw.ImageDraw, cls: str, i: int, w: int, h: int, fill) -> None:
    # Size and position vary with i so that no two images of a class are identical.
    r = 8 + 2 * i
    cx, cy = w // 2 + (i % 3) - 1, h // 2 + (i % 2)
    box = (cx - r, cy - r, cx + r, cy + r)
    if cls == "circle":
        draw.ellipse(box, fill=fill)
    elif cls == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


def _image(cls: str, i: int, style: str) -> Image.Image:
    rng = np.random.default_rng([CLASSES.index(cls), i, STYLES.index(style)])
    w, h = (48, 40) if i % 2 else (40, 48)  # non-square on purpose
    if style == "rgba":
        img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        _shape(ImageDraw.Draw(img), cls, i, w, h, (200, 30, 30, 255))
    elif style == "mask":
        img = Image.new("L", (w, h), 255)
        _shape(ImageDraw.Draw(img), cls, i, w, h, 0)
    elif style == "gray":
        img = Image.fromarray(rng.integers(90, 200, (h, w), dtype=np.uint8), "L")
        _shape(ImageDraw.Draw(img), cls, i, w, h, 20 + 10 * CLASSES.index(cls))
    else:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        _shape(ImageDraw.Draw(img), cls, i, w, h, (40 * i % 256, 200, 60 * CLASSES.index(cls)))
    return img


def _folder(root: Path, style: str, n: int = 6, ext: str = "png", start: int = 0) -> Path:
    for cls in CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + n):
            _image(cls, i, style).save(root / cls / f"{cls}_{i:02d}.{ext}")
    return root


def _pixels(index, i: int) -> np.ndarray:
    with Image.open(index.image_path(i)) as img:
        return np.asarray(img)


# --- import_folder -------------------------------------------------------------------------------------------------


def test_rgba_folder_imports_as_silhouettes(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", "rgba")
    index = import_folder(src, tmp_path / "ds", size=32)
    again = load_index(tmp_path / "ds", verify_files=True)
    assert again.index_hash == index.index_hash
    r = index.recipe
    assert r["kind"] == "silhouette" and r["channels"] == 1 and r["padding"] == 0.2 and r["augment"] == "silhouette"
    assert "clean 0/255 alpha" in r["kind_reason"]
    assert r["source"] == f"import-folder:{src.resolve()}" and r["size"] == 32
    assert index.classes == sorted(CLASSES) and len(index) == 18
    px = _pixels(index, 0)
    assert px.shape == (32, 32) and set(np.unique(px)) <= {0, 255}
    # 6 groups per class >= 3: every class has something in every split.
    for split in ("train", "val", "test"):
        assert set(index.labels[index.split_indices(split)]) == {0, 1, 2}
    assert index.paths[0] == "images/circle/00000.png" and index.groups[0] == "circle/circle_00"
    assert len(set(index.groups)) == 18
    assert index.meta["leakage_probe"]["method"] == "1-NN pixel"
    assert index.meta["import"]["rejected"] == 0
    assert (tmp_path / "ds" / "contact_sheet.png").is_file()
    assert json.loads((tmp_path / "ds" / "rejects.json").read_text())["rejected"] == []
    # mean/std come from the train images only, recomputed here independently.
    train = np.stack([_pixels(index, i) for i in index.split_indices("train")]) / 255.0
    assert r["mean"] == pytest.approx([train.mean()]) and r["std"] == pytest.approx([train.std()])


@pytest.mark.parametrize(
    ("style", "kind", "channels", "shape"),
    [("mask", "silhouette", 1, (24, 24)), ("gray", "grayscale", 1, (24, 24)), ("rgb", "rgb", 3, (24, 24, 3))],
)
def test_auto_picks_the_kind(tmp_path: Path, style: str, kind: str, channels: int, shape: tuple) -> None:
    src = _folder(tmp_path / "src", style, ext="png" if style != "rgb" else "jpg")
    index = import_folder(src, tmp_path / "ds", size=24)
    assert index.recipe["kind"] == kind and index.recipe["channels"] == channels
    assert len(index.recipe["mean"]) == channels == len(index.recipe["std"])
    assert index.recipe["augment"] == ("silhouette" if kind == "silhouette" else "rgb")
    assert ("padding" in index.recipe) == (kind == "silhouette")
    assert _pixels(index, 0).shape == shape


def test_explicit_kind_overrides_auto(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", "rgba")
    index = import_folder(src, tmp_path / "ds", kind="rgb", size=16)
    assert index.recipe["kind"] == "rgb" and index.recipe["kind_reason"] == "requested"
    px = _pixels(index, 0)
    assert px.shape == (16, 16, 3)
    assert tuple(px[0, 0]) == (255, 255, 255)  # transparency flattened onto white, not black


def test_csv_layout_with_explicit_splits_and_groups(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", "mask", n=4)
    lines = ["path,label_name,split,group"]
    for cls in CLASSES:
        for i in range(4):
            split = ("train", "train", "val", "test")[i]
            lines.append(f"{cls}/{cls}_{i:02d}.png,{cls.upper()},{split},shot{i // 2}")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    index = import_folder(src, tmp_path / "ds", size=16, csv_path=csv_path)
    assert index.classes == ["CIRCLE", "SQUARE", "TRIANGLE"]
    assert list(index.splits[:4]) == ["train", "train", "val", "test"]
    assert index.groups[:4] == ["shot0", "shot0", "shot1", "shot1"]
    assert index.extra["source"][0] == "circle/circle_00.png"
    assert index.meta["import"]["layout"] == "csv" and index.meta["import"]["split"] == "given"


def test_csv_errors_name_the_file_and_row(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", "mask", n=1)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label_name,split\ncircle/circle_00.png,circle,holdout\n")
    with pytest.raises(StillroomError, match=r"bad\.csv: row 2: split 'holdout'"):
        import_folder(src, tmp_path / "ds", csv_path=bad)
    bad.write_text("file,label\n")
    with pytest.raises(StillroomError, match=r"bad\.csv: missing column"):
        import_folder(src, tmp_path / "ds", csv_path=bad)


def test_presplit_folders_keep_their_splits(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for split, n, start in (("train", 4, 0), ("val", 1, 4), ("test", 2, 5)):
        _folder(src / split, "gray", n=n, start=start)  # noise keeps every image unique after preprocessing
    (src / "test" / "circle" / "copy.png").write_bytes((src / "train" / "circle" / "circle_00.png").read_bytes())
    index = import_folder(src, tmp_path / "ds", size=16)
    assert index.meta["import"]["layout"] == "imagefolder-presplit"
    assert index.meta["import"]["duplicates_across_splits"] == 1
    assert [int((index.splits == s).sum()) for s in ("train", "val", "test")] == [12, 3, 7]
    assert index.classes == sorted(CLASSES)


def test_partial_presplit_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _folder(src / "train", "rgba", n=1)
    _folder(src / "test", "rgba", n=1)
    with pytest.raises(StillroomError, match="val is missing"):
        import_folder(src, tmp_path / "ds")


def test_bad_files_are_rejected_and_listed(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", "rgba")
    (src / "circle" / "zero.png").write_bytes(b"")
    (src / "square" / "notes.png").write_text("this is not an image")
    full = (src / "triangle" / "triangle_00.png").read_bytes()
    (src / "triangle" / "cut.png").write_bytes(full[: len(full) // 2])
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(src / "circle" / "blank.png")
    (src / "circle" / "README.txt").write_text("ignored")
    index = import_folder(src, tmp_path / "ds", size=16)
    rejects = json.loads((tmp_path / "ds" / "rejects.json").read_text())
    reasons = {r["path"]: r["reason"] for r in rejects["rejected"]}
    assert set(reasons) == {"circle/zero.png", "square/notes.png", "triangle/cut.png", "circle/blank.png"}
    assert "0 bytes" in reasons["circle/zero.png"]
    assert "not an image" in reasons["square/notes.png"]
    assert "truncated" in reasons["triangle/cut.png"]
    assert "empty silhouette" in reasons["circle/blank.png"]
    assert rejects["ignored"] == [{"path": "circle/README.txt", "reason": "unsupported extension '.txt'"}]
    assert index.meta["import"]["rejected"] == 4 and len(index) == 18


def test_class_with_no_usable_images_is_an_error(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", "rgba", n=3)
    for p in (src / "square").iterdir():
        p.write_bytes(b"")
    with pytest.raises(StillroomError, match=r"src: class\(es\) square have no usable images"):
        import_folder(src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds")]  # temp build dir cleaned up


def test_nothing_usable_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x.png").write_bytes(b"")
    (src / "a" / "y.jpg").write_text("not a jpeg")
    with pytest.raises(StillroomError, match=r"src: no usable images \(2 rejected, e\.g\. a/x\.png: empty file"):
        import_folder(src, tmp_path / "ds")
    (src / "a" / "x.png").unlink()
    (src / "a" / "y.jpg").unlink()
    with pytest.raises(StillroomError, match="no image files found"):
        import_folder(src, tmp_path / "ds")


def test_refuses_foreign_non_empty_out_dir_but_replaces_a_dataset(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", "rgba", n=3)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    with pytest.raises(StillroomError, match="not a stillroom dataset"):
        import_folder(src, foreign)
    assert (foreign / "thesis.docx").read_text() == "precious"
    first = import_folder(src, tmp_path / "ds", size=16)
    second = import_folder(src, tmp_path / "ds", size=16)  # same inputs, same seed: same dataset
    assert first.content_hash == second.content_hash and list(first.splits) == list(second.splits)


def test_parallel_decoding_matches_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _folder(tmp_path / "src", "gray")
    serial = import_folder(src, tmp_path / "a", size=16, workers=1)
    monkeypatch.setattr(conv, "_PARALLEL_MIN", 0)
    monkeypatch.setattr(conv, "_CHUNK", 4)
    parallel = import_folder(src, tmp_path / "b", size=16, workers=2)
    assert parallel.content_hash == serial.content_hash and parallel.recipe == {
        **serial.recipe,
        "source": parallel.recipe["source"],
    }


def test_bad_arguments(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", "rgba", n=1)
    with pytest.raises(StillroomError, match="kind 'photo'"):
        import_folder(src, tmp_path / "ds", kind="photo")
    with pytest.raises(StillroomError, match="split_fractions"):
        import_folder(src, tmp_path / "ds", split_fractions=(0.5, 0.5, 0.5))
    with pytest.raises(StillroomError, match="source folder not found"):
        import_folder(tmp_path / "nope", tmp_path / "ds")
    with pytest.raises(StillroomError, match="outside the source folder"):
        import_folder(src, src / "ds")


# --- channel_stats -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [None, 1, 3])
def test_channel_stats_match_numpy(channels: int | None) -> None:
    rng = np.random.default_rng(7)
    shapes = [(5, 7), (9, 3), (4, 4)]
    imgs = [rng.integers(0, 256, s if channels is None else (*s, channels), dtype=np.uint8) for s in shapes]
    mean, std = channel_stats(iter(imgs))  # a generator: one pass only
    c = 1 if channels is None else channels
    flat = np.concatenate([im.reshape(-1, c) for im in imgs]).astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, flat.std(axis=0), rtol=1e-12)


def test_channel_stats_constant_image_has_zero_std() -> None:
    mean, std = channel_stats([np.full((300, 300), 200, np.uint8)] * 3)
    assert mean == [200 / 255] and std == [0.0]


def test_channel_stats_errors() -> None:
    with pytest.raises(StillroomError, match="no pixels"):
        channel_stats([])
    with pytest.raises(StillroomError, match="image 1 has 3 channel"):
        channel_stats([np.zeros((2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8)])
    with pytest.raises(StillroomError, match="dtype float"):
        channel_stats([np.zeros((2, 2))])


# --- contact sheet -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("per_class", "max_classes"), [(1, 64), (2, 2)])
def test_contact_sheet_is_a_png_of_the_expected_size(tmp_path: Path, per_class: int, max_classes: int) -> None:
    index = import_folder(_folder(tmp_path / "src", "rgba", n=3), tmp_path / "ds", size=16)
    out = make_contact_sheet(index, tmp_path / "sheet.png", per_class=per_class, max_classes=max_classes)
    with Image.open(out) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        assert img.size == sheet_size(min(3, max_classes), per_class)
    assert sheet_size(3, 1) == (2 * 72, 2 * 84)  # cols = ceil(sqrt(3)) = 2; tile 4+64+4 wide, 4+64+12+4 high
    with pytest.raises(StillroomError, match="unknown split"):
        make_contact_sheet(index, tmp_path / "x.png", split="holdout")
