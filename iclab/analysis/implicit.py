"""Akyürek et al.'s implicit linear model: how linear is a learner's in-context predictor, and which w is it?

For each prompt, the learner (a trained model or an algorithm: anything with predict(x_ctx, y_ctx, x_q)) answers
P probe queries (default P = 2d + 1) drawn from N(0, diag(s²)), s the per-coordinate RMS of the context inputs
(so probes look like the task's inputs), or given. Least squares with an intercept on those answers gives
ŷ(x) ≈ ŵᵀx + b̂ per prompt; its R² over the probes says how linear the predictor is (1 for OLS, ridge, GD; < 1 for
kNN or a model that is not). ŵ is then compared with the weights of reference learners (OLS, ridge, GD, …) fitted
by the same probes on the same contexts — exact for linear references — and with the task vector w where known:
per-prompt cosine and relative distance ‖ŵ − w_ref‖/‖w_ref‖, reported as mean and standard error over prompts.

The autograd "model cos" (cos of ∂ŷ/∂x_q between two learners, at the real queries) is already general:
`iclab.analysis.compare.compare_learners`. This module is the global, probe-based counterpart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from iclab.algorithms.registry import make_learner
from iclab.analysis.compare import Learner
from iclab.plotting import new_figure, save_figure, style_axes
from iclab.tasks.base import Prompts

__all__ = [
    "ImplicitFit",
    "fit_implicit",
    "implicit_summary",
    "make_references",
    "mean_se",
    "plot_implicit",
    "probe_queries",
]


@dataclass(frozen=True)
class ImplicitFit:
    """Per prompt: ŷ(x) ≈ wᵀx + bias on the probe queries (float64).

    w [B, d], bias [B], r2 [B] (1 − SSE/SST over the probes; 1 where the answers are constant),
    probes [B, P, d] the probe queries, preds [B, P] the learner's answers to them.
    """

    w: Tensor
    bias: Tensor
    r2: Tensor
    probes: Tensor
    preds: Tensor


def probe_queries(x_ctx: Tensor, n_probes: int | None = None, *, generator: torch.Generator) -> Tensor:
    """[B, P, d] Gaussian probe queries N(0, diag(s²)), s [d] = RMS of x_ctx over prompts and context points.

    x_ctx [B, n, d]; P defaults to 2d + 1 (Akyürek et al.). Drawn on x_ctx's device, in its dtype.
    """
    B, _, d = x_ctx.shape
    n_probes = 2 * d + 1 if n_probes is None else n_probes
    scale = x_ctx.double().pow(2).mean(dim=(0, 1)).sqrt()  # [d]
    z = torch.randn(B, n_probes, d, generator=generator, device=x_ctx.device, dtype=torch.float64)  # [B, P, d]
    return (z * scale).to(x_ctx.dtype)


def fit_implicit(
    learner: Learner,
    x_ctx: Tensor,
    y_ctx: Tensor,
    *,
    probes: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> ImplicitFit:
    """Fit the implicit linear model of `learner` on each prompt's context, from one batched predict call.

    x_ctx [B, n, d], y_ctx [B, n]; probes [B, P, d] or [P, d] (shared by every prompt), default
    `probe_queries(x_ctx, generator=generator)`. Needs P ≥ d + 1 (d weights and an intercept).
    """
    B, _, d = x_ctx.shape
    if probes is None:
        if generator is None:
            raise ValueError("generator: required to draw the probe queries (or give probes)")
        probes = probe_queries(x_ctx, generator=generator)
    if probes.dim() == 2:
        probes = probes.unsqueeze(0).expand(B, *probes.shape)  # [P, d] → [B, P, d]
    if probes.dim() != 3 or probes.shape[0] != B or probes.shape[2] != d:
        raise ValueError(f"probes: must be [{B}, P, {d}] or [P, {d}], got {list(probes.shape)}")
    if probes.shape[1] < d + 1:
        raise ValueError(f"probes: need at least d + 1 = {d + 1} probe queries per prompt, got {probes.shape[1]}")
    probes = probes.to(device=x_ctx.device, dtype=x_ctx.dtype)
    with torch.no_grad():
        preds = learner.predict(x_ctx, y_ctx, probes).double()  # [B, P]
    design = torch.cat([probes.double(), preds.new_ones(*preds.shape, 1)], dim=-1)  # [B, P, d + 1]
    coef = torch.linalg.lstsq(design, preds.unsqueeze(-1)).solution.squeeze(-1)  # [B, d + 1]
    sse = (preds - torch.einsum("bpk,bk->bp", design, coef)).pow(2).sum(-1)  # [B]
    sst = (preds - preds.mean(-1, keepdim=True)).pow(2).sum(-1)  # [B]
    # Constant answers are fitted exactly by the intercept: perfectly linear (ŵ = 0), R² = 1 by convention.
    r2 = torch.where(sst > 0, 1 - sse / sst.clamp_min(torch.finfo(sst.dtype).tiny), torch.ones_like(sst))
    return ImplicitFit(w=coef[:, :d], bias=coef[:, d], r2=r2, probes=probes, preds=preds)


def mean_se(values: Tensor) -> dict[str, float]:
    """{"mean", "se"} over the finite entries of a [B] tensor (se = std / √B; NaN for fewer than 2)."""
    v = values.double().flatten()
    v = v[torch.isfinite(v)]
    n = v.numel()
    if n == 0:
        return {"mean": math.nan, "se": math.nan}
    se = (v.std() / math.sqrt(n)).item() if n > 1 else math.nan
    return {"mean": v.mean().item(), "se": se}


def _weight_agreement(w: Tensor, ref: Tensor) -> dict[str, dict[str, float]]:
    """Per-prompt cos(ŵ, w_ref) and ‖ŵ − w_ref‖/‖w_ref‖ for w, ref [B, d]; mean and standard error."""
    w, ref = w.double(), ref.double().to(w.device)
    cos = torch.nn.functional.cosine_similarity(w, ref, dim=-1)  # [B]
    rel = (w - ref).norm(dim=-1) / ref.norm(dim=-1)  # [B]; inf/NaN for w_ref = 0 are dropped by mean_se
    return {"cos": mean_se(cos), "rel_distance": mean_se(rel)}


def make_references(
    specs: Sequence[str] | Mapping[str, Learner] = ("ols", "ridge", "gd:1"), task: Any = None
) -> dict[str, Learner]:
    """Reference learners by name: registry specs (``"ols"``, ``"ridge:0.1"``, ``"gd:1:eta=0.5"``; ``ridge`` and
    ``gd:K`` without arguments are tuned to `task`) or an explicit mapping name → learner (returned as is)."""
    if isinstance(specs, Mapping):
        return dict(specs)
    return {spec: make_learner(spec, task) for spec in specs}


def implicit_summary(
    learner: Learner,
    prompts: Prompts,
    references: Mapping[str, Learner],
    *,
    generator: torch.Generator | None = None,
    probes: Tensor | None = None,
) -> tuple[dict[str, Any], dict[str, ImplicitFit]]:
    """JSON-ready summary of `learner`'s implicit linear model on the prompts' contexts, and the fits.

    The reference learners answer the same probe queries. The summary holds: n_prompts, n_probes, d; r2 (mean,
    se), r2_median, r2_min, frac_r2_above_0.99; intercept_abs (mean, se of |b̂|); and under "references", per
    reference (and "task_w" where prompts.w is known): cos and rel_distance of ŵ to its weights (mean, se) and the
    reference's own mean R². Returns (summary, fits) with fits["model"] and fits[name] for every reference.
    """
    fit = fit_implicit(learner, prompts.x_ctx, prompts.y_ctx, probes=probes, generator=generator)
    fits = {"model": fit}
    for name, ref in references.items():
        fits[name] = fit_implicit(ref, prompts.x_ctx, prompts.y_ctx, probes=fit.probes)
    r2 = fit.r2
    rows: dict[str, Any] = {}
    for name in references:
        rows[name] = {**_weight_agreement(fit.w, fits[name].w), "reference_r2": fits[name].r2.mean().item()}
    if prompts.w is not None and prompts.w.dim() == 2:
        rows["task_w"] = _weight_agreement(fit.w, prompts.w)
    summary = {
        "n_prompts": len(prompts),
        "n_probes": fit.probes.shape[1],
        "d": fit.w.shape[1],
        "r2": mean_se(r2),
        "r2_median": r2.median().item(),
        "r2_min": r2.min().item(),
        "frac_r2_above_0.99": (r2 > 0.99).double().mean().item(),
        "intercept_abs": mean_se(fit.bias.abs()),
        "references": rows,
    }
    return summary, fits


def plot_implicit(
    w_hat: Tensor | np.ndarray,
    w_ref: Tensor | np.ndarray,
    r2: Tensor | np.ndarray,
    path: str | Path,
    *,
    reference: str = "ols",
    title: str = "",
    max_points: int = 4000,
) -> Path:
    """Two panels: coordinates of ŵ against the reference's weights (w_hat, w_ref [B, d]; at most `max_points`
    coordinates, with the line y = x), and a histogram of the per-prompt R² ([B]). Writes a PNG; returns its path."""
    a = np.asarray(torch.as_tensor(w_hat).detach().double().cpu()).reshape(-1)
    b = np.asarray(torch.as_tensor(w_ref).detach().double().cpu()).reshape(-1)
    r = np.asarray(torch.as_tensor(r2).detach().double().cpu()).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"w_ref: must have the shape of w_hat ({a.size} values), got {b.size}")
    a, b = a[:max_points], b[:max_points]
    fig = new_figure(9.0, 4.0)
    ax_w, ax_r = fig.subplots(1, 2)
    ax_w.scatter(b, a, s=4, alpha=0.4, color="C0", lw=0)
    finite = np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)]])
    lim = float(np.abs(finite).max()) if finite.size else 1.0
    ax_w.plot([-lim, lim], [-lim, lim], color="0.4", lw=1, ls="--", label="y = x")
    style_axes(ax_w, xlabel=f"{reference} weight coordinate", ylabel="implicit ŵ coordinate")
    ax_w.legend(frameon=False, fontsize="small")
    r = r[np.isfinite(r)]
    ax_r.hist(np.clip(r, -1.0, 1.0), bins=40, color="C1")
    style_axes(ax_r, xlabel="R² of the linear fit on the probes (clipped at −1)", ylabel="prompts")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
