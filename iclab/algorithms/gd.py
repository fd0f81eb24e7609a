"""Gradient descent learners, batched over prompts, in the form LSA layers can implement.

GD: k steps from W₀ = 0 on L(W) = 1/(2N) Σ_i (W x_i − y_i)², W ← W − η_l ∇L (η_l per step; the LSA
construction puts P = η_l/N).
GD++ (von Oswald): each step also transforms the data, x_j ← (I − γ_l XᵀX) x_j for every context and query
token, with X the *current* context inputs; the y-step of that layer uses the inputs before the transform
(one attention layer updates x and y from the same input tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["GD", "GDPlusPlus", "gd_predict", "gdpp_predict"]


def _as_steps(values: Sequence[float] | Tensor, like: Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(-1)


def gd_predict(x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, etas: Sequence[float] | Tensor) -> Tensor:
    """len(etas) GD steps from W = 0. x_ctx [B, N, d], y_ctx [B, N], x_q [B, m, d] → [B, m].

    Differentiable in etas (used for step tuning).
    """
    etas = _as_steps(etas, x_ctx)
    n = x_ctx.shape[1]
    w = x_ctx.new_zeros(x_ctx.shape[0], x_ctx.shape[2])  # [B, d]
    for eta in etas:
        residual = torch.einsum("bnd,bd->bn", x_ctx, w) - y_ctx  # [B, N]
        grad = torch.einsum("bn,bnd->bd", residual, x_ctx) / n  # [B, d]
        w = w - eta * grad
    return torch.einsum("bmd,bd->bm", x_q, w)


def gdpp_predict(
    x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, etas: Sequence[float] | Tensor, gammas: Sequence[float] | Tensor
) -> Tensor:
    """GD++ with per-step (η_l, γ_l). Shapes as `gd_predict`; differentiable in etas and gammas.

    Written in the residual form of the LSA token stream: r_i (context y-slots) starts at y_i, s (query slot)
    at 0; step l: r ← r − (η/N) X Xᵀ r, s ← s − (η/N) x_qᵀ Xᵀ r, then x ← (I − γ XᵀX) x. Prediction −s.
    """
    etas, gammas = _as_steps(etas, x_ctx), _as_steps(gammas, x_ctx)
    if etas.shape != gammas.shape:
        raise ValueError(f"gammas: must have one value per step ({etas.numel()}), got {gammas.numel()}")
    n = x_ctx.shape[1]
    x, q, r = x_ctx, x_q, y_ctx
    s = x_q.new_zeros(x_q.shape[:2])  # [B, m]
    for eta, gamma in zip(etas, gammas):
        xr = torch.einsum("bnd,bn->bd", x, r)  # [B, d] = Xᵀr
        r_new = r - eta / n * torch.einsum("bnd,bd->bn", x, xr)
        s = s - eta / n * torch.einsum("bmd,bd->bm", q, xr)
        gram = torch.einsum("bnd,bne->bde", x, x)  # [B, d, d] = XᵀX
        x = x - gamma * torch.einsum("bnd,bde->bne", x, gram)
        q = q - gamma * torch.einsum("bmd,bde->bme", q, gram)
        r = r_new
    return -s


class GD:
    """Learner: k GD steps with steps `etas` (one per step; repeat one value for tied GD)."""

    def __init__(self, etas: Sequence[float]):
        self.etas = [float(e) for e in etas]
        self.name = f"gd:{len(self.etas)}"

    def predict(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor:
        return gd_predict(x_ctx, y_ctx, x_q, self.etas)


class GDPlusPlus:
    """Learner: k GD++ steps with per-step (η_l, γ_l)."""

    def __init__(self, etas: Sequence[float], gammas: Sequence[float]):
        self.etas = [float(e) for e in etas]
        self.gammas = [float(g) for g in gammas]
        if len(self.etas) != len(self.gammas):
            raise ValueError(f"gammas: must have one value per step ({len(self.etas)}), got {len(self.gammas)}")
        self.name = f"gd++:{len(self.etas)}"

    def predict(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor:
        return gdpp_predict(x_ctx, y_ctx, x_q, self.etas, self.gammas)
