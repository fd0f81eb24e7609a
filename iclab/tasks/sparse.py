"""Sparse linear regression (Garg et al.): w has `sparsity` non-zero coordinates on a uniformly random support."""

from __future__ import annotations

import torch
from torch import Tensor

from iclab.tasks.linear import LinearRegressionTask

__all__ = ["SparseLinearTask"]


class SparseLinearTask(LinearRegressionTask):
    """y = wᵀx + ε with w the linear family's w (N(0, τ²I) by default, see `w_prior`) with all but k = sparsity
    coordinates set to zero; the support is a uniformly random k-subset of the d coordinates, drawn per prompt.

    Inputs and noise are the linear family's. Garg et al. use d = 20, k = 3 and report squared error / k.
    """

    def w_second_moment(self) -> Tensor:
        """Diagonal of E[w wᵀ], shape [d] (float64): the dense prior's times P(i in support) = k/d."""
        c = self.config
        return super().w_second_moment() * (c.sparsity / c.d)

    def sample_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        c = self.config
        w = super().sample_params(batch, generator=generator, device=device, dtype=dtype)["w"]  # [batch, d]
        # the k smallest of d i.i.d. uniforms sit at a uniformly random k-subset of the coordinates
        noise = torch.rand((batch, c.d), generator=generator, device=device)
        support = noise.argsort(dim=-1)[:, : c.sparsity]  # [batch, k]
        keep = torch.zeros((batch, c.d), dtype=torch.bool, device=device).scatter_(1, support, True)
        return {"w": w.masked_fill(~keep, 0.0)}
