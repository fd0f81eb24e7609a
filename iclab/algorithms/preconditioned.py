"""Multi-step preconditioned GD with one full [d, d] preconditioner per step, and its numerical optimisation.

Ahn et al. (docs/papers.md §6): an L-layer linear transformer's stationary points implement L steps of
preconditioned GD, W ← W − A_l ∇L(W) from W₀ = 0 on L(W) = 1/(2N) Σ_i (Wᵀx_i − y_i)², with per-layer A_l (the
step size folded in). `layerwise_pgd_predict` runs it; `tune_preconditioners` minimises the ½·MSE of the L-step
predictor over all of A_1..A_L (L·d² free numbers, no form imposed) on fixed tuning prompts, starting from plain
GD (A_l ∝ I), so that a preconditioner ∝ Σ⁻¹ is found rather than assumed. For L = 1 the optimum is the linear
family's A* (iclab.theory.optimal_preconditioner; tests/test_ahn_preconditioned.py checks the two agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from iclab.metrics import half_mse
from iclab.tasks.base import Task

__all__ = ["LayerwisePGD", "TunedPreconditioners", "layerwise_pgd_predict", "tune_preconditioners"]


def layerwise_pgd_predict(x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, preconds: Tensor) -> Tensor:
    """L steps W ← W − A_l (S W − b) from W = 0 (S = XᵀX/N, b = Xᵀy/N); ŷ = x_qᵀ W.

    x_ctx [B, N, d], y_ctx [B, N], x_q [B, m, d], preconds [L, d, d] → [B, m]. Differentiable in preconds.
    """
    n = x_ctx.shape[1]
    S = torch.einsum("bnd,bne->bde", x_ctx, x_ctx) / n  # [B, d, d]
    b = torch.einsum("bnd,bn->bd", x_ctx, y_ctx) / n  # [B, d]
    w = torch.zeros_like(b)
    for a in preconds.to(x_ctx):
        grad = torch.einsum("bde,be->bd", S, w) - b  # [B, d] = ∇L(W)
        w = w - grad @ a.T  # rows A_l ∇L
    return torch.einsum("bmd,bd->bm", x_q, w)


class LayerwisePGD:
    """Learner: len(preconds) preconditioned GD steps with per-step A_l (`layerwise_pgd_predict`)."""

    takes_mask = False
    predicts_prefixes = False

    def __init__(self, preconds: Tensor):
        preconds = torch.as_tensor(preconds)
        if preconds.dim() != 3 or preconds.shape[1] != preconds.shape[2] or preconds.shape[0] < 1:
            raise ValueError(f"preconds: must be [L, d, d] with L >= 1, got shape {tuple(preconds.shape)}")
        if not torch.isfinite(preconds).all():
            raise ValueError("preconds: must be finite")
        self.preconds = preconds.detach()
        self.name = f"pgd-layerwise:{preconds.shape[0]}"

    def predict(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor:
        """x_ctx [B, N, d], y_ctx [B, N], x_q [B, m, d] → [B, m]."""
        if x_ctx.shape[-1] != self.preconds.shape[-1]:
            raise ValueError(
                f"preconds: are {self.preconds.shape[-1]}x{self.preconds.shape[-1]}, inputs d = {x_ctx.shape[-1]}"
            )
        return layerwise_pgd_predict(x_ctx, y_ctx, x_q, self.preconds)


@dataclass(frozen=True)
class TunedPreconditioners:
    """Optimised A_1..A_L ([L, d, d], float64) and the ½·MSE they reach on the tuning prompts."""

    preconds: Tensor
    half_mse: float
    method: str


def tune_preconditioners(
    task: Task, steps: int, *, n_prompts: int = 8000, seed: int = 777, max_iter: int = 300, rounds: int = 3
) -> TunedPreconditioners:
    """Minimise the ½·MSE of `steps` preconditioned GD steps over full A_1..A_L on `n_prompts` fresh float64 prompts
    drawn with `seed` (not the eval seed). L-BFGS (strong Wolfe) from two plain-GD starts A_l = a_l·I with distinct
    decaying and rising a_l (equal steps sit on a saddle of the step-symmetric loss); the better end is returned."""
    if steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps}")
    prompts = task.sample(n_prompts, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    d, n = task.config.d, task.config.n_points
    m2 = task.x_second_moment().mean().item()
    eta0 = n / (m2 * (n + d + 1))  # the one-step optimum of isotropic Gaussian inputs of variance m2
    eye = torch.eye(d, dtype=torch.float64)
    ramps = [torch.linspace(1.5, 0.5, steps, dtype=torch.float64)]
    if steps > 1:
        ramps.append(torch.linspace(0.5, 1.5, steps, dtype=torch.float64))
    best: tuple[Tensor, float] | None = None
    for ramp in ramps:
        params = (eta0 * ramp[:, None, None] * eye).clone().requires_grad_(True)  # [L, d, d]
        opt = torch.optim.LBFGS(
            [params], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12, tolerance_change=1e-15,
            line_search_fn="strong_wolfe",
        )  # fmt: skip

        def closure(params: Tensor = params, opt: torch.optim.LBFGS = opt) -> Tensor:
            opt.zero_grad()
            loss = half_mse(layerwise_pgd_predict(prompts.x_ctx, prompts.y_ctx, prompts.x_q, params), prompts.y_q)
            loss.backward()
            return loss

        for _ in range(rounds):
            opt.step(closure)
        with torch.no_grad():
            loss = half_mse(layerwise_pgd_predict(prompts.x_ctx, prompts.y_ctx, prompts.x_q, params), prompts.y_q)
        if math.isfinite(loss.item()) and (best is None or loss.item() < best[1]):
            best = (params.detach().clone(), loss.item())
    if best is None:
        raise RuntimeError("tune_preconditioners: every start diverged")
    method = f"L-BFGS over full A_1..A_{steps}, {len(ramps)} plain-GD starts, {n_prompts} tuning prompts"
    return TunedPreconditioners(best[0], best[1], method)
