"""Stillroom: distil big image classifiers into small, fast, calibrated students with open-set rejection."""

from stillroom import _compat  # noqa: F401  (must precede any torchvision/timm import)

__version__ = "0.1.0"
