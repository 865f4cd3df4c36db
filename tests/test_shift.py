"""Domain-shift validation proxy (evaluate.shift, issue 14): every rewrite is deterministic, keeps (N, 1, S, S)
0/255 images, does what its name says on hand-drawn masks, and the report's clean top-1 equals the run's own
evaluation on the same split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stillroom._io import StillroomError
from stillroom.evaluate.shift import (
    REWRITES,
    fill_holes,
    lowres,
    repixelate,
    rewrite_images,
    shift_report,
    smooth,
    stroke,
)


def _ring(side: int = 64) -> np.ndarray:
    """(2, 1, S, S): a square ring (object black, a 10 px hole) and a plain square."""
    img = np.full((2, 1, side, side), 255, np.uint8)
    img[:, 0, 16:48, 16:48] = 0
    img[0, 0, 27:37, 27:37] = 255
    return img


@pytest.mark.parametrize("rewrite", REWRITES, ids=lambda r: r.name)
def test_rewrites_deterministic_binary_same_shape(rewrite):
    x = _ring()
    a, b = rewrite.fn(x), rewrite.fn(x.copy())
    assert a.shape == x.shape and a.dtype == np.uint8
    assert set(np.unique(a)) <= {0, 255}
    assert np.array_equal(a, b)
    assert np.array_equal(x, _ring())  # input untouched


def test_rewrites_do_what_they_say():
    x = _ring()
    area = (x == 0).reshape(2, -1).sum(1)
    filled = fill_holes(x)
    assert (filled[0] == 0).sum() == area[0] + 100 and np.array_equal(filled[1], x[1])  # the hole, nothing else
    assert np.all((stroke(x, 1) == 0).reshape(2, -1).sum(1) > area)
    assert np.all((stroke(x, -1) == 0).reshape(2, -1).sum(1) < area)
    # the square is drawn on even pixels, so a 32 px grid (nearest back) and a 32 px smooth rendering both keep it
    assert np.array_equal(repixelate(x, 0.5)[1], x[1]) and np.array_equal(lowres(x, 32)[1], x[1])
    assert np.array_equal(lowres(x, 64), x)  # the native grid changes nothing
    # smoothing rounds the square's corners off and keeps its area within them
    s = smooth(x, 2.0)
    assert s[1, 0, 16, 16] == 255 and abs(int((s[1] == 0).sum()) - int(area[1])) <= 40


def test_rewrite_images_names_and_errors():
    out = rewrite_images(_ring(), ["erode-1", "fill-holes"])
    assert list(out) == ["erode-1", "fill-holes"]
    assert list(rewrite_images(_ring())) == [r.name for r in REWRITES]
    with pytest.raises(StillroomError, match="unknown shift rewrite 'blur'; known: repixelate-0.5"):
        rewrite_images(_ring(), ["blur"])
    with pytest.raises(StillroomError, match=r"images must be \(N, 1, S, S\) uint8"):
        repixelate(np.zeros((4, 4), np.uint8), 0.5)


def test_shift_report_on_a_run(teacher_run):
    rep = shift_report(teacher_run, split="val")
    metrics = json.loads((teacher_run / "metrics.json").read_text())
    assert rep["split"] == "val" and rep["n"] == 48
    assert rep["clean"]["top1"] == pytest.approx(metrics["splits"]["val"]["best"]["top1"])
    assert list(rep["rewrites"]) == [r.name for r in REWRITES]
    tops = [r["top1"] for r in rep["rewrites"].values()]
    assert rep["mean"] == pytest.approx(np.mean(tops))
    held = [r["top1"] for r in rep["rewrites"].values() if not r["in_shape_recipe"]]
    assert rep["held_out_mean"] == pytest.approx(np.mean(held))
    assert all(0.0 <= t <= 1.0 for t in tops)


def test_shift_val_cli_writes_json(teacher_run):
    from typer.testing import CliRunner

    from stillroom.cli import app

    res = CliRunner().invoke(app, ["shift-val", str(teacher_run), "--weights", "best", "--weights", "final"])
    assert res.exit_code == 0, res.output
    data = json.loads((teacher_run / "shift_val.json").read_text())
    assert set(data) == {"best", "final"} and "mean" in data["best"]
