"""A corpus of bad inputs, generated (never downloaded): image files, sprite tarballs, indexes, configs, stores.

Each ``*_bytes`` function returns the bytes of one bad (or merely unusual) image; ``IMAGES`` names them with the
file name they are written under and what the data builders do with them (``reject`` + a reason fragment, or
``convert``). The other helpers corrupt a copy of a dataset index, a config or a soft-label store in place.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import struct
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# --- images ----------------------------------------------------------------------------------------------------------


def save(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def good_rgba(size: int = 40, box: tuple[int, int, int, int] = (8, 6, 30, 34)) -> Image.Image:
    """A red rectangle on a transparent background: a clean alpha silhouette."""
    img = Image.new("RGBA", (size, size), (255, 255, 255, 0))
    img.paste((200, 30, 30, 255), box)
    return img


def _noise_png() -> bytes:
    # Noise does not compress, so cutting the file in half cuts into the pixel data, not just the trailer.
    rng = np.random.default_rng(0)
    return save(Image.fromarray(rng.integers(0, 256, (48, 48, 4), dtype=np.uint8), "RGBA"))


def _palette(colours: list[tuple[int, int, int]]) -> list[int]:
    flat = [c for rgb in colours for c in rgb]
    return flat + [0] * (768 - len(flat))


def gif_frames(masks: list[np.ndarray]) -> bytes:
    """Animated GIF from boolean masks; palette index 0 is the transparent background, 1 the object."""
    frames = []
    for m in masks:
        im = Image.fromarray(m.astype(np.uint8), "P")
        im.putpalette(_palette([(255, 255, 255), (20, 20, 20)]))
        frames.append(im)
    return save(frames[0], "GIF", save_all=True, append_images=frames[1:], transparency=0, disposal=2, duration=80)


def good_gif(n: int = 4, shift: int = 0) -> bytes:
    """A small animation of growing bars (every frame distinct and non-empty)."""
    masks = []
    for k in range(n):
        m = np.zeros((32, 32), dtype=bool)
        m[4 + shift : 24 + shift, 4 : 8 + 3 * k] = True
        masks.append(m)
    return gif_frames(masks)


def zero_bytes() -> bytes:
    return b""


def truncated_png() -> bytes:
    data = _noise_png()
    return data[: len(data) // 2]


def truncated_gif() -> bytes:
    """Cut inside the first (only) frame: unreadable for every entry point."""
    rng = np.random.default_rng(1)
    data = gif_frames([rng.random((48, 48)) < 0.5])
    return data[: len(data) // 2]


def truncated_gif_tail() -> bytes:
    """An animation cut in its third frame: the first frames decode, the file is still corrupt."""
    rng = np.random.default_rng(1)
    data = gif_frames([rng.random((48, 48)) < 0.5 for _ in range(4)])
    return data[: len(data) * 5 // 8]


def text_as_image() -> bytes:
    return b"this is a text file, not an image\n"


def one_by_one() -> bytes:
    return save(Image.new("RGBA", (1, 1), (0, 0, 0, 255)))


def one_by_one_gif() -> bytes:
    return gif_frames([np.ones((1, 1), dtype=bool)])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A PNG header declaring ``width x height`` pixels with almost no data (60000^2 is past PIL's own error)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")
    )


def png_over_cap() -> bytes:
    """10000 x 10000: over MAX_IMAGE_PIXELS but under 2x, where PIL itself only warns."""
    return png_bomb(10000, 10000)


def gif_bomb(width: int = 65535, height: int = 65535) -> bytes:
    """A GIF whose logical screen and only frame declare ``width x height``; a few bytes of LZW data."""
    head = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + bytes([0, 0, 0, 255, 255, 255])
    gce = b"\x21\xf9\x04\x01\x00\x00\x00\x00"  # transparent index 0: passes the sprite recipe's alpha check
    desc = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return head + gce + desc + b"\x02\x02\x4c\x01\x00\x3b"


def cmyk_jpeg() -> bytes:
    img = Image.new("CMYK", (40, 40), (0, 0, 0, 0))
    img.paste((0, 0, 0, 255), (8, 6, 30, 34))
    return save(img, "JPEG", quality=95)


def sixteen_bit_png() -> bytes:
    arr = np.full((40, 40), 65535, dtype=np.uint16)
    arr[6:34, 8:30] = 0
    arr[0, 0] = 40000  # mid-grey in 16 bits: background once scaled (PIL's clipping would agree here)
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    return save(img)


def palette_without_transparency() -> bytes:
    img = Image.new("P", (40, 40), 0)
    img.putpalette(_palette([(255, 255, 255), (0, 0, 0)]))
    img.paste(1, (8, 6, 30, 34))
    return save(img)


def palette_gif_without_transparency() -> bytes:
    img = Image.new("P", (40, 40), 0)
    img.putpalette(_palette([(255, 255, 255), (0, 0, 0)]))
    img.paste(1, (8, 6, 30, 34))
    return save(img, "GIF")


def all_transparent_rgba() -> bytes:
    return save(Image.new("RGBA", (40, 40), (255, 0, 0, 0)))


def gif_all_empty() -> bytes:
    """Three frames, all fully transparent (each frame its own transparent index, so PIL keeps them apart)."""
    frames = []
    for k in range(3):
        f = Image.new("P", (24, 24), k)
        f.putpalette(_palette([(255, 255, 255), (0, 0, 0), (10, 10, 10)]))
        f.info["transparency"] = k
        frames.append(f)
    return save(frames[0], "GIF", save_all=True, append_images=frames[1:], disposal=2, duration=50)


def _black_on_white(draw: Callable[[ImageDraw.ImageDraw], None], size: int = 64) -> bytes:
    img = Image.new("L", (size, size), 255)
    draw(ImageDraw.Draw(img))
    return save(img)


def full_square() -> bytes:
    """A filled black square on white: a silhouette with no shape to it."""
    return _black_on_white(lambda d: d.rectangle([16, 16, 47, 47], fill=0))


def full_frame() -> bytes:
    """An all-black image: every pixel is object (the "all-black square" a K-class student accepted)."""
    return save(Image.new("L", (64, 64), 0))


def opaque_frame_rgba() -> bytes:
    """Fully opaque RGBA: through the alpha rule, the whole frame is object."""
    return save(Image.new("RGBA", (64, 64), (40, 120, 200, 255)))


def horizontal_line() -> bytes:
    return _black_on_white(lambda d: d.rectangle([4, 30, 59, 32], fill=0))


def diagonal_line() -> bytes:
    return _black_on_white(lambda d: d.line([4, 4, 59, 59], fill=0, width=2))


def hairline() -> bytes:
    """One pixel thick: nothing of it survives the resize to the model's size."""
    return _black_on_white(lambda d: d.line([4, 30, 59, 30], fill=0, width=1))


@dataclass(frozen=True)
class Bad:
    make: Callable[[], bytes]
    name: str  # file name, with the extension the file claims
    outcome: str  # "reject" or "convert" in the data builders
    reason: str  # fragment of the reject reason (import-folder, silhouette kind)
    http: tuple[int, ...]  # acceptable /predict statuses
    verdict: str | None = None  # the /predict verdict a 200 must carry (None: any)


IMAGES: dict[str, Bad] = {
    "zero_bytes": Bad(zero_bytes, "zero.png", "reject", "empty file (0 bytes)", (400,)),
    "truncated_png": Bad(truncated_png, "cut.png", "reject", "truncated", (400,)),
    "truncated_gif": Bad(truncated_gif, "cut.gif", "reject", "truncated", (400,)),
    "text_as_png": Bad(text_as_image, "notes.png", "reject", "not an image", (400,)),
    "one_by_one": Bad(one_by_one, "dot.png", "reject", "1x1 pixels, too small", (422,)),
    "bomb": Bad(png_bomb, "bomb.png", "reject", "decompression bomb", (413,)),
    "over_pixel_cap": Bad(png_over_cap, "huge.png", "reject", "over the limit", (413,)),
    "cmyk": Bad(cmyk_jpeg, "cmyk.jpg", "convert", "", (200,)),
    "sixteen_bit": Bad(sixteen_bit_png, "deep.png", "convert", "", (200,)),
    "palette_no_transparency": Bad(palette_without_transparency, "pal.png", "convert", "", (200,)),
    "all_transparent": Bad(all_transparent_rgba, "clear.png", "reject", "empty silhouette", (422,)),
    "gif_all_empty": Bad(gif_all_empty, "empty.gif", "reject", "empty silhouette", (422,)),
}

# Valid images without silhouette structure: decodable, so /predict answers 200, but the structure gate (fitted on
# the training images, stored with the ladder) must reject them before the model's verdict.
SHAPELESS: dict[str, Bad] = {
    "full_square": Bad(full_square, "square.png", "convert", "", (200,), "reject"),
    "full_frame": Bad(full_frame, "black.png", "convert", "", (200,), "reject"),
    "opaque_frame_rgba": Bad(opaque_frame_rgba, "opaque.png", "convert", "", (200,), "reject"),
    "horizontal_line": Bad(horizontal_line, "line.png", "convert", "", (200,), "reject"),
    "diagonal_line": Bad(diagonal_line, "diagonal.png", "convert", "", (200,), "reject"),
    "hairline": Bad(hairline, "hairline.png", "convert", "", (200,), "reject"),
}

# What the sprite builder says about each bad GIF (placed as a species' back view).
SPRITE_GIFS: dict[str, tuple[Callable[[], bytes], str]] = {
    "zero_bytes": (zero_bytes, "empty file (0 bytes)"),
    "truncated_gif": (truncated_gif, "cannot decode GIF"),
    "truncated_gif_tail": (truncated_gif_tail, "cannot decode GIF"),
    "text_as_gif": (text_as_image, "not an image"),
    "one_by_one": (one_by_one_gif, "1x1 pixels, too small"),
    "bomb": (gif_bomb, "decompression bomb"),
    "over_pixel_cap": (lambda: gif_bomb(10000, 10000), "over the limit"),
    "palette_no_transparency": (palette_gif_without_transparency, "without a transparent colour"),
    "gif_all_empty": (gif_all_empty, "all 3 frame(s) are empty"),
}


def write_images(folder: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Write the named corpus images (default: all) into ``folder``; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for key in names or list(IMAGES):
        bad = IMAGES[key]
        out[key] = folder / bad.name
        out[key].write_bytes(bad.make())
    return out


def sprite_tarball(path: Path, prefix: str) -> tuple[Path, dict[int, str]]:
    """Species 1..N: a good front GIF each, the back view one bad GIF of ``SPRITE_GIFS`` (in order).

    Returns the tarball and {species id: corpus key of its back view}.
    """
    backs = {}
    with tarfile.open(path, "w:gz") as tf:
        for sid, key in enumerate(SPRITE_GIFS, start=1):
            backs[sid] = key
            for member, data in ((f"{prefix}/{sid}.gif", good_gif(shift=sid % 4)),
                                 (f"{prefix}/back/{sid}.gif", SPRITE_GIFS[key][0]())):  # fmt: skip
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path, backs


# --- dataset index, config, store ------------------------------------------------------------------------------------


def copy_index(src: Path, dst: Path) -> Path:
    """A copy of a dataset directory (images hard-linked where possible) that a test may corrupt."""

    def link(s: str, d: str) -> None:
        try:
            Path(d).hardlink_to(s)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)
    # index.csv and index.json are rewritten, never edited in place, but make them private copies anyway.
    for name in ("index.csv", "index.json"):
        (dst / name).unlink()
        shutil.copy2(src / name, dst / name)
    return dst


def _rewrite_csv(root: Path, edit: Callable[[list[list[str]]], list[list[str]]]) -> None:
    with open(root / "index.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(edit(rows))
    (root / "index.csv").write_text(buf.getvalue(), encoding="utf-8")


def drop_column(root: Path, column: str = "sha256") -> None:
    def edit(rows):
        i = rows[0].index(column)
        return [r[:i] + r[i + 1 :] for r in rows]

    _rewrite_csv(root, edit)


def duplicate_path(root: Path, row: int = 2) -> None:
    """Row ``row`` (1-based data row) gets the path of row 1."""

    def edit(rows):
        rows[row][0] = rows[1][0]
        return rows

    _rewrite_csv(root, edit)


def label_out_of_range(root: Path, row: int = 3, label: int = 99) -> None:
    def edit(rows):
        rows[row][rows[0].index("label")] = str(label)
        return rows

    _rewrite_csv(root, edit)


CORRUPT_INDEX: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing_column": (drop_column, "missing column(s) sha256"),
    "duplicate_path": (duplicate_path, "duplicate path"),
    "label_out_of_range": (label_out_of_range, "label 99 out of range"),
}


def bad_config_yaml(index: Path) -> str:
    """Wrong types and unknown keys: every one must be named in the error."""
    return (
        "name: bad\n"
        f"data: {{index: {index}}}\n"
        "batch_size: lots\n"  # wrong type
        "schedule: {epochs: three}\n"  # wrong type, nested
        "optimizer: {lr: 0.1}\n"  # unknown key (it is 'optim')
        "model: {name: resnet18, depth: 18}\n"  # unknown nested key
    )


def reshape_store_logits(store: Path) -> None:
    """Replace logits.npy by an array with one row too few (a store of the wrong shape)."""
    logits = np.load(store / "logits.npy")
    (store / "logits.npy").unlink()  # never write through a hard link
    np.save(store / "logits.npy", np.ascontiguousarray(logits[:-1]))


def reorder_store_paths(store: Path) -> None:
    """Swap the first two lines of paths.txt (a store whose rows were reordered after it was written)."""
    lines = (store / "paths.txt").read_text(encoding="utf-8").splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    replace_file(store / "paths.txt", "".join(f"{line}\n" for line in lines).encode("utf-8"))


def poison_store_logits(store: Path, rows: dict[int, float]) -> None:
    """Set logit column 0 of each given row to the value (NaN, inf, 1e30: a broken export or a damaged file)."""
    logits = np.load(store / "logits.npy")
    for row, value in rows.items():
        logits[row, 0] = value
    buf = io.BytesIO()
    np.save(buf, logits)
    replace_file(store / "logits.npy", buf.getvalue())


def replace_file(path: Path, data: bytes) -> None:
    """Overwrite ``path`` without touching other hard links to it (fixtures are often linked copies)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> hash): "nothing previously written is damaged"."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
