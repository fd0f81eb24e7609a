"""GPT (Garg et al., docs/papers.md §2): a pre-LN causal transformer over the interleaved layout x_1, y_1, …, x_T, y_T.

    e_l   = tok_l W_E + b_E + W_pos[l]                    linear read-in of [x] / [y, 0, …, 0] tokens, learned positions
    r     = r + Attn(LN₁(r)),  r = r + MLP(LN₂(r))       per block; Attn causal multi-head softmax, MLP GELU
    out_l = LN_f(r_l) W_U + b_U                          one value per token (k for vector targets y ∈ R^k);
                                                         ŷ_t is read at x_t's token

Per head h (TransformerLens convention, row vectors): q = r W_Q[h] + b_Q[h], k = r W_K[h] + b_K[h],
v = r W_V[h] + b_V[h], pattern = softmax(q kᵀ/√d_head + causal mask), z = pattern v, out = Σ_h z W_O[h] + b_O.
W_Q, W_K, W_V [H, d_model, d_head] are views of one fused parameter W_QKV; W_O [H, d_head, d_model]. The circuits
`layer_weights(l).KQ` / `.OV` [H, d_model, d_model] are in iclab.models.base's column-vector convention, as for
every attention model: with columns e = rᵀ, score(key i, query j) = e_iᵀ KQ_h e_j / √d_head (biases aside) and head
h adds OV_h e_i per unit of attention on token i; KQ = W_K W_Qᵀ = (TransformerLens's W_QK)ᵀ, OV = (W_V W_O)ᵀ.

Attention runs through `scaled_dot_product_attention`; when hook_attn_scores or hook_pattern is observed (or
`Attention.impl` is "naive") the written-out form is used instead, so the [B, H, L, L] pattern exists to be read or
edited. Tests check that both agree.

Initialisation follows Garg et al.'s code (HuggingFace GPT-2 inside nn.Linear read-in/read-out): GPT-2 weights
N(0, 0.02²), residual projections (W_O, W_out) N(0, (0.02/√(2·layers))²), biases 0, LayerNorms (1, 0); read-in and
read-out as nn.Linear's default U(±1/√fan_in) for weight and bias. GELU is GPT-2's tanh approximation. No dropout.

Class labels (tasks with `label_vocab` L, e.g. icl_classification; docs/families.md "Class-label targets"): built
with `n_labels = L`, the model reads item tokens linearly as before (x W_E + b_E), reads label ℓ as row ℓ of a
learned table W_label [L, d_model] (the one-hot read-in e_ℓ W_label, initialised as an nn.Linear(L, d_model)
weight), and its read-out W_U [d_model, L] gives L logits at each item token: `predict` → [B, m, L],
`predict_prefixes` → [B, T, L], trained with cross-entropy at the queries (`ICLModel.training_loss`).
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
from iclab.models.hooks import HookedModule, HookPoint
from iclab.shapes import Float, Int, shape_checked
from iclab.tokens import InterleavedLayout, causal_mask
from iclab.validation import check_int, fail

__all__ = ["GPT", "MLP", "Attention", "Block", "GPTConfig", "label_table"]


@dataclass(frozen=True)
class GPTConfig(ModelConfig):
    """Pre-LN causal transformer on the interleaved layout (Garg et al.; `GPT`); vector targets take a k-wide
    output head."""

    name: ClassVar[str] = "gpt"
    vector_targets: ClassVar[bool] = True
    label_targets: ClassVar[bool] = True

    width: int = 256
    """residual-stream width d_model (a multiple of heads)"""
    mlp_ratio: int = 4
    """MLP hidden width / d_model"""
    max_points: int = 256
    """the longest prompt (points) positional embeddings cover"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("model.width", self.width, 1)
        if self.width % self.heads:
            fail("model.width", f"a multiple of model.heads ({self.heads})", self.width)
        check_int("model.mlp_ratio", self.mlp_ratio, 1)
        check_int("model.max_points", self.max_points, 1)


GPT2_STD = 0.02


def _normal(shape: tuple[int, ...], std: float, generator: torch.Generator | None) -> nn.Parameter:
    return nn.Parameter(torch.randn(shape, generator=generator) * std)


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator | None) -> nn.Parameter:
    return nn.Parameter((torch.rand(shape, generator=generator) * 2 - 1) * bound)


def label_table(n_labels: int, width: int, generator: torch.Generator | None) -> nn.Parameter:
    """[L, d_model] learned label embeddings: row ℓ is the read-in of label ℓ, the weight of a bias-free
    nn.Linear(L, d_model) applied to the one-hot e_ℓ (and initialised as one, U(±1/√L)). A table rather than a
    one-hot read-in: the same function without L-wide tokens; learned rather than Reddy's fixed random vectors:
    labels are symbols, and the model may place them where it reads them best."""
    return _uniform((n_labels, width), 1 / math.sqrt(n_labels), generator)


def _under_vmap(t: Tensor) -> bool:
    """Whether `t` is a tensor batched by torch.func.vmap (one member of an ensemble's forward)."""
    return bool(torch._C._functorch.is_batchedtensor(t))


class Attention(AttentionWeights, HookedModule):
    """Causal multi-head softmax attention: [B, L, d_model] → [B, L, d_model] (see the module docstring)."""

    impl: Impl = "fast"  # "fast": scaled_dot_product_attention unless scores/pattern are observed; "naive": written out

    def __init__(self, width: int, heads: int, out_std: float, generator: torch.Generator | None = None):
        super().__init__()
        self.heads, self.d_head = heads, width // heads
        self.W_QKV = _normal((width, 3 * width), GPT2_STD, generator)  # columns: [Q | K | V], each H·d_head
        self.b_QKV = nn.Parameter(torch.zeros(3 * width))
        self.W_O = _normal((heads, self.d_head, width), out_std, generator)
        self.b_O = nn.Parameter(torch.zeros(width))
        self.hook_q = HookPoint()  # [B, L, H, d_head] (batch, pos, head, d_head), bias included
        self.hook_k = HookPoint()  # [B, L, H, d_head]
        self.hook_v = HookPoint()  # [B, L, H, d_head]
        self.hook_attn_scores = HookPoint()  # [B, H, L, L] (query_pos, key_pos) scaled scores, -inf where masked
        self.hook_pattern = HookPoint()  # [B, H, L, L] (query_pos, key_pos) softmax over keys
        self.hook_z = HookPoint()  # [B, L, H, d_head] pattern-weighted values, before W_O

    def _split(self, fused: Tensor) -> Tensor:
        """W_QKV [d_model, 3·H·d_head] (or b_QKV) → [3, H, d_model, d_head] (or [3, H, d_head]), a view."""
        if fused.dim() == 1:
            return fused.view(3, self.heads, self.d_head)
        return fused.view(-1, 3, self.heads, self.d_head).permute(1, 2, 0, 3)

    W_Q = property(lambda self: self._split(self.W_QKV)[0], doc="[H, d_model, d_head] query weights (a view)")
    W_K = property(lambda self: self._split(self.W_QKV)[1], doc="[H, d_model, d_head] key weights (a view)")
    W_V = property(lambda self: self._split(self.W_QKV)[2], doc="[H, d_model, d_head] value weights (a view)")
    b_Q = property(lambda self: self._split(self.b_QKV)[0], doc="[H, d_head]")
    b_K = property(lambda self: self._split(self.b_QKV)[1], doc="[H, d_head]")
    b_V = property(lambda self: self._split(self.b_QKV)[2], doc="[H, d_head]")

    scale = property(lambda self: 1 / math.sqrt(self.d_head), doc="1/√d_head, the score factor")

    @property
    def KQ(self) -> Tensor:
        """[H, d_model, d_model]: score(key i, query j) = e_iᵀ KQ_h e_j / √d_head, biases aside (column vectors;
        TransformerLens's W_QK = W_Q W_Kᵀ is KQᵀ)."""
        return self.W_K @ self.W_Q.transpose(-1, -2)

    @property
    def OV(self) -> Tensor:
        """[H, d_model, d_model]: head h adds OV_h e_i per unit of attention on token i, b_V aside (column vectors;
        TransformerLens's W_OV = W_V W_O is OVᵀ)."""
        return (self.W_V @ self.W_O).transpose(-1, -2)

    def forward(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        """h [B, L, d_model] (after LN₁); mask [L, L] bool (True: may attend) or None (causal) → [B, L, d_model]."""
        B, L, width = h.shape
        qkv = torch.addmm(self.b_QKV, h.reshape(B * L, width), self.W_QKV)  # [B·L, 3·H·d_head]
        # unbind, not indexing: its backward stacks the three gradients instead of zero-filling [3, B, L, H, d_head]
        q, k, v = qkv.view(B, L, 3, self.heads, self.d_head).unbind(2)  # [B, L, H, d_head] each
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, L, d_head] views for attention
        observed = self.hook_attn_scores._forward_hooks or self.hook_pattern._forward_hooks
        # under vmap (ensembles) scaled_dot_product_attention has no batching rule on the CPU and runs member by
        # member; the written-out softmax batches (measured 1.6x faster per training step for 34 attn_only members)
        if observed or self.impl == "naive" or _under_vmap(q):
            z = self.attend_naive(q, k, v, mask)
        else:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        z = self.hook_z(z.transpose(1, 2))  # [B, L, H, d_head]
        z = z.reshape(B * L, width)  # [B·L, H·d_head]
        return torch.addmm(self.b_O, z, self.W_O.reshape(width, width)).view(B, L, width)

    def attend_naive(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """The attention written out: q, k, v [B, H, L, d_head] → z [B, H, L, d_head] via the [L, L] pattern."""
        allowed = causal_mask(q.shape[2], q.device) if mask is None else mask  # [L, L]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head)  # [B, H, L, L]
        scores = self.hook_attn_scores(scores.masked_fill(~allowed, float("-inf")))
        pattern = self.hook_pattern(scores.softmax(dim=-1))  # [B, H, L, L], rows sum to 1
        return pattern @ v


class MLP(HookedModule):
    """r ↦ GELU(r W_in + b_in) W_out + b_out, hidden width mlp_ratio·d_model: [B, L, d_model] → same."""

    def __init__(self, width: int, hidden: int, out_std: float, generator: torch.Generator | None = None):
        super().__init__()
        self.W_in = _normal((width, hidden), GPT2_STD, generator)
        self.b_in = nn.Parameter(torch.zeros(hidden))
        self.W_out = _normal((hidden, width), out_std, generator)
        self.b_out = nn.Parameter(torch.zeros(width))
        self.hook_post = HookPoint()  # [B, L, hidden] after the GELU

    def forward(self, h: Tensor) -> Tensor:
        act = self.hook_post(F.gelu(h @ self.W_in + self.b_in, approximate="tanh"))  # [B, L, hidden]
        return act @ self.W_out + self.b_out


class Block(HookedModule):
    """Pre-LN block: resid_mid = resid_pre + Attn(LN₁(resid_pre)); resid_post = resid_mid + MLP(LN₂(resid_mid))."""

    def __init__(self, width: int, heads: int, hidden: int, out_std: float, generator: torch.Generator | None = None):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, out_std, generator)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = MLP(width, hidden, out_std, generator)
        self.hook_resid_pre = HookPoint()  # [B, L, d_model]
        self.hook_attn_out = HookPoint()  # [B, L, d_model]
        self.hook_resid_mid = HookPoint()  # [B, L, d_model]
        self.hook_mlp_out = HookPoint()  # [B, L, d_model]
        self.hook_resid_post = HookPoint()  # [B, L, d_model]

    def forward(self, resid: Tensor, mask: Tensor | None = None) -> Tensor:
        resid = self.hook_resid_pre(resid)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(self.attn(self.ln1(resid), mask)))
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(self.ln2(resid))))


class GPT(ICLModel):
    """Garg et al.'s GPT-style model on the interleaved layout; a Learner with Garg's training loss.

    config: layers, heads, width (d_model, a multiple of heads), mlp_ratio, max_points (positions cover
    2·max_points tokens). d: input dimension. Hook points: hook_embed, hook_pos_embed, blocks.{l}.hook_resid_pre
    / hook_attn_out / hook_resid_mid / hook_mlp_out / hook_resid_post, blocks.{l}.attn.hook_q / hook_k / hook_v /
    hook_attn_scores / hook_pattern / hook_z, blocks.{l}.mlp.hook_post.
    """

    predicts_prefixes = True
    config: GPTConfig
    layout: InterleavedLayout

    def __init__(
        self,
        config: GPTConfig,
        d: int,
        *,
        k: int | None = None,
        n_labels: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        generator = seeded_generator(generator)  # never the global RNG
        self.layout = InterleavedLayout(k)  # k: vector targets y ∈ R^k, one output per coordinate (None: scalar)
        if config.width % config.heads:
            raise ValueError(f"model.width: must be a multiple of model.heads ({config.heads}), got {config.width}")
        self.config, self.d, self.n_labels = config, d, n_labels
        width, tok = config.width, self.layout.width(d)
        out_std = GPT2_STD / math.sqrt(2 * config.layers)  # GPT-2's scaled init of residual projections
        self.W_E = _uniform((tok, width), 1 / math.sqrt(tok), generator)  # read-in, nn.Linear default init
        self.b_E = _uniform((width,), 1 / math.sqrt(tok), generator)
        if n_labels is not None:  # drawn here, so a label model's other weights are not those of a regression one
            self.W_label = label_table(n_labels, width, generator)
        self.W_pos = _normal((2 * config.max_points, width), GPT2_STD, generator)
        hidden = config.mlp_ratio * width
        self.blocks = nn.ModuleList(
            Block(width, config.heads, hidden, out_std, generator) for _ in range(config.layers)
        )
        self.ln_final = nn.LayerNorm(width)
        k_out = self.layout.out_dim if n_labels is None else n_labels  # L logits for class labels
        self.W_U = _uniform((width, k_out), 1 / math.sqrt(width), generator)  # read-out, nn.Linear default init
        self.b_U = _uniform((k_out,), 1 / math.sqrt(width), generator)
        self.hook_embed = HookPoint()  # [B, L, d_model] read-in of the tokens
        self.hook_pos_embed = HookPoint()  # [L, d_model] (or [B, L, d_model] for given positions)

    def layer_weights(self, layer: int) -> Attention:
        """Layer `layer`'s attention (W_Q, W_K, W_V, W_O and KQ, OV, scale: iclab.models.base's convention)."""
        return cast(Block, self.blocks[layer]).attn

    def forward(self, tokens: Tensor, *, mask: Tensor | None = None, positions: Tensor | None = None) -> Tensor:
        """tokens [B, L, D] (interleaved, L ≤ 2·max_points) → outputs [B, L, k_out] (k_out = 1, or k for vector
        targets; read at the x tokens by the layout).

        mask [L, L] bool (True: may attend; default causal); positions [L] long (default 0 … L − 1).
        """
        return self.run(tokens @ self.W_E + self.b_E, mask=mask, positions=positions)

    def run(
        self,
        embedded: Tensor,
        *,
        mask: Tensor | None = None,
        positions: Tensor | None = None,
        read_from: int = 0,
    ) -> Tensor:
        """embedded [B, L, d_model] read-in tokens (`forward`'s, or `embed_labels`') → outputs [B, L − read_from,
        k_out] of the tokens from `read_from` on (k_out = L logits for class labels): the read-out (and its hooks)
        sees only those tokens, so `predict` pays it for the queries alone; mask and positions as in `forward`."""
        L = embedded.shape[1]
        if self.W_pos.shape[0] < L:
            raise ConfigError(  # the prompt is longer than the run's config allows: the user's to fix
                f"{type(self).__name__}: {L} tokens exceed the {self.W_pos.shape[0]} learned positions "
                f"(model.max_points = {self.config.max_points} points); raise model.max_points"
            )
        pos = self.W_pos[:L] if positions is None else self.W_pos[positions]  # [L, d_model]
        resid = self.hook_embed(embedded) + self.hook_pos_embed(pos)  # [B, L, d_model]
        for block in self.blocks:
            resid = block(resid, mask)
        return self.unembed(resid[:, read_from:] if read_from else resid)

    def unembed(self, resid: Tensor) -> Tensor:
        """Final residual stream [B, L, d_model] → outputs [B, L, k_out]: LN_f, then the read-out W_U."""
        return self.ln_final(resid) @ self.W_U + self.b_U

    def embed_labels(self, x: Tensor, y: Tensor) -> Tensor:
        """Items x [B, T, d] and label indices y [B, T] → read-in tokens [B, 2T, d_model] of the interleaved
        stream x_1, ℓ_1, x_2, ℓ_2, …: x_t W_E + b_E, and row ℓ_t of W_label."""
        if self.n_labels is None:
            raise ValueError(f"model {self.name!r} was built for real targets (n_labels None), not class labels")
        (B, T, _), width = x.shape, self.W_E.shape[1]
        x_tok = x @ self.W_E + self.b_E  # [B, T, d_model]
        y_tok = self.W_label[y]  # [B, T, d_model]
        return torch.stack([x_tok, y_tok], dim=2).reshape(B, 2 * T, width)  # [B, T, 2, d_model] → [B, 2T, d_model]

    @shape_checked
    def predict_prefixes(
        self, x: Float[Tensor, "batch T d"], y: Float[Tensor, "batch T *k"] | Int[Tensor, "batch T"]
    ) -> Float[Tensor, "batch T *k"]:
        """x [B, T, d], y [B, T] → [B, T] in one causal pass: prediction t (at x_t's token) sees points < t.
        Class labels (y [B, T] long): logits [B, T, L]."""
        if self.n_labels is not None:
            return self.run(self.embed_labels(x, y))[:, ::2]  # the x tokens' logits, [B, T, L]
        return self.layout.readout(self(self.layout.encode_stream(x, y)), 0)

    @shape_checked
    def predict(
        self,
        x_ctx: Float[Tensor, "batch n_ctx d"],
        y_ctx: Float[Tensor, "batch n_ctx *k"] | Int[Tensor, "batch n_ctx"],
        x_q: Float[Tensor, "batch n_q d"],
    ) -> Float[Tensor, "batch n_q *k"]:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d] → [B, m]; each query is answered as if it were point n + 1.
        Class labels (y_ctx [B, n] long, a model built with n_labels = L): logits [B, m, L].

        One pass over 2(n + m) tokens: the layout's query mask hides the queries from each other, and every query
        pair takes the positions of point n + 1 (2n, 2n + 1), so query j's prediction equals
        predict_prefixes([x_ctx, x_q[:, j]], …)[:, n] — the same question, with the positions seen in training.
        """
        n, m = x_ctx.shape[1], x_q.shape[1]
        if self.n_labels is not None:  # query label tokens hold label 0: no readout position ever sees them
            y = torch.cat([y_ctx, y_ctx.new_zeros(x_q.shape[:2])], dim=1)  # [B, n+m]
            embedded = self.embed_labels(torch.cat([x_ctx, x_q], dim=1), y)  # [B, 2(n+m), d_model]
        else:
            embedded = self.layout.encode_parts(x_ctx, y_ctx, x_q) @ self.W_E + self.b_E  # query y tokens 0
        if m == 1:  # the plain causal pass already is this
            return self._read(self.run(embedded, read_from=2 * n), 0)
        pos = torch.arange(2 * (n + m), device=x_ctx.device)  # [2(n+m)]
        positions = torch.where(pos < 2 * n, pos, 2 * n + pos % 2)
        mask = self.layout.mask(n + m, n, device=x_ctx.device)  # [2(n+m), 2(n+m)]
        return self._read(self.run(embedded, mask=mask, positions=positions, read_from=2 * n), 0)

    def _read(self, outputs: Tensor, n_ctx: int) -> Tensor:
        """outputs [B, 2T, k_out] → the predictions at the x tokens of points n_ctx …: [B, T − n_ctx] (or [..., k],
        or logits [..., L])."""
        if self.n_labels is not None:
            return outputs[:, 2 * n_ctx :: 2]
        return self.layout.readout(outputs, n_ctx)
