"""Step-size tuning for GD and GD++ on the task distribution.

One GD step on inputs with i.i.d. coordinates (uniform or isotropic Gaussian) has a closed-form optimal step
(docs/papers.md §6, `iclab.theory.gd1_optimal_eta`). Everything else — several steps, GD++'s γ, non-isotropic inputs
— is tuned numerically: L-BFGS with a strong-Wolfe line search on the ½·MSE of a fixed set of held-out tuning
prompts, in float64. Tied variants share one (η, γ) across steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from iclab import theory
from iclab.algorithms.gd import gd_predict, gdpp_predict
from iclab.metrics import half_mse
from iclab.tasks.base import Prompts, Task

__all__ = ["StepSizes", "closed_form_gd1_eta", "tune_steps"]


@dataclass(frozen=True)
class StepSizes:
    """Tuned per-step sizes (gammas all 0 for plain GD) and the tuning-set ½·MSE they reach."""

    etas: tuple[float, ...]
    gammas: tuple[float, ...]
    half_mse: float
    method: str


def closed_form_gd1_eta(task: Task) -> float | None:
    """Optimal one-step η for i.i.d.-coordinate inputs and isotropic w; None where no closed form applies."""
    c = task.config
    anisotropic_x = c.x_cov_diag is not None or getattr(c, "x_condition", 1.0) != 1.0  # Σ ≠ I: no closed form
    if anisotropic_x or getattr(c, "w_cov_diag", None) is not None:
        return None
    m2, m4 = theory.input_moments(c.x_dist, c.x_scale)
    return theory.gd1_optimal_eta(d=c.d, n=c.n_points, m2=m2, m4=m4, tau2=c.w_scale**2, sigma2=c.noise_var)


def tune_steps(
    task: Task,  # a linear-regression task; only the input distribution and TaskConfig's fields are read
    steps: int,
    *,
    plus_plus: bool = False,
    tied: bool = False,
    n_prompts: int = 20_000,
    seed: int = 777,
    n_starts: int = 12,
) -> StepSizes:
    """Tune `steps` GD (or GD++) steps on `n_prompts` fresh prompts drawn with `seed` (not the eval seed)."""
    if steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps}")
    gen = torch.Generator().manual_seed(seed)
    prompts = task.sample(n_prompts, generator=gen, dtype=torch.float64)
    eta0 = closed_form_gd1_eta(task)
    if steps == 1 and not plus_plus and eta0 is not None:
        pred = gd_predict(prompts.x_ctx, prompts.y_ctx, prompts.x_q, [eta0])
        loss = half_mse(pred, prompts.y_q).item()
        return StepSizes((eta0,), (0.0,), loss, "closed form")
    if eta0 is None:  # Gaussian-optimal step for the average input variance, a safe start
        m2 = task.x_second_moment().mean().item()
        eta0 = task.config.n_points / (m2 * (task.config.n_points + task.config.d + 1))
    n_free = 1 if tied else steps
    n = task.config.n_points
    m2 = task.x_second_moment().mean().item()
    # The K-step losses are non-convex in (η, γ) with several local minima (e.g. K = 2 GD++ in the vO setting:
    # 0.102 from the decaying start vs 0.090 elsewhere). Multi-start: a deterministic decaying start (distinct
    # values: the GD loss is symmetric in the steps, so equal starts sit on a saddle) plus seeded random starts
    # over the plausible range, each run on a subset, then the best refined on all tuning prompts.
    rng = torch.Generator().manual_seed(seed + 1)
    starts = [(eta0 * torch.linspace(1.0, 0.5, n_free, dtype=torch.float64), torch.zeros(n_free, dtype=torch.float64))]
    for _ in range(n_starts - 1 if (steps > 1 or plus_plus) else 0):
        etas = eta0 * (0.3 + 6 * torch.rand(n_free, generator=rng, dtype=torch.float64))
        gammas = 0.6 / (n * m2) * torch.rand(n_free, generator=rng, dtype=torch.float64)
        starts.append((etas, gammas))
    subset = prompts[: min(len(prompts), 2000)]
    scored = [_lbfgs(subset, steps, e, g, plus_plus, tied, max_iter=60, rounds=1) for e, g in starts]
    best = min(scored, key=lambda r: r[2] if math.isfinite(r[2]) else math.inf)
    etas, gammas, loss = _lbfgs(prompts, steps, best[0], best[1], plus_plus, tied, max_iter=200, rounds=3)
    etas, gammas = etas.expand(steps).clone(), gammas.expand(steps).clone()
    if plus_plus and not tied:
        gammas[-1] = 0.0  # the last step's x-transform reaches no prediction: report 0, not its arbitrary start
    method = f"L-BFGS, {len(starts)} starts, on {n_prompts} tuning prompts" + (" (tied)" if tied else "")
    return StepSizes(tuple(etas.tolist()), tuple(gammas.tolist()) if plus_plus else (0.0,) * steps, loss, method)


def _lbfgs(
    prompts: Prompts,
    steps: int,
    etas0: torch.Tensor,
    gammas0: torch.Tensor,
    plus_plus: bool,
    tied: bool,
    max_iter: int,
    rounds: int,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Minimise the ½·MSE of GD / GD++ over the free (η, γ) from a start (one value each if tied, else K).

    Returns the free (etas, gammas, loss).
    """
    etas = etas0.clone().requires_grad_(True)
    gammas = gammas0.clone().requires_grad_(plus_plus)
    params = [etas, gammas] if plus_plus else [etas]

    def expand(v: torch.Tensor) -> torch.Tensor:
        return v.expand(steps) if tied else v

    def objective() -> torch.Tensor:
        if plus_plus:
            pred = gdpp_predict(prompts.x_ctx, prompts.y_ctx, prompts.x_q, expand(etas), expand(gammas))
        else:
            pred = gd_predict(prompts.x_ctx, prompts.y_ctx, prompts.x_q, expand(etas))
        return half_mse(pred, prompts.y_q)

    opt = torch.optim.LBFGS(
        params, lr=1.0, max_iter=max_iter, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    for _ in range(rounds):
        opt.step(closure)
    with torch.no_grad():
        loss = objective().item()
    return etas.detach(), gammas.detach(), loss
