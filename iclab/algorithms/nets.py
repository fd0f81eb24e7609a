"""Garg et al.'s neural-network baseline: a 2-layer ReLU net fitted to each prompt's context by full-batch Adam.

    ŷ(x) = Σ_h a_h relu(w_hᵀx + b_h) + c,    loss_b = mean over the PRESENT context points of (ŷ(x_j) − y_j)²

One network per prompt, all prompts trained at once: weights W [B, H, d], b [B, H], a [B, H], c [B] and batched
einsums. The objective is Σ_b loss_b, a *sum* over prompts of per-prompt means, so prompt b's gradient is exactly
its own; the gradients are written out by hand and Adam (PyTorch's arithmetic: β = (0.9, 0.999), ε = 1e-8, bias
corrections) acts elementwise, so prompts never couple — no autograd, so it also runs under `torch.no_grad` or
`torch.inference_mode`. Initial weights are PyTorch's `nn.Linear` default, U(±1/√fan_in), drawn for every prompt
(and every prefix in `predict_prefixes`) independently: problem i's net comes from block i // INIT_BLOCK, drawn on
the CPU from a generator seeded by (seed, block). So a problem's net depends on (seed, i) alone — not on
`chunk_elements`, not on the device — and only the current chunk's nets are ever held in memory. An empty context
predicts 0.

Garg et al. (docs/papers.md §2) use H = 100, Adam lr 5e-3, 100 steps, batch 100 (≥ the context, so full batch) and
PyTorch's `nn.MSELoss` over the stacked batch, i.e. a mean over prompts too: that only rescales each prompt's
gradient by 1/B, which Adam undoes except in ε. iclab's default trains longer (500 steps) at the same lr and width.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from iclab.algorithms.base import MaskedLearner, expand_prefixes
from iclab.algorithms.registry import LearnerSpec, check_args, parse_dtype, parse_int, parse_real, spec_string

__all__ = ["LEARNERS", "ReluNet", "fit_relu_net", "init_relu_net", "relu_net_forward"]

PARAMS = ("W", "b", "a", "c")
INIT_BLOCK = 1024  # problems per independently seeded block of initial weights


def init_relu_net(
    batch: int, hidden: int, d: int, *, generator: torch.Generator, dtype: torch.dtype, device: torch.device | str
) -> dict[str, Tensor]:
    """`nn.Linear` default init, independent per prompt: W [B, H, d], b [B, H] ~ U(±1/√d); a [B, H], c [B] ~
    U(±1/√H). Drawn in the order W, b, a, c, in float64 and then cast, so every dtype starts from the same net."""

    def uniform(shape: tuple[int, ...], bound: float) -> Tensor:
        u = torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
        return ((u * 2 - 1) * bound).to(dtype)

    return {
        "W": uniform((batch, hidden, d), 1 / math.sqrt(d)),
        "b": uniform((batch, hidden), 1 / math.sqrt(d)),
        "a": uniform((batch, hidden), 1 / math.sqrt(hidden)),
        "c": uniform((batch,), 1 / math.sqrt(hidden)),
    }


def relu_net_forward(params: dict[str, Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """x [B, n, d] → (ŷ [B, n], pre-activations [B, n, H])."""
    pre = torch.einsum("bnd,bhd->bnh", x, params["W"]) + params["b"].unsqueeze(1)  # [B, n, H]
    out = torch.einsum("bnh,bh->bn", pre.clamp_min(0), params["a"]) + params["c"].unsqueeze(1)  # [B, n]
    return out, pre


def fit_relu_net(
    params: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    mask: Tensor,
    *,
    steps: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> dict[str, Tensor]:
    """`steps` full-batch Adam steps on each prompt's masked MSE; returns new parameters (inputs are not changed).

    x [B, n, d], y [B, n], mask [B, n] bool; params as from `init_relu_net`. Prompts with no present point keep
    their initial weights (zero gradient, and Adam's update of a zero gradient is zero).
    """
    beta1, beta2 = betas
    weight = mask.to(x.dtype) / mask.sum(-1, keepdim=True).clamp_min(1).to(x.dtype)  # [B, n]: 1/N_b on present
    p = dict(params)
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    v = {k: torch.zeros_like(t) for k, t in p.items()}
    for step in range(1, steps + 1):
        out, pre = relu_net_forward(p, x)
        g_out = 2 * (out - y) * weight  # [B, n] = ∂loss_b/∂ŷ_j
        act = pre.clamp_min(0)
        g_pre = g_out.unsqueeze(-1) * p["a"].unsqueeze(1) * (pre > 0).to(x.dtype)  # [B, n, H]
        grads = {
            "W": torch.einsum("bnh,bnd->bhd", g_pre, x),  # [B, H, d]
            "b": g_pre.sum(1),  # [B, H]
            "a": torch.einsum("bn,bnh->bh", g_out, act),  # [B, H]
            "c": g_out.sum(1),  # [B]
        }
        bias1, bias2_sqrt = 1 - beta1**step, math.sqrt(1 - beta2**step)
        for k in PARAMS:
            g = grads[k]
            m[k] = m[k].lerp(g, 1 - beta1)
            v[k] = v[k] * beta2 + (1 - beta2) * g * g
            p[k] = p[k] - (lr / bias1) * m[k] / (v[k].sqrt() / bias2_sqrt + eps)
    return p


def _block_seed(seed: int, block: int) -> int:
    """A 32-bit seed mixed from (seed, block) (torch's CPU generator keeps 32 bits: seed·2³² + block would not do)."""
    return int(np.random.SeedSequence([seed, block]).generate_state(1)[0])


class ReluNet(MaskedLearner):
    """A 2-layer ReLU net per prompt, `hidden` units, `steps` full-batch Adam steps at `lr` (module docstring).

    `seed` seeds the per-prompt initial weights; `dtype=torch.float64` computes in float64 and casts back.
    `chunk_elements` bounds one training batch (prompts × points × max(H, d) elements).
    """

    def __init__(
        self, hidden: int = 100, steps: int = 500, lr: float = 5e-3, seed: int = 0, dtype: torch.dtype | None = None
    ):
        if hidden < 1 or steps < 0 or not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"relu_net: needs hidden >= 1, steps >= 0, lr > 0; got {hidden}, {steps}, {lr}")
        self.hidden, self.steps, self.lr, self.seed, self.dtype = hidden, steps, lr, seed, dtype
        self.name = f"relu_net:{hidden}:steps={steps}:lr={lr:g}"

    def init_params(
        self, batch: int, d: int, dtype: torch.dtype, device: torch.device | str, start: int = 0
    ) -> dict[str, Tensor]:
        """The initial weights of problems start … start + batch − 1, exactly as `predict` and `predict_prefixes`
        draw them (module docstring): whole blocks on the CPU, sliced, then moved to `device`."""
        first, last = start // INIT_BLOCK, (start + batch - 1) // INIT_BLOCK
        blocks = [
            init_relu_net(
                INIT_BLOCK,
                self.hidden,
                d,
                generator=torch.Generator().manual_seed(_block_seed(self.seed, block)),
                dtype=dtype,
                device="cpu",
            )
            for block in range(first, last + 1)
        ]
        if not blocks:  # batch 0
            return init_relu_net(0, self.hidden, d, generator=torch.Generator(), dtype=dtype, device=device)
        offset = start - first * INIT_BLOCK
        return {k: torch.cat([b[k] for b in blocks])[offset : offset + batch].to(device) for k in PARAMS}

    def _step(self, n: int, d: int) -> int:
        return max(1, self.chunk_elements // max(1, n * max(self.hidden, d)))

    def _fit_predict(self, params, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        fitted = fit_relu_net(params, x_ctx, y_ctx, mask, steps=self.steps, lr=self.lr)
        out, _ = relu_net_forward(fitted, x_q)  # [B, m]
        return torch.where(mask.any(-1, keepdim=True), out, torch.zeros_like(out))

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n] (masked rows zero, ignored through the mask), x_q [B, m, d] → [B, m]."""
        ct = self.dtype or x_ctx.dtype
        B, n, d = x_ctx.shape
        step = self._step(n, d)
        out = [
            self._fit_predict(
                self.init_params(min(step, B - s), d, ct, x_ctx.device, start=s),
                x_ctx[s : s + step].to(ct),
                y_ctx[s : s + step].to(ct),
                x_q[s : s + step].to(ct),
                mask[s : s + step],
            )
            for s in range(0, B, step)
        ]
        return torch.cat(out).to(x_q.dtype)

    def predict_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T]: one net per (prompt, prefix), trained on points < t, chunked over B."""
        if y.dim() == 3:
            return super().predict_prefixes(x, y)
        ct = self.dtype or x.dtype
        B, T, d = x.shape
        step = max(1, self._step(max(T - 1, 1), d) // max(T, 1))
        out = []
        for s in range(0, B, step):
            x_ctx, y_ctx, x_q, mask = expand_prefixes(x[s : s + step].to(ct), y[s : s + step].to(ct))
            chunk = self.init_params(min(step, B - s) * T, d, ct, x.device, start=s * T)  # problem b·T + t: (b, t)
            out.append(self._fit_predict(chunk, x_ctx, y_ctx, x_q, mask).reshape(-1, T))
        return torch.cat(out).to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# registry entry


def _relu_net(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> ReluNet:
    check_args(args, kwargs, 1, ("steps", "lr", "seed", "float64"))
    learner = ReluNet(
        hidden=parse_int("HIDDEN", args[0]) if args else 100,
        steps=parse_int("steps", kwargs["steps"], low=0) if "steps" in kwargs else 500,
        lr=parse_real("lr", kwargs["lr"], low=0.0, strict=True) if "lr" in kwargs else 5e-3,
        seed=parse_int("seed", kwargs["seed"], low=0) if "seed" in kwargs else 0,
        dtype=parse_dtype(kwargs),
    )
    learner.name = spec_string("relu_net", args, kwargs)
    return learner


LEARNERS: dict[str, LearnerSpec] = {
    "relu_net": LearnerSpec(
        _relu_net,
        "relu_net[:HIDDEN][:steps=S:lr=LR:seed=SEED:float64=1]",
        "2-layer ReLU net fitted per prompt by full-batch Adam (Garg's baseline; default 100 units, 500 steps)",
    ),
}
