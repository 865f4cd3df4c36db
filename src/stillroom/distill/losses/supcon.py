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
feature map (``models.features``: globally pooled, as KNN and RMD pool them). By default the term reads those
features directly (``projection: 0``), so nothing is trained that the served model does not hold. ``projection: P``
puts the paper's projection network in between (§3.1, "Projection Network"; the MLP of Chen et al. 2020, SimCLR):
Linear(D, D), ReLU, Linear(D, P), whose output is normalised instead; it trains with the student (the trainer adds
it to the optimizer and to the resumable state) and is dropped at the end, as the paper drops it, so the served
model is the plain architecture either way. The paper's reason for it is this term's measured cost below: the
contrastive pull acts on the projection, and the representation before it keeps what the other terms need.
Rows without a class (transfer rows) are left out; a batch where no
row has a classmate gives 0. Positives are whatever classmates a batch holds (``data.per_class``
builds batches of them). ``temperature`` = 0.1, the paper's; ``weight`` = 0.5. Checked against pytorch-metric-learning's
``SupConLoss`` (tests/test_supcon.py). Measured (BENCHMARKS "a supervised contrastive term across styles", 3 seeds,
the demo's recipe with the official artwork held out): -2.5 points of ID val top-1 and -5.3 on the held-out style's
val drawings at weight 0.5 (the demo's LumiNet, warm-up included, as base), worse at 2; LumiNet's KL term ends
higher beside it (the term spreads all other species apart alike, the teacher's soft labels say which look alike),
so it is an option, not a default. Neither the projection head (artwork val -4.8, ID val -2.4) nor
batches of classmates (``data.per_class: 4``, which cost 4.6 ID val points by themselves; the term adds +1.8 artwork
val points on them) changed that (BENCHMARKS "The paper's projection head and batches of classmates").

    loss: {name: supcon, params: {base: luminet, weight: 0.5, temperature: 0.1, projection: 128}}
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stillroom._io import StillroomError
from stillroom.distill.losses._base import IGNORE_INDEX, FeatureTermLoss, WrapperParams, register_loss
from stillroom.distill.losses._params import NonNegInt, Positive

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
    term, temperature > 0 of its similarities, projection >= 0 (the head's output width; 0: none)."""

    weight: Positive = 0.5
    temperature: Positive = 0.1  # Khosla et al. 2020, their ImageNet and CIFAR setting
    projection: NonNegInt = 0  # output width of the projection head (the paper's 128); 0: no head


@register_loss("supcon")
class SupConLoss(FeatureTermLoss):
    """Parameters: ``SupConParams``. Returns the base loss's terms and ``loss_supcon``; needs ``features`` (B, D),
    the student's pooled penultimate features, passed by the trainer (``needs_features``)."""

    Params: ClassVar[type[SupConParams]] = SupConParams
    params: SupConParams
    term_name: ClassVar[str] = "loss_supcon"

    def bind_features(self, dim: int, seed: int) -> None:
        if not self.params.projection:
            return
        # from a generator of its own: the student's initial weights and the run's random stream stay those of the
        # same run without a head
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            width = self.params.projection
            self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, width))

    def feature_term(self, features: Tensor, teacher_logits: Tensor | None, target: Tensor) -> Tensor:
        if self.params.projection:
            head = getattr(self, "head", None)
            if head is None:
                raise StillroomError(
                    f"loss {self.loss_name!r}: the projection head is not built; call bind_features(D, seed) first "
                    "(the trainer does)"
                )
            features = head(features)
        return self.params.weight * supervised_contrastive(features, target, self.params.temperature)
