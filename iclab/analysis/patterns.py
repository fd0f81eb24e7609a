"""KQ / OV circuits and attention patterns of attention models (He et al.'s mechanistic reading, docs/papers.md §7).

Per layer and head, on tokens e = [x, y] ∈ R^D (D = d + 1, index d is the y-slot):
  KQ_h [D, D]  score(i, j) = e_iᵀ KQ_h e_j   (SoftmaxAttention.W_KQ; LSA's W_KQ)
  OV_h [D, D]  what key i writes, times its weight  (SoftmaxAttention.W_OV; LSA's W_PV = P W_V)

Statistics (JSON-ready; "mass" is squared Frobenius norm). He et al. report, for trained softmax heads,
a diagonal, homogeneous KQ x-block of opposite signs across two heads, and OV whose y-writing row is y-only
and cancels across heads (zero-sum):
  KQ: off_diagonal_mass  ‖M − Diag(M)‖² / ‖M‖² of the x-block M = KQ[:d, :d]      (0: diagonal)
      diagonal_cv        std / |mean| of diag(M)                                 (0: homogeneous)
      diagonal_mean      mean of diag(M) — the head's inverse temperature β on x_iᵀx_q
      key_y_mass         ‖KQ[d, :d]‖² / ‖KQ[:, :d]‖²: key's y-slot in the query's score (the query's y is 0)
  OV: last_row_mass      ‖OV[d, :]‖² / ‖OV‖²: mass in the row that writes the y-slot (the prediction)
      last_entry_mass    OV[d, d]² / ‖OV[d, :]‖²: within that row, the y → y entry ("last-entry-only")
      zero_sum           |Σ_h OV_h[d, d]| / Σ_h |OV_h[d, d]|  (0: the heads cancel; 1: one head or one sign)
      zero_sum_matrix    ‖Σ_h OV_h‖ / Σ_h ‖OV_h‖
  head gain g_h = −KQ_h diag mean · OV_h[d, d]: with softmax_i(β x_iᵀx_q) ≈ (1 + β(x_i − x̄)ᵀx_q)/N and the
      −(y-slot) readout, head h adds ≈ −OV_h[d,d]·(ȳ + (β_h/N) Σ_i y_i(x_i − x̄)ᵀx_q), so Σ_h g_h / N is the
      implied debiased-GD step and −Σ_h OV_h[d, d] the weight left on ȳ.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iclab.plotting import index_labels, new_figure, save_figure, symmetric_limits
from iclab.tasks.base import Prompts

__all__ = ["attention_patterns", "circuit_statistics", "circuits", "kq_statistics", "ov_statistics", "plot_circuits"]

_CMAP = "RdBu_r"


def circuits(model: nn.Module) -> list[dict[str, np.ndarray]]:
    """Per layer {"KQ": [H, D, D], "OV": [H, D, D]} float64 arrays, read from `model.layer_weights(layer)`:
    W_KQ and W_OV (SoftmaxAttention) or W_PV (LSA)."""
    out = []
    for layer in range(len(model.blocks)):
        w = model.layer_weights(layer)
        ov = w.W_OV if hasattr(w, "W_OV") else w.W_PV
        out.append({"KQ": w.W_KQ.detach().double().cpu().numpy(), "OV": ov.detach().double().cpu().numpy()})
    return out


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan


def _heads(matrix: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(matrix, dtype=np.float64)
    a = a[None] if a.ndim == 2 else a  # [D, D] → [1, D, D]
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] < 2:
        raise ValueError(f"{name}: need [heads, D, D] or [D, D] with D ≥ 2, got shape {list(np.shape(matrix))}")
    return a


def kq_statistics(kq: np.ndarray) -> dict[str, Any]:
    """kq [H, D, D] (or [D, D]) → per-head lists and summaries (module docstring; d = D − 1)."""
    kq = _heads(kq, "KQ")
    d = kq.shape[1] - 1
    heads: dict[str, list[float]] = {"off_diagonal_mass": [], "diagonal_cv": [], "diagonal_mean": [], "key_y_mass": []}
    for m_full in kq:
        m = m_full[:d, :d]  # [d, d] x-block
        diag = np.diag(m)  # [d]
        heads["off_diagonal_mass"].append(_ratio(np.sum((m - np.diag(diag)) ** 2), np.sum(m**2)))
        heads["diagonal_cv"].append(_ratio(diag.std(), abs(diag.mean())))
        heads["diagonal_mean"].append(float(diag.mean()))
        heads["key_y_mass"].append(_ratio(np.sum(m_full[d, :d] ** 2), np.sum(m_full[:, :d] ** 2)))
    means = np.array(heads["diagonal_mean"])
    return {
        **heads,
        "max_off_diagonal_mass": max(heads["off_diagonal_mass"]),
        "max_diagonal_cv": max(heads["diagonal_cv"]),
        "max_key_y_mass": max(heads["key_y_mass"]),
        "opposite_signs": bool((means > 0).any() and (means < 0).any()),
    }


def ov_statistics(ov: np.ndarray) -> dict[str, Any]:
    """ov [H, D, D] (or [D, D]) → per-head lists and cross-head zero-sum ratios (module docstring)."""
    ov = _heads(ov, "OV")
    d = ov.shape[1] - 1
    row = ov[:, d, :]  # [H, D] the rows that write the y-slot
    v = ov[:, d, d]  # [H]
    last_row = [_ratio(np.sum(r**2), np.sum(o**2)) for r, o in zip(row, ov)]
    last_entry = [_ratio(e**2, np.sum(r**2)) for e, r in zip(v, row)]
    return {
        "ov_yy": v.tolist(),
        "last_row_mass": last_row,
        "last_entry_mass": last_entry,
        "min_last_row_mass": min(last_row),
        "min_last_entry_mass": min(last_entry),
        "zero_sum": _ratio(abs(v.sum()), np.abs(v).sum()),
        "zero_sum_matrix": _ratio(np.linalg.norm(ov.sum(0)), sum(np.linalg.norm(o) for o in ov)),
    }


def plot_circuits(mats: list[dict[str, np.ndarray]], path: str | Path, *, title: str = "") -> Path:
    """Heatmaps: one row per (layer, KQ or OV), one column per head; one symmetric colour scale per row."""
    heads = mats[0]["KQ"].shape[0]
    fig = new_figure(2.4 * heads + 1.2, 2.3 * 2 * len(mats))
    axes = fig.subplots(2 * len(mats), heads, squeeze=False)
    for layer, pair in enumerate(mats):
        for k, name in enumerate(("KQ", "OV")):
            row, stack = axes[2 * layer + k], pair[name]  # stack [H, D, D]
            limit = symmetric_limits(stack)
            for h, ax in enumerate(row):
                image = ax.imshow(stack[h], cmap=_CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
                ax.set_title(f"layer {layer} {name} head {h}", fontsize="small")
                labels = index_labels(stack.shape[-1])
                ax.set_xticks(range(len(labels)), labels, fontsize="x-small")
                ax.set_yticks(range(len(labels)), labels, fontsize="x-small")
            fig.colorbar(image, ax=list(row), shrink=0.85)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def circuit_statistics(model: nn.Module, path: str | Path, *, title: str = "") -> dict[str, Any]:
    """KQ / OV statistics per layer (with the matrices) and the heatmap figure at `path`.

    Returns {"figure": str, "layers": [{"kq": …, "ov": …, "head_gain": [H], "KQ": [H, D, D], "OV": [H, D, D]}]}.
    """
    mats = circuits(model)
    layers = []
    for pair in mats:
        kq, ov = kq_statistics(pair["KQ"]), ov_statistics(pair["OV"])
        gain = [-b * v for b, v in zip(kq["diagonal_mean"], ov["ov_yy"])]
        layers.append({"kq": kq, "ov": ov, "head_gain": gain, "KQ": pair["KQ"].tolist(), "OV": pair["OV"].tolist()})
    figure = plot_circuits(mats, path, title=title)
    return {"figure": str(figure), "layers": layers}


def _fit_through_origin(z: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of z on s (both centred) and its R²."""
    slope = _ratio(np.sum(z * s), np.sum(s * s))
    return slope, 1.0 - _ratio(np.sum((z - slope * s) ** 2), np.sum(z * z))


@torch.no_grad()
def attention_patterns(
    model: nn.Module, prompts: Prompts, path: str | Path, *, max_prompts: int = 24, title: str = ""
) -> dict[str, Any]:
    """The queries' attention rows per layer and head, and how well β·x_iᵀx_q explains them.

    Reads blocks.{l}.attn.hook_pattern [B, H, T, N] at the query tokens: softmax probabilities for
    SoftmaxAttention (rows sum to 1), raw scores for LSA. The explained quantity is log p (probabilities) or the
    score itself, centred over i per query row; it is regressed on x_iᵀx_q (also centred), pooled over prompts and
    queries: "slope" is the head's effective β and "r2" how much of the row it explains (1 for a diagonal,
    homogeneous KQ with no key-y term, at layer 0). "entropy" is the mean row entropy / log N (probabilities only;
    1 = uniform). The figure: per head, the rows of the first `max_prompts` prompts (first query) as an image
    over context index i, and a scatter of the explained quantity against x_iᵀx_q with the fitted line.
    """
    n_ctx = prompts.n_ctx
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(len(model.blocks))]
    _, cache = model.run_with_cache(model.layout.encode(prompts), n_ctx, names=names)
    x = prompts.x.double()
    s = torch.einsum("bnd,bmd->bmn", x[:, :n_ctx], x[:, n_ctx:])  # [B, m, N]: x_iᵀ x_q
    s = (s - s.mean(-1, keepdim=True)).cpu().numpy()
    layers = []
    panels = []  # (layer, head, rows [P, N], s [B·m·N], z [B·m·N], slope, kind)
    for layer, name in enumerate(names):
        pattern = cache[name][:, :, n_ctx:].double()  # [B, H, m, N] the query rows
        probs = bool((pattern >= 0).all() and torch.allclose(pattern.sum(-1), torch.ones((), dtype=pattern.dtype)))
        z = pattern.clamp_min(1e-300).log() if probs else pattern
        z = (z - z.mean(-1, keepdim=True)).cpu().numpy()  # [B, H, m, N]
        heads = {"slope": [], "r2": [], "entropy": []}
        for h in range(pattern.shape[1]):
            slope, r2 = _fit_through_origin(z[:, h], s)
            heads["slope"].append(slope)
            heads["r2"].append(r2)
            if probs:
                p = pattern[:, h]  # [B, m, N]
                ent = -(p * p.clamp_min(1e-300).log()).sum(-1).mean() / math.log(n_ctx) if n_ctx > 1 else 0.0
                heads["entropy"].append(float(ent))
            rows = pattern[:max_prompts, h, 0].cpu().numpy()  # [P, N]
            panels.append((layer, h, rows, s.ravel(), z[:, h].ravel(), slope, probs))
        if not probs:
            heads.pop("entropy")
        layers.append({"kind": "probabilities" if probs else "scores", **heads})
    figure = _plot_patterns(panels, len(names), path, title)
    return {"figure": str(figure), "n_prompts": len(prompts), "layers": layers}


def _plot_patterns(panels: list, n_layers: int, path: str | Path, title: str) -> Path:
    heads = len(panels) // n_layers
    fig = new_figure(3.0 * heads + 0.6, 2.6 * 2 * n_layers)
    axes = fig.subplots(2 * n_layers, heads, squeeze=False)
    gen = np.random.default_rng(0)  # which points the scatter shows (display only)
    for layer, h, rows, s, z, slope, probs in panels:
        top, bottom = axes[2 * layer, h], axes[2 * layer + 1, h]
        image = top.imshow(rows, aspect="auto", cmap="viridis", interpolation="nearest")
        top.set_title(f"layer {layer} head {h}: query rows", fontsize="small")
        top.set_xlabel("context point i", fontsize="x-small")
        top.set_ylabel("prompt", fontsize="x-small")
        fig.colorbar(image, ax=top, shrink=0.8)
        keep = gen.choice(s.size, size=min(s.size, 4000), replace=False)
        bottom.scatter(s[keep], z[keep], s=2, alpha=0.3, color="C0")
        if math.isfinite(slope):
            grid = np.linspace(s.min(), s.max(), 2)
            bottom.plot(grid, slope * grid, color="C3", lw=1.2, label=f"slope {slope:.3g}")
            bottom.legend(frameon=False, fontsize="x-small")
        bottom.set_xlabel("$x_i^T x_q$ (centred)", fontsize="x-small")
        bottom.set_ylabel("log p (centred)" if probs else "score (centred)", fontsize="x-small")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
