"""Sparse linear regression (Garg et al.): w has `sparsity` non-zero coordinates on a uniformly random support."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from iclab.tasks.linear import LinearConfig, LinearRegressionTask
from iclab.validation import check_int, fail

__all__ = ["SparseLinearConfig", "SparseLinearTask"]


@dataclass(frozen=True)
class SparseLinearConfig(LinearConfig):
    """Sparse linear regression: the linear family's w with all but `sparsity` coordinates zero."""

    name: ClassVar[str] = "sparse_linear"

    sparsity: int = 3
    """non-zero coordinates of w (k <= d)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("task.sparsity", self.sparsity, 1)
        if self.sparsity > self.d:
            fail("task.sparsity", f"an integer in [1, d = {self.d}]", self.sparsity)


class SparseLinearTask(LinearRegressionTask):
    """y = wᵀx + ε with w the linear family's w (N(0, τ²I) by default, see `w_prior`) with all but k = sparsity
    coordinates set to zero; the support is a uniformly random k-subset of the d coordinates, drawn per prompt.

    Inputs and noise are the linear family's. Garg et al. use d = 20, k = 3 and report squared error / k.
    """

    config: SparseLinearConfig

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
