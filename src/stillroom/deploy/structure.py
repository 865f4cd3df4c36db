"""Structure gate: refuse silhouettes with none of the shape structure of the training images.

The ladder judges the model's logits, and a model can be confident on anything: a K-class student answered an
all-black square with a species at p = 0.88. Inputs whose silhouette has no structure at all (a filled square, a
full frame, a line) are therefore refused before the model's verdict, on three features of the silhouette exactly
as the model sees it (after ``preprocess_mask``: cropped to the object, padded, resized, binarized):

- ``fill``: object pixels / area of the object's bounding box (1.0: a filled rectangle; a thin diagonal line: ~0);
- ``aspect``: shorter / longer side of that bounding box (a horizontal or vertical line: ~0);
- ``share``: object pixels / all pixels of the (S, S) silhouette (0: nothing survived preprocessing, e.g. a
  one-pixel line; at most (1 / (1 + 2 * padding))^2 ~ 0.51, a filled square).

Fitting (``StructureGate.fit``) takes the ID training images through the service's preprocessing and keeps, per
feature, the range between the ``quantile`` and ``1 - quantile`` quantiles (``method="lower"``/``"higher"``, so
the bounds are observed values; with fewer than 1 / quantile images they are the minimum and maximum). A served
silhouette with any feature outside its range, or no object pixel at all, is rejected with the feature, its value
and the range. Nothing is hard-coded: a dataset whose classes include filled squares keeps them (the range then
reaches fill 1.0), which is why the gate is fitted, not written down. By construction up to ``2 * quantile`` of
the training images fall outside each range; ``fit_run_ladder`` reports the share of ID validation images the
gate rejects.

The gate is stored in ``ladder.json`` under ``structure_gate``; a ladder.json written before it existed has none,
and the service then serves without the gate (``/info`` shows ``structure_gate: null``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from stillroom._io import StillroomError
from stillroom.data.outline import Outline

__all__ = ["FEATURES", "StructureGate", "silhouette_features", "served_features", "served_masks"]

FORMAT = "stillroom-structure/1"
# feature -> what it measures, in the words of a reject reason
FEATURES = {
    "fill": "share of its bounding box the silhouette fills",
    "aspect": "short / long side of its bounding box",
    "share": "share of the image the silhouette covers",
}
_CHUNK = 1024  # masks per vectorized feature pass (1024 x 128 x 128 booleans = 16 MB)
MIN_FIT_IMAGES = 10


def silhouette_features(masks: np.ndarray) -> dict[str, np.ndarray]:
    """``fill``, ``aspect`` and ``share`` (float64 arrays of length N) of (N, S, S) or (S, S) silhouettes: uint8
    with 0 = object (``preprocess_mask`` output; < 128 is object) or boolean with True = object. An empty
    silhouette has all three 0."""
    m = np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or 0 in m.shape[1:]:
        raise StillroomError(f"silhouette_features: expected (N, S, S) or (S, S) masks, got shape {m.shape}")
    out = {k: np.zeros(len(m), dtype=np.float64) for k in FEATURES}
    h, w = m.shape[1:]
    for start in range(0, len(m), _CHUNK):
        chunk = m[start : start + _CHUNK]
        obj = chunk if chunk.dtype == bool else chunk < 128
        rows, cols = obj.any(axis=2), obj.any(axis=1)  # (B, H), (B, W)
        count = obj.sum(axis=(1, 2)).astype(np.float64)
        has = rows.any(axis=1)
        bh = np.where(has, h - rows[:, ::-1].argmax(axis=1) - rows.argmax(axis=1), 0)
        bw = np.where(has, w - cols[:, ::-1].argmax(axis=1) - cols.argmax(axis=1), 0)
        sl = slice(start, start + len(chunk))
        out["fill"][sl] = np.where(has, count / np.maximum(bh * bw, 1), 0.0)
        out["aspect"][sl] = np.where(has, np.minimum(bh, bw) / np.maximum(np.maximum(bh, bw), 1), 0.0)
        out["share"][sl] = count / (h * w)
    return out


def served_masks(images: Iterable[np.ndarray], size: int, padding: float, outline: Outline | None = None) -> np.ndarray:
    """(N, size, size) uint8 silhouettes of dataset images (C, S, S) or (S, S) uint8, made as the service makes
    them from a black-on-white upload: luminance < 128 is object (first channel), then ``render_silhouette``
    (``preprocess_mask``, or the canonical outline of a recipe built with one). An image without object pixels
    gives an all-white silhouette (it has no structure either)."""
    from stillroom.data.outline import render_silhouette

    out = []
    for img in images:
        a = np.asarray(img)
        obj = (a[0] if a.ndim == 3 else a) < 128
        if obj.any():
            out.append(render_silhouette(obj, size, padding=padding, outline=outline))
        else:
            out.append(np.full((size, size), 255, dtype=np.uint8))
    return np.stack(out) if out else np.zeros((0, size, size), dtype=np.uint8)


def served_features(
    images: np.ndarray,
    rows: np.ndarray,
    size: int,
    padding: float,
    max_images: int | None = None,
    outline: Outline | None = None,
) -> dict[str, np.ndarray]:
    """``silhouette_features`` of ``served_masks(images[rows])``, ``_CHUNK`` images at a time (a memory-mapped
    dataset is never loaded whole); ``max_images``: at most that many rows, evenly spaced (deterministic)."""
    rows = np.asarray(rows)
    if max_images is not None and len(rows) > max_images:
        rows = rows[np.linspace(0, len(rows) - 1, max_images).round().astype(np.int64)]
    parts = [
        silhouette_features(served_masks((images[i] for i in rows[j : j + _CHUNK]), size, padding, outline))
        for j in range(0, len(rows), _CHUNK)
    ]
    return {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in FEATURES}


class StructureGate:
    """Per-feature ranges of ID training silhouettes; ``check`` says whether a silhouette falls inside all of them.

    Attributes: ``ranges`` {feature: (low, high)}, ``quantile``, ``size`` (silhouette side the gate was fitted at),
    ``n_fit`` (training images), ``fit_data`` (a note on where they came from).
    """

    def __init__(
        self,
        ranges: dict[str, tuple[float, float]],
        quantile: float,
        size: int,
        n_fit: int,
        fit_data: str = "",
    ) -> None:
        if set(ranges) != set(FEATURES):
            raise StillroomError(f"structure gate: ranges for {sorted(FEATURES)} needed, got {sorted(ranges)}")
        for name, bounds in ranges.items():
            if len(bounds) != 2 or not all(isinstance(b, int | float) and math.isfinite(b) for b in bounds):
                raise StillroomError(f"structure gate: {name} range must be two finite numbers, got {bounds!r}")
            if not 0.0 <= bounds[0] <= bounds[1] <= 1.0:
                raise StillroomError(f"structure gate: {name} range must satisfy 0 <= low <= high <= 1, got {bounds}")
        if not (isinstance(quantile, int | float) and 0.0 <= quantile < 0.5):
            raise StillroomError(f"structure gate: quantile must be in [0, 0.5), got {quantile!r}")
        if not (isinstance(size, int) and size >= 1):
            raise StillroomError(f"structure gate: size must be a positive integer, got {size!r}")
        self.ranges = {k: (float(ranges[k][0]), float(ranges[k][1])) for k in FEATURES}
        self.quantile, self.size, self.n_fit, self.fit_data = float(quantile), int(size), int(n_fit), str(fit_data)
        self.summary_: dict[str, Any] = {}  # rejection rates on validation data, set by ``fit_run_ladder``

    @classmethod
    def fit(cls, masks: np.ndarray, quantile: float = 0.001, fit_data: str = "") -> StructureGate:
        """Ranges of the features of ``masks`` (N, S, S) silhouettes, as served; see the module docstring."""
        m = np.asarray(masks)
        if m.ndim != 3 or m.shape[1] != m.shape[2]:
            raise StillroomError(f"StructureGate.fit: expected (N, S, S) silhouettes, got shape {m.shape}")
        return cls.fit_features(silhouette_features(m), int(m.shape[1]), quantile=quantile, fit_data=fit_data)

    @classmethod
    def fit_features(
        cls, feats: dict[str, np.ndarray], size: int, quantile: float = 0.001, fit_data: str = ""
    ) -> StructureGate:
        """``fit`` from ``silhouette_features`` already computed (of silhouettes of side ``size``)."""
        n = len(feats["share"])
        if n < MIN_FIT_IMAGES:
            raise StillroomError(f"StructureGate.fit: {n} images; at least {MIN_FIT_IMAGES} are needed")
        if not (isinstance(quantile, int | float) and 0.0 <= quantile < 0.5):
            raise StillroomError(f"StructureGate.fit: quantile must be in [0, 0.5), got {quantile!r}")
        ranges = {
            k: (float(np.quantile(v, quantile, method="lower")), float(np.quantile(v, 1 - quantile, method="higher")))
            for k, v in ((k, feats[k]) for k in FEATURES)
        }
        return cls(ranges, quantile=quantile, size=size, n_fit=n, fit_data=fit_data)

    def problems(self, mask: np.ndarray) -> list[str]:
        """Why ``mask`` (S, S) is refused: one phrase per feature outside its range; empty when it passes."""
        m = np.asarray(mask)
        if m.shape != (self.size, self.size):
            raise StillroomError(f"structure gate: fitted on {self.size}x{self.size} silhouettes, got {m.shape}")
        f = {k: float(v[0]) for k, v in silhouette_features(m).items()}
        if f["share"] == 0.0:
            return ["no object pixel is left after preprocessing (a line or dot thinner than a pixel of the model)"]
        out = []
        for name, (lo, hi) in self.ranges.items():
            if not lo <= f[name] <= hi:
                side = "below" if f[name] < lo else "above"
                out.append(f"{name} {f[name]:.3f} ({FEATURES[name]}) is {side} the training range [{lo:.3f}, {hi:.3f}]")
        return out

    def features(self, mask: np.ndarray) -> dict[str, float]:
        return {k: float(v[0]) for k, v in silhouette_features(mask).items()}

    def passes(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """Boolean per sample of ``silhouette_features``: inside every range (and not empty)."""
        inside = feats["share"] > 0
        for name, (lo, hi) in self.ranges.items():
            inside = inside & (feats[name] >= lo) & (feats[name] <= hi)
        return inside

    def reject_rate(self, masks: np.ndarray) -> float:
        """Share of ``masks`` (N, S, S) the gate refuses (nan for none)."""
        if len(masks) == 0:
            return math.nan
        return float(1.0 - self.passes(silhouette_features(masks)).mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "features": {k: list(v) for k, v in self.ranges.items()},
            "quantile": self.quantile,
            "size": self.size,
            "n_fit": self.n_fit,
            "fit_data": self.fit_data,
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "ladder.json") -> StructureGate:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise StillroomError(f"{source}: structure_gate format {got!r}, expected {FORMAT!r}")
        try:
            ranges = {k: tuple(v) for k, v in d["features"].items()}
            return cls(ranges, quantile=d["quantile"], size=d["size"], n_fit=d.get("n_fit", 0),
                       fit_data=d.get("fit_data", ""))  # fmt: skip
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise StillroomError(f"{source}: malformed structure_gate ({err!r})") from None
        except StillroomError as err:
            raise StillroomError(f"{source}: {err}") from None

    def __repr__(self) -> str:
        r = ", ".join(f"{k}=[{lo:.3g}, {hi:.3g}]" for k, (lo, hi) in self.ranges.items())
        return f"StructureGate({r}, n_fit={self.n_fit})"
