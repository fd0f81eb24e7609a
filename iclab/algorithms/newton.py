"""Iterative Newton (Newton–Schulz) for the pseudo-inverse of S = XᵀX, batched over prompts and prefix lengths.

Fu et al. (docs/papers.md §5): M₀ = αS, α = 2/‖SSᵀ‖_F, M_{k+1} = 2M_k − M_k S M_k, ŵ_k = M_k Xᵀy. In the eigenbasis of S
(eigenvalues λ_i) every iterate is diagonal with 1 − λ_i m_{k,i} = (1 − αλ_i²)^{2^k}, so ŵ_k → S⁺Xᵀy = X⁺y (the
min-norm OLS solution) quadratically once |1 − αλ_i²| < 1 for every nonzero λ_i. The Frobenius norm makes that
hold whenever S has rank ≥ 2 (the spectral norm would put the top direction at exactly −1). For rank one,
‖SSᵀ‖_F = λ², so αλ² = 2 and M₁ = 0: a one-point context predicts 0 for every K ≥ 1, as the paper's rule does.
An empty context (S = 0) has α := 0 and predicts 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.least_squares import gram_stats, prefix_stats
from iclab.algorithms.registry import LearnerSpec, check_args, parse_dtype, parse_int, spec_string

__all__ = [
    "LEARNERS",
    "MATRIX_STEPS",
    "Newton",
    "newton_inverse",
    "newton_inverse_eigen",
    "newton_inverse_matrix",
    "newton_weights",
]


MATRIX_STEPS = 10  # up to this many iterations the literal matrix form's rounding drift is ≤ 2¹⁰·eps


def newton_inverse(S: Tensor, steps: int) -> Tensor:
    """M_steps for S [..., d, d] (symmetric PSD) → [..., d, d]; M₀ = αS with α = 2/‖SSᵀ‖_F (0 where S = 0).

    The literal matrix iteration (`newton_inverse_matrix`, ~2.5x faster on the CPU) for steps ≤ MATRIX_STEPS, where
    its rounding drift in the directions that must stay 0 is at most 2^steps·eps relative (≤ 1e-4 in float32);
    beyond, the eigenbasis form (`newton_inverse_eigen`), exact in those directions at any number of steps.
    """
    if steps <= MATRIX_STEPS:
        return newton_inverse_matrix(S, steps)
    return newton_inverse_eigen(S, steps)


def newton_inverse_matrix(S: Tensor, steps: int) -> Tensor:
    """Fu et al.'s iteration as written: M₀ = αS, M ← 2M − MSM. S [..., d, d] → [..., d, d]."""
    norm = torch.linalg.matrix_norm(S @ S.transpose(-1, -2))  # [...] Frobenius
    alpha = torch.where(norm > 0, 2.0 / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(norm))
    M = alpha[..., None, None] * S
    for _ in range(steps):
        M = 2 * M - M @ S @ M
    return M


def newton_inverse_eigen(S: Tensor, steps: int) -> Tensor:
    """The same iterates computed in the eigenbasis of S. S [..., d, d] → [..., d, d].

    Run in the eigenbasis of S, where the iteration is diagonal: m_{k+1} = m_k (2 − g_k), g_{k+1} = g_k (2 − g_k)
    with g_k = λ m_k, g₀ = αλ² ∈ [0, 2]. The matrix form M ← 2M − MSM amplifies rounding errors by 2 per step in
    the directions whose m must stay 0 (the null space of a rank-deficient S, and the top direction of a rank-one S
    at αλ² = 2): in float32 a one-point context would drift from 0 by K ≈ 20 and overflow to NaN by K ≈ 30. Here
    those stay exactly 0: α comes from the ratios λ_i/λ_max (αλ_max² = 2 exactly at rank one), and eigenvalues below the
    rounding level d·eps·λ_max (a rank-deficient S computed in floating point) are taken as 0, as matrix_rank does.
    """
    finite = torch.isfinite(S).all(-1).all(-1)[..., None, None]  # eigh raises on NaN; such prompts give NaN
    lam, V = torch.linalg.eigh(torch.where(finite, S, torch.zeros_like(S)))  # [..., d], [..., d, d]
    top = lam.abs().amax(-1, keepdim=True)  # λ_max [..., 1]
    top = torch.where(top > 0, top, torch.ones_like(top))  # S = 0: every ratio is 0
    rho = lam / top  # λ_i/λ_max
    rho = torch.where(rho.abs() > S.shape[-1] * torch.finfo(S.dtype).eps, rho, torch.zeros_like(rho))
    norm = (rho**4).sum(-1, keepdim=True).sqrt()  # ‖SSᵀ‖_F / λ_max², >= 1 unless S = 0
    norm = torch.where(norm > 0, norm, torch.ones_like(norm))
    g = 2 * rho**2 / norm  # αλ_i² ∈ [0, 2]
    m = 2 * rho / (norm * top)  # m₀ = αλ_i
    for _ in range(steps):
        m, g = m * (2 - g), g * (2 - g)
    M = (V * m.unsqueeze(-2)) @ V.transpose(-1, -2)  # V diag(m) Vᵀ
    return torch.where(finite, M, torch.full_like(M, math.nan))


def newton_weights(S: Tensor, b: Tensor, steps: int) -> Tensor:
    """ŵ_K = M_K b. S [..., d, d], b [..., d] → [..., d]."""
    return (newton_inverse(S, steps) @ b.unsqueeze(-1)).squeeze(-1)


class Newton(MaskedLearner):
    """Learner: K iterations of Iterative Newton, ŷ = x_qᵀ M_K Xᵀy; `dtype=torch.float64` computes in float64."""

    def __init__(self, steps: int, dtype: torch.dtype | None = None):
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps: must be an integer >= 0, got {steps!r}")
        self.steps, self.dtype = steps, dtype
        self.name = f"newton:{steps}"

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n] (masked rows zero), x_q [B, m, d] → [B, m]."""
        ct = self.dtype or x_ctx.dtype
        S, b = gram_stats(x_ctx.to(ct), y_ctx.to(ct))
        w = newton_weights(S, b, self.steps)  # [B, d]
        return torch.einsum("bmd,bd->bm", x_q.to(ct), w).to(x_q.dtype)

    def predict_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T] from the cumulative S_t, b_t."""
        if y.dim() == 3:
            return super().predict_prefixes(x, y)
        ct = self.dtype or x.dtype
        S, b = prefix_stats(x.to(ct), y.to(ct))  # [B, T, d, d], [B, T, d]
        w = newton_weights(S, b, self.steps)
        return torch.einsum("btd,btd->bt", x.to(ct), w).to(x.dtype)


def _newton(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> Newton:
    check_args(args, kwargs, 1, ("float64",))
    if not args:
        raise ValueError("K: the number of iterations is required (newton:5)")
    learner = Newton(parse_int("K", args[0], low=0), dtype=parse_dtype(kwargs))
    learner.name = spec_string("newton", args, kwargs)
    return learner


LEARNERS: dict[str, LearnerSpec] = {
    "newton": LearnerSpec(
        _newton, "newton:K[:float64=1]", "K iterations of Iterative Newton for (XᵀX)⁺ (Fu et al.), then ŵ = M_K Xᵀy"
    ),
}
