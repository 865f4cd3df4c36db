"""Import shims that must run before torchvision (and so timm) is imported.

PyPI's torchvision wheels are CUDA builds; next to a CPU-only torch their C extension fails to load and
``import torchvision`` dies with ``operator torchvision::nms does not exist`` because the Python side registers
fake kernels for ops whose schemas were never defined. Defining the two schemas it needs (only when missing)
lets models and transforms work; ``torchvision.ops.nms`` and the io decoders stay unavailable, which Stillroom
never uses. Every module that imports torchvision or timm imports this one first.
"""

from __future__ import annotations

import torch

__all__ = ["ensure_torchvision_importable", "TORCHVISION_SHIMMED"]

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIB: torch.library.Library | None = None
TORCHVISION_SHIMMED: list[str] = []


def _has_op(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def _extension_loads() -> bool:
    """True when torchvision is absent (nothing to shim) or its C extension loads and registers the ops."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True
    for lib in sorted(Path(spec.origin).parent.glob("_C*.so")) + sorted(Path(spec.origin).parent.glob("_C*.pyd")):
        try:
            torch.ops.load_library(str(lib))
        except (OSError, RuntimeError):
            return False
        return all(_has_op(name) for name in _SCHEMAS)
    return False


def ensure_torchvision_importable() -> list[str]:
    """Define the missing ``torchvision::nms``/``qnms`` schemas; return the names that were shimmed."""
    global _LIB
    missing = [name for name in _SCHEMAS if not _has_op(name)]
    if not missing:
        return []
    if _extension_loads():
        return []
    # A loaded extension may register some of the ops but not all (qnms is absent from some builds): shim only
    # what is still missing, or define() fails on a duplicate.
    missing = [name for name in missing if not _has_op(name)]
    if not missing:
        return []
    if _LIB is None:
        _LIB = torch.library.Library("torchvision", "FRAGMENT")  # noqa: TOR901 - kept alive for the process
    for name in missing:
        _LIB.define(_SCHEMAS[name])
        TORCHVISION_SHIMMED.append(name)
    return missing


ensure_torchvision_importable()
