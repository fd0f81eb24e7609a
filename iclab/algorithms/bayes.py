"""dMMSE: the Bayes posterior mean for a prior uniform over a finite task pool (Raventós et al., docs/papers.md §3).

With pool w_1 … w_M (uniform prior) and y = wᵀx + ε, ε ~ N(0, σ²), the posterior over the pool given the present
context points j is

    p(m | ctx) = softmax_m(−(1/2σ²) Σ_j (y_j − w_mᵀx_j)²),    ŵ = Σ_m p(m | ctx) w_m,    ŷ = x_qᵀŵ.

An empty context gives the pool mean (the prior mean of this prior), not 0 as for other learners. The squared
residuals are summed directly (no XᵀX expansion, which would cancel catastrophically when σ² is small) and the
log-weights [B, M] are normalised with logsumexp, so weights that underflow exp() are still exact. The prefix fast
path takes an exclusive cumulative sum of the squared residuals over the sequence: prefix t sees points < t.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.registry import LearnerSpec, check_args, parse_dtype, parse_real, spec_string

__all__ = ["DMMSE", "LEARNERS", "dmmse_log_posterior"]


def dmmse_log_posterior(x_ctx: Tensor, y_ctx: Tensor, mask: Tensor, pool: Tensor, noise_var: float) -> Tensor:
    """log p(m | ctx) [B, M] for x_ctx [B, n, d], y_ctx [B, n], mask [B, n] bool, pool [M, d], σ² > 0."""
    residual = y_ctx.unsqueeze(1) - torch.einsum("bnd,md->bmn", x_ctx, pool)  # [B, M, n]
    sse = (residual.square() * mask.unsqueeze(1).to(residual.dtype)).sum(-1)  # [B, M]
    logits = -sse / (2 * noise_var)
    return logits - logits.logsumexp(-1, keepdim=True)


class DMMSE(MaskedLearner):
    """Discrete MMSE estimator over a finite pool: pool [M, d] (the task's `pool_params()["w"]`), σ² > 0.

    `dtype=torch.float64` computes in float64 and casts back. `chunk_elements` bounds one batch of residuals
    (prompts × M × points) in both `predict` and `predict_prefixes`.
    """

    def __init__(self, pool: Tensor, noise_var: float, dtype: torch.dtype | None = None):
        pool = torch.as_tensor(pool)
        if pool.dim() != 2 or pool.shape[0] < 1:
            raise ValueError(f"pool: must be a [M, d] tensor with M >= 1, got shape {tuple(pool.shape)}")
        if not (math.isfinite(noise_var) and noise_var > 0):
            raise ValueError(f"noise_var: must be a finite number > 0 (dMMSE needs σ² > 0), got {noise_var}")
        self.pool = pool.detach().to("cpu", torch.float64)
        self.noise_var = float(noise_var)
        self.dtype = dtype
        self.name = f"dmmse:{self.noise_var:g}"
        self._pools: dict[tuple, Tensor] = {}

    def _pool(self, like: Tensor) -> Tensor:
        key = (like.device, like.dtype)
        if key not in self._pools:  # one host→device copy per device and dtype, not one per call
            self._pools[key] = self.pool.to(device=like.device, dtype=like.dtype)
        return self._pools[key]

    def _check(self, d: int) -> None:
        if d != self.pool.shape[1]:
            raise ValueError(f"dmmse: the pool has d = {self.pool.shape[1]}, the inputs have d = {d}")

    def _step(self, width: int) -> int:
        return max(1, self.chunk_elements // max(1, self.pool.shape[0] * width))

    def log_posterior(self, x_ctx: Tensor, y_ctx: Tensor, mask: Tensor | None = None) -> Tensor:
        """log p(m | ctx) [B, M] over the pool (mask [B, n] bool or None: all present), in the compute dtype."""
        self._check(x_ctx.shape[-1])
        ct = self.dtype or x_ctx.dtype
        if mask is None:
            mask = torch.ones(x_ctx.shape[:2], dtype=torch.bool, device=x_ctx.device)
        x_ctx, y_ctx = x_ctx.to(ct), y_ctx.to(ct)
        pool = self._pool(x_ctx)
        step = self._step(x_ctx.shape[1])
        parts = [
            dmmse_log_posterior(x_ctx[s : s + step], y_ctx[s : s + step], mask[s : s + step], pool, self.noise_var)
            for s in range(0, x_ctx.shape[0], step)
        ]
        return torch.cat(parts) if parts else x_ctx.new_zeros(0, pool.shape[0])

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d], mask [B, n] → [B, m] posterior-mean predictions."""
        ct = self.dtype or x_ctx.dtype
        log_p = self.log_posterior(x_ctx, y_ctx, mask)  # [B, M]
        w = log_p.exp() @ self._pool(log_p)  # [B, d]
        return torch.einsum("bmd,bd->bm", x_q.to(ct), w).to(x_q.dtype)

    def predict_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T]: prediction t from points < t (t = 0: the pool mean), cumulative sums."""
        if y.dim() == 3:
            return super().predict_prefixes(x, y)
        self._check(x.shape[-1])
        out_dtype, ct = x.dtype, self.dtype or x.dtype
        x, y = x.to(ct), y.to(ct)
        pool = self._pool(x)
        out = []
        step = self._step(x.shape[1])
        for s in range(0, x.shape[0], step):
            xc, yc = x[s : s + step], y[s : s + step]
            residual = yc.unsqueeze(1) - torch.einsum("btd,md->bmt", xc, pool)  # [b, M, T]
            # exclusive sum: pad with an exact zero rather than subtract the inclusive sum
            sq = residual[..., :-1].square()
            sse = torch.cat([torch.zeros_like(residual[..., :1]), sq.cumsum(-1)], dim=-1)  # [b, M, T]
            log_p = torch.log_softmax(-sse / (2 * self.noise_var), dim=1)  # [b, M, T], normalised over the pool
            w = torch.einsum("bmt,md->btd", log_p.exp(), pool)  # [b, T, d]
            out.append(torch.einsum("btd,btd->bt", xc, w))
        return torch.cat(out).to(out_dtype)


# ----------------------------------------------------------------------------------------------------------------
# registry entry


def _dmmse(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> DMMSE:
    check_args(args, kwargs, 1, ("float64",))
    config = getattr(task, "config", None)
    if config is None or not hasattr(task, "pool_params"):
        raise ValueError("needs a task with a finite task pool (task.pool_size > 0)")
    if config.pool_size < 1:
        raise ValueError("the task has no finite pool (task.pool_size = 0); dMMSE is Bayes for a pool prior")
    pool = task.pool_params(dtype=torch.float64)
    if "w" not in pool:
        raise ValueError(f"needs a linear task pool with w; task {config.name!r} pools {', '.join(sorted(pool))}")
    if args:
        sigma2 = parse_real("SIGMA2", args[0], low=0.0, strict=True)
    else:
        sigma2 = float(config.noise_var)
        if sigma2 <= 0:
            raise ValueError("SIGMA2: the task is noiseless (noise_var = 0); give SIGMA2 > 0 (dmmse:0.25)")
    learner = DMMSE(pool["w"], sigma2, dtype=parse_dtype(kwargs))
    learner.name = spec_string("dmmse", args, kwargs)
    return learner


LEARNERS: dict[str, LearnerSpec] = {
    "dmmse": LearnerSpec(
        _dmmse,
        "dmmse[:SIGMA2][:float64=1]",
        "Bayes posterior mean over the task's finite pool (Raventós dMMSE; default σ² = the task's noise_var)",
    ),
}
