"""Linear probes on frozen activations (Akyürek et al.): is w, or Xᵀy, linearly readable from layer l?

Features: the activation of each chosen hook point ([B, T, D], by default "input" — the encoded tokens — and every
``blocks.{l}.hook_resid_post``), read at one token per prompt: "query" (the first query's token: index n for the
concat layout, 2n for interleaved and separate) or "context_mean" (the mean over the context tokens). The model
runs once, through its `predict` (the one call every model keeps), on the context and the first query.
Targets: "w" (prompts.w [B, d]), "xty" (Σ_i y_i x_i over the context [B, d]), or any [B] / [B, k] tensor.
Probe: ridge with an intercept, closed form in float64, ŵ = (F_cᵀF_c + λI)⁻¹F_cᵀY_c on centred features and
targets (scikit-learn's Ridge(alpha=λ)). Prompts are split in order into train / validation / test; λ is chosen
from a grid (relative to tr(F_cᵀF_c)/D) by validation R², the probe is refitted on train + validation and scored on
test. R² is pooled over target coordinates: 1 − Σ(y − ŷ)² / Σ(y − ȳ)², ȳ the test mean of each coordinate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from iclab.models.base import ICLModel
from iclab.plotting import plot_curves
from iclab.tasks.base import Prompts

__all__ = [
    "LAMBDA_GRID",
    "collect_features",
    "default_hooks",
    "fit_ridge",
    "plot_probes",
    "probe_model",
    "probe_targets",
    "r2_score",
    "ridge_predict",
    "select_ridge",
]

LAMBDA_GRID = tuple(10.0**k for k in range(-8, 3))  # relative to tr(F_cᵀF_c)/D
TOKENS = ("query", "context_mean")
INPUT = "input"  # pseudo hook: the encoded tokens the model receives


def probe_targets(prompts: Prompts, names: Sequence[str] = ("w", "xty")) -> dict[str, Tensor]:
    """Targets by name: "w" → prompts.w [B, d]; "xty" → Σ_i y_i x_i over the context [B, d]."""
    out = {}
    for name in names:
        if name == "w":
            if prompts.w is None:
                raise ValueError("targets: 'w' needs prompts with a task vector w (a linear task family)")
            out[name] = prompts.w
        elif name == "xty":
            out[name] = torch.einsum("bnd,bn->bd", prompts.x_ctx, prompts.y_ctx)  # [B, d]
        else:
            raise ValueError(f"targets: unknown name {name!r}; choose from: w, xty (or pass tensors)")
    return out


def _positions(model: nn.Module, n_ctx: int) -> tuple[int, int]:
    """(index of the first query token, number of context tokens) for the model's token layout."""
    layout = getattr(model, "layout", None)
    if layout is None:
        raise ValueError(f"model: probes read token streams; {type(model).__name__} has no token layout")
    return layout.query_positions(n_ctx, 1).start, layout.context_tokens(n_ctx)


def default_hooks(model: ICLModel) -> list[str]:
    """The pseudo hook "input" (the encoded tokens) and every ``…hook_resid_post`` of the model, in layer order."""
    return [INPUT, *(n for n in model.hook_points() if n.endswith("hook_resid_post"))]


def collect_features(
    model: ICLModel, prompts: Prompts, *, names: Sequence[str] | None = None, token: str = "query"
) -> dict[str, Tensor]:
    """name → features [B, D] (float64) read at `token` ("query" or "context_mean") from each hook's [B, T, D]."""
    if token not in TOKENS:
        raise ValueError(f"token: unknown value {token!r}; choose one of: {', '.join(TOKENS)}")
    names = default_hooks(model) if names is None else list(names)
    x_ctx, y_ctx, x_q = prompts.x_ctx, prompts.y_ctx, prompts.x_q[:, :1]  # one query per prompt
    q, n_tok = _positions(model, prompts.n_ctx)
    hooked = [n for n in names if n != INPUT]
    points = model.hook_points()
    if unknown := [n for n in hooked if n not in points]:
        raise ValueError(f"unknown hook point {unknown[0]!r}; choose from: {', '.join([INPUT, *points])}")
    with torch.no_grad():
        _, cache = model.run_with_cache(x_ctx, y_ctx, x_q, names=hooked, method="predict")
    if INPUT in names:
        cache[INPUT] = model.layout.encode_parts(x_ctx, y_ctx, x_q)  # [B, T, D]
    out = {}
    for name in names:
        act = cache[name]
        if act.dim() != 3:
            raise ValueError(f"hook {name!r}: probes read [batch, tokens, width] activations, got {list(act.shape)}")
        out[name] = (act[:, q] if token == "query" else act[:, :n_tok].mean(1)).double()  # [B, D]
    return out


def fit_ridge(features: Tensor, targets: Tensor, lam: float | Tensor) -> tuple[Tensor, Tensor]:
    """Ridge with intercept, batched over leading dimensions, in float64: features [..., n, D], targets [..., n, k],
    lam a number or [...] → (coef [..., D, k], intercept [..., k]); minimises ‖F c + β − T‖² + λ‖c‖² (β free)."""
    f, t = features.double(), targets.double()
    f_mean, t_mean = f.mean(-2, keepdim=True), t.mean(-2, keepdim=True)  # [..., 1, D], [..., 1, k]
    fc, tc = f - f_mean, t - t_mean  # centring fits the intercept exactly
    lam = torch.as_tensor(lam, dtype=f.dtype, device=f.device)
    eye = torch.eye(f.shape[-1], dtype=f.dtype, device=f.device)
    coef = torch.linalg.solve(fc.mT @ fc + lam[..., None, None] * eye, fc.mT @ tc)  # [..., D, k]
    return coef, (t_mean - f_mean @ coef).squeeze(-2)


def ridge_predict(features: Tensor, coef: Tensor, intercept: Tensor) -> Tensor:
    """features [..., n, D], coef [..., D, k], intercept [..., k] (as `fit_ridge` returns) → [..., n, k]."""
    return features.double() @ coef + intercept.unsqueeze(-2)


def r2_score(pred: Tensor, target: Tensor) -> float:
    """Pooled R² over coordinates: 1 − Σ(y − ŷ)² / Σ(y − ȳ)² for pred, target [n, k] (ȳ per coordinate)."""
    t = target.double()
    sst = (t - t.mean(0)).pow(2).sum()
    return (1 - (t - pred.double()).pow(2).sum() / sst).item()


def select_ridge(
    f_train: Tensor, t_train: Tensor, f_val: Tensor, t_val: Tensor, grid: Sequence[float] = LAMBDA_GRID
) -> tuple[float, float]:
    """(λ, λ relative to tr(F_cᵀF_c)/D) of the grid value with the best validation R²."""
    fc = f_train.double() - f_train.double().mean(0)
    unit = (fc.pow(2).sum() / f_train.shape[1]).item() or 1.0  # tr(F_cᵀF_c)/D; 1 for constant features
    scores = [r2_score(ridge_predict(f_val, *fit_ridge(f_train, t_train, r * unit)), t_val) for r in grid]
    best = int(np.nanargmax(np.nan_to_num(scores, nan=-np.inf)))
    return grid[best] * unit, grid[best]


def probe_model(
    model: ICLModel,
    prompts: Prompts,
    *,
    targets: Sequence[str] | Mapping[str, Tensor] = ("w", "xty"),
    names: Sequence[str] | None = None,
    token: str = "query",
    split: tuple[float, float] = (0.6, 0.2),
    grid: Sequence[float] = LAMBDA_GRID,
) -> dict[str, Any]:
    """Probe every hook (default: input tokens and each layer's residual stream) for every target.

    prompts: B prompts (one query each is used); targets: names for `probe_targets` or name → [B] / [B, k];
    split: train and validation fractions (the rest is the test set). Returns a JSON-ready dict: token, hooks,
    n_train / n_val / n_test, "rows" (one per hook and target: r2_test, r2_train, lambda, lambda_rel) and
    "r2" {target: [test R² per hook]}.
    """
    tmap = probe_targets(prompts, targets) if not isinstance(targets, Mapping) else dict(targets)
    tmap = {k: (v.unsqueeze(-1) if v.dim() == 1 else v).double() for k, v in tmap.items()}  # [B, k]
    B = len(prompts)
    for k, v in tmap.items():
        if v.dim() != 2 or v.shape[0] != B:
            raise ValueError(f"targets[{k!r}]: must be [{B}] or [{B}, k], got {list(v.shape)}")
    n_train, n_val = int(split[0] * B), int(split[1] * B)
    if min(n_train, n_val, B - n_train - n_val) < 2:
        raise ValueError(f"split: {split} of {B} prompts leaves a split with fewer than 2 prompts")
    tr, va, te = slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, B)
    fit_part = slice(0, n_train + n_val)
    feats = collect_features(model, prompts, names=names, token=token)
    rows: list[dict[str, Any]] = []
    table: dict[str, list[float]] = {k: [] for k in tmap}
    for hook, f in feats.items():
        for tname, t in tmap.items():
            t = t.to(f.device)
            lam, rel = select_ridge(f[tr], t[tr], f[va], t[va], grid)
            coef, icpt = fit_ridge(f[fit_part], t[fit_part], lam)
            r2_test = r2_score(ridge_predict(f[te], coef, icpt), t[te])
            r2_train = r2_score(ridge_predict(f[fit_part], coef, icpt), t[fit_part])
            row = {"hook": hook, "target": tname, "r2_test": r2_test, "r2_train": r2_train}
            rows.append({**row, "lambda": lam, "lambda_rel": rel, "width": f.shape[1]})
            table[tname].append(r2_test)
    return {
        "token": token,
        "hooks": list(feats),
        "n_train": n_train,
        "n_val": n_val,
        "n_test": B - n_train - n_val,
        "rows": rows,
        "r2": table,
    }


def plot_probes(summary: Mapping[str, Any], path: str | Path, *, title: str = "") -> Path:
    """Held-out R² per hook (x: −1 = input tokens, l = after layer l, in hook order) for each target."""
    hooks = summary["hooks"]
    x = np.arange(len(hooks)) - (1 if hooks and hooks[0] == INPUT else 0)
    return plot_curves(
        x,
        {t: np.asarray(v) for t, v in summary["r2"].items()},
        path,
        xlabel="layer (−1: input tokens)",
        ylabel=f"held-out R² ({summary['token']} token)",
        title=title,
        logy=False,
        ylim=(-0.1, 1.05),
    )
