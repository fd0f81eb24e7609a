"""The contract every sequence model keeps: a Learner that also defines its own training loss.

A model answers, like every algorithm (iclab.algorithms.base):
    predict(x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d]) -> [B, m]
    predict_prefixes(x [B, T, d], y [B, T]) -> [B, T]          (optional: causal models predict every prefix at once)
and for the trainer:
    training_loss(prompts) -> scalar tensor                   (default: ½·MSE at the queries, von Oswald's loss;
                                                               causal models with predict_prefixes: ½·MSE over
                                                               every prefix, Garg's loss)
    loss_name                                                 ("half_mse", "half_mse_all_prefixes", "nll")
The trainer never branches on the kind of model: it calls `training_loss`, and evaluates `predict_prompts`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from iclab.models.hooks import HookedModule
from iclab.tasks.base import Prompts

__all__ = ["ICLModel", "seeded_generator"]


def seeded_generator(generator: torch.Generator | None) -> torch.Generator:
    """`generator`, or a fresh CPU generator seeded 0 when None: a model built without one is reproducible and
    never draws from (or advances) the global RNG (docs/conventions.md §6)."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


class ICLModel(HookedModule):
    """Base class of iclab's models (hook points, `run_with_cache`, the Learner and training contract)."""

    @property
    def loss_name(self) -> str:
        """What `training_loss` measures (the trainer logs it as train_<loss_name>)."""
        return "half_mse_all_prefixes" if hasattr(self, "predict_prefixes") else "half_mse"

    @property
    def name(self) -> str:
        return self.config.name  # type: ignore[attr-defined]

    def predict(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d] → predictions [B, m]."""
        raise NotImplementedError

    def predict_prompts(self, prompts: Prompts) -> Tensor:
        """[B, n_queries] predictions for the prompts' queries."""
        return self.predict(prompts.x_ctx, prompts.y_ctx, prompts.x_q)

    def training_loss(self, prompts: Prompts) -> Tensor:
        """Scalar loss of one training batch: ½·mean squared error at the queries, or, for models that predict
        every prefix in one causal pass (`predict_prefixes`), over the prediction of every point of the prompt."""
        if hasattr(self, "predict_prefixes"):
            return 0.5 * ((self.predict_prefixes(prompts.x, prompts.y) - prompts.y) ** 2).mean()
        return 0.5 * ((self.predict_prompts(prompts) - prompts.y_q) ** 2).mean()
