"""Multi-head softmax attention (He et al., docs/papers.md §7) on the concat layout.

Tokens e_i = [x_i, y_i] ∈ R^D (D = d + 1) for the N context points, query tokens e_q = [x_q, 0]. Layer l updates
every token j (context and query alike) from the context tokens only, so queries never see each other:

    e_j ← e_j + Σ_h W_O,h Σ_{i≤N} softmax_i(k_{h,i}ᵀ q_{h,j}) v_{h,i},   q = W_Q,h e_j, k = W_K,h e_i, v = W_V,h e_i

with no 1/√D score scaling (the bilinear form is free: score(i, j) = e_iᵀ KQ_h e_j, KQ_h = W_K,hᵀ W_Q,h) and no
biases. Each head writes OV_h = W_O,h W_V,h times its attention-weighted mean of context tokens. Head width is D.
KQ_h and OV_h are `layer_weights(l).KQ` / `.OV` (iclab.models.base's weight convention, the same for every model).

Readout (the concat layout's): ŷ = −(query's final y-slot). For one layer the query's y-slot starts at 0, so
    ŷ = −Σ_h Σ_i p_{h,i} (OV_h e_i)_y,   p_{h,i} = softmax_i(e_iᵀ KQ_h e_q).
He et al. read +(y-slot); only the sign of the OV last row differs. Their debiased-GD solution: two heads with
KQ_h ≈ ±β·[[I, 0], [0, 0]] and OV_h's last row ≈ ∓c·e_yᵀ, so that softmax ≈ (1 ± β x_iᵀx_q)/N cancels ȳ and leaves
ŷ ≈ (2cβ/N) Σ_i y_i (x_i − x̄)ᵀ x_q.

Options (ModelConfig): layers; heads; layernorm (pre-LayerNorm before the attention and the MLP of every layer);
mlp (a residual GELU MLP of width mlp_ratio·D after each attention layer); positions (a learned embedding
[max_points, D] added to the tokens: context token i gets index i, every query the index N, so queries stay
exchangeable). Default: none of them, as in He et al.

Class labels (tasks with `label_vocab` L, e.g. icl_classification; docs/families.md "Class-label targets"): the
concat layout puts the target inside the token, so a label goes there too, as an L-wide slot. Built with
`n_labels = L`, context tokens are e_i = [x_i, W_label[ℓ_i]] ∈ R^(d + L) — row ℓ of a learned table W_label
[L, L] (`iclab.models.gpt.label_table`, the one-hot e_ℓ through a learned L × L read-in) — query tokens
[x_q, 0_L], and the L logits are −(the query's final label slots), the layout's readout (`ConcatLayout(k=L)`):
`predict` → [B, m, L], trained with cross-entropy at the queries (`ICLModel.training_loss`). Concatenated, not
added: a label added onto x would mix the item the keys match on with the label the values carry, and the
readout would need a slot of its own anyway. One layer can then be an induction head: KQ's x-block β·I attends to
the context items nearest to x_q, and OV's label block (−c·W_label⁻¹ on the label slots) copies their labels into
the logits. Without `mlp` the logits are a mixture of context tokens, so the model cannot recall a label from its
weights (in-weights learning needs `mlp`: it reads x_q with the attention's output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iclab.config import ConfigError, ModelConfig
from iclab.models.base import AttentionWeights, ICLModel, Impl, seeded_generator
from iclab.models.gpt import label_table
from iclab.models.hooks import HookedModule, HookPoint
from iclab.shapes import Float, Int, shape_checked
from iclab.tokens import ConcatLayout
from iclab.validation import check_bool, check_int, check_real

__all__ = ["SoftmaxAttention", "SoftmaxAttentionLayer", "SoftmaxConfig"]


@dataclass(frozen=True)
class SoftmaxConfig(ModelConfig):
    """Multi-head softmax attention (He et al.; `SoftmaxAttention`); takes class labels (module docstring)."""

    name: ClassVar[str] = "softmax"
    label_targets: ClassVar[bool] = True

    layernorm: bool = False
    """pre-LayerNorm before the attention (and the MLP) of every layer"""
    init_scale: float = 0.002
    """initial variance · fan-in, divided by K"""
    mlp: bool = False
    """an MLP block after each attention layer"""
    mlp_ratio: int = 4
    """MLP hidden width / d_model"""
    positions: bool = False
    """learned positional embeddings"""
    max_points: int = 256
    """the longest prompt (points) positional embeddings cover"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bool("model.layernorm", self.layernorm)
        check_real("model.init_scale", self.init_scale, low=0.0, strict=True)
        check_bool("model.mlp", self.mlp)
        check_int("model.mlp_ratio", self.mlp_ratio, 1)
        check_bool("model.positions", self.positions)
        check_int("model.max_points", self.max_points, 1)


class SoftmaxAttentionLayer(AttentionWeights, HookedModule):
    """One layer's attention: per-head W_Q, W_K, W_V [H, D_head, D] and W_O [H, D, D_head] (D_head = D; column
    vectors, q = W_Q e), KQ = W_Kᵀ W_Q and OV = W_O W_V (iclab.models.base), and the hook points
    blocks.{l}.attn.hook_q / hook_k / hook_v / hook_pattern."""

    impl: Impl = "fast"  # "fast": scaled_dot_product_attention (unless the pattern is observed); "naive": written out

    def __init__(
        self, width: int, heads: int, std: float, generator: torch.Generator | None = None, scale: float = 1.0
    ):
        super().__init__()
        self.scale = scale  # score(i, j) = scale · k_iᵀ q_j (He et al.: 1; the separate model's copy layer: 1/√D)
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            init = torch.randn((heads, width, width), generator=generator) * std
            setattr(self, name, nn.Parameter(init))
        self.hook_q = HookPoint()  # [B, T, H, D_head] queries of every token (batch, pos, head, d_head)
        self.hook_k = HookPoint()  # [B, N, H, D_head] keys of the N context tokens
        self.hook_v = HookPoint()  # [B, N, H, D_head] values of the N context tokens
        self.hook_pattern = HookPoint()  # [B, H, T, N] softmax probabilities (query_pos, key_pos; rows sum to 1)

    def forward(self, h: Tensor, n_ctx: int) -> Tensor:
        """h [B, T, D] (first n_ctx tokens are context) → the update [B, T, D] summed over heads."""
        ctx = h[:, :n_ctx]  # [B, N, D]
        q = self.hook_q(torch.einsum("btd,hed->bthe", h, self.W_Q))  # [B, T, H, D_head]
        k = self.hook_k(torch.einsum("bnd,hed->bnhe", ctx, self.W_K))  # [B, N, H, D_head]
        v = self.hook_v(torch.einsum("bnd,hed->bnhe", ctx, self.W_V))  # [B, N, H, D_head]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, ·, D_head] views for attention
        if self.impl == "fast" and not self.hook_pattern._forward_hooks:
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

    def __init__(self, config: SoftmaxConfig, width: int, std: float, generator: torch.Generator | None = None):
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
    """K layers of multi-head softmax attention on the concat layout (module docstring); also a Learner.

    With `n_labels` L: tokens [x, W_label[ℓ]] of width d + L and L logits per query (module docstring)."""

    layout = ConcatLayout()

    def __init__(
        self,
        config: SoftmaxConfig,
        d: int,
        *,
        n_labels: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        generator = seeded_generator(generator)  # never the global RNG
        self.config = config
        self.d = d
        self.n_labels = n_labels
        if n_labels is not None:
            self.layout = ConcatLayout(n_labels)  # the L label slots: readout −(last L slots) = the logits
        width = self.layout.width(d)
        # As LSA: variance init_scale / (K · fan-in). A small init matters: from near-uniform attention the ȳ term
        # (pure noise) first drives Σ_h OV_h's y-row to 0, and the heads then split into opposite-sign KQ (He et
        # al.'s debiased GD); from an O(1) init the heads can settle on one same-sign kernel smoother instead.
        std = math.sqrt(config.init_scale / (config.layers * width))
        self.blocks = nn.ModuleList(SoftmaxBlock(config, width, std, generator) for _ in range(config.layers))
        self.pos_embed = None
        if config.positions:
            self.pos_embed = nn.Parameter(0.02 * torch.randn((config.max_points, width), generator=generator))
        if n_labels is not None:  # drawn last: the other weights are drawn as for real targets of the same width
            self.W_label = label_table(n_labels, n_labels, generator)  # [L, L]

    def layer_weights(self, layer: int) -> SoftmaxAttentionLayer:
        """Layer `layer`'s attention (W_Q, W_K, W_V, W_O; KQ, OV, scale: iclab.models.base's convention)."""
        return cast(SoftmaxBlock, self.blocks[layer]).attn

    def forward(self, tokens: Tensor, n_ctx: int) -> Tensor:
        """tokens [B, n_ctx + m, d + 1] → tokens of the same shape after all layers."""
        z = tokens
        if self.pos_embed is not None:
            if n_ctx + 1 > self.pos_embed.shape[0]:
                raise ConfigError(  # the prompt is longer than the run's config allows: the user's to fix
                    f"softmax positions cover {self.pos_embed.shape[0]} points (model.max_points); the prompt has "
                    f"{n_ctx} context points, which needs max_points ≥ {n_ctx + 1}"
                )
            index = torch.arange(tokens.shape[1], device=tokens.device).clamp_max(n_ctx)  # [T]: queries share N
            z = z + self.pos_embed[index]  # [B, T, D]
        for block in self.blocks:
            z = block(z, n_ctx)
        return z

    def embed_labels(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor:
        """Items x_ctx [B, n, d] with label indices y_ctx [B, n] and queries x_q [B, m, d] → tokens
        [B, n + m, d + L]: [x_i, W_label[ℓ_i]] for the context, [x_q, 0_L] for the queries."""
        if self.n_labels is None:
            raise ValueError(f"model {self.name!r} was built for real targets (n_labels None), not class labels")
        return self.layout.encode_parts(x_ctx, self.W_label[y_ctx], x_q)  # W_label[y] [B, n, L] fills the slots

    @shape_checked
    def predict(
        self,
        x_ctx: Float[Tensor, "batch n_ctx d"],
        y_ctx: Float[Tensor, "batch n_ctx *k"] | Int[Tensor, "batch n_ctx"],
        x_q: Float[Tensor, "batch n_q d"],
    ) -> Float[Tensor, "batch n_q *k"]:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d] → predictions [B, m] = −(queries' final y-slots).
        Class labels (y_ctx [B, n] long, a model built with n_labels = L): logits [B, m, L], −(the label slots)."""
        if self.n_labels is not None:
            tokens = self.embed_labels(x_ctx, y_ctx, x_q)
        else:
            tokens = self.layout.encode_parts(x_ctx, y_ctx, x_q)
        return self.layout.readout(self(tokens, x_ctx.shape[1]), x_ctx.shape[1])
