"""Reproduction: *Pretraining task diversity and the emergence of non-Bayesian in-context learning for regression*
(Raventós et al., NeurIPS 2023), docs/papers.md §3.

Setting: y = wᵀx + ε, x ~ N(0, I_d), ε ~ N(0, σ²); pretraining draws w uniformly from a finite pool of M tasks
w_1 … w_M ~ N(0, I) (task.pool_size, drawn once from task.pool_seed), M = 2^1, 2^2, …; a causal GPT predicts y_k from
(x_1, y_1, …, x_k) at each of the K positions of a prompt. Every M and every seed is one member of ONE ensemble run
(iclab.experiments.grouping: pool_size and the seed are per-member fields), so the sweep costs about one training
run of E = (number of M) × seeds members.

Evaluation, on prompt sets of this module's own (the trainer's held-out set of a pooled run comes from its pool):

* **pool tasks**: w drawn from the member's own training pool (same pool_seed, same M);
* **fresh tasks**: w ~ N(0, I), never in any pool (task.pool_size = 0), the same prompts for every M and seed.

Errors are Raventós's: (ŷ − wᵀx)² against the NOISELESS target, divided by d, averaged over the K positions and
the prompts (their code: per-position MSE / d, the mean over positions logged). Baselines on the same prompts:
ridge with λ = σ²/τ² = σ² (the Bayes estimator for the Gaussian prior, iclab.algorithms.least_squares.Ridge) and
dMMSE (the Bayes estimator for the uniform prior on the pool, iclab.algorithms.bayes.DMMSE).

The threshold M* (located, never assumed): on fresh tasks, Δ_dMMSE(M) and Δ_ridge(M) are the mean squared
distances (/ d) between the model's predictions and dMMSE's / ridge's on the same prompts (Raventós log these
as "Transformer | dMMSE" and "Transformer | Ridge"). r(M) = ln(Δ_dMMSE / Δ_ridge) is negative while the model
tracks dMMSE and positive once it tracks ridge; log₂ M* is the first upward zero crossing of r, linearly
interpolated in log₂ M between the two grid points around it (`locate_threshold`). M* is located per seed; the
report gives each seed's value, their mean and spread (max − min, in log₂ M).

Claims (tolerances: standard errors over prompts and the spread over seeds, or a stated allowance):

* small M (the smallest pool): the model's fresh-task error is ≫ ridge's (≥ 2×), its predictions are closer to
  dMMSE's than to ridge's (r < 0), and on the pool tasks it is near dMMSE (within the stated allowance);
* large M (the largest pool): the model's fresh-task error is ridge's within the stated allowance;
* a threshold is located inside the grid for every seed, with its seed spread;
* comparison with the paper's threshold at d = 8 (~2^13–2^14, their Fig. 2; docs/papers.md §3): at paper scale
  M* must fall within a grid step of it; at smoke scale d is smaller and training far shorter, and the claim is the
  direction the paper reports (the threshold grows with d): M* below the d = 8 value.

Scales: smoke — d = 3, K = 6, a 2-layer GPT of width 32, 6 000 steps, M = 2^1 … 2^11 (every other power), 2 seeds
(measured numbers in `SCALES`' comment: 6/6 claims; M* ≈ 2^4.55; beyond it the models come within ~1.2x of ridge);
paper — Raventós's d = 8,
K = 16, σ² = 0.25, GPT 8 layers, 2 heads, width 128, batch 256, Adam 1e-3, 500k steps, M = 2^1 … 2^20 (a GPU budget).

results.json "metrics": {"setting", "pool_sizes", "fresh", "pool", "distance", "threshold", "wall_time_s"}.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from iclab.algorithms.bayes import DMMSE
from iclab.algorithms.least_squares import Ridge
from iclab.config import EvalConfig, ExperimentConfig, TrainConfig
from iclab.evaluation import prefix_predictions
from iclab.experiments.driver import Analysis, Context, Reproduction
from iclab.experiments.raventos_claims import (
    PAPER_LOG2_THRESHOLD,
    figures,
    locate_threshold,
    raventos_claims,
    tables,
)
from iclab.models.gpt import GPTConfig
from iclab.report import Claim
from iclab.tasks import Prompts, make_task
from iclab.tasks.linear import LinearConfig
from iclab.theory import ridge_bayes_lambda
from iclab.training.trainer import resolve_device
from iclab.validation import check_int

__all__ = ["PAPER_LOG2_THRESHOLD", "SCALES", "Raventos", "RaventosOptions", "Scale", "locate_threshold"]


@dataclass(frozen=True)
class Scale:
    """A reproduction scale: the task (d, K = n_points + 1 positions, σ²), the GPT, its training, the pool sizes
    M = 2^k for k in `log2_pools`, the prompts per evaluation set, and the allowances of the claims (stated with
    their reasons in `SCALES`' comment)."""

    d: int
    n_points: int
    noise_var: float
    layers: int
    heads: int
    width: int
    mlp_ratio: int
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    log2_pools: tuple[int, ...]
    n_eval: int
    ridge_allowance: float
    """largest relative excess of the model's fresh-task error over ridge's at the largest M (besides 3 SE)"""
    pool_allowance: float
    """largest excess of the model's pool-task error over dMMSE's at the smallest M, as a fraction of the gap from
    dMMSE to ridge on those tasks"""
    train_eval_prompts: int = 256
    """the trainer's own held-out set per member (its pool; this module evaluates on sets of its own)"""


# smoke: d = 3, K = 6 positions, σ² = 0.25 and a 2-layer GPT (width 32, 2 heads) for 6 000 Adam steps of batch 64 at
# lr 3e-3 (warm-up 500, cosine); 6 pool sizes × 2 seeds are one 12-member ensemble. Measured on the idle 2-core
# machine (seeds 0, 1; 2 000 prompts per set): 217 s wall, 6 of 6 claims. M = 2 tracks dMMSE (fresh 5.25x ridge;
# Δ_dMMSE/Δ_ridge 0.03; pool within 0.005 of dMMSE on the dMMSE-to-ridge scale); log2 M* = 4.54 / 4.56. Beyond M*
# the models come within ~1.2x of ridge (0.557 vs 0.458 at 2^11; relative excess 0.21, allowed 0.38). With 2 500
# steps (83 s) the same grid held 5 of 6: M* = 2^4.69 / 2^4.25, but the models stayed ~1.4x above ridge past M*
# (0.65 vs 0.458; excess 0.42 vs 0.42 allowed). dMMSE meets ridge by 2^9 at d = 3, so the grid stops at 2^11. An
# earlier d = 4, 1 500-step, lr 1e-3 smoke left every M >= 2^3 on the ICL plateau (2 / 6 claims).
# Allowances: the large-M claim allows 25 % for the short training; at M = 2 the first positions, before the
# context identifies the task, cost the model more than dMMSE (the pool claim allows half the dMMSE-to-ridge gap).
# paper: Raventós et al.'s code (github.com/mansheej/icl-task-diversity, icl/configs/example.py): d = 8, 16 points,
# noise scale 0.5 (σ² = 0.25), GPT 8 layers / 2 heads / width 128, batch 256, Adam 1e-3 with a triangular schedule
# (linear warm-up for 250k steps, linear decay to 0 at 500k; here warmup_cosine with the same 250k warm-up), M from
# 2^1 to 2^20. The allowances are their Fig. 2 read off (the models at 2^20 lie on ridge within the line width).
SCALES = {
    "smoke": Scale(
        d=3,
        n_points=5,
        noise_var=0.25,
        layers=2,
        heads=2,
        width=32,
        mlp_ratio=2,
        steps=6000,
        batch_size=64,
        lr=3e-3,
        warmup_steps=500,
        log2_pools=(1, 3, 5, 7, 9, 11),
        n_eval=2000,
        ridge_allowance=0.25,
        pool_allowance=0.5,
        train_eval_prompts=128,
    ),
    "paper": Scale(
        d=8,
        n_points=15,
        noise_var=0.25,
        layers=8,
        heads=2,
        width=128,
        mlp_ratio=4,
        steps=500_000,
        batch_size=256,
        lr=1e-3,
        warmup_steps=250_000,
        log2_pools=tuple(range(1, 21)),
        n_eval=10_000,
        ridge_allowance=0.05,
        pool_allowance=0.25,
        train_eval_prompts=512,
    ),
    # for tests: seconds on a CPU; no claim is expected to hold
    "tiny": Scale(
        d=2,
        n_points=3,
        noise_var=0.25,
        layers=1,
        heads=1,
        width=8,
        mlp_ratio=1,
        steps=4,
        batch_size=8,
        lr=1e-3,
        warmup_steps=1,
        log2_pools=(1, 4),
        n_eval=64,
        ridge_allowance=0.25,
        pool_allowance=0.5,
        train_eval_prompts=16,
    ),
}


@dataclass(frozen=True)
class RaventosOptions:
    """`iclab reproduce raventos` options: --seeds N (models per pool size; their M* give the band)."""

    seeds: int = 2

    def __post_init__(self) -> None:
        check_int("seeds", self.seeds, 1)


def _config(sc: Scale, log2_m: int, seed: int) -> ExperimentConfig:
    return ExperimentConfig(
        # n_points context pairs + 1 query: K = n_points + 1 positions, each predicted from the points before it
        task=LinearConfig(
            d=sc.d, n_points=sc.n_points, x_dist="gaussian", x_scale=1.0, noise_var=sc.noise_var, pool_size=2**log2_m
        ),
        model=GPTConfig(
            layers=sc.layers, heads=sc.heads, width=sc.width, mlp_ratio=sc.mlp_ratio, max_points=sc.n_points + 1
        ),
        train=TrainConfig(
            steps=sc.steps,
            batch_size=sc.batch_size,
            lr=sc.lr,
            schedule="warmup_cosine",
            warmup_steps=sc.warmup_steps,
            eval_every=max(1, sc.steps // 2),
            checkpoint_every=max(1, sc.steps // 2),
            seed=seed,
        ),
        # the trainer's held-out set only follows training; every member evaluates every set (E² work), keep it small
        eval=EvalConfig(n_prompts=sc.train_eval_prompts),
        name=_name(log2_m, seed),
    )


def _name(log2_m: int, seed: int) -> str:
    return f"raventos-m2e{log2_m}-seed{seed}"


class Raventos(Reproduction):
    """Raventós et al.: a GPT per task-pool size M (× seeds), against dMMSE and ridge on pool and fresh tasks."""

    name = "raventos"
    summary = "task diversity threshold: a GPT switches from dMMSE to ridge as the task pool grows (Raventós et al.)"
    scales = SCALES
    Options = RaventosOptions

    def title(self, ctx: Context) -> str:
        return (
            f"Raventós et al. — the task-diversity threshold of in-context regression ({ctx.scale_name} scale, "
            f"d = {ctx.scale.d})"
        )

    def configs(self, scale: Scale, options: RaventosOptions) -> list[ExperimentConfig]:
        return [_config(scale, k, s) for s in range(options.seeds) for k in scale.log2_pools]

    def analyse(self, ctx: Context) -> Analysis:
        sc: Scale = ctx.scale
        seeds = ctx.options.seeds
        pools = list(sc.log2_pools)
        first = ctx.trained[_name(pools[0], 0)].config
        lam = ridge_bayes_lambda(sc.noise_var, first.task.w_scale**2)
        ridge = Ridge(lam)
        # float64 on the run's device: at paper scale dMMSE over 2^20 tasks is ~10^12 operations per prompt set
        dev = resolve_device(ctx.device)
        fresh = _prompts(dataclasses.replace(first.task, pool_size=0), sc.n_eval, first.eval.seed).to(dev)
        ridge_fresh_pred = _predict(ridge, fresh)
        ridge_fresh = _err(ridge_fresh_pred, _f(fresh), sc.d)  # [B]

        # per M: the baselines; per (seed, M): the model. Errors per prompt, averaged over positions.
        dm_fresh, dm_pool, rg_pool = [], [], []
        model_fresh = np.zeros((seeds, len(pools), 2))  # mean, standard error over prompts
        model_pool = np.zeros((seeds, len(pools), 2))
        dist = np.zeros((seeds, len(pools), 2))  # Δ_dMMSE, Δ_ridge on fresh tasks
        log_ratio_se = np.zeros((seeds, len(pools)))
        for j, k in enumerate(pools):
            task_cfg = ctx.trained[_name(k, 0)].config.task
            task = make_task(task_cfg)
            dmmse = DMMSE(task.pool_params(dtype=torch.float64)["w"], sc.noise_var)
            pool = _prompts(task_cfg, sc.n_eval, first.eval.seed + 1).to(dev)
            dm_fresh_pred = _predict(dmmse, fresh)
            dm_fresh.append(_stat(_err(dm_fresh_pred, _f(fresh), sc.d)))
            dm_pool.append(_stat(_err(_predict(dmmse, pool), _f(pool), sc.d)))
            rg_pool.append(_stat(_err(_predict(ridge, pool), _f(pool), sc.d)))
            for s in range(seeds):
                model = ctx.trained[_name(k, s)].result.model.eval().to(dev, torch.float64)
                pred = _predict(model, fresh)
                model_fresh[s, j] = _stat(_err(pred, _f(fresh), sc.d))
                model_pool[s, j] = _stat(_err(_predict(model, pool), _f(pool), sc.d))
                to_dm, to_rg = _err(pred, dm_fresh_pred, sc.d), _err(pred, ridge_fresh_pred, sc.d)
                dist[s, j] = to_dm.mean(), to_rg.mean()
                log_ratio_se[s, j] = _log_ratio_se(to_dm, to_rg)

        log2_m = np.array(pools, dtype=float)
        per_seed = [locate_threshold(log2_m, np.log(dist[s, :, 0] / dist[s, :, 1])) for s in range(seeds)]
        located = [x for x, status in per_seed if x is not None]
        threshold = {
            "definition": "first upward zero crossing of ln(Δ_dMMSE/Δ_ridge) on fresh tasks, interpolated in log2 M",
            "per_seed_log2": [x for x, _ in per_seed],
            "per_seed_status": [status for _, status in per_seed],
            "log2_mean": float(np.mean(located)) if located else None,
            "log2_spread": float(np.ptp(located)) if located else None,
            "paper_log2_d8": list(PAPER_LOG2_THRESHOLD),
        }
        metrics: dict[str, Any] = {
            "setting": {"d": sc.d, "positions": sc.n_points + 1, "noise_var": sc.noise_var, "ridge_lambda": lam},
            "pool_sizes": [2**k for k in pools],
            "log2_pool_sizes": pools,
            "fresh": {
                "ridge": _stat(ridge_fresh),
                "dmmse": dm_fresh,
                "model": model_fresh.tolist(),  # [seed][M] = [mean, standard error over prompts]
            },
            "pool": {"ridge": rg_pool, "dmmse": dm_pool, "model": model_pool.tolist()},
            "distance": {
                "to_dmmse": dist[..., 0].tolist(),  # [seed][M], fresh tasks
                "to_ridge": dist[..., 1].tolist(),
                "log_ratio_se": log_ratio_se.tolist(),
            },
            "threshold": threshold,
            "n_eval_prompts": sc.n_eval,
            "seeds": seeds,
        }
        figs = figures(ctx.figures, metrics)
        return Analysis(metrics, tables(metrics), figs)

    def claims(self, analysis: Analysis, ctx: Context) -> list[Claim]:
        return raventos_claims(analysis.metrics, ctx.scale, ctx.scale_name)


def _prompts(task_cfg: LinearConfig, count: int, seed: int) -> Prompts:
    """`count` prompts of the task (its pool if pool_size > 0, else fresh w ~ N(0, τ²I)), float64 on the CPU."""
    return make_task(task_cfg).sample(count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@torch.no_grad()
def _predict(learner: Any, prompts: Prompts) -> Tensor:
    """[B, K] predictions at every position k from the points before it."""
    return prefix_predictions(learner, prompts.x, prompts.y)


def _f(prompts: Prompts) -> Tensor:
    """The noiseless targets wᵀx [B, K] (linear tasks always carry them)."""
    assert prompts.f is not None
    return prompts.f


def _err(pred: Tensor, target: Tensor, d: int) -> np.ndarray:
    """[B] per-prompt squared error / d, averaged over the K positions (float64)."""
    return ((pred.double() - target.double()).square().mean(-1) / d).cpu().numpy()


def _stat(per_prompt: np.ndarray) -> list[float]:
    """[mean, standard error] of per-prompt values."""
    return [float(per_prompt.mean()), float(per_prompt.std(ddof=1) / math.sqrt(len(per_prompt)))]


def _log_ratio_se(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of ln(mean a / mean b) over paired prompts (delta method)."""
    n = len(a)
    cov = np.cov(np.stack([a, b]))
    ma, mb = a.mean(), b.mean()
    var = (cov[0, 0] / ma**2 + cov[1, 1] / mb**2 - 2 * cov[0, 1] / (ma * mb)) / n
    return float(math.sqrt(max(var, 0.0)))
