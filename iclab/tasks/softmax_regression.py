"""In-context softmax regression (docs/papers.md §8): probability-vector targets softmax(Wx) ∈ R^k."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from iclab.config import TaskConfig
from iclab.tasks.base import Task
from iclab.validation import check_int

__all__ = ["SoftmaxRegressionConfig", "SoftmaxRegressionTask"]


@dataclass(frozen=True)
class SoftmaxRegressionConfig(TaskConfig):
    """Probability-vector targets softmax(Wx) ∈ R^k (`SoftmaxRegressionTask`)."""

    name: ClassVar[str] = "softmax_regression"

    n_classes: int = 3
    """output dimension k (targets softmax(Wx) ∈ R^k)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("task.n_classes", self.n_classes, 2)

    @property
    def target_dim(self) -> int | None:
        return self.n_classes


class SoftmaxRegressionTask(Task[SoftmaxRegressionConfig]):
    """y = f(x) = softmax(W x) ∈ R^k (over the k = n_classes outputs), W ~ N(0, τ²) entries, τ = w_scale.

    Vector targets: y, f [B, T, k]; params {"W": [B, k, d]}. The targets are exact probability vectors: there is no
    label noise, and noise_var is ignored.
    """

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
