"""Local Linear Attention (LLA): the output at a query is the intercept of a kernel-weighted local linear regression.

For a query q ∈ R^D, keys k_i ∈ R^D and values v_i ∈ R^{D_v} (i over the present context points):

    s_i = softmax_i(qᵀk_i / √D)                                           (the softmax kernel)
    (a, B) = argmin_{a, B} Σ_i s_i ‖v_i − a − B(k_i − q)‖² + λ‖B‖²_F        (ridge on the slope only, λ = lla_ridge)
    LLA(q) = a                                                             (the local intercept)

Closed form (S0 = Σ s_i, k̄ = Σ s_i k_i / S0, v̄ = Σ s_i v_i / S0, M_kk = Σ s_i (k_i − k̄)(k_i − k̄)ᵀ,
M_vk = Σ s_i (v_i − v̄)(k_i − k̄)ᵀ):  B = M_vk (M_kk + λI)⁻¹,  a = v̄ + M_vk (M_kk + λI)⁻¹ (q − k̄).
λ → ∞ gives B → 0 and a = v̄: ordinary softmax attention. λ → 0 with a flat kernel (W_Q = 0) gives least squares
with an intercept, evaluated at the query. `lla_naive` solves each query's weighted least squares explicitly;
`lla` builds the weighted moments of every query at once and does one batched solve (tests compare them).

The model (`LocalLinearAttentionModel`) is LSA's (iclab.models.lsa) with the attention replaced: concat tokens
e_j = [x_j, y_j] ∈ R^D, D = d + 1, query tokens [x_q, 0]; no read-in; per layer and head W_Q, W_K, W_V, W_O
[heads, D, D] (W_O was called P before; such checkpoints still load);
e_j ← e_j + Σ_h W_O,h LLA(W_Q,h e_j; {W_K,h e_i, W_V,h e_i}_{i ≤ N}), keys and values from the N context tokens
only, so queries never see each other; optional pre-LayerNorm on every layer (as the softmax model);
readout −(final query y-slot), the vO sign convention of the concat layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from iclab.config import ModelConfig
from iclab.models.base import AttentionWeights, ICLModel, Impl, seeded_generator
from iclab.models.hooks import HookedModule, HookPoint
from iclab.shapes import Bool, Float, shape_checked
from iclab.tokens import ConcatLayout
from iclab.validation import check_bool, check_int, check_real

__all__ = ["LLAConfig", "LLAWeights", "LocalLinearAttentionModel", "kernel_weights", "lla", "lla_naive"]


@dataclass(frozen=True)
class LLAConfig(ModelConfig):
    """Local linear attention (`LocalLinearAttentionModel`)."""

    name: ClassVar[str] = "lla"

    width: int = 256
    """residual-stream width d_model"""
    layernorm: bool = False
    """pre-LayerNorm in every block"""
    lla_ridge: float = 1e-2
    """ridge regulariser of the local linear regression"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("model.width", self.width, 1)
        check_bool("model.layernorm", self.layernorm)
        check_real("model.lla_ridge", self.lla_ridge, low=0.0, strict=True)


def kernel_weights(q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
    """Softmax kernel s_i = softmax_i(qᵀk_i/√D) over the present keys.

    q [..., T, D], k [..., N, D], mask [..., N] bool (True: present; broadcast over the leading dims) or None.
    Returns [..., T, N]; absent keys get 0, and a query with no present key gets all zeros (not NaN).
    """
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [..., T, N]
    if mask is None:
        return torch.softmax(scores, dim=-1)
    present = mask.unsqueeze(-2)  # [..., 1, N]
    # a finite fill: an all-absent row becomes uniform, then × 0 below (−inf would give NaN and NaN gradients)
    s = torch.softmax(scores.masked_fill(~present, torch.finfo(scores.dtype).min), dim=-1)
    return s * present.to(s.dtype)


def lla(q: Tensor, k: Tensor, v: Tensor, ridge: float, mask: Tensor | None = None) -> Tensor:
    """Batched LLA from the weighted moments of every query (Σs, Σs k, Σs kkᵀ, Σs v, Σs v kᵀ) and one solve.

    q [..., T, D], k [..., N, D], v [..., N, D_v], mask [..., N] bool or None → intercepts [..., T, D_v].
    The regression depends on k_i − q only, so keys and queries are first centred by the keys' plain mean c
    (a shift that leaves the answer unchanged and keeps Σs kkᵀ − S0 k̄k̄ᵀ well conditioned in float32).
    A query with no present key gets 0.
    """
    s = kernel_weights(q, k, mask)  # [..., T, N]
    present = torch.ones_like(k[..., 0]) if mask is None else mask.to(k.dtype).expand_as(k[..., 0])  # [..., N]
    c = (present.unsqueeze(-1) * k).sum(-2, keepdim=True) / present.sum(-1)[..., None, None].clamp_min(1)
    kc, qc = k - c, q - c  # [..., N, D], [..., T, D]
    S0 = s.sum(-1)  # [..., T]
    S1 = s @ kc  # [..., T, D]
    S2 = torch.einsum("...tn,...ni,...nj->...tij", s, kc, kc)  # [..., T, D, D]
    Sv = s @ v  # [..., T, D_v]
    Svk = torch.einsum("...tn,...ni,...nj->...tij", s, v, kc)  # [..., T, D_v, D]
    S0c = S0.clamp_min(torch.finfo(s.dtype).tiny).unsqueeze(-1)  # [..., T, 1]
    k_bar, v_bar = S1 / S0c, Sv / S0c  # [..., T, D], [..., T, D_v]
    M_kk = S2 - S1.unsqueeze(-1) * k_bar.unsqueeze(-2)  # Σ s (k − k̄)(k − k̄)ᵀ: [..., T, D, D]
    M_vk = Svk - Sv.unsqueeze(-1) * k_bar.unsqueeze(-2)  # Σ s (v − v̄)(k − k̄)ᵀ: [..., T, D_v, D]
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
    u = torch.linalg.solve(M_kk + ridge * eye, (qc - k_bar).unsqueeze(-1))  # (M_kk + λI)⁻¹(q − k̄): [..., T, D, 1]
    a = v_bar + (M_vk @ u).squeeze(-1)  # [..., T, D_v]
    return torch.where(S0.unsqueeze(-1) > 0, a, torch.zeros_like(a))


def lla_naive(q: Tensor, k: Tensor, v: Tensor, ridge: float, mask: Tensor | None = None) -> Tensor:
    """Reference LLA: for every query, the weighted ridge problem written as one least-squares system and solved
    with `torch.linalg.lstsq` (a Python loop over queries; tests only).

    Rows √s_i [1, (k_i − q)ᵀ] θ ≈ √s_i v_iᵀ for the present keys and √λ [0, e_jᵀ] θ ≈ 0 (the slope penalty);
    θ = [aᵀ; Bᵀ] [1 + D, D_v]; returns a. Shapes as `lla`.
    """
    *lead, T, D = q.shape
    N, Dv = k.shape[-2], v.shape[-1]
    k = k.expand(*lead, N, D).reshape(-1, N, D)  # [L, N, D]
    v = v.expand(*lead, N, Dv).reshape(-1, N, Dv)  # [L, N, D_v]
    qf = q.reshape(-1, T, D)  # [L, T, D]
    keep = (
        torch.ones(k.shape[:2], dtype=torch.bool, device=q.device)
        if mask is None
        else mask.expand(*lead, N).reshape(-1, N)
    )
    opts: dict[str, Any] = dict(dtype=q.dtype, device=q.device)
    penalty = torch.cat([torch.zeros(D, 1, **opts), math.sqrt(ridge) * torch.eye(D, **opts)], dim=1)  # [D, 1 + D]
    out = torch.zeros(qf.shape[0], T, Dv, **opts)
    for l in range(qf.shape[0]):
        ks, vs = k[l][keep[l]], v[l][keep[l]]  # [n, D], [n, D_v]
        if len(ks) == 0:
            continue
        for t in range(T):
            scores = ks @ qf[l, t] / math.sqrt(D)  # [n]
            s = torch.exp(scores - scores.max())
            s = s / s.sum()
            design = torch.cat([torch.ones(len(ks), 1, **opts), ks - qf[l, t]], dim=1)  # [n, 1 + D]
            lhs = torch.cat([s.sqrt()[:, None] * design, penalty])  # [n + D, 1 + D]
            rhs = torch.cat([s.sqrt()[:, None] * vs, torch.zeros(D, Dv, **opts)])  # [n + D, D_v]
            out[l, t] = torch.linalg.lstsq(lhs, rhs).solution[0]
    return out.reshape(*lead, T, Dv)


class LLAWeights(AttentionWeights, nn.Module):
    """One layer's weights, per head: W_Q, W_K, W_V, W_O each [heads, D, D] (D = d + 1, the token width; column
    vectors). KQ = W_Kᵀ W_Q gives the kernel score(key i, query j) = e_iᵀ KQ e_j / √D (`scale` = 1/√D); OV = W_O W_V
    maps a value-space intercept to the residual update (iclab.models.base's convention).

    Initialisation: W_Q, W_K, W_V ~ N(0, 1/D) (unit-scale keys, so the kernel and the key covariance start
    informative); W_O ~ N(0, 1/(D · heads · layers)) so the summed residual updates start O(1).
    """

    def __init__(self, width: int, heads: int, layers: int, generator: torch.Generator | None = None):
        super().__init__()
        shape = (heads, width, width)
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            var = 1 / width if name != "W_O" else 1 / (width * heads * layers)
            setattr(self, name, nn.Parameter(torch.randn(shape, generator=generator) * math.sqrt(var)))
        self.scale = 1 / math.sqrt(width)


class LLAHooks(nn.Module):
    """blocks.{l}.attn.hook_*: the attention's internals."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_q = HookPoint()  # [B, T, H, D] queries (batch, pos, head, d_head)
        self.hook_k = HookPoint()  # [B, N, H, D] keys of the N context tokens
        self.hook_v = HookPoint()  # [B, N, H, D] values of the N context tokens
        self.hook_pattern = HookPoint()  # [B, H, T, N] kernel weights s (query_pos, key_pos; rows sum to 1)
        self.hook_z = HookPoint()  # [B, T, H, D] the local intercepts a, per head, before W_O


class LLABlock(HookedModule):
    """Hook points (and the optional pre-LayerNorm) of one layer."""

    impl: Impl = "fast"  # "fast": `lla`, one batched solve; "naive": `lla_naive`, a least-squares solve per query

    def __init__(self, width: int, layernorm: bool):
        super().__init__()
        self.ln = nn.LayerNorm(width) if layernorm else None
        self.attn = LLAHooks()
        self.hook_attn_out = HookPoint()  # [B, T, D] what the layer adds to the residual stream
        self.hook_resid_post = HookPoint()  # [B, T, D]

    def forward(self, z: Tensor, w: LLAWeights, n_ctx: int, ridge: float, mask: Tensor | None) -> Tensor:
        """z [B, T, D] → [B, T, D]; mask [B, N] (True: present context point) or None."""
        h = z if self.ln is None else self.ln(z)
        ctx = h[:, :n_ctx]  # [B, N, D]
        q = self.attn.hook_q(torch.einsum("btd,hed->bthe", h, w.W_Q))  # [B, T, H, D]
        k = self.attn.hook_k(torch.einsum("bnd,hed->bnhe", ctx, w.W_K))  # [B, N, H, D]
        v = self.attn.hook_v(torch.einsum("bnd,hed->bnhe", ctx, w.W_V))  # [B, N, H, D]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, ·, D] views for the regression
        head_mask = None if mask is None else mask[:, None, :]  # [B, 1, N]
        if self.attn.hook_pattern._forward_hooks:  # computed only when observed (the solve recomputes it)
            self.attn.hook_pattern(kernel_weights(q, k, head_mask))
        attend = lla_naive if self.impl == "naive" else lla
        a = torch.zeros_like(q) if n_ctx == 0 else attend(q, k, v, ridge, head_mask)  # [B, H, T, D]
        a = self.attn.hook_z(a.transpose(1, 2))  # [B, T, H, D]
        update = torch.einsum("bthe,hfe->btf", a, w.W_O)  # [B, T, D]
        return self.hook_resid_post(z + self.hook_attn_out(update))


class LocalLinearAttentionModel(ICLModel):
    """K layers of multi-head local linear attention on the concat layout (module docstring); a Learner.

    Config: layers, heads, lla_ridge (λ), layernorm (pre-LayerNorm on every layer). `predict` takes an optional
    context mask [B, n] (True: present): absent points are left out of the kernel and the regression, which a zero
    token would not be (softmax weights are positive), so prefix evaluation stays exact.
    """

    layout = ConcatLayout()
    takes_mask = True

    def __init__(self, config: LLAConfig, d: int, *, generator: torch.Generator | None = None):
        super().__init__()
        generator = seeded_generator(generator)  # never the global RNG
        self.config = config
        self.d = d
        self.ridge = float(config.lla_ridge)
        width = d + 1
        self.weights = nn.ModuleList(
            LLAWeights(width, config.heads, config.layers, generator) for _ in range(config.layers)
        )
        self.blocks = nn.ModuleList(LLABlock(width, config.layernorm) for _ in range(config.layers))

    def layer_weights(self, layer: int) -> LLAWeights:
        """Layer `layer`'s weights (W_Q, W_K, W_V, W_O; KQ, OV, scale: iclab.models.base's convention)."""
        return cast(LLAWeights, self.weights[layer])

    def forward(self, tokens: Tensor, n_ctx: int, mask: Tensor | None = None) -> Tensor:
        """tokens [B, n_ctx + m, d + 1], mask [B, n_ctx] bool or None → tokens of the same shape after all layers."""
        z = tokens
        for w, block in zip(self.weights, self.blocks):
            z = block(z, w, n_ctx, self.ridge, mask)
        return z

    @shape_checked
    def predict(
        self,
        x_ctx: Float[Tensor, "batch n_ctx d"],
        y_ctx: Float[Tensor, "batch n_ctx *k"],
        x_q: Float[Tensor, "batch n_q d"],
        mask: Bool[Tensor, "batch n_ctx"] | None = None,
    ) -> Float[Tensor, "batch n_q *k"]:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d], mask [B, n] bool or None → predictions [B, m]."""
        tokens = self.layout.encode_parts(x_ctx, y_ctx, x_q)  # [B, n + m, d + 1]
        return self.layout.readout(self(tokens, x_ctx.shape[1], mask), x_ctx.shape[1])
