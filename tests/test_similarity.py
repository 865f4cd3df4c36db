"""Similarity-preserving term (``distill.losses.similarity``): Tung and Mori's formula written out, what it is blind
to (dimension, rotation and scale of the features), and the wrapper around its base loss."""

from __future__ import annotations

import pytest
import torch

from stillroom._io import StillroomError
from stillroom.distill.losses import build_loss
from stillroom.distill.losses.similarity import similarity_preserving


def _naive(a: torch.Tensor, b: torch.Tensor) -> float:
    """Eq. 1-4 of the paper element by element: G = A A^T, each row / its L2 norm, mean squared difference."""
    n = a.shape[0]

    def gram(x: torch.Tensor) -> list[list[float]]:
        rows = [[float(x[i] @ x[j]) for j in range(n)] for i in range(n)]
        return [[v / sum(w * w for w in row) ** 0.5 for v in row] for row in rows]

    gs, gt = gram(a.double()), gram(b.double())
    return sum((gs[i][j] - gt[i][j]) ** 2 for i in range(n) for j in range(n)) / n**2


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_formula_written_out(seed):
    g = torch.Generator().manual_seed(seed)
    f, t = torch.rand(9, 12, generator=g), torch.randn(9, 5, generator=g) * 3
    assert similarity_preserving(f, t).item() == pytest.approx(_naive(f, t), rel=1e-5)


def test_zero_for_the_teachers_geometry_in_any_dimension_rotation_or_scale():
    g = torch.Generator().manual_seed(2)
    t = torch.randn(16, 6, generator=g)
    q, _ = torch.linalg.qr(torch.randn(20, 6, generator=g))  # (20, 6), orthonormal columns
    f = 2.5 * t @ q.T  # the teacher's vectors rotated into 20 dimensions and scaled
    assert similarity_preserving(f, t).item() == pytest.approx(0.0, abs=1e-10)
    assert similarity_preserving(torch.randn(16, 20, generator=g), t).item() > 1e-3


def test_wrapper_keeps_the_base_terms_adds_gamma_times_the_term_and_needs_teachers():
    g = torch.Generator().manual_seed(3)
    z, t, y = torch.randn(8, 4, generator=g), torch.randn(2, 8, 4, generator=g), torch.randint(0, 4, (8,), generator=g)
    f = torch.rand(8, 10, generator=g)
    out = build_loss("similarity", base="kd", gamma=30.0)(z, t, y, features=f, epoch=1)
    base = build_loss("kd")(z, t, y)
    assert set(out) == set(base) | {"loss_sp"} and all(torch.equal(out[k], base[k]) for k in base)
    torch.testing.assert_close(out["loss_sp"], 30.0 * similarity_preserving(f, t.mean(dim=0)))
    loss = build_loss("similarity", base="ce")
    assert loss.needs_teacher and loss.needs_features  # the term reads the teachers even when its base does not
    with pytest.raises(StillroomError, match="needs teacher logits"):
        loss(z, None, y, features=f)
    with pytest.raises(StillroomError, match=r"loss 'similarity': needs the student's pooled features \(8, D\)"):
        loss(z, t, y)
