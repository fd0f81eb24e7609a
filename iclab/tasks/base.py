"""The prompt container every task returns and every learner consumes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

__all__ = ["Prompts"]


@dataclass(frozen=True)
class Prompts:
    """A batch of in-context prompts: n_ctx context pairs followed by queries.

    Shapes: x [batch, n_ctx + n_queries, d]; y [batch, n_ctx + n_queries] (noisy targets);
    w [batch, d] the task vector; f [batch, n_ctx + n_queries] the noiseless targets wᵀx.
    """

    x: Tensor
    y: Tensor
    n_ctx: int
    w: Tensor | None = None
    f: Tensor | None = None

    @property
    def x_ctx(self) -> Tensor:
        """[batch, n_ctx, d]"""
        return self.x[:, : self.n_ctx]

    @property
    def y_ctx(self) -> Tensor:
        """[batch, n_ctx]"""
        return self.y[:, : self.n_ctx]

    @property
    def x_q(self) -> Tensor:
        """[batch, n_queries, d]"""
        return self.x[:, self.n_ctx :]

    @property
    def y_q(self) -> Tensor:
        """[batch, n_queries]"""
        return self.y[:, self.n_ctx :]

    @property
    def f_q(self) -> Tensor | None:
        """[batch, n_queries] noiseless query targets, where known."""
        return None if self.f is None else self.f[:, self.n_ctx :]

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Prompts:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        return replace(self, x=move(self.x), y=move(self.y), w=move(self.w), f=move(self.f))

    def scaled(self, *, input_scale: float = 1.0, target_scale: float = 1.0) -> Prompts:
        """Out-of-distribution copy: x → αx (targets follow, y = wᵀ(αx) + ε), or w → βw (y scales with β).

        Noise is kept as drawn; only the signal part of y changes.
        """
        assert self.f is not None, "scaling needs the noiseless targets f"
        noise = self.y - self.f
        f = self.f * input_scale * target_scale
        w = None if self.w is None else self.w * target_scale
        return replace(self, x=self.x * input_scale, y=f + noise, f=f, w=w)

    def __getitem__(self, index: slice) -> Prompts:
        def take(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index]

        return replace(self, x=self.x[index], y=self.y[index], w=take(self.w), f=take(self.f))
