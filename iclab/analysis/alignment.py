"""Layer ↔ iteration alignment (Fu et al., docs/papers.md §5): which algorithm iteration does each layer compute?

1. Activations: every layer's residual stream (``blocks.{l}.hook_resid_post``) at the position where the model
   predicts point t, for every prefix t of B prompts: acts [K, B, T, D]. GPT: one causal pass, x_t's token. LSA:
   one masked problem per prefix (absent points are zero tokens, exactly "not there" for LSA without LayerNorm;
   with LayerNorm a zero token is not neutral after the first layer), the query token.
2. Readout: per layer an affine map fitted by ridge least squares (λ = ridge · mean diagonal of the Gram matrix)
   from the frozen activations to the targets y_t, on the first `fit_fraction` of the prompts; the layer's
   prediction ŷ_l is that readout applied to the remaining (held-out) prompts.
3. References on the same held-out prompts and prefixes: Iterative Newton ŵ_k = M_k Xᵀy
   (iclab.algorithms.newton, k in `newton_iters`) and GD from 0 on L(w) = 1/(2N)‖Xw − y‖² with K in `gd_steps`.
   GD's step: η = 1/λ_max(XᵀX/N) per prompt and prefix by default (the classic 1/L step: monotone in every
   direction, so the slow directions show how many steps GD needs), or one fixed η for all (`gd_eta`; η ≥ 2/λ_max
   diverges). GD is evaluated in closed form in the eigenbasis of XᵀX (any K at the same cost); tests compare it
   with iclab.algorithms.gd.
4. Similarity of a layer's prediction vector a and an iteration's b, over held-out prompts × prefixes
   t ∈ [min_prefix, T): "cos" (default) cos(a, b) — scale-free, so a readout that is a rescaled iterate still
   matches it; "error_cos" cos(a − y, b − y), the similarity of errors (Fu et al.); "nsd" 1 − ‖a − b‖²/(‖a‖² + ‖b‖²) =
   2⟨a, b⟩/(‖a‖² + ‖b‖²), a normalised squared distance in [−1, 1] (1: identical; 0 against predicting 0) that,
   unlike cos, also penalises a difference in scale. min_prefix defaults to 2: at one point Newton predicts 0 for every
   k ≥ 1 (α‖SSᵀ‖ puts the only eigenvalue at −1), which says nothing about the layer.
5. Best match per layer: the grid's argmax, and its sub-grid peak (`refined_peak`): the vertex of the parabola
   through the argmax and its two neighbours, in the coordinate where the grid is evenly spaced (the iteration count
   for Newton, log₂ of the step count for GD's doubling grid). On a flat top the argmax is a coin toss between
   near-equal neighbours (a trained GPT's layer: cos 0.9433 at 8 GD steps, 0.9435 at 16), a whole grid step (one
   doubling) of quantisation noise; the vertex moves continuously with the similarities and lies within half a grid
   spacing of the argmax.
Result: heatmaps [layers × iterations] for Newton and GD, the best-matching iteration per layer (argmax and sub-grid
peak), the readout's held-out error per layer, a JSON-ready summary (`Alignment.to_dict`) and figures
(`plot_alignment`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from iclab.algorithms.base import expand_prefixes
from iclab.algorithms.least_squares import prefix_stats
from iclab.algorithms.newton import newton_weights
from iclab.analysis.probes import fit_ridge
from iclab.metrics import nmse as nmse_of
from iclab.plotting import plot_curves, save_figure

__all__ = [
    "SIMILARITIES",
    "Alignment",
    "align",
    "align_activations",
    "fit_readouts",
    "gd_predictions",
    "layer_activations",
    "newton_predictions",
    "peaks_text",
    "plot_alignment",
    "refined_peak",
    "similarity_matrix",
]

SIMILARITIES = ("cos", "error_cos", "nsd")
GD_STEPS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


@dataclass(frozen=True)
class Alignment:
    """Similarity heatmaps newton [K, I] and gd [K, J] (rows: layers; columns: newton_iters / gd_steps), the
    best-matching iteration per layer (argmax over the row, and its sub-grid peak `refined_peak`), and the readout's
    held-out nmse per layer."""

    layers: list[str]
    newton_iters: list[int]
    gd_steps: list[int]
    newton: np.ndarray  # [K, I]
    gd: np.ndarray  # [K, J]
    readout_nmse: np.ndarray  # [K] held-out mean (ŷ_l − y)² / d
    similarity: str
    gd_eta: float | None
    meta: dict = field(default_factory=dict)

    @property
    def best_newton(self) -> np.ndarray:
        """[K] Newton iteration count that matches each layer best."""
        return np.asarray(self.newton_iters)[self.newton.argmax(1)]

    @property
    def best_gd(self) -> np.ndarray:
        """[K] GD step count that matches each layer best."""
        return np.asarray(self.gd_steps)[self.gd.argmax(1)]

    @property
    def refined_newton(self) -> np.ndarray:
        """[K] sub-grid peak of each layer's Newton row (`refined_peak` on the iteration count), float."""
        return refined_peak(self.newton, self.newton_iters, log=False)

    @property
    def refined_gd(self) -> np.ndarray:
        """[K] sub-grid peak of each layer's GD row (`refined_peak` on log₂ of the step count), float."""
        return refined_peak(self.gd, self.gd_steps, log=True)

    def to_dict(self) -> dict:
        """JSON-ready summary (plain lists and numbers)."""
        return {
            "similarity": self.similarity,
            "gd_eta": "1/lambda_max(X^T X / N) per prompt and prefix" if self.gd_eta is None else self.gd_eta,
            "layers": list(self.layers),
            "newton_iters": list(self.newton_iters),
            "gd_steps": list(self.gd_steps),
            "newton": self.newton.tolist(),
            "gd": self.gd.tolist(),
            "best_newton": self.best_newton.tolist(),
            "best_newton_similarity": self.newton.max(1).tolist(),
            "refined_newton": self.refined_newton.tolist(),
            "best_gd": self.best_gd.tolist(),
            "best_gd_similarity": self.gd.max(1).tolist(),
            "refined_gd": self.refined_gd.tolist(),
            "readout_nmse": self.readout_nmse.tolist(),
            **self.meta,
        }


def refined_peak(sims: np.ndarray, grid: Sequence[float], log: bool = False) -> np.ndarray:
    """Sub-grid peak of each row: sims [K, I] over grid [I] (increasing) → [K] (float), in grid units.

    The vertex of the parabola through each row's argmax and its two neighbours, fitted in u = grid (log False) or
    u = log₂ grid (log True, returned as 2**vertex): with the neighbours at u_c ∓ h and similarities s_l, s_c, s_r,
    u* = u_c + h/2 · (s_l − s_r)/(s_l − 2s_c + s_r), within h/2 of u_c since s_c is the maximum (a two-point tie,
    s_c = s_r > s_l, gives the midpoint). The argmax's grid value itself where no parabola applies: the argmax at
    either end of the grid, neighbours not evenly spaced in u (relative tolerance 1e-6; with log, a grid value ≤ 0
    has no u, so GD's 1 step next to 0 steps stays 1), or a flat row s_l = s_c = s_r. A row with a NaN takes the
    NaN's grid value (numpy's argmax, as `Alignment.best_gd` does): similarities come from finite read-outs.
    """
    sims = np.asarray(sims, dtype=float)
    g = np.asarray(grid, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(g > 0, np.log2(g), np.nan) if log else g  # [I]
    best = sims.argmax(1)  # [K]
    out = g[best].copy()
    for k, i in enumerate(best):
        if i == 0 or i == len(g) - 1:
            continue
        h, h_right = u[i] - u[i - 1], u[i + 1] - u[i]
        if not (np.isfinite(h) and np.isfinite(h_right) and h > 0 and abs(h_right - h) <= 1e-6 * h):
            continue
        s_l, s_c, s_r = sims[k, i - 1 : i + 2]
        curvature = s_l - 2 * s_c + s_r  # ≤ 0 at a maximum
        if not curvature < -1e-12 * max(abs(s_l), abs(s_c), abs(s_r), 1e-300):
            continue
        vertex = u[i] + 0.5 * h * (s_l - s_r) / curvature
        out[k] = 2.0**vertex if log else vertex
    return out


def peaks_text(values, sep: str = " ") -> str:
    """Per-layer best matches as text: whole numbers exactly (a grid's step counts), others to 3 significant figures:
    [2.43, 11.52, 40.62, 1.0, 1234.5, 16384] → "2.43 11.5 40.6 1 1230 16384"."""
    return sep.join(str(int(v)) if float(v).is_integer() else f"{float(f'{v:.3g}'):g}" for v in values)


# ---------------------------------------------------------------------------------------------------- references


def newton_predictions(x: Tensor, y: Tensor, iters: Sequence[int]) -> Tensor:
    """Iterative Newton's prefix predictions: x [B, T, d], y [B, T] → [I, B, T] (float64), ŷ_t = x_tᵀ M_k b_t."""
    S, b = prefix_stats(x.double(), y.double())  # [B, T, d, d], [B, T, d]
    preds = [torch.einsum("btd,btd->bt", x.double(), newton_weights(S, b, k)) for k in iters]
    return torch.stack(preds)


def gd_predictions(x: Tensor, y: Tensor, steps: Sequence[int], eta: float | None = None) -> Tensor:
    """GD from 0 on 1/(2N)‖Xw − y‖², N = t points, for each step count: x [B, T, d], y [B, T] → [J, B, T] (float64).

    Closed form in the eigenbasis of H = S/N (eigenvalues λ): w_K = U diag(g_K) Uᵀ b/N with
    g_K(λ) = (1 − (1 − ηλ)^K)/λ (→ Kη as λ → 0). eta None: η = 1/λ_max per prompt and prefix.
    """
    x, y = x.double(), y.double()
    S, b = prefix_stats(x, y)
    n = torch.arange(x.shape[1], device=x.device).clamp_min(1).to(x.dtype)  # [T]
    lam, U = torch.linalg.eigh(S / n[:, None, None])  # [B, T, d], [B, T, d, d]
    lam = lam.clamp_min(0.0)
    top = lam[..., -1:]  # [B, T, 1]
    if eta is None:
        step = torch.where(top > 0, 1.0 / torch.where(top > 0, top, torch.ones_like(top)), torch.zeros_like(top))
    else:
        step = torch.full_like(top, float(eta))
    coef = (U.transpose(-1, -2) @ (b / n[:, None]).unsqueeze(-1)).squeeze(-1)  # [B, T, d] = Uᵀ b/N
    xq = (U.transpose(-1, -2) @ x.unsqueeze(-1)).squeeze(-1)  # [B, T, d] = Uᵀ x_t
    flat = lam <= 1e-12 * top.clamp_min(1e-300)  # null directions of S (coef ≈ 0 there)
    safe = torch.where(flat, torch.ones_like(lam), lam)
    preds = []
    for k in steps:
        g = torch.where(flat, k * step.expand_as(lam), (1 - (1 - step * lam) ** k) / safe)  # [B, T, d]
        preds.append((g * coef * xq).sum(-1))
    return torch.stack(preds)


# ---------------------------------------------------------------------------------------------------- activations


def layer_activations(model, x: Tensor, y: Tensor, names: Sequence[str] | None = None) -> tuple[list[str], Tensor]:
    """Residual streams at the prediction position of every prefix: x [B, T, d], y [B, T] → (names, [K, B, T, D]).

    names: hook points to read (default ``blocks.{l}.hook_resid_post`` for every block). Supported models: GPT
    (x_t's token of one causal pass) and LSA (the query token of one masked problem per prefix).
    """
    from iclab.models.gpt import GPT
    from iclab.models.lsa import LSA

    if not isinstance(model, GPT | LSA):
        raise ValueError(f"layer_activations: unsupported model {type(model).__name__}; supported: GPT, LSA")
    names = list(names) if names is not None else [f"blocks.{i}.hook_resid_post" for i in range(len(model.blocks))]
    B, T, _ = x.shape
    with torch.no_grad():
        if isinstance(model, GPT):
            _, cache = model.run_with_cache(model.layout.encode_stream(x, y), names=names)
            at = model.layout.query_positions(0, T)  # every x token: each is the query of its prefix
            acts = torch.stack([cache[n][:, at] for n in names])  # [K, B, T, D]
        else:
            x_ctx, y_ctx, x_q, _ = expand_prefixes(x, y)  # [B·T, S, d], [B·T, S], [B·T, 1, d]
            tokens = model.layout.encode_parts(x_ctx, y_ctx, x_q)  # [B·T, S + 1, d + 1]
            _, cache = model.run_with_cache(tokens, x_ctx.shape[1], names=names)
            at = model.layout.query_positions(x_ctx.shape[1], 1)  # the one query token of each prefix problem
            acts = torch.stack([cache[n][:, at] for n in names]).reshape(len(names), B, T, -1)  # [K, B, T, D]
    return names, acts


def fit_readouts(acts: Tensor, target: Tensor, ridge: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Affine ridge readouts per layer: acts [K, N, D], target [N] → (coef [K, D], bias [K]), float64.

    Minimises ‖A c + β − y‖² + λ‖c‖² with λ = ridge · mean diagonal of the centred Gram matrix (bias free).
    """
    a = acts.double()
    lam = ridge * (a - a.mean(1, keepdim=True)).pow(2).sum(1).mean(-1).clamp_min(1e-300)  # [K]
    coef, bias = fit_ridge(a, target.double().expand(a.shape[0], -1).unsqueeze(-1), lam)  # [K, D, 1], [K, 1]
    return coef.squeeze(-1), bias.squeeze(-1)


def similarity_matrix(a: Tensor, b: Tensor, kind: str = "cos", target: Tensor | None = None) -> Tensor:
    """a [K, N] (layers), b [I, N] (iterations) → [K, I] similarities (see the module docstring); float64."""
    if kind not in SIMILARITIES:
        raise ValueError(f"similarity: unknown value {kind!r}; choose one of: {', '.join(SIMILARITIES)}")
    a, b = a.double(), b.double()
    if kind == "nsd":
        dist = ((a[:, None] - b[None]) ** 2).sum(-1)  # [K, I]
        norms = (a**2).sum(-1)[:, None] + (b**2).sum(-1)[None]  # [K, I]
        return 1 - dist / norms.clamp_min(1e-300)
    if kind == "error_cos":
        if target is None:
            raise ValueError("similarity 'error_cos' needs the targets")
        a, b = a - target.double(), b - target.double()
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return a @ b.T


# ---------------------------------------------------------------------------------------------------- the analysis


def align_activations(
    acts: Tensor,
    x: Tensor,
    y: Tensor,
    names: Sequence[str] | None = None,
    *,
    newton_iters: Sequence[int] = tuple(range(11)),
    gd_steps: Sequence[int] = GD_STEPS,
    gd_eta: float | None = None,
    similarity: str = "cos",
    min_prefix: int = 2,
    fit_fraction: float = 0.5,
    ridge: float = 1e-6,
) -> Alignment:
    """The alignment from given activations acts [K, B, T, D] of prompts x [B, T, d], y [B, T] (any source: a
    model's cache, or a constructed one for controls). See the module docstring for every step."""
    K, B, T, _ = acts.shape
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity: unknown value {similarity!r}; choose one of: {', '.join(SIMILARITIES)}")
    if not 0 <= min_prefix < T:
        raise ValueError(f"min_prefix: must be in [0, T = {T}), got {min_prefix}")
    n_fit = round(B * fit_fraction)
    if not 0 < n_fit < B:
        raise ValueError(f"fit_fraction: must leave prompts to fit and to evaluate, got {fit_fraction} of {B}")
    names = list(names) if names is not None else [f"layer {i}" for i in range(K)]
    t = slice(min_prefix, None)
    fit_acts = acts[:, :n_fit, t].reshape(K, -1, acts.shape[-1])  # [K, N_fit, D]
    coef, bias = fit_readouts(fit_acts, y[:n_fit, t].reshape(-1), ridge)
    x_ev, y_ev = x[n_fit:], y[n_fit:]  # held-out prompts
    layer_pred = torch.einsum("kbtd,kd->kbt", acts[:, n_fit:].double(), coef) + bias[:, None, None]  # [K, B', T]
    target = y_ev[:, t].double().reshape(-1)  # [N]
    flat = lambda p: p[:, :, t].reshape(p.shape[0], -1)  # noqa: E731  [·, B', T] → [·, N]
    newton = similarity_matrix(flat(layer_pred), flat(newton_predictions(x_ev, y_ev, newton_iters)), similarity, target)
    gd = similarity_matrix(flat(layer_pred), flat(gd_predictions(x_ev, y_ev, gd_steps, gd_eta)), similarity, target)
    nmse = nmse_of(flat(layer_pred), target, x.shape[-1], dim=-1, vector=False)  # [K]
    meta = {"n_prompts_fit": n_fit, "n_prompts_eval": B - n_fit, "prefixes": [min_prefix, T - 1], "ridge": ridge}
    return Alignment(
        names, list(newton_iters), list(gd_steps), newton.cpu().numpy(), gd.cpu().numpy(),
        nmse.cpu().numpy(), similarity, gd_eta, meta,
    )  # fmt: skip


def align(model, x: Tensor, y: Tensor, *, names: Sequence[str] | None = None, **kwargs) -> Alignment:
    """Fu et al.'s alignment of a GPT or LSA on prompts x [B, T, d], y [B, T]; kwargs as `align_activations`."""
    names, acts = layer_activations(model, x, y, names)
    return align_activations(acts, x, y, names, **kwargs)


# ---------------------------------------------------------------------------------------------------- figures


def plot_alignment(result: Alignment, out_dir: str | Path, *, title: str = "") -> dict[str, Path]:
    """Write alignment_heatmaps.png (layers × Newton iterations | layers × GD steps; dots: each row's argmax) and
    the best-match curves alignment_best_newton.png, alignment_best_gd.png (sub-grid peak and grid argmax) into
    out_dir; returns name → path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    fig = Figure(figsize=(11.0, 0.6 * len(result.layers) + 2.4), layout="constrained")
    FigureCanvasAgg(fig)
    lo = float(min(result.newton.min(), result.gd.min()))
    hi = float(max(result.newton.max(), result.gd.max()))
    for ax, mat, cols, label in zip(
        fig.subplots(1, 2),
        (result.newton, result.gd),
        (result.newton_iters, result.gd_steps),
        ("Iterative Newton iterations", "GD steps"),
    ):
        image = ax.imshow(mat, cmap="viridis", vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
        best = mat.argmax(1)
        ax.plot(best, np.arange(len(best)), "r.", ms=8)  # the best match of each layer
        ax.set_xticks(range(len(cols)), [str(c) for c in cols], fontsize="x-small", rotation=90 * (len(cols) > 12))
        ax.set_yticks(range(len(result.layers)), [f"L{i}" for i in range(len(result.layers))], fontsize="small")
        ax.set_xlabel(label)
        ax.set_ylabel("layer")
    fig.colorbar(image, ax=fig.axes, shrink=0.9, label=f"similarity ({result.similarity})")
    if title:
        fig.suptitle(title)
    paths = {"heatmaps": save_figure(fig, out / "alignment_heatmaps.png")}
    layers = np.arange(len(result.layers))
    paths["best_newton"] = plot_curves(
        layers, {"sub-grid peak": result.refined_newton, "grid argmax": result.best_newton},
        out / "alignment_best_newton.png", xlabel="layer", ylabel="best Newton iterations", title=title, logy=False,
    )  # fmt: skip
    paths["best_gd"] = plot_curves(
        layers, {"sub-grid peak": np.maximum(result.refined_gd, 0.5), "grid argmax": np.maximum(result.best_gd, 0.5)},
        out / "alignment_best_gd.png", xlabel="layer", ylabel="best GD steps (0 drawn at 0.5)", title=title, logy=True,
    )  # fmt: skip
    return paths
