"""One head per teacher: a student whose last linear layer is M heads over one shared body (Tran et al. 2020,
"Hydra: Preserving Ensemble Diversity for Model Distillation", arXiv 2001.04694, §3).

Fused distillation (``multi_teacher: fused``) gives the student one target, the teachers' mean distribution, on
the images it trains on. Off those images (another artist's drawings) the ensemble's edge over any one teacher comes
from the members disagreeing in different directions, and a single head taught the average has no reason to
reproduce that. Here head m is taught by teacher m alone (``train.trainer``: the loss runs once per head with its
own teacher's logits) and the network answers with the heads' mean distribution, the way the ensemble itself is
read (mean softmax, ``evaluate``'s teacher ensembles): log((1/M) sum_m softmax(z_m)), so every consumer of logits
(top-1, calibration, the ladder's scores, ONNX export) sees one (B, K) output of log-probabilities.

Only the last linear layer is repeated (for mobilenet_v3_small at 151 classes: 155k weights a head beside the
body's 1.08 M), so the heads share every feature; their difference is the readout. The architecture name records the
heads as ``<name>+heads<M>`` (``arch`` in a run's ``model.json``), which ``create_model`` builds again.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from stillroom._io import StillroomError

__all__ = ["HeadBank", "attach_heads", "head_bank", "heads_arch", "split_heads_arch"]

_SUFFIX = re.compile(r"^(?P<base>.+)\+heads(?P<m>[0-9]+)$")


class _Stash:
    """The last training forward's per-head logits; a deep copy (evaluation copies, weight averaging) starts empty:
    the held tensor belongs to the training graph, which cannot be copied and is no business of the copy."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def __deepcopy__(self, memo: dict) -> _Stash:
        return _Stash()


class HeadBank(nn.Module):
    """M linear heads of K outputs over the same input (one ``nn.Linear`` of M*K outputs, reshaped).

    ``forward`` returns the heads' mean distribution as log-probabilities, (..., K); in training mode it also keeps
    the heads' own logits, (M, B, K), for ``last_heads()``.
    """

    def __init__(self, in_features: int, num_classes: int, heads: int, bias: bool = True) -> None:
        super().__init__()
        if heads < 2:
            raise StillroomError(f"a head bank needs at least 2 heads, got {heads}")
        self.heads, self.num_classes = int(heads), int(num_classes)
        # each head's rows start from nn.Linear's own random init, independently: the heads differ from step 0
        self.linear = nn.Linear(in_features, heads * num_classes, bias=bias)
        self._stash = _Stash()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x).unflatten(-1, (self.heads, self.num_classes))  # (B, M, K)
        if self.training:
            self._stash.value = z.movedim(-2, 0)  # (M, B, K)
        # log of the mean softmax, in float32: bfloat16 log-probabilities of 151 classes lose the small ones
        return torch.logsumexp(z.float().log_softmax(-1), dim=-2) - math.log(self.heads)

    def last_heads(self) -> torch.Tensor:
        """(M, B, K) float32: the heads' logits of the last training forward."""
        if self._stash.value is None:
            raise StillroomError("head bank: no training forward has run yet")
        return self._stash.value.float()

    def extra_repr(self) -> str:
        return f"heads={self.heads}, num_classes={self.num_classes}"


def heads_arch(name: str, heads: int) -> str:
    """The architecture name a run records: ``name`` itself for one head, ``<name>+heads<M>`` otherwise."""
    return name if heads == 1 else f"{name}+heads{heads}"


def split_heads_arch(arch: str) -> tuple[str, int]:
    """(base name, heads) of an architecture name written by ``heads_arch``."""
    m = _SUFFIX.match(arch)
    return (arch, 1) if m is None else (m["base"], int(m["m"]))  # "+heads1" too: create_model refuses it


def _last_linear(model: nn.Module, num_classes: int) -> tuple[nn.Module, str, nn.Linear]:
    found = None
    for module in model.modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Linear) and child.out_features == num_classes:
                found = (module, child_name, child)
    if found is None:
        raise StillroomError(f"{type(model).__name__}: no linear layer with {num_classes} outputs to split into heads")
    return found


def attach_heads(model: nn.Module, heads: int, num_classes: int) -> nn.Module:
    """Replace ``model``'s last linear layer of ``num_classes`` outputs by a ``HeadBank`` of ``heads`` heads (in
    place; one head: unchanged). Returns ``model``."""
    if heads == 1:
        return model
    parent, child_name, linear = _last_linear(model, num_classes)
    bank = HeadBank(linear.in_features, num_classes, heads, bias=linear.bias is not None)
    setattr(parent, child_name, bank.to(linear.weight.device))
    return model


def head_bank(model: nn.Module) -> HeadBank | None:
    """The model's ``HeadBank`` (a DDP wrapper looked through), None for a one-head model."""
    return next((m for m in model.modules() if isinstance(m, HeadBank)), None)
