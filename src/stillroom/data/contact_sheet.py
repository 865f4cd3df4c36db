"""Contact sheet: one PNG showing a few samples per class, to eyeball a dataset (REFERENCE 1.1, 1.3).

Preprocessing bugs (inverted masks, off-centre crops, empty classes) are obvious at a glance and invisible in
counts. The sheet uses PIL only; the choice of samples is deterministic (the first rows of each class in index order)
so two builds of the same index give the same picture.

Layout: classes in label order fill a grid of ``cols = ceil(sqrt(n_classes))`` tiles per row. A tile holds
``per_class`` thumbnails of ``THUMB`` px side by side with the class name under them:
``tile_w = per_class * (THUMB + PAD) + PAD``, ``tile_h = THUMB + LABEL_H + 2 * PAD``, sheet size
``(cols * tile_w, rows * tile_h)``.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from stillroom._io import StillroomError, atomic_write_bytes
from stillroom.data.index import SPLITS, DatasetIndex

__all__ = ["make_contact_sheet", "sheet_size", "THUMB", "PAD", "LABEL_H"]

THUMB = 64
PAD = 4
LABEL_H = 12
_BG = (230, 230, 230)  # light grey, so white-background silhouettes show their frame
_TEXT = (20, 20, 20)


def sheet_size(n_classes: int, per_class: int) -> tuple[int, int]:
    """(width, height) in pixels of a sheet with ``n_classes`` tiles of ``per_class`` thumbnails."""
    cols = max(1, math.ceil(math.sqrt(n_classes)))
    rows = max(1, math.ceil(n_classes / cols))
    return cols * (per_class * (THUMB + PAD) + PAD), rows * (THUMB + LABEL_H + 2 * PAD)


def _fit_text(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int
) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def make_contact_sheet(
    index: DatasetIndex,
    out_path: Path,
    per_class: int = 1,
    max_classes: int = 64,
    split: str = "train",
) -> Path:
    """Write a PNG grid of the first ``per_class`` images of each of the first ``max_classes`` classes in ``split``.

    A class with fewer images in ``split`` leaves its remaining slots grey. The PNG is written atomically;
    returns ``out_path``.
    """
    if per_class < 1:
        raise StillroomError(f"per_class must be >= 1, got {per_class}")
    if max_classes < 1:
        raise StillroomError(f"max_classes must be >= 1, got {max_classes}")
    if split not in SPLITS:
        raise StillroomError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    classes = index.classes[:max_classes]
    chosen: dict[int, list[int]] = {c: [] for c in range(len(classes))}
    for i in index.split_indices(split):  # ascending row order: "first rows" per class
        c = int(index.labels[i])
        if c in chosen and len(chosen[c]) < per_class:
            chosen[c].append(int(i))

    width, height = sheet_size(len(classes), per_class)
    cols = max(1, math.ceil(math.sqrt(len(classes))))
    tile_w = per_class * (THUMB + PAD) + PAD
    tile_h = THUMB + LABEL_H + 2 * PAD
    sheet = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for c, name in enumerate(classes):
        x0, y0 = (c % cols) * tile_w, (c // cols) * tile_h
        for k, i in enumerate(chosen[c]):
            path = index.image_path(i)
            try:
                with Image.open(path) as img:
                    # Enlarging pixel art must keep hard edges; shrinking photos wants averaging.
                    resample = Image.Resampling.NEAREST if max(img.size) <= THUMB else Image.Resampling.BOX
                    thumb = ImageOps.contain(img.convert("RGB"), (THUMB, THUMB), resample)
            except (OSError, UnidentifiedImageError) as err:
                raise StillroomError(f"{path}: cannot read image for the contact sheet ({err})") from None
            x = x0 + PAD + k * (THUMB + PAD) + (THUMB - thumb.width) // 2
            y = y0 + PAD + (THUMB - thumb.height) // 2
            sheet.paste(thumb, (x, y))
        label = _fit_text(draw, name, font, tile_w - 2 * PAD)
        draw.text((x0 + PAD, y0 + PAD + THUMB + 1), label, fill=_TEXT, font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    return atomic_write_bytes(Path(out_path), buf.getvalue())
