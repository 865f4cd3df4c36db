"""Silhouette preprocessing (REFERENCE 1.1): hand-made masks in, hand-computed arrays out."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stillroom._io import StillroomError
from stillroom.data.preprocess import object_mask, padded_side, preprocess_image, preprocess_mask


def _box_reference(mask: np.ndarray, size: int, padding: float) -> np.ndarray:
    """Independent reference for integer down-scaling factors: crop, centre, then average k x k blocks."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    side = max(h, w) + 2 * int(padding * max(h, w) + 0.5)
    canvas = np.full((side, side), 255.0)
    canvas[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w][crop] = 0
    k = side // size
    assert k * size == side, "reference only handles integer factors"
    blocks = canvas.reshape(size, k, size, k).mean(axis=(1, 3))  # (size, size)
    blocks = np.floor(blocks + 0.5)  # PIL rounds the 8-bit average half up: 127.5 -> 128 (background)
    return np.where(blocks < 128, 0, 255).astype(np.uint8)


def test_crop_pad_centre_exact():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:6, 3:5] = True  # h=4, w=2 -> L=4, pad=round(0.8)=1, side 6
    out = preprocess_mask(mask, size=6)
    expected = np.full((6, 6), 255, dtype=np.uint8)
    expected[1:5, 2:4] = 0  # top (6-4)//2 = 1, left (6-2)//2 = 2
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.uint8


def test_odd_margin_goes_right_and_bottom():
    mask = np.zeros((5, 5), dtype=bool)
    mask[0:5, 0:2] = True  # h=5, w=2 -> L=5, pad=1, side 7; left = (7-2)//2 = 2, so 3 white columns on the right
    out = preprocess_mask(mask, size=7)
    expected = np.full((7, 7), 255, dtype=np.uint8)
    expected[1:6, 2:4] = 0
    np.testing.assert_array_equal(out, expected)


def test_upscale_by_integer_factor_replicates_pixels():
    mask = np.ones((5, 5), dtype=bool)  # L=5, pad=1, side 7
    small = preprocess_mask(mask, size=7)
    big = preprocess_mask(mask, size=14)
    np.testing.assert_array_equal(big, np.kron(small, np.ones((2, 2), dtype=np.uint8)))


@pytest.mark.parametrize(
    ("h", "w", "size"),
    [(11, 11, 5), (11, 5, 5), (10, 10, 7), (20, 9, 14)],
)
def test_downscale_matches_block_average_reference(h, w, size):
    mask = np.zeros((30, 30), dtype=bool)
    mask[3 : 3 + h, 7 : 7 + w] = True
    out = preprocess_mask(mask, size=size)
    np.testing.assert_array_equal(out, _box_reference(mask, size, 0.2))
    assert set(np.unique(out)) <= {0, 255}


def test_one_third_coverage_binarizes_to_background():
    # L=11 -> pad 2, side 15, 3x3 blocks; the border blocks hold 1/3 object (value 170) -> white.
    mask = np.ones((11, 11), dtype=bool)
    out = preprocess_mask(mask, size=5)
    expected = np.full((5, 5), 255, dtype=np.uint8)
    expected[1:4, 1:4] = 0
    np.testing.assert_array_equal(out, expected)


def test_exactly_half_covered_pixel_is_background():
    # L=20 -> pad 4, side 28 -> 14: 2x2 blocks; a 9-wide object starts at column 9, so block column 4 is half object.
    mask = np.zeros((20, 9), dtype=bool)
    mask[:, :] = True
    out = preprocess_mask(mask, size=14)
    assert (out[2:12, 4] == 255).all() and (out[2:12, 5] == 0).all()


def test_padding_rounds_half_up():
    assert padded_side(10, 0.2) == 14
    assert padded_side(2, 0.25) == 2 + 2  # 0.5 rounds up, not to even
    assert padded_side(7, 0.0) == 7


def test_alpha_threshold_is_fifty_percent():
    alpha = np.array([[0, 126, 127], [128, 200, 255]], dtype=np.uint8)
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 3] = alpha
    got = object_mask(Image.fromarray(rgba, "RGBA"))
    np.testing.assert_array_equal(got, [[False, False, False], [True, True, True]])
    la = Image.fromarray(np.stack([np.zeros_like(alpha), alpha], axis=-1), "LA")
    np.testing.assert_array_equal(object_mask(la), got)


def test_alpha_decides_even_for_white_opaque_pixels():
    rgba = np.full((2, 2, 4), 255, dtype=np.uint8)  # white but opaque: object
    rgba[0, 0, 3] = 0
    np.testing.assert_array_equal(object_mask(Image.fromarray(rgba, "RGBA")), [[False, True], [True, True]])


def test_palette_transparency():
    idx = np.array([[0, 1], [1, 2]], dtype=np.uint8)
    img = Image.fromarray(idx, "P")
    img.putpalette([255, 255, 255, 0, 0, 0, 255, 255, 255] + [0] * (768 - 9))
    img.info["transparency"] = 0
    # index 2 is opaque white: an object pixel, because the image has alpha.
    np.testing.assert_array_equal(object_mask(img), [[False, True], [True, True]])


def test_images_without_alpha_are_black_on_white_masks():
    gray = np.array([[0, 127], [128, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(object_mask(Image.fromarray(gray, "L")), [[True, True], [False, False]])
    rgb = np.zeros((1, 2, 3), dtype=np.uint8)
    rgb[0, 1] = 255
    np.testing.assert_array_equal(object_mask(Image.fromarray(rgb, "RGB")), [[True, False]])


def test_preprocess_image_end_to_end():
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[2:6, 3:5, 3] = 255
    out = preprocess_image(Image.fromarray(rgba, "RGBA"), size=6)
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:6, 3:5] = True
    np.testing.assert_array_equal(out, preprocess_mask(mask, 6))


def test_fully_transparent_image_is_an_error_naming_the_file():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 127  # just below 50% opacity: background everywhere
    with pytest.raises(StillroomError, match=r"sprites/042\.png.*no object pixels"):
        preprocess_image(Image.fromarray(rgba, "RGBA"), size=16, source="sprites/042.png")


@pytest.mark.parametrize("bad", [np.zeros((3, 3, 3), dtype=bool), np.zeros(5, dtype=bool)])
def test_bad_mask_shape(bad):
    with pytest.raises(StillroomError, match="x.png"):
        preprocess_mask(bad, 8, source="x.png")


def test_bad_size_and_padding():
    mask = np.ones((3, 3), dtype=bool)
    with pytest.raises(StillroomError, match="size"):
        preprocess_mask(mask, 0)
    with pytest.raises(StillroomError, match="padding"):
        preprocess_mask(mask, 8, padding=-0.1)
