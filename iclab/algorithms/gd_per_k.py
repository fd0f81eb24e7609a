"""One GD step from w = 0 whose step size is tuned separately for every context length k.

With k present context points, one step on L(w) = 1/(2k) Σ_i (wᵀx_i − y_i)² from w = 0 (the convention of
`iclab.algorithms.gd`) gives w = (η_k / k) Σ_i y_i x_i. `gd:1` uses ONE η, tuned at the task's full context length,
for every k; this learner uses the η_k that minimises the expected query ½·MSE at each k:

* i.i.d.-coordinate inputs and isotropic w: the closed form `iclab.theory.gd1_optimal_eta` with n = k. For
  x ~ N(0, I) it is η_k = k / (k + d + 1 + σ²/τ²), i.e. w = Xᵀy / (k + d + 1 + σ²/τ²) — the optimal one-layer
  linear-attention predictor at length k (Mahankali et al., docs/papers.md §6);
* anything else: `iclab.algorithms.tuning.tune_steps` on the same task with n_points = k.

Why (Akyürek et al., docs/papers.md §4): a trained transformer reads k from its context, so the GD hypothesis it is
tested against should be the best one-step GD at each k. One η for every k overshoots at small k (for d = 3,
n = 8, σ² = 0: η = 0.67 where η₁ = 0.2 is best), and that mismatch, not the model, then dominates a comparison
averaged over k.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from iclab.algorithms.base import MaskedLearner
from iclab.tasks.linear import LinearRegressionTask

__all__ = ["PerKGD", "per_k_etas"]


class PerKGD(MaskedLearner):
    """Learner: one GD step from w = 0 with step etas[k − 1] when k context points are present (k = 1 … len(etas));
    w stays 0 with no context. More than len(etas) present points is an error (no step was tuned for them)."""

    def __init__(self, etas: Sequence[float]):
        self.etas = [float(e) for e in etas]
        if not self.etas or not all(math.isfinite(e) for e in self.etas):
            raise ValueError(f"etas: must be a non-empty list of finite numbers, got {list(etas)}")
        self.name = "gd:1:per-k"

    def _step(self, n: Tensor, like: Tensor) -> Tensor:
        """η_n / n for present counts n [...] (0 where n = 0) → [...] in like's dtype."""
        if int(n.max()) > len(self.etas):
            raise ValueError(f"{int(n.max())} context points present; steps were tuned for k = 1 … {len(self.etas)}")
        table = torch.as_tensor([0.0, *self.etas], dtype=like.dtype, device=like.device)  # η_0 = 0: no context
        return table[n] / n.clamp_min(1).to(like.dtype)

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n] (masked rows zero), x_q [B, m, d], mask [B, n] → [B, m]."""
        scale = self._step(mask.sum(-1), x_ctx)  # [B]
        w = scale.unsqueeze(-1) * torch.einsum("bn,bnd->bd", y_ctx, x_ctx)  # [B, d]
        return torch.einsum("bmd,bd->bm", x_q, w)

    def scalar_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T]: prediction t from the exclusive cumulative sum b_t = Σ_{i<t} y_i x_i."""
        yx = y.unsqueeze(-1) * x  # [B, T, d]
        b = torch.cat([torch.zeros_like(yx[:, :1]), yx[:, :-1].cumsum(1)], dim=1)  # [B, T, d], b_0 = 0
        scale = self._step(torch.arange(x.shape[1], device=x.device), x)  # [T]
        return scale * torch.einsum("btd,btd->bt", x, b)


def per_k_etas(task: Any, max_k: int | None = None) -> list[float]:
    """The tuned one-step η_k for k = 1 … max_k (default: the task's n_points) on a linear-regression task."""
    from iclab.algorithms.tuning import closed_form_gd1_eta, tune_steps  # tuning imports the GD module

    if not isinstance(task, LinearRegressionTask):
        raise ValueError(f"per-k tuned GD needs a linear-regression task, got {type(task).__name__}")
    max_k = task.config.n_points if max_k is None else max_k
    if max_k < 1:
        raise ValueError(f"max_k: must be >= 1, got {max_k}")
    etas = []
    for k in range(1, max_k + 1):
        at_k = type(task)(replace(task.config, n_points=k))
        eta = closed_form_gd1_eta(at_k)
        etas.append(eta if eta is not None else tune_steps(at_k, 1).etas[0])
    return etas
