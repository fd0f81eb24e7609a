"""Step-size tuning for GD and GD++ on the task distribution.

One GD step on inputs with i.i.d. coordinates (uniform or isotropic Gaussian) has a closed-form optimal step
(REFERENCE §6, `iclab.theory.gd1_optimal_eta`). Everything else — several steps, GD++'s γ, non-isotropic inputs
— is tuned numerically: L-BFGS with a strong-Wolfe line search on the ½·MSE of a fixed set of held-out tuning
prompts, in float64. Tied variants share one (η, γ) across steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iclab import theory
from iclab.algorithms.gd import gd_predict, gdpp_predict
from iclab.tasks.linear import LinearRegressionTask

__all__ = ["StepSizes", "closed_form_gd1_eta", "tune_steps"]


@dataclass(frozen=True)
class StepSizes:
    """Tuned per-step sizes (gammas all 0 for plain GD) and the tuning-set ½·MSE they reach."""

    etas: tuple[float, ...]
    gammas: tuple[float, ...]
    half_mse: float
    method: str


def closed_form_gd1_eta(task: LinearRegressionTask) -> float | None:
    """Optimal one-step η for i.i.d.-coordinate inputs and isotropic w; None where no closed form applies."""
    c = task.config
    if c.x_cov_diag is not None or c.w_cov_diag is not None:
        return None
    m2, m4 = theory.input_moments(c.x_dist, c.x_scale)
    return theory.gd1_optimal_eta(d=c.d, n=c.n_points, m2=m2, m4=m4, tau2=c.w_scale**2, sigma2=c.noise_var)


def tune_steps(
    task: LinearRegressionTask,
    steps: int,
    *,
    plus_plus: bool = False,
    tied: bool = False,
    n_prompts: int = 20_000,
    seed: int = 777,
) -> StepSizes:
    """Tune `steps` GD (or GD++) steps on `n_prompts` fresh prompts drawn with `seed` (not the eval seed)."""
    if steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps}")
    gen = torch.Generator().manual_seed(seed)
    prompts = task.sample(n_prompts, generator=gen, dtype=torch.float64)
    eta0 = closed_form_gd1_eta(task)
    if steps == 1 and not plus_plus and eta0 is not None:
        pred = gd_predict(prompts.x_ctx, prompts.y_ctx, prompts.x_q, [eta0])
        loss = 0.5 * ((pred - prompts.y_q) ** 2).mean().item()
        return StepSizes((eta0,), (0.0,), loss, "closed form")
    if eta0 is None:  # Gaussian-optimal step for the average input variance, a safe start
        m2 = task.x_second_moment().mean().item()
        eta0 = task.config.n_points / (m2 * (task.config.n_points + task.config.d + 1))
    n_free = 1 if tied else steps
    # Distinct, decaying starts: K-step GD loss is symmetric in the steps, so equal starts stay on that saddle.
    etas = (eta0 * torch.linspace(1.0, 0.5, n_free, dtype=torch.float64)).requires_grad_(True)
    gammas = torch.zeros(n_free, dtype=torch.float64, requires_grad=plus_plus)
    params = [etas, gammas] if plus_plus else [etas]

    def expand(v: torch.Tensor) -> torch.Tensor:
        return v.expand(steps) if tied else v

    def objective() -> torch.Tensor:
        if plus_plus:
            pred = gdpp_predict(prompts.x_ctx, prompts.y_ctx, prompts.x_q, expand(etas), expand(gammas))
        else:
            pred = gd_predict(prompts.x_ctx, prompts.y_ctx, prompts.x_q, expand(etas))
        return 0.5 * ((pred - prompts.y_q) ** 2).mean()

    opt = torch.optim.LBFGS(
        params, lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    with torch.no_grad():
        loss = objective().item()
    method = "L-BFGS on held-out prompts" + (" (tied)" if tied else "")
    return StepSizes(
        tuple(expand(etas).tolist()), tuple(expand(gammas).tolist()) if plus_plus else (0.0,) * steps, loss, method
    )
