"""Outlier exposure (Hendrycks et al., ICLR 2019): a K-class student taught to doubt a merged index's OOD rows.

Hendrycks, Mazeika and Dietterich, "Deep Anomaly Detection with Outlier Exposure" (ICLR 2019), §3 eq. 1 with the
cross-entropy to the uniform distribution of §4.2 for classifiers: on a merged index (``stillroom data merge-sink``,
OOD rows labelled K) the student keeps K outputs (no sink column, unlike seed 000 §2.4's target-dampened loss), the
ID rows take an ordinary distillation loss ``base`` and the OOD rows are pushed towards a uniform softmax:

    L = base(z_in, t_in, y_in) + lambda * mean_{i OOD} H(U; softmax(z_i))
    H(U; softmax(z)) = -(1/K) sum_j log softmax(z)_j = logsumexp(z) - mean_j z_j

``base`` is any registered K-class loss (default ``luminet``, the demo's), built from ``base_params`` and given the
batch's ID rows only (its batch statistics, e.g. LumiNet's per-class means, are then those of ID rows); lambda =
``oe_weight`` = 0.5, the paper's value for vision (§4.2). The two expectations are means over their own rows, as in
the paper (separate in and out batches there; one mixed batch here, the OOD share set by ``merge-sink
--ood-train-fraction``). What it is for, against the sink: the served model stays K-class, so the ladder reads
post-hoc scores (max logit, energy, KNN, ...) with no class that competes with every species. Measured here
(BENCHMARKS "outlier exposure instead of a sink"): at the demo's budget it costs ID top-1 as a sink does (emoji as
the outliers: 1.6-5.7 points at 40 epochs, 3 seeds), more with near-OOD outliers (other species: 9-12 points), so
it is an option, not a default. The term is the same as pytorch-ood's ``OutlierExposureLoss`` (tested against it).

    loss: {name: outlier_exposure, params: {base: luminet, oe_weight: 0.5}}
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from stillroom._io import StillroomError
from stillroom.distill.losses._base import WrapperLoss, WrapperParams, register_loss
from stillroom.distill.losses._params import NonNegative

__all__ = ["OutlierExposureLoss", "OutlierExposureParams"]


class OutlierExposureParams(WrapperParams):
    """base (a registered K-class loss), base_params (its parameters, stored resolved), oe_weight lambda >= 0."""

    oe_weight: NonNegative = 0.5  # Hendrycks et al. 2019 §4.2 (vision)


@register_loss("outlier_exposure")
class OutlierExposureLoss(WrapperLoss):
    """Parameters: ``OutlierExposureParams``. Returns the base loss's terms (means over the ID rows) and
    ``loss_oe`` (lambda times the mean over the OOD rows; 0 in a batch without any). A K-class student on a merged
    index: ``num_outputs`` drops the sink class, targets equal to K mark the OOD rows."""

    Params: ClassVar[type[OutlierExposureParams]] = OutlierExposureParams
    params: OutlierExposureParams
    ce_equivalent_params: ClassVar[dict[str, Any] | None] = {"base": "ce", "oe_weight": 1.0}

    @staticmethod
    def num_outputs(num_classes: int, sink_class: int | None) -> int:
        """The student's outputs on an index of ``num_classes`` classes whose class ``sink_class`` holds the OOD
        rows: K = ``sink_class``. An index without a sink has nothing to expose the student to: an error."""
        if sink_class is None or sink_class != num_classes - 1:
            raise StillroomError(
                "loss 'outlier_exposure' learns from the OOD rows of a merged index (`stillroom data merge-sink`, "
                "class K = the OOD rows); this index has no sink class"
            )
        return sink_class

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, target: Tensor, **ctx: Any
    ) -> dict[str, Tensor]:
        t = self._check_inputs(student_logits, teacher_logits, target)  # (M, B, K) detached, or None
        k = student_logits.shape[1]
        if target.numel() and (int(target.min()) < 0 or int(target.max()) > k):
            raise StillroomError(f"loss 'outlier_exposure': targets must be in 0..{k} (OOD rows = {k})")
        is_ood = target == k
        is_id = ~is_ood
        out: dict[str, Tensor] = {}
        if is_id.any():
            teachers = None if t is None or not self.needs_teacher else t[:, is_id, :k]
            out.update(self.base(student_logits[is_id], teachers, target[is_id], **ctx))
        z_out = student_logits[is_ood]
        # cross-entropy to the uniform distribution over the K classes, mean over the OOD rows (0 without any)
        oe = (z_out.logsumexp(1) - z_out.mean(1)).mean() if len(z_out) else student_logits.new_zeros(())
        out["loss_oe"] = self.params.oe_weight * oe
        return out
