"""The pooled last feature map of a network while it trains, for losses that shape the features themselves.

A loss on penultimate features (``distill.losses.supcon``, ``distill.losses.similarity``) needs, for the very batch
the logits came from, the globally average-pooled output of the network's last feature block: the vector
evaluation's KNN and RMD scores read (``evaluate.feature_ood.pool_features``: the same cut, the same pooling). It is
taken with a forward hook, not by splitting the network, so the training step, DDP, the small-map convolutions and
export see the plain architecture unchanged, and the hook records nothing while the network is in ``eval()``
(validation, precise BN).
"""

from __future__ import annotations

import torch
from torch import nn

from stillroom._io import StillroomError

__all__ = ["FeatureTap", "attach_feature_tap", "feature_dim", "feature_map_module"]


def feature_map_module(model: nn.Module) -> nn.Module:
    """The module whose output is the last (B, C, h, w) feature map before pooling and the classifier: torchvision
    MobileNet / EfficientNet / ConvNeXt ``features``, torchvision and timm ResNet ``layer4``; an error naming the
    model otherwise."""
    if all(hasattr(model, a) for a in ("features", "avgpool", "classifier")):
        return model.features
    if isinstance(getattr(model, "layer4", None), nn.Module) and hasattr(model, "fc"):
        return model.layer4
    raise StillroomError(
        f"{type(model).__name__}: no last feature map known for a loss on features (torchvision MobileNet, "
        "EfficientNet, ConvNeXt and ResNets have one)"
    )


def feature_dim(model: nn.Module) -> int:
    """Channels of ``feature_map_module(model)``'s map, i.e. the length of the pooled vector: the input width of the
    first linear layer of the head that reads it (``classifier`` or ``fc``)."""
    feature_map_module(model)  # the same models, the same error for any other
    head = model.classifier if hasattr(model, "classifier") else model.fc
    first = next((m for m in head.modules() if isinstance(m, nn.Linear)), None)
    if first is None:
        raise StillroomError(f"{type(model).__name__}: its head has no linear layer to read the feature width from")
    return int(first.in_features)


class FeatureTap:
    """A forward hook that keeps the last training batch's pooled feature map (``pooled()``: (B, C) float32)."""

    def __init__(self) -> None:
        self._maps: torch.Tensor | None = None

    def __deepcopy__(self, memo: dict) -> FeatureTap:
        # a copied network (evaluation copies, weight averaging) gets an empty tap of its own: the held map is a
        # non-leaf tensor of the training graph, which cannot be deep-copied and is no business of the copy
        return FeatureTap()

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        # only training forwards: an evaluation pass between two steps must not replace the step's features
        self._maps = out if module.training else self._maps

    def pooled(self) -> torch.Tensor:
        """(B, C): the last training forward's feature map, averaged over its positions, in float32 (autocast's
        bfloat16 maps are cast: a contrastive loss divides by small norms)."""
        if self._maps is None:
            raise StillroomError("feature tap: no training forward has run since it was attached")
        if self._maps.dim() != 4:
            raise StillroomError(f"feature tap: expected a (B, C, h, w) map, got shape {tuple(self._maps.shape)}")
        return self._maps.float().mean(dim=(2, 3))


def attach_feature_tap(model: nn.Module) -> FeatureTap:
    """Hook a ``FeatureTap`` on ``feature_map_module(model)`` and return it (the weights are untouched)."""
    tap = FeatureTap()
    feature_map_module(model).register_forward_hook(tap)
    return tap
