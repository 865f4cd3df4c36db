"""Supervised contrastive term on the student's features (Khosla et al., NeurIPS 2020), beside a K-class loss.

Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu and Krishnan, "Supervised Contrastive Learning" (NeurIPS
2020), eq. 2 (``L_out``): for the L2-normalised features ``z_i`` of a batch, the anchors ``i`` with at least one
other row of their class ``P(i)``, and ``A(i)`` every row but ``i``,

    L_supcon = mean_i  -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / t) / sum_{a in A(i)} exp(z_i.z_a / t) )

Why here (issue 14 item 1, issue 16 item 5): the demo's training data holds one species in several drawing styles
(game sprites, box icons, official artwork), and a held-out style is read far worse than the styles trained on.
Cross-entropy and distillation only ask that each image's *logits* point at its class; this term asks that the
pooled penultimate features of all drawings of one species, whatever their style, lie together and away from other
species, the geometry a style left out can borrow, and the one the feature-based OOD scores (KNN, RMD) read.

It is a wrapper: the registered K-class loss ``base`` (default ``luminet``, the demo's) gives its terms unchanged,
and ``loss_supcon`` = ``weight`` x the term above is added, on the features the trainer taps from the student's last
feature map (``models.features``: globally pooled, as KNN and RMD pool them; no projection head, so nothing is
trained that the served model does not hold). Rows without a class (transfer rows) are left out; a batch where no
row has a classmate gives 0. Positives are whatever classmates a batch happens to hold (the sampler is the usual
one). ``temperature`` = 0.1, the paper's; ``weight`` = 0.5. Checked against pytorch-metric-learning's
``SupConLoss`` (tests/test_supcon.py). Measured (BENCHMARKS "a supervised contrastive term across styles", 3 seeds,
the demo's recipe with the official artwork held out): -2.5 points of ID val top-1 and -5.3 on the held-out style's
val drawings at weight 0.5 (the demo's LumiNet, warm-up included, as base), worse at 2; LumiNet's KL term ends
higher beside it (the term spreads all other species apart alike, the teacher's soft labels say which look alike),
so it is an option, not a default.

    loss: {name: supcon, params: {base: luminet, weight: 0.5, temperature: 0.1}}
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from stillroom.distill.losses._base import IGNORE_INDEX, FeatureTermLoss, WrapperParams, register_loss
from stillroom.distill.losses._params import Positive

__all__ = ["SupConLoss", "SupConParams", "supervised_contrastive"]


def supervised_contrastive(features: Tensor, target: Tensor, temperature: float) -> Tensor:
    """Khosla et al. eq. 2 (module docstring) over the rows of ``features`` (B, D) whose ``target`` is a class."""
    keep = target != IGNORE_INDEX
    z, y = F.normalize(features[keep].float(), dim=1), target[keep]
    n = len(y)
    others = ~torch.eye(n, dtype=torch.bool, device=z.device)
    positives = (y[:, None] == y[None, :]) & others
    anchors = positives.any(dim=1)
    if not bool(anchors.any()):
        return features.sum() * 0.0  # no classmates in the batch: 0, still part of the graph
    sim = z @ z.T / temperature
    log_prob = sim - torch.logsumexp(sim.masked_fill(~others, float("-inf")), dim=1, keepdim=True)
    per_anchor = (log_prob * positives).sum(dim=1)[anchors] / positives.sum(dim=1)[anchors]
    return -per_anchor.mean()


class SupConParams(WrapperParams):
    """base (a registered K-class loss), base_params (its parameters, stored resolved), weight > 0 of the added
    term, temperature > 0 of its similarities."""

    weight: Positive = 0.5
    temperature: Positive = 0.1  # Khosla et al. 2020, their ImageNet and CIFAR setting


@register_loss("supcon")
class SupConLoss(FeatureTermLoss):
    """Parameters: ``SupConParams``. Returns the base loss's terms and ``loss_supcon``; needs ``features`` (B, D),
    the student's pooled penultimate features, passed by the trainer (``needs_features``)."""

    Params: ClassVar[type[SupConParams]] = SupConParams
    params: SupConParams
    term_name: ClassVar[str] = "loss_supcon"

    def feature_term(self, features: Tensor, teacher_logits: Tensor | None, target: Tensor) -> Tensor:
        return self.params.weight * supervised_contrastive(features, target, self.params.temperature)
