"""In-context linear classification (Garg et al.'s and Bayesian-prism's linear classification; docs/papers.md §8)."""

from __future__ import annotations

import torch
from torch import Tensor

from iclab.tasks.base import Task

__all__ = ["LinearClassificationTask"]


class LinearClassificationTask(Task):
    """f = sign(wᵀx) ∈ {−1, +1} (sign(0) := +1), w ~ N(0, τ²I_d); y = f with each label flipped independently with
    probability flip_prob.

    params {"w": [B, d]} (`Prompts.w`), so linear learners and probes apply; f and y [B, T] hold ±1 in the
    requested dtype. noise_var is ignored (flip_prob is this family's label noise); so are w_prior and w_cov_diag.
    """

    def sample_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        w = torch.randn((batch, self.d), generator=generator, device=device, dtype=dtype) * self.config.w_scale
        return {"w": w}

    def evaluate(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        margin = torch.einsum("btd,bd->bt", x, params["w"])  # [B, T]
        return torch.where(margin >= 0, 1.0, -1.0).to(x.dtype)  # [B, T]

    def add_noise(self, f: Tensor, *, generator: torch.Generator) -> Tensor:
        """y = −f with probability flip_prob, independently per label; else f."""
        q = self.config.flip_prob
        if q == 0:
            return f
        flip = torch.rand(f.shape, generator=generator, device=f.device, dtype=f.dtype) < q  # [B, T]
        return torch.where(flip, -f, f)
