"""Multi-head softmax attention (He et al., docs/papers.md §7) on the concat layout.

Tokens e_i = [x_i, y_i] ∈ R^D (D = d + 1) for the N context points, query tokens e_q = [x_q, 0]. Layer l updates
every token j (context and query alike) from the context tokens only, so queries never see each other:

    e_j ← e_j + Σ_h W_O,h Σ_{i≤N} softmax_i(k_{h,i}ᵀ q_{h,j}) v_{h,i},   q = W_Q,h e_j, k = W_K,h e_i, v = W_V,h e_i

with no 1/√D score scaling (the bilinear form is free: score(i, j) = e_iᵀ KQ_h e_j, KQ_h = W_K,hᵀ W_Q,h) and no
biases. Each head writes OV_h = W_O,h W_V,h times its attention-weighted mean of context tokens. Head width is D.

Readout (the concat layout's): ŷ = −(query's final y-slot). For one layer the query's y-slot starts at 0, so
    ŷ = −Σ_h Σ_i p_{h,i} (OV_h e_i)_y,   p_{h,i} = softmax_i(e_iᵀ KQ_h e_q).
He et al. read +(y-slot); only the sign of the OV last row differs. Their debiased-GD solution: two heads with
KQ_h ≈ ±β·[[I, 0], [0, 0]] and OV_h's last row ≈ ∓c·e_yᵀ, so that softmax ≈ (1 ± β x_iᵀx_q)/N cancels ȳ and leaves
ŷ ≈ (2cβ/N) Σ_i y_i (x_i − x̄)ᵀ x_q.

Options (ModelConfig): layers; heads; layernorm (pre-LayerNorm before the attention and the MLP of every layer);
mlp (a residual GELU MLP of width mlp_ratio·D after each attention layer); positions (a learned embedding
[max_points, D] added to the tokens: context token i gets index i, every query the index N, so queries stay
exchangeable). Default: none of them, as in He et al.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iclab.config import ModelConfig
from iclab.models.base import ICLModel, seeded_generator
from iclab.models.hooks import HookedModule, HookPoint
from iclab.tokens import ConcatLayout

__all__ = ["SoftmaxAttention", "SoftmaxAttentionLayer"]


class SoftmaxAttentionLayer(HookedModule):
    """One layer's attention: per-head W_Q, W_K, W_V [H, D_head, D] and W_O [H, D, D_head] (D_head = D), and
    the hook points blocks.{l}.attn.hook_q / hook_k / hook_v / hook_pattern."""

    fast = True  # scaled_dot_product_attention unless the pattern is observed (set False for the naive form)

    def __init__(
        self, width: int, heads: int, std: float, generator: torch.Generator | None = None, scale: float = 1.0
    ):
        super().__init__()
        self.scale = scale  # score(i, j) = scale · k_iᵀ q_j (He et al.: 1; the separate model's copy layer: 1/√D)
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            init = torch.randn((heads, width, width), generator=generator) * std
            setattr(self, name, nn.Parameter(init))
        self.hook_q = HookPoint()  # [B, H, T, D_head]
        self.hook_k = HookPoint()  # [B, H, N, D_head]
        self.hook_v = HookPoint()  # [B, H, N, D_head]
        self.hook_pattern = HookPoint()  # [B, H, T, N] softmax probabilities (rows sum to 1)

    @property
    def W_KQ(self) -> Tensor:
        """[H, D, D]: score(i, j) = scale · e_iᵀ W_KQ e_j (key token i, query token j)."""
        return self.W_K.transpose(-1, -2) @ self.W_Q

    @property
    def W_OV(self) -> Tensor:
        """[H, D, D]: head h adds W_OV,h Σ_i p_{h,i} e_i to the residual stream."""
        return self.W_O @ self.W_V

    def forward(self, h: Tensor, n_ctx: int) -> Tensor:
        """h [B, T, D] (first n_ctx tokens are context) → the update [B, T, D] summed over heads."""
        ctx = h[:, :n_ctx]  # [B, N, D]
        q = self.hook_q(torch.einsum("btd,hed->bhte", h, self.W_Q))  # [B, H, T, D_head]
        k = self.hook_k(torch.einsum("bnd,hed->bhne", ctx, self.W_K))  # [B, H, N, D_head]
        v = self.hook_v(torch.einsum("bnd,hed->bhne", ctx, self.W_V))  # [B, H, N, D_head]
        if self.fast and not self.hook_pattern._forward_hooks:
            heads_out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # [B, H, T, D_head]
        else:
            heads_out = self.naive_attention(q, k, v)
        return torch.einsum("bhte,hfe->btf", heads_out, self.W_O)  # [B, T, D]

    def naive_attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """The softmax written out: q [B, H, T, E], k, v [B, H, N, E] → [B, H, T, E] (the reference for SDPA)."""
        scores = (q @ k.transpose(-1, -2)) * self.scale  # [B, H, T, N]
        pattern = self.hook_pattern(torch.softmax(scores, dim=-1))  # [B, H, T, N]
        return pattern @ v


class MLP(nn.Module):
    """GELU MLP D → hidden → D: W_in [hidden, D], b_in [hidden], W_out [D, hidden], b_out [D]; weights drawn from
    `generator` with variance 1/fan-in (not nn.Linear, whose init would draw from the global RNG)."""

    def __init__(self, width: int, hidden: int, generator: torch.Generator | None = None):
        super().__init__()
        self.W_in = nn.Parameter(torch.randn((hidden, width), generator=generator) / math.sqrt(width))
        self.b_in = nn.Parameter(torch.zeros(hidden))
        self.W_out = nn.Parameter(torch.randn((width, hidden), generator=generator) / math.sqrt(hidden))
        self.b_out = nn.Parameter(torch.zeros(width))

    def forward(self, h: Tensor) -> Tensor:
        """h [B, T, D] → [B, T, D]."""
        return F.linear(F.gelu(F.linear(h, self.W_in, self.b_in)), self.W_out, self.b_out)


class SoftmaxBlock(HookedModule):
    """blocks.{l}: optional pre-LayerNorms, the attention, an optional MLP, and the residual hook points."""

    def __init__(self, config: ModelConfig, width: int, std: float, generator: torch.Generator | None = None):
        super().__init__()
        self.ln1 = nn.LayerNorm(width) if config.layernorm else None
        self.attn = SoftmaxAttentionLayer(width, config.heads, std, generator)
        self.hook_attn_out = HookPoint()  # [B, T, D] what the attention adds to the residual stream
        self.mlp = None
        if config.mlp:
            self.ln2 = nn.LayerNorm(width) if config.layernorm else None
            self.mlp = MLP(width, config.mlp_ratio * width, generator)
            self.hook_mlp_out = HookPoint()  # [B, T, D]
        self.hook_resid_post = HookPoint()  # [B, T, D]

    def forward(self, z: Tensor, n_ctx: int) -> Tensor:
        h = z if self.ln1 is None else self.ln1(z)
        z = z + self.hook_attn_out(self.attn(h, n_ctx))
        if self.mlp is not None:
            h = z if self.ln2 is None else self.ln2(z)
            z = z + self.hook_mlp_out(self.mlp(h))
        return self.hook_resid_post(z)


class SoftmaxAttention(ICLModel):
    """K layers of multi-head softmax attention on the concat layout (module docstring); also a Learner."""

    layout = ConcatLayout()

    def __init__(self, config: ModelConfig, d: int, *, generator: torch.Generator | None = None):
        super().__init__()
        generator = seeded_generator(generator)  # never the global RNG
        self.config = config
        self.d = d
        width = d + 1
        # As LSA: variance init_scale / (K · fan-in). A small init matters: from near-uniform attention the ȳ term
        # (pure noise) first drives Σ_h OV_h's y-row to 0, and the heads then split into opposite-sign KQ (He et
        # al.'s debiased GD); from an O(1) init the heads can settle on one same-sign kernel smoother instead.
        std = math.sqrt(config.init_scale / (config.layers * width))
        self.blocks = nn.ModuleList(SoftmaxBlock(config, width, std, generator) for _ in range(config.layers))
        self.pos_embed = None
        if config.positions:
            self.pos_embed = nn.Parameter(0.02 * torch.randn((config.max_points, width), generator=generator))

    def layer_weights(self, layer: int) -> SoftmaxAttentionLayer:
        """Layer `layer`'s attention (W_Q, W_K, W_V, W_O, W_KQ, W_OV)."""
        return self.blocks[layer].attn

    def forward(self, tokens: Tensor, n_ctx: int) -> Tensor:
        """tokens [B, n_ctx + m, d + 1] → tokens of the same shape after all layers."""
        z = tokens
        if self.pos_embed is not None:
            if n_ctx + 1 > self.pos_embed.shape[0]:
                raise ValueError(
                    f"softmax positions cover {self.pos_embed.shape[0]} points (model.max_points); the prompt has "
                    f"{n_ctx} context points, which needs max_points ≥ {n_ctx + 1}"
                )
            index = torch.arange(tokens.shape[1], device=tokens.device).clamp_max(n_ctx)  # [T]: queries share N
            z = z + self.pos_embed[index]  # [B, T, D]
        for block in self.blocks:
            z = block(z, n_ctx)
        return z

    def predict(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d] → predictions [B, m] = −(queries' final y-slots)."""
        tokens = self.layout.encode_parts(x_ctx, y_ctx, x_q)
        return self.layout.readout(self(tokens, x_ctx.shape[1]), x_ctx.shape[1])
