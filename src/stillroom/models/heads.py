"""One head per teacher: a student whose last linear layer is M heads over one shared body (Tran et al. 2020,
"Hydra: Preserving Ensemble Diversity for Model Distillation", arXiv 2001.04694, §3).

Fused distillation (``multi_teacher: fused``) gives the student one target, the teachers' mean distribution, on
the images it trains on. Off those images (another artist's drawings) the ensemble's edge over any one teacher comes
from the members disagreeing in different directions, and a single head taught the average has no reason to
reproduce that. Here head m is taught by teacher m alone (``train.trainer``: the loss runs once per head with its
own teacher's logits) and the network answers with the heads' mean distribution, the way the ensemble itself is
read (mean softmax, ``evaluate``'s teacher ensembles): log((1/M) sum_m softmax(z_m)), so every consumer of logits
(top-1, calibration, the ladder's scores, ONNX export) sees one (B, K) output of log-probabilities.

What is repeated: the last linear layer (``depth="linear"``; for mobilenet_v3_small at 151 classes 155k weights a
head beside the one-head network's 1.67 M), so the heads share every feature and differ in their readout only; or
the whole classifier after the pooled features (``"classifier"``; mobilenet_v3_small: 576 -> 1024 -> K, 745k weights
a head), so each teacher also gets a hidden layer of its own. The architecture name records the heads as
``<name>+heads<M>`` or ``<name>+classifiers<M>`` (``arch`` in a run's ``model.json``), which ``create_model`` builds
again.

Off by default (``model.heads: 1``): for the students of ``demo --budget fused``'s three 80-epoch teachers with the
official artwork held out, three linear heads read the artwork 9.7 / 3.6 points worse than one fused head (val /
test, lower on each of 3 seeds) at the same ID top-1 (BENCHMARKS "One head per teacher (Hydra)").
"""

from __future__ import annotations

import copy
import math
import re
from typing import Literal

import torch
from torch import nn

from stillroom._io import StillroomError

__all__ = ["HeadBank", "HeadDepth", "attach_heads", "head_bank", "heads_arch", "split_heads_arch"]

HeadDepth = Literal["linear", "classifier"]
_KINDS: dict[str, str] = {"linear": "heads", "classifier": "classifiers"}
_SUFFIX = re.compile(r"^(?P<base>.+)\+(?P<kind>heads|classifiers)(?P<m>[0-9]+)$")


class _Stash:
    """The last training forward's per-head logits; a deep copy (evaluation copies, weight averaging) starts empty:
    the held tensor belongs to the training graph, which cannot be copied and is no business of the copy."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def __deepcopy__(self, memo: dict) -> _Stash:
        return _Stash()


class HeadBank(nn.Module):
    """M heads of K outputs over the same input: M copies of one head module, each freshly initialised.

    ``forward`` returns the heads' mean distribution as log-probabilities, (..., K); in training mode it also keeps
    the heads' own logits, (M, B, K), for ``last_heads()``.
    """

    def __init__(self, head: nn.Module, num_classes: int, heads: int) -> None:
        super().__init__()
        if heads < 2:
            raise StillroomError(f"a head bank needs at least 2 heads, got {heads}")
        self.num_classes = int(num_classes)
        copies = [copy.deepcopy(head) for _ in range(heads)]
        for c in copies:  # each head starts from its layers' own random init, independently: they differ at step 0
            for m in c.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        self.heads = nn.ModuleList(copies)
        self._stash = _Stash()

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.stack([h(x) for h in self.heads], dim=-2)  # (B, M, K)
        if self.training:
            self._stash.value = z.movedim(-2, 0)  # (M, B, K)
        # log of the mean softmax, in float32: bfloat16 log-probabilities of 151 classes lose the small ones
        return torch.logsumexp(z.float().log_softmax(-1), dim=-2) - math.log(self.num_heads)

    def last_heads(self) -> torch.Tensor:
        """(M, B, K) float32: the heads' logits of the last training forward."""
        if self._stash.value is None:
            raise StillroomError("head bank: no training forward has run yet")
        return self._stash.value.float()


def heads_arch(name: str, heads: int, depth: HeadDepth = "linear") -> str:
    """The architecture name a run records: ``name`` itself for one head, else ``<name>+heads<M>`` (linear heads)
    or ``<name>+classifiers<M>`` (whole classifiers)."""
    return name if heads == 1 else f"{name}+{_KINDS[depth]}{heads}"


def split_heads_arch(arch: str) -> tuple[str, int, HeadDepth]:
    """(base name, heads, depth) of an architecture name written by ``heads_arch``."""
    m = _SUFFIX.match(arch)
    if m is None:
        return arch, 1, "linear"
    depth = next(d for d, kind in _KINDS.items() if kind == m["kind"])
    return m["base"], int(m["m"]), depth  # "+heads1" too: create_model refuses it


def _head_module(model: nn.Module, num_classes: int, depth: HeadDepth) -> tuple[nn.Module, str, nn.Module]:
    """(parent, attribute, module) of what is repeated: the last linear layer of ``num_classes`` outputs, or the
    model's whole ``classifier`` / ``fc`` (the layers between the pooled features and the logits)."""
    if depth == "classifier":
        for attr in ("classifier", "fc", "head"):
            head = getattr(model, attr, None)
            if isinstance(head, nn.Module) and any(
                isinstance(m, nn.Linear) and m.out_features == num_classes for m in head.modules()
            ):
                return model, attr, head
        raise StillroomError(f"{type(model).__name__}: no classifier module (classifier, fc, head) to repeat")
    found = None
    for module in model.modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Linear) and child.out_features == num_classes:
                found = (module, child_name, child)
    if found is None:
        raise StillroomError(f"{type(model).__name__}: no linear layer with {num_classes} outputs to split into heads")
    return found


def attach_heads(model: nn.Module, heads: int, num_classes: int, depth: HeadDepth = "linear") -> nn.Module:
    """Replace ``model``'s last linear layer of ``num_classes`` outputs (``depth="linear"``) or its whole classifier
    (``"classifier"``) by a ``HeadBank`` of ``heads`` fresh copies, in place (one head: unchanged). Returns
    ``model``."""
    if heads == 1:
        return model
    parent, attr, head = _head_module(model, num_classes, depth)
    setattr(parent, attr, HeadBank(head, num_classes, heads))
    return model


def head_bank(model: nn.Module) -> HeadBank | None:
    """The model's ``HeadBank`` (a DDP wrapper looked through), None for a one-head model."""
    return next((m for m in model.modules() if isinstance(m, HeadBank)), None)
