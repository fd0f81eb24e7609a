"""In-context softmax regression (docs/papers.md §8): probability-vector targets softmax(Wx) ∈ R^k."""

from __future__ import annotations

import torch
from torch import Tensor

from iclab.tasks.base import Task

__all__ = ["SoftmaxRegressionTask"]


class SoftmaxRegressionTask(Task):
    """y = f(x) = softmax(W x) ∈ R^k (over the k = n_classes outputs), W ~ N(0, τ²) entries, τ = w_scale.

    Vector targets: y, f [B, T, k]; params {"W": [B, k, d]}. The targets are exact probability vectors: there is no
    label noise, and noise_var is ignored (not rejected: the config is shared by all families).
    """

    vector_targets = True

    def sample_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        c = self.config
        W = torch.randn((batch, c.n_classes, c.d), generator=generator, device=device, dtype=dtype) * c.w_scale
        return {"W": W}

    def evaluate(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        logits = torch.einsum("bkd,btd->btk", params["W"], x)  # [B, T, k]
        return torch.softmax(logits, dim=-1)  # [B, T, k]

    def add_noise(self, f: Tensor, *, generator: torch.Generator) -> Tensor:
        """No label noise: y = f (noise_var is ignored)."""
        return f
