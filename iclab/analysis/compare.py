"""Model-vs-algorithm comparison on the same prompts (docs/conventions.md §5).

* losses: ½·MSE of each against the query targets;
* preds diff: mean |ŷ_θ − ŷ_A| and the normalised ‖ŷ_θ − ŷ_A‖ / ‖ŷ_A‖;
* model cos: mean over queries of cos(∂ŷ_θ/∂x_q, ∂ŷ_A/∂x_q) — the implicit linear models, by autograd;
* weight match: KQ, OV (`layer_weights(l).KQ`, `.OV`, iclab.models.base's convention) rescaled by the mean of
  KQ's x-block diagonal, relative Frobenius distance to a construction (whole matrices, and the blocks a single
  layer's prediction can see at all); the rows keep their keys "W_KQ" / "W_PV" (= KQ / OV, vO's names);
* interpolation: the loss along the line between the rescaled trained and the constructed weights;
* OOD curves: the loss as inputs x (or task vectors w) are scaled by α after training.

A learner is anything with predict(x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d]) → [B, m].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, cast

import torch
from torch import Tensor

from iclab import metrics
from iclab.models.lsa import LSA, LSAWeights
from iclab.tasks.base import Prompts

__all__ = [
    "Learner",
    "compare_learners",
    "effective_preconditioner",
    "half_mse",
    "implicit_linear_map",
    "interpolation_curve",
    "layer_preconditioners",
    "ood_curves",
    "per_prompt_half_mse",
    "weight_match",
]


class Learner(Protocol):
    def predict(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor: ...


def _predict(learner: Learner, prompts: Prompts, chunk: int = 8192) -> Tensor:
    with torch.no_grad():
        parts = [
            learner.predict(p.x_ctx, p.y_ctx, p.x_q)
            for p in (prompts[s : s + chunk] for s in range(0, len(prompts), chunk))
        ]
    return torch.cat(parts)


def half_mse(learner: Learner, prompts: Prompts, *, noiseless: bool = False) -> float:
    """½·mean (ŷ − y_q)² over prompts and queries (against the noiseless f_q if `noiseless`; iclab.metrics.half_mse
    of the learner's predictions, averaged in float64)."""
    target = prompts.f_q if noiseless else prompts.y_q
    if target is None:
        raise ValueError("noiseless: the prompts carry no noiseless targets f")
    return metrics.half_mse(_predict(learner, prompts), target, dtype=torch.float64).item()


def per_prompt_half_mse(learner: Learner, prompts: Prompts) -> Tensor:
    """[B] float64: each prompt's ½·squared error, averaged over its queries (the per-prompt losses behind a
    held-out ½·MSE and its standard error)."""
    return metrics.half_mse(_predict(learner, prompts), prompts.y_q, dim=1, dtype=torch.float64)


def implicit_linear_map(learner: Learner, prompts: Prompts) -> Tensor:
    """∂ŷ/∂x_q for every query: [B, m, d]. Queries never see each other, so one backward gives all."""
    x_q = prompts.x_q.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        pred = learner.predict(prompts.x_ctx, prompts.y_ctx, x_q)
        (grad,) = torch.autograd.grad(pred.sum(), x_q)
    return grad


def compare_learners(model: Learner, reference: Learner, prompts: Prompts, chunk: int = 8192) -> dict[str, float]:
    """Losses, preds diff (absolute and normalised) and model cos of `model` against `reference`."""
    prompts.check_finite()
    pred_m, pred_r = _predict(model, prompts), _predict(reference, prompts)
    diff = (pred_m - pred_r).double()
    cos_parts = []
    for s in range(0, len(prompts), chunk):
        part = prompts[s : s + chunk]
        g_m, g_r = implicit_linear_map(model, part), implicit_linear_map(reference, part)
        cos_parts.append(torch.nn.functional.cosine_similarity(g_m.double(), g_r.double(), dim=-1).flatten())
    return {
        "model_half_mse": metrics.half_mse(pred_m, prompts.y_q, dtype=torch.float64).item(),
        "reference_half_mse": metrics.half_mse(pred_r, prompts.y_q, dtype=torch.float64).item(),
        "preds_diff": diff.abs().mean().item(),
        "preds_diff_normalised": (diff.norm() / pred_r.double().norm()).item(),
        "model_cos": torch.cat(cos_parts).mean().item(),
    }


def _rescaled(w_kq: Tensor, w_pv: Tensor, d: int) -> tuple[Tensor, Tensor, float]:
    # The model is invariant to KQ → KQ/s, OV → s·OV; fix s by the x-block diagonal of KQ.
    s = torch.diagonal(w_kq[:d, :d]).mean().item()
    return w_kq / s, w_pv * s, s


def _rel(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def weight_match(model: LSA, construction: LSA) -> list[dict[str, float | list]]:
    """Per layer: relative Frobenius distances of rescaled (KQ, OV) to the construction's (head 0).

    "functional" distances use only the blocks that can reach a one-layer prediction: the KQ columns that
    multiply the query's x (its y-slot is 0) and the OV row that writes the y-slot. The other entries
    receive no gradient in a one-layer model and keep their initial values; the whole-matrix distance counts them.
    """
    if model.config.heads != 1:
        raise ValueError("model.heads: weight match reads one (KQ, OV) pair per layer; needs heads = 1")
    d = model.d
    rows: list[dict[str, float | list]] = []
    for layer in range(model.config.layers):
        w_t, w_c = model.layer_weights(layer), construction.layer_weights(layer)
        kq, pv, s = _rescaled(w_t.KQ[0].detach().double(), w_t.OV[0].detach().double(), d)
        kq_c, pv_c = w_c.KQ[0].detach().double().to(kq.device), w_c.OV[0].detach().double().to(kq.device)
        rows.append(
            {
                "layer": layer,
                "scale": s,
                "kq_distance": _rel(kq, kq_c),
                "pv_distance": _rel(pv, pv_c),
                "kq_distance_functional": _rel(kq[:, :d], kq_c[:, :d]),
                "pv_distance_functional": _rel(pv[d], pv_c[d]),
                "W_KQ": kq.tolist(),  # KQ, rescaled (the key names of earlier results)
                "W_PV": pv.tolist(),  # OV = W_O W_V (vO: P W_V), rescaled
            }
        )
    return rows


def _with_effective_weights(model: LSA, kqs: Sequence[Tensor], pvs: Sequence[Tensor]) -> LSA:
    """A copy of `model` (one head) whose layer l has KQ = kqs[l] and OV = pvs[l] (W_K = W_O = I)."""
    dtype, device = kqs[0].dtype, kqs[0].device
    clone = LSA(model.config, model.d, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    clone.load_state_dict({k: v.to(dtype) for k, v in model.state_dict().items()})
    eye = torch.eye(model.d + 1, dtype=dtype, device=device)
    with torch.no_grad():
        for module, kq, pv in zip(clone.weights, kqs, pvs):
            weights = cast(LSAWeights, module)
            weights.W_K[0], weights.W_Q[0], weights.W_O[0], weights.W_V[0] = eye, kq, eye, pv
    return clone


_T_GRID = tuple(i / 10 for i in range(11))  # 0, 0.1, …, 1 (not inline: mypy 2.4 rejects a comprehension as a default)


def interpolation_curve(model: LSA, construction: LSA, prompts: Prompts, ts: Sequence[float] = _T_GRID) -> list[float]:
    """½·MSE of the model whose (rescaled) KQ, OV are (1 − t)·trained + t·constructed, for each t."""
    if model.config.heads != 1:
        raise ValueError("model.heads: interpolation needs heads = 1")
    d = model.d
    pairs = []
    for layer in range(len(model.weights)):
        w_t, w_c = cast(LSAWeights, model.weights[layer]), cast(LSAWeights, construction.weights[layer])
        kq, pv, _ = _rescaled(w_t.KQ[0].detach().double(), w_t.OV[0].detach().double(), d)
        kq_c, pv_c = w_c.KQ[0].detach().double().to(kq.device), w_c.OV[0].detach().double().to(kq.device)
        pairs.append((kq, pv, kq_c, pv_c))
    prompts64 = prompts.to(device=pairs[0][0].device, dtype=torch.float64)
    losses = []
    for t in ts:
        kqs = [(1 - t) * kq + t * kq_c for kq, _, kq_c, _ in pairs]
        pvs = [(1 - t) * pv + t * pv_c for _, pv, _, pv_c in pairs]
        losses.append(half_mse(_with_effective_weights(model, kqs, pvs), prompts64))
    return losses


def ood_curves(
    learners: dict[str, Learner], prompts: Prompts, alphas: Sequence[float], *, kind: str = "input"
) -> dict[str, list[float]]:
    """½·MSE of each learner when inputs (kind="input") or task vectors (kind="target") are scaled by α."""
    if kind not in ("input", "target"):
        raise ValueError(f"kind: unknown value {kind!r}; choose one of: input, target")
    curves: dict[str, list[float]] = {name: [] for name in learners}
    for alpha in alphas:
        shifted = prompts.scaled(**{f"{kind}_scale": alpha})
        for name, learner in learners.items():
            curves[name].append(half_mse(learner, shifted))
    return curves


def effective_preconditioner(model: LSA) -> Tensor:
    """A [d, d] / N with ŷ = x_qᵀ A (1/N) Xᵀy + (terms even in y) for a one-layer, one-head LSA (docs/papers.md §6
    linear family): the whole part of the prediction that is linear in the labels.

    With KQ's x-block M, its y-row b = KQ[y, :d], OV's y-row (a = OV[y, :d], c = OV[y, y]) and the query token
    [x_q, 0], ŷ = −Σ_i (aᵀx_i + c·y_i)(x_iᵀ M x_q + y_i·bᵀx_q), whose terms odd in y are −c·x_qᵀMᵀ Σ_i y_i x_i (the
    GD-like term) and −x_qᵀ b aᵀ Σ_i y_i x_i (a rank-one map, ≈ 0 after training from a GD-like start, but the one a
    model settles in when training from iclab's default initialisation fails on anisotropic inputs, docs/papers.md
    §6). So A = −N·(c·Mᵀ + b aᵀ) with N the context length; returns −(c·Mᵀ + b aᵀ), i.e. A / N: multiply by the
    context length the model is used at.
    """
    if model.config.layers != 1 or model.config.heads != 1:
        raise ValueError("model: the effective preconditioner is defined for one layer with one head")
    d = model.d
    w = cast(LSAWeights, model.weights[0])
    c = w.OV[0, d, d].detach().double()
    m = w.KQ[0, :d, :d].detach().double()
    a, b = w.OV[0, d, :d].detach().double(), w.KQ[0, d, :d].detach().double()
    return -(c * m.T + torch.outer(b, a))


def layer_preconditioners(model: LSA) -> Tensor:
    """[L, d, d]: layer l's A_l / N, read as `effective_preconditioner` reads one layer (−c_l·M_lᵀ with
    c_l = OV_l[y, y], M_l = KQ_l's x-block), for every layer of a one-head LSA (tied: the one weight set, per
    application).

    Layer l moves the query's y-slot s (prediction −s) by c_l·x_qᵀ M_lᵀ Σ_i r_i x_i and every context y-slot r_j
    alike (r_j starts at y_j): one preconditioned GD step W ← W − A_l ∇L with A_l / N = −c_l·M_lᵀ, in the
    coordinates of the layer's input x (Ahn et al., docs/papers.md §6). Exact when the other blocks of KQ and OV
    are 0, apart from OV's x-block, which transforms the x-coordinates between layers (the GD++ part).
    """
    if model.config.heads != 1:
        raise ValueError("model: the layer preconditioners are defined for one head")
    d = model.d
    mats = []
    for layer in range(model.config.layers):
        w = model.layer_weights(layer)
        mats.append(-w.OV[0, d, d].detach().double() * w.KQ[0, :d, :d].detach().double().T)
    return torch.stack(mats)
