"""Linear self-attention (von Oswald et al.): e_j ← e_j + Σ_h W_O,h Σ_{i≤N} (W_V,h e_i)(W_K,h e_i)ᵀ(W_Q,h e_j).

W_O is von Oswald's projection P (the parameter was called P before; such checkpoints still load). Keys and values
come from the N context tokens only, so queries never see each other. No softmax and no 1/N: the construction puts
η/N into W_O. Layers are untied (K weight sets) or tied (one weight set applied K times;
vO's "recurrent" model). Optional pre-LayerNorm on every layer but the first (as in the vO code).

Three paths compute the same predictions: `predict` (and so `training_loss`) runs iclab.models.lsa_fast — the Gram
form, the last layer at the queries only, a hand-written backward — unless a hook point is observed or the
blocks are set to "naive"; `forward` runs every token through every block with its hook points (the Gram form,
`LSABlock.update_gram`, or with q/k/v/pattern observed or impl "naive", the attention written out).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal, cast

import torch
from torch import Tensor, nn

from iclab.config import ModelConfig
from iclab.metrics import half_mse
from iclab.models.base import AttentionWeights, ICLModel, Impl, seeded_generator
from iclab.models.hooks import HookedModule, HookPoint
from iclab.models.lsa_fast import FastLayer, lsa_query_predictions
from iclab.shapes import Float, shape_checked
from iclab.tasks.base import Prompts
from iclab.tokens import ConcatLayout
from iclab.validation import check_bool, check_choice, check_real, fail

__all__ = ["LSA", "LSAConfig", "LSAWeights"]


@dataclass(frozen=True)
class LSAConfig(ModelConfig):
    """Linear self-attention on the concat layout (von Oswald et al.; `LSA`)."""

    name: ClassVar[str] = "lsa"

    tied: bool = False
    """one weight set applied K times (vO "recurrent")"""
    layernorm: bool = False
    """pre-LayerNorm on every layer but the first"""
    init_scale: float = 0.002
    """initial variance · fan-in, divided by K (vO code: 0.002/K); with init_scheme "zfb", ZFB's σ"""
    init_scheme: Literal["random", "zfb"] = "random"
    """random: i.i.d. N(0, init_scale / (K · fan-in)) entries; zfb: Zhang–Frei–Bartlett's start (one layer, one
    head, family lsa only): KQ = σ·blockdiag(ΘΘᵀ, 0) with Θ [d, d] Gaussian from the generator scaled to
    ‖ΘΘᵀ‖_F = 1, OV = −σ·e_y e_yᵀ (the minus: iclab reads the prediction as −(the query's y-slot)), σ = init_scale;
    W_Q = W_K = √σ·blockdiag(Θᵀ, 0), W_V = √σ·e_y e_yᵀ, W_O = −√σ·e_y e_yᵀ"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bool("model.tied", self.tied)
        check_bool("model.layernorm", self.layernorm)
        check_real("model.init_scale", self.init_scale, low=0.0, strict=True)
        check_choice("model.init_scheme", self.init_scheme, ("random", "zfb"))
        if self.init_scheme == "zfb" and (self.name != "lsa" or self.layers != 1 or self.heads != 1):
            fail("model.init_scheme", "'random' unless the family is lsa with one layer and one head", self.init_scheme)


class LSAWeights(AttentionWeights, nn.Module):
    """One layer's weights, per head: W_Q, W_K, W_V, W_O each [heads, D, D] with D = d + 1 (token width), column
    vectors (q = W_Q e); KQ = W_Kᵀ W_Q (score(i, j) = e_iᵀ KQ e_j) and OV = W_O W_V (key i writes OV e_i times its
    score), iclab.models.base's convention."""

    def __init__(self, width: int, heads: int, std: float, generator: torch.Generator | None = None):
        super().__init__()
        shape = (heads, width, width)
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            init = torch.randn(shape, generator=generator) * std
            setattr(self, name, nn.Parameter(init))


class AttentionHooks(nn.Module):
    """blocks.{l}.attn.hook_*: the attention's internals (TransformerLens-style names)."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_q = HookPoint()  # [B, T, H, D] queries W_Q e_j of every token (batch, pos, head, d_head)
        self.hook_k = HookPoint()  # [B, N, H, D] keys of the N context tokens
        self.hook_v = HookPoint()  # [B, N, H, D] values of the N context tokens
        self.hook_pattern = HookPoint()  # [B, H, T, N] unnormalised scores e_iᵀ KQ e_j (query_pos, key_pos)


class LSABlock(HookedModule):
    """Hook points (and the optional LayerNorm) of one application of a layer."""

    def __init__(self, width: int, layernorm: bool):
        super().__init__()
        self.ln = nn.LayerNorm(width) if layernorm else None
        self.attn = AttentionHooks()
        self.hook_attn_out = HookPoint()  # [B, T, D] what the layer adds to the residual stream
        self.hook_resid_post = HookPoint()  # [B, T, D]

    def forward(self, z: Tensor, w: LSAWeights, n_ctx: int) -> Tensor:
        h = z if self.ln is None else self.ln(z)
        a = self.attn
        observed = any(p._forward_hooks for p in (a.hook_q, a.hook_k, a.hook_v, a.hook_pattern))
        naive = observed or self.impl == "naive"
        update = self.update_naive(h, w, n_ctx) if naive else self.update_gram(h, w, n_ctx)
        return self.hook_resid_post(z + self.hook_attn_out(update))

    impl: Impl = "fast"  # "fast": the Gram form (unless q/k/v/pattern are observed); "naive": the attention written out

    def update_naive(self, h: Tensor, w: LSAWeights, n_ctx: int) -> Tensor:
        """The attention written out: queries, keys, values and the [T, N] score matrix per head."""
        ctx = h[:, :n_ctx]  # [B, N, D]
        q = self.attn.hook_q(torch.einsum("btd,hed->bthe", h, w.W_Q))  # [B, T, H, D]
        k = self.attn.hook_k(torch.einsum("bnd,hed->bnhe", ctx, w.W_K))  # [B, N, H, D]
        v = self.attn.hook_v(torch.einsum("bnd,hed->bnhe", ctx, w.W_V))  # [B, N, H, D]
        scores = self.attn.hook_pattern(torch.einsum("bthe,bnhe->bhtn", q, k))  # [B, H, T, N]
        heads_out = torch.einsum("bhtn,bnhe->bthe", scores, v)  # [B, T, H, D]
        return torch.einsum("bthe,hfe->btf", heads_out, w.W_O)  # [B, T, D]

    @staticmethod
    def update_gram(h: Tensor, w: LSAWeights, n_ctx: int) -> Tensor:
        """Same update, reassociated: Σ_h W_O,h Σ_i (W_V e_i)(W_K e_i)ᵀ W_Q e_j = Σ_h OV_h G KQ_h e_j with the
        context Gram matrix G = Σ_i e_i e_iᵀ. One [D, D] matrix per prompt instead of a [T, N] score matrix per
        head: faster on the CPU in the vO setting (`iclab bench` measures it; tests compare it with the naive form).
        """
        ctx = h[:, :n_ctx]  # [B, N, D]
        gram = ctx.transpose(1, 2) @ ctx  # [B, D, D]
        m = torch.einsum("hfe,bed,hdc->bfc", w.OV, gram, w.KQ)  # [B, D, D]
        return h @ m.transpose(1, 2)  # [B, T, D]


class LSA(ICLModel):
    """K-layer linear self-attention on the concat layout; also a Learner (predict, predict_prompts)."""

    layout = ConcatLayout()
    config: LSAConfig
    batched_members = True  # members_training_loss through iclab.models.lsa_fast

    def __init__(self, config: LSAConfig, d: int, *, generator: torch.Generator | None = None):
        super().__init__()
        generator = seeded_generator(generator)  # never the global RNG
        self.config = config
        self.d = d
        width = d + 1
        # vO code: VarianceScaling(init_scale / K) → variance init_scale / (K · fan_in).
        std = math.sqrt(config.init_scale / (config.layers * width))
        n_weights = 1 if config.tied else config.layers
        self.weights = nn.ModuleList(LSAWeights(width, config.heads, std, generator) for _ in range(n_weights))
        # LayerNorm is off before layer 0; in tied mode the later layers share one LayerNorm's parameters.
        self.blocks = nn.ModuleList(LSABlock(width, config.layernorm and layer > 0) for layer in range(config.layers))
        if config.tied and config.layernorm and config.layers > 2:
            for block in self.blocks[2:]:
                block.ln = self.blocks[1].ln
        if config.init_scheme == "zfb":
            self._zfb_init(generator)

    @torch.no_grad()
    def _zfb_init(self, generator: torch.Generator) -> None:
        """Zhang–Frei–Bartlett's initialisation (LSAConfig.init_scheme): KQ = σ·blockdiag(ΘΘᵀ, 0), OV = −σ·e_y e_yᵀ."""
        d, sigma = self.d, self.config.init_scale
        theta = torch.randn((d, d), generator=generator, dtype=torch.float64)
        theta /= torch.linalg.matrix_norm(theta @ theta.T).sqrt()  # ‖ΘΘᵀ‖_F = 1
        w = self.layer_weights(0)
        root = math.sqrt(sigma)
        for p in (w.W_Q, w.W_K, w.W_V, w.W_O):
            p.zero_()
        w.W_Q[0, :d, :d] = root * theta.T  # KQ = W_Kᵀ W_Q = σ ΘΘᵀ
        w.W_K[0, :d, :d] = root * theta.T
        w.W_V[0, d, d] = root
        w.W_O[0, d, d] = -root

    def layer_weights(self, layer: int) -> LSAWeights:
        """Layer `layer`'s weights (W_Q, W_K, W_V, W_O; KQ, OV: iclab.models.base's convention)."""
        return cast(LSAWeights, self.weights[0 if self.config.tied else layer])

    def forward(self, tokens: Tensor, n_ctx: int) -> Tensor:
        """tokens [B, n_ctx + m, d + 1] → tokens of the same shape after all layers."""
        z = tokens
        for layer, block in enumerate(self.blocks):
            z = block(z, self.layer_weights(layer), n_ctx)
        return z

    def _fast_predictions(self) -> bool:
        """The query-only path (iclab.models.lsa_fast) runs when every block is on "fast" and no hook is observed."""
        for module in self.modules():
            if isinstance(getattr(type(module), "impl", None), str) and module.impl != "fast":
                return False
            if isinstance(module, HookPoint) and (module._forward_hooks or module._forward_pre_hooks):
                return False
        return True

    def fast_layers(self, params: Mapping[str, Tensor]) -> list[FastLayer]:
        """The K layers' circuits for iclab.models.lsa_fast from `params`: this model's parameters by name
        (`named_parameters`), each with a leading member dimension E (KQ, OV [E, H, D, D]; LayerNorm [E, D])."""
        owners = {id(m): name for name, m in self.named_modules()}  # a shared LayerNorm under its first name
        layers: list[FastLayer] = []
        for layer, block in enumerate(cast(list[LSABlock], list(self.blocks))):
            if self.config.tied and layer > 0:
                KQ, OV = layers[0].KQ, layers[0].OV
            else:
                W = {n: params[f"weights.{layer}.{n}"] for n in ("W_Q", "W_K", "W_V", "W_O")}
                KQ, OV = W["W_K"].mT @ W["W_Q"], W["W_O"] @ W["W_V"]
            ln = None if block.ln is None else owners[id(block.ln)]
            layers.append(
                FastLayer(
                    KQ, OV, None if ln is None else params[f"{ln}.weight"], None if ln is None else params[f"{ln}.bias"]
                )
            )
        return layers

    def members_training_loss(self, params: Mapping[str, Tensor], prompts: Prompts) -> Tensor:
        """[E] losses of E LSA models of this shape on their own batches (ICLModel's contract), written out through
        iclab.models.lsa_fast: weights [E, …] (`fast_layers`), prompts [E·B, …] → ½·MSE at the queries per member."""
        E = next(iter(params.values())).shape[0]
        x, y_ctx, y_q = (t.reshape(E, len(prompts) // E, *t.shape[1:]) for t in (prompts.x, prompts.y_ctx, prompts.y_q))
        if y_q.dim() == 3:  # scalar targets
            y_ctx, y_q = y_ctx.unsqueeze(-1), y_q.unsqueeze(-1)
        pred = lsa_query_predictions(x, y_ctx, self.fast_layers(params))  # [E, B, m, k]
        return half_mse(pred, y_q, dim=(1, 2), vector=True)

    def _predict_fast(self, x: Tensor, y_ctx: Tensor) -> Tensor:
        """One model through iclab.models.lsa_fast: x [B, n + m, d], y_ctx [B, n] (or [B, n, k]) → [B, m] (or
        [B, m, k])."""
        params = {name: p.unsqueeze(0) for name, p in self.named_parameters()}
        y = y_ctx.unsqueeze(-1) if y_ctx.dim() == 2 else y_ctx
        pred = lsa_query_predictions(x[None], y[None], self.fast_layers(params))[0]
        return pred[..., 0] if y_ctx.dim() == 2 else pred

    @shape_checked
    def predict(
        self,
        x_ctx: Float[Tensor, "batch n_ctx d"],
        y_ctx: Float[Tensor, "batch n_ctx *k"],
        x_q: Float[Tensor, "batch n_q d"],
    ) -> Float[Tensor, "batch n_q *k"]:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d] → predictions [B, m]: the query-only Gram form
        (iclab.models.lsa_fast) unless a hook is observed or a block runs its naive path, else all tokens."""
        if self._fast_predictions():
            return self._predict_fast(torch.cat([x_ctx, x_q], 1), y_ctx)
        tokens = self.layout.encode_parts(x_ctx, y_ctx, x_q)
        return self.layout.readout(self(tokens, x_ctx.shape[1]), x_ctx.shape[1])

    @shape_checked
    def predict_prompts(self, prompts: Prompts) -> Float[Tensor, "batch n_q *k"]:
        """[B, m] predictions for the prompts' queries (their x needs no re-assembly on the fast path)."""
        if self._fast_predictions():
            return self._predict_fast(prompts.x, prompts.y_ctx)
        return self.predict(prompts.x_ctx, prompts.y_ctx, prompts.x_q)
