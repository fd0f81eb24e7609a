"""Iterative Newton (Newton–Schulz) for the pseudo-inverse of S = XᵀX, batched over prompts and prefix lengths.

Fu et al. (docs/papers.md §5): M₀ = αS, M_{k+1} = 2M_k − M_k S M_k, ŵ_k = M_k Xᵀy, with the start α = c/‖SSᵀ‖_F.
The default c = 1 is Fu et al.'s code (`scale`, the learner's `newton:K:scale=c`); c = 2 is one iteration ahead of
it. In the eigenbasis of S (eigenvalues λ_i) every iterate is diagonal with 1 − λ_i m_{k,i} = (1 − αλ_i²)^{2^k}, so
ŵ_k → S⁺Xᵀy = X⁺y (the min-norm OLS solution) quadratically once |1 − αλ_i²| < 1 for every nonzero λ_i. Since
λ_i² ≤ ‖SSᵀ‖_F, that holds for every c in (0, 2) and, at c = 2, whenever S has rank ≥ 2. For rank one,
‖SSᵀ‖_F = λ², so αλ² = c: at c = 1 the start M₀ = S/λ² is already the exact pseudo-inverse (and stays it); at
c = 2, M₁ = 0 and a one-point context predicts 0 for every K ≥ 1. An empty context (S = 0) has α := 0 and
predicts 0.
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
    "FU_SCALE",
    "LEARNERS",
    "MATRIX_STEPS",
    "Newton",
    "newton_inverse",
    "newton_inverse_eigen",
    "newton_inverse_matrix",
    "newton_weights",
]


MATRIX_STEPS = 10  # up to this many iterations the literal matrix form's rounding drift is ≤ 2¹⁰·eps


FU_SCALE = 1.0  # c of the start α = c/‖SSᵀ‖_F in Fu et al.'s code


def _check_scale(scale: float) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale <= 2:
        raise ValueError(f"scale: the start α = scale/‖SSᵀ‖_F needs 0 < scale <= 2, got {scale!r}")


def newton_inverse(S: Tensor, steps: int, scale: float = FU_SCALE) -> Tensor:
    """M_steps for S [..., d, d] (symmetric PSD) → [..., d, d]; M₀ = αS with α = scale/‖SSᵀ‖_F (0 where S = 0).

    The literal matrix iteration (`newton_inverse_matrix`, ~2.5x faster on the CPU) for steps ≤ MATRIX_STEPS, where
    its rounding drift in the directions that must stay 0 is at most 2^steps·eps relative (≤ 1e-4 in float32);
    beyond, the eigenbasis form (`newton_inverse_eigen`), exact in those directions at any number of steps.
    """
    _check_scale(scale)
    if steps <= MATRIX_STEPS:
        return newton_inverse_matrix(S, steps, scale)
    return newton_inverse_eigen(S, steps, scale)


def newton_inverse_matrix(S: Tensor, steps: int, scale: float = FU_SCALE) -> Tensor:
    """Fu et al.'s iteration as written: M₀ = αS, α = scale/‖SSᵀ‖_F, M ← 2M − MSM. S [..., d, d] → [..., d, d]."""
    norm = torch.linalg.matrix_norm(S @ S.transpose(-1, -2))  # [...] Frobenius
    alpha = torch.where(norm > 0, scale / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(norm))
    M = alpha[..., None, None] * S
    for _ in range(steps):
        M = 2 * M - M @ S @ M
    return M


def newton_inverse_eigen(S: Tensor, steps: int, scale: float = FU_SCALE) -> Tensor:
    """The same iterates computed in the eigenbasis of S. S [..., d, d] → [..., d, d].

    Run in the eigenbasis of S, where the iteration is diagonal: m_{k+1} = m_k (2 − g_k), g_{k+1} = g_k (2 − g_k)
    with g_k = λ m_k, g₀ = αλ² ∈ [0, scale]. The matrix form M ← 2M − MSM amplifies rounding errors by 2 per step in
    the directions whose m must stay 0 (the null space of a rank-deficient S, and at scale 2 the top direction of a
    rank-one S, where αλ² = 2): in float32 a one-point context would drift from 0 by K ≈ 20 and overflow to NaN by
    K ≈ 30. Here those stay exactly 0: α comes from the ratios λ_i/λ_max (αλ_max² = scale exactly at rank one), and
    eigenvalues below the rounding level d·eps·λ_max (a rank-deficient S computed in floating point) are taken as 0,
    as matrix_rank does.
    """
    finite = torch.isfinite(S).all(-1).all(-1)[..., None, None]  # eigh raises on NaN; such prompts give NaN
    lam, V = torch.linalg.eigh(torch.where(finite, S, torch.zeros_like(S)))  # [..., d], [..., d, d]
    top = lam.abs().amax(-1, keepdim=True)  # λ_max [..., 1]
    top = torch.where(top > 0, top, torch.ones_like(top))  # S = 0: every ratio is 0
    rho = lam / top  # λ_i/λ_max
    rho = torch.where(rho.abs() > S.shape[-1] * torch.finfo(S.dtype).eps, rho, torch.zeros_like(rho))
    norm = (rho**4).sum(-1, keepdim=True).sqrt()  # ‖SSᵀ‖_F / λ_max², >= 1 unless S = 0
    norm = torch.where(norm > 0, norm, torch.ones_like(norm))
    g = scale * rho**2 / norm  # αλ_i² ∈ [0, scale]
    m = scale * rho / (norm * top)  # m₀ = αλ_i
    for _ in range(steps):
        m, g = m * (2 - g), g * (2 - g)
    M = (V * m.unsqueeze(-2)) @ V.transpose(-1, -2)  # V diag(m) Vᵀ
    return torch.where(finite, M, torch.full_like(M, math.nan))


def newton_weights(S: Tensor, b: Tensor, steps: int, scale: float = FU_SCALE) -> Tensor:
    """ŵ_K = M_K b (start α = scale/‖SSᵀ‖_F). S [..., d, d], b [..., d] → [..., d]."""
    return (newton_inverse(S, steps, scale) @ b.unsqueeze(-1)).squeeze(-1)


class Newton(MaskedLearner):
    """Learner: K iterations of Iterative Newton, ŷ = x_qᵀ M_K Xᵀy, from M₀ = (scale/‖SSᵀ‖_F)·S (scale 1: Fu et
    al.'s code; 2: one iteration ahead); `dtype=torch.float64` computes in float64."""

    def __init__(self, steps: int, dtype: torch.dtype | None = None, scale: float = FU_SCALE):
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps: must be an integer >= 0, got {steps!r}")
        _check_scale(scale)
        self.steps, self.dtype, self.scale = steps, dtype, float(scale)
        self.name = f"newton:{steps}" + (f":scale={scale:g}" if scale != FU_SCALE else "")

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n] (masked rows zero), x_q [B, m, d] → [B, m]."""
        ct = self.dtype or x_ctx.dtype
        S, b = gram_stats(x_ctx.to(ct), y_ctx.to(ct))
        w = newton_weights(S, b, self.steps, self.scale)  # [B, d]
        return torch.einsum("bmd,bd->bm", x_q.to(ct), w).to(x_q.dtype)

    def scalar_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T] from the cumulative S_t, b_t."""
        ct = self.dtype or x.dtype
        S, b = prefix_stats(x.to(ct), y.to(ct))  # [B, T, d, d], [B, T, d]
        w = newton_weights(S, b, self.steps, self.scale)
        return torch.einsum("btd,btd->bt", x.to(ct), w).to(x.dtype)


def _newton(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> Newton:
    check_args(args, kwargs, 1, ("float64", "scale"))
    if not args:
        raise ValueError("K: the number of iterations is required (newton:5)")
    scale = FU_SCALE
    if "scale" in kwargs:
        try:
            scale = float(kwargs["scale"])
        except ValueError:
            raise ValueError(f"scale: must be a number in (0, 2], got {kwargs['scale']!r}") from None
    learner = Newton(parse_int("K", args[0], low=0), dtype=parse_dtype(kwargs), scale=scale)
    learner.name = spec_string("newton", args, kwargs)
    return learner


LEARNERS: dict[str, LearnerSpec] = {
    "newton": LearnerSpec(
        _newton,
        "newton:K[:scale=1][:float64=1]",
        "K iterations of Iterative Newton for (XᵀX)⁺ from M₀ = (scale/‖SSᵀ‖_F)·S (Fu et al.'s code: scale 1), "
        "then ŵ = M_K Xᵀy",
    ),
}
