"""Target-dampened open-set distillation (seed 000 §2.4, §3.3; REFERENCE 2).

The student has K+1 outputs; column ``sink_index`` = K is the OOD sink. Teachers are K-class (they never see OOD).
Per sample i, with z the student logits, y the label, p_t^T the teachers' mean softmax at temperature T over the
K in-distribution classes (multi-teacher ``fused``: mean of probabilities):

    ID  (y != K):  l_i = (1 - a) CE(z_i, y_i) + a T^2 KL(p_t,i^T || softmax(z_i[:K] / T))
    OOD (y == K):  l_i = g CE(z_i, K)

and L = (1/B) sum_i l_i over the whole batch, returned as three weighted terms ``loss_ce`` (ID CE), ``loss_kd``
(ID KL) and ``loss_ood`` (OOD CE) that sum to L. CE uses all K+1 columns; the KL uses the student's K ID columns
only, renormalized, because the teachers have no sink column. A teacher given with more than K columns (e.g. a K+1
model) is restricted to its first K. Paper values (seed 000 §2.4): a = ``kd_weight`` = 0.3, T = 4.0,
g = ``ood_weight`` = 7.8; seed 000 Table 3 sweeps g over ``GAMMA_GRID``.

Named recipes (``RECIPES``) hold the paper's values: ``build_loss("target_dampened", recipe="seed000")`` (also the
default recipe); explicitly given parameters override the recipe's. With ``kd_weight = 0`` the loss needs no
teacher: ``needs_teacher`` is then False on the instance, so the trainer runs it without stores (the scratch +
sink baseline of seed 000 §3.4); teacher logits passed anyway are ignored.

Seed 000 Table 3 (g x seeds) is a ``stillroom sweep`` file over a base config that uses this loss::

    base: student_seed000.yaml       # loss: {name: target_dampened, params: {recipe: seed000}}
    seeds: [0, 1, 2]
    variants: {g0: {loss.params.ood_weight: 0.0}, g4: {loss.params.ood_weight: 4.0},
               g7.8: {loss.params.ood_weight: 7.8}, g10: {loss.params.ood_weight: 10.0}}
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from stillroom._io import StillroomError
from stillroom.distill.losses import LOSSES, DistillLoss

__all__ = ["TargetDampenedLoss", "RECIPES", "GAMMA_GRID"]

RECIPES: dict[str, dict[str, float]] = {
    "seed000": {"kd_weight": 0.3, "temperature": 4.0, "ood_weight": 7.8},
}
GAMMA_GRID = (0.0, 4.0, 7.8, 10.0)  # seed 000 Table 3


@LOSSES.register("target_dampened")
class TargetDampenedLoss(DistillLoss):
    """Args: recipe in ``RECIPES`` ("seed000"), kd_weight in [0, 1], temperature > 0, ood_weight >= 0 (None: the
    recipe's value), sink_index (None: the last student column).

    Returns ``{"loss_ce", "loss_kd", "loss_ood"}``, each a batch mean over all B samples (module docstring).
    """

    needs_teacher: ClassVar[bool] = True  # for the default recipe; an instance with kd_weight = 0 sets False
    ce_equivalent_params: ClassVar[dict[str, Any] | None] = {"kd_weight": 0.0, "ood_weight": 1.0}
    param_hints: ClassVar[dict[str, str]] = {
        "alpha": "use kd_weight (seed 000's alpha, the weight of the KD term)",
        "gamma": "use ood_weight (seed 000's gamma, the weight of the OOD CE term)",
        "T": "use temperature",
    }

    def __init__(
        self,
        recipe: str = "seed000",
        kd_weight: float | None = None,
        temperature: float | None = None,
        ood_weight: float | None = None,
        sink_index: int | None = None,
    ) -> None:
        super().__init__()
        if recipe not in RECIPES:
            raise StillroomError(f"loss 'target_dampened': unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
        base = RECIPES[recipe]
        kd = base["kd_weight"] if kd_weight is None else float(kd_weight)
        temp = base["temperature"] if temperature is None else float(temperature)
        ood = base["ood_weight"] if ood_weight is None else float(ood_weight)
        if not 0.0 <= kd <= 1.0:
            raise StillroomError(f"loss 'target_dampened': kd_weight must be in [0, 1], got {kd}")
        if not (temp > 0.0 and math.isfinite(temp)):
            raise StillroomError(f"loss 'target_dampened': temperature must be a positive number, got {temp}")
        if not (ood >= 0.0 and math.isfinite(ood)):
            raise StillroomError(f"loss 'target_dampened': ood_weight must be a finite number >= 0, got {ood}")
        if sink_index is not None and (isinstance(sink_index, bool) or int(sink_index) < 1):
            raise StillroomError(f"loss 'target_dampened': sink_index must be an integer >= 1, got {sink_index!r}")
        self.recipe, self.kd_weight, self.temperature, self.ood_weight = recipe, kd, temp, ood
        self.sink_index = None if sink_index is None else int(sink_index)
        self.needs_teacher = kd > 0.0  # instance attribute: what the trainer and _check_inputs read

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, target: Tensor, **ctx: Any
    ) -> dict[str, Tensor]:
        t = self._check_inputs(student_logits, teacher_logits, target)  # (M, B, K_t) detached, or None
        batch, k_s = student_logits.shape
        k = k_s - 1 if self.sink_index is None else self.sink_index  # K ID classes, the sink is column K
        if k != k_s - 1:
            raise StillroomError(
                f"loss 'target_dampened': the sink must be the last student column; sink_index {k} with "
                f"{k_s} student outputs"
            )
        if target.numel() and (int(target.min()) < 0 or int(target.max()) > k):
            raise StillroomError(f"loss 'target_dampened': targets must be in 0..{k} (sink = {k})")
        is_ood = target == k  # (B,)
        is_id = ~is_ood
        ce = F.cross_entropy(student_logits, target, reduction="none")  # (B,) over all K+1 columns
        zero = ce.new_zeros(())
        loss_ce = (1.0 - self.kd_weight) * torch.where(is_id, ce, zero).sum() / batch
        loss_ood = self.ood_weight * torch.where(is_ood, ce, zero).sum() / batch
        if self.kd_weight == 0.0 or t is None:
            loss_kd = student_logits.new_zeros(())
        else:
            if t.shape[2] < k:
                raise StillroomError(
                    f"loss 'target_dampened': teachers have {t.shape[2]} classes, the student {k} ID classes + sink"
                )
            temp = self.temperature
            log_p_s = F.log_softmax(student_logits[:, :k] / temp, dim=1)  # (B, K) ID columns only
            log_p_t = F.log_softmax(t[:, :, :k] / temp, dim=2)  # (M, B, K)
            # log of the teachers' mean probability, computed in log space so no teacher underflows to log(0)
            log_target = torch.logsumexp(log_p_t, dim=0) - math.log(t.shape[0])  # (B, K)
            kl = F.kl_div(log_p_s, log_target, reduction="none", log_target=True).sum(1)  # (B,)
            loss_kd = self.kd_weight * temp**2 * torch.where(is_id, kl, zero).sum() / batch
        return {"loss_ce": loss_ce, "loss_kd": loss_kd, "loss_ood": loss_ood}

    def extra_repr(self) -> str:
        return (
            f"recipe={self.recipe!r}, kd_weight={self.kd_weight}, temperature={self.temperature}, "
            f"ood_weight={self.ood_weight}, sink_index={self.sink_index}"
        )
