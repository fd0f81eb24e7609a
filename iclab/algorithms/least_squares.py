"""Least-squares reference learners, batched over prompts: minimum-norm OLS and ridge."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["OLS", "Ridge", "ols_weights", "ridge_weights"]


def ols_weights(x_ctx: Tensor, y_ctx: Tensor) -> Tensor:
    """Minimum-norm least squares w = X⁺y. x_ctx [B, N, d], y_ctx [B, N] → [B, d] (any N vs d, any rank)."""
    return torch.einsum("bdn,bn->bd", torch.linalg.pinv(x_ctx), y_ctx)


def ridge_weights(x_ctx: Tensor, y_ctx: Tensor, lam: float) -> Tensor:
    """w = (XᵀX + λI)⁻¹Xᵀy (λ > 0). Shapes as `ols_weights`."""
    d = x_ctx.shape[-1]
    gram = x_ctx.transpose(-1, -2) @ x_ctx + lam * torch.eye(d, dtype=x_ctx.dtype, device=x_ctx.device)
    rhs = torch.einsum("bnd,bn->bd", x_ctx, y_ctx)
    return torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)


class OLS:
    name = "ols"

    def predict(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor:
        """[B, m] predictions x_qᵀ X⁺y."""
        return torch.einsum("bmd,bd->bm", x_q, ols_weights(x_ctx, y_ctx))


class Ridge:
    def __init__(self, lam: float):
        if not lam > 0:
            raise ValueError(f"ridge lambda: must be > 0, got {lam}")
        self.lam = float(lam)
        self.name = f"ridge:{lam:g}"

    def predict(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor:
        """[B, m] predictions x_qᵀ (XᵀX + λI)⁻¹Xᵀy."""
        return torch.einsum("bmd,bd->bm", x_q, ridge_weights(x_ctx, y_ctx, self.lam))
