"""Token layouts: how prompts become token sequences, and how predictions are read back out.

"concat" (von Oswald): token j is [x_j, y_j] ∈ R^{d+1}; a query token is [x_q, 0]. The LSA construction writes
−ŷ into the query's y-slot, so the readout is the *negated* final y-slot.
"""

from __future__ import annotations

import torch
from torch import Tensor

from iclab.tasks.base import Prompts

__all__ = ["ConcatLayout"]


class ConcatLayout:
    """Tokens [batch, n_ctx + n_queries, d + 1]; the first n_ctx tokens are context (keys/values)."""

    name = "concat"

    def encode(self, prompts: Prompts) -> Tensor:
        return self.encode_parts(prompts.x_ctx, prompts.y_ctx, prompts.x_q)

    @staticmethod
    def encode_parts(x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d] → tokens [B, n + m, d + 1] (query y-slots 0)."""
        ctx = torch.cat([x_ctx, y_ctx.unsqueeze(-1)], dim=-1)  # [B, n, d+1]
        qry = torch.cat([x_q, x_q.new_zeros((*x_q.shape[:-1], 1))], dim=-1)  # [B, m, d+1]
        return torch.cat([ctx, qry], dim=1)

    @staticmethod
    def readout(tokens: Tensor, n_ctx: int) -> Tensor:
        """tokens [B, n + m, d + 1] → predictions [B, m] = −(query y-slots)."""
        return -tokens[:, n_ctx:, -1]
