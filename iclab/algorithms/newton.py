"""Iterative Newton (Newton–Schulz) for the pseudo-inverse of S = XᵀX, batched over prompts and prefix lengths.

Fu et al. (REFERENCE §5): M₀ = αS, α = 2/‖SSᵀ‖_F, M_{k+1} = 2M_k − M_k S M_k, ŵ_k = M_k Xᵀy. In the eigenbasis of S
(eigenvalues λ_i) every iterate is diagonal with 1 − λ_i m_{k,i} = (1 − αλ_i²)^{2^k}, so ŵ_k → S⁺Xᵀy = X⁺y (the
min-norm OLS solution) quadratically once |1 − αλ_i²| < 1 for every nonzero λ_i. The Frobenius norm makes that
hold whenever S has rank ≥ 2 (the spectral norm would put the top direction at exactly −1). For rank one,
‖SSᵀ‖_F = λ², so αλ² = 2 and M₁ = 0: a one-point context predicts 0 for every K ≥ 1, as the paper's rule does.
An empty context (S = 0) has α := 0 and predicts 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.least_squares import gram_stats, prefix_stats
from iclab.algorithms.registry import LearnerSpec, check_args, parse_dtype, parse_int, spec_string

__all__ = ["LEARNERS", "Newton", "newton_inverse", "newton_weights"]


def newton_inverse(S: Tensor, steps: int) -> Tensor:
    """M_steps for S [..., d, d] (symmetric PSD) → [..., d, d]; M₀ = αS with α = 2/‖SSᵀ‖_F (0 where S = 0)."""
    norm = torch.linalg.matrix_norm(S @ S.transpose(-1, -2))  # [...] Frobenius
    alpha = torch.where(norm > 0, 2.0 / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(norm))
    M = alpha[..., None, None] * S
    for _ in range(steps):
        M = 2 * M - M @ S @ M
    return M


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
