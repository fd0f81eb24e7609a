"""LSA's fast path: query-only predictions in the Gram form, with a hand-written backward, for one model or a stack.

What it computes is `LSA.predict` (iclab.models.lsa), the prediction −(y-slot of each query token after K layers),
laid out for the few big matrix products a CPU (or a GPU) runs well instead of many small ones:

* **Gram form.** Per head, a layer adds OV_h G KQ_h e_j to token j, with the context Gram matrix G = Σ_i e_i e_iᵀ
  ([D, D] per prompt). Row-wise, for all T tokens at once: a = h KQsᵀ (one GEMM against the stacked [H·D, D]
  KQ_h), b = a G (one batched product per prompt), update = b OVs (one GEMM against the stacked OV_hᵀ).
* **Queries only where they suffice.** Keys and values come from the context, so the queries never change the
  context tokens: layers 1 … K − 1 update every token, the last layer only the m queries and only their k
  y-slots (the readout), which is O(B·m·H·D²) work after G.
* **A hand-written backward** (`GramAttention`): the few products the gradient needs, and none for what needs no
  gradient (the first layer's input is data: neither its G nor its tokens need one, which leaves one batched
  product in the backward of a one-layer model).
* **A member dimension.** Every tensor carries a leading member dimension E (E = 1 for one model): weights
  [E, …], tokens [E, B, …]. Products against weights become E big GEMMs and the per-prompt products one batched
  product over E·B prompts, so an ensemble of E one-layer models costs about what one model with an E·B batch
  costs (`Ensemble` uses it through `LSA.members_training_loss`).

The naive reference is the attention written out (`LSABlock.update_naive`); tests compare both, values and
gradients, in float64. G is symmetric; the backward uses Gᵀ where the calculus says Gᵀ, so it is exact for the
forward as computed. Shapes below: E members, B prompts, N context tokens, T tokens a layer updates, H heads,
D = d + k token width, k target slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FastLayer", "GramAttention", "GramReadout", "gram_attention", "gram_readout", "lsa_query_predictions"]


@dataclass(frozen=True)
class FastLayer:
    """One layer's circuits for the fast path: KQ, OV [E, H, D, D] (iclab.models.base's convention) and, for a
    pre-LayerNorm layer, its affine parameters ln_weight, ln_bias [E, D] (None: no LayerNorm)."""

    KQ: Tensor
    OV: Tensor
    ln_weight: Tensor | None = None
    ln_bias: Tensor | None = None


class GramAttention(torch.autograd.Function):
    """update [E, B, T, D] = Σ_h OV_h G KQ_h h_t for every token t, in rows (h KQsᵀ) G OVs, with the Gram matrix
    G = Σ_{i<N} h_i h_iᵀ of the first N tokens (the context: keys and values).

    h [E, B, T, D], n_ctx = N, KQs [E, H·D, D] (row (h, c) = KQ_h[c, :]), OVs [E, H·D, D] (row (h, c) = OV_h[:, c]).
    """

    generate_vmap_rule = True  # plain torch ops only, so torch.func.vmap can batch it (e.g. over ensemble members)

    @staticmethod
    def forward(h: Tensor, n_ctx: int, KQs: Tensor, OVs: Tensor) -> tuple[Tensor, ...]:
        """→ (update [E, B, T, D], and for the backward: G, a, b)."""
        E, B, T, D = h.shape
        HD = KQs.shape[-2]
        c = h[:, :, :n_ctx].flatten(0, 1)  # [E·B, N, D]
        gram = c.mT @ c  # [E·B, D, D]
        a = (h.reshape(E, B * T, D) @ KQs.mT).view(E * B, T * HD // D, D)  # [E·B, T·H, D]
        b = a @ gram  # [E·B, T·H, D]
        return (b.view(E, B * T, HD) @ OVs).view(E, B, T, D), gram, a, b

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        h, ctx.n_ctx, KQs, OVs = inputs
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(h, KQs, OVs, *output[1:])

    @staticmethod
    def backward(ctx: Any, grad: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
        h, KQs, OVs, gram, a, b = ctx.saved_tensors
        need_h, _, need_kq, need_ov = ctx.needs_input_grad
        E, B, T, D = h.shape
        HD = KQs.shape[-2]
        g = grad.reshape(E, B * T, D)
        d_ov = b.view(E, B * T, HD).mT @ g if need_ov else None  # [E, H·D, D]
        db = (g @ OVs.mT).view(E * B, T * HD // D, D)  # [E·B, T·H, D]
        da = (db @ gram).view(E, B * T, HD)  # [E, B·T, H·D]; G = Gᵀ
        d_kq = da.mT @ h.reshape(E, B * T, D) if need_kq else None  # [E, H·D, D]
        d_h = None
        if need_h:
            d_h = (da @ KQs).view(E, B, T, D)
            d_gram = a.mT @ db  # [E·B, D, D]; the context tokens get (dG + dGᵀ) h_i
            c = h[:, :, : ctx.n_ctx].flatten(0, 1)
            d_h[:, :, : ctx.n_ctx] += (c @ (d_gram + d_gram.mT)).view(E, B, ctx.n_ctx, D)
        return d_h, None, d_kq, d_ov


class GramReadout(torch.autograd.Function):
    """The last layer at the queries only: u [E, B, m, k] = the k y-slots of Σ_h OV_h G KQ_h q for the m query
    tokens q after the N context tokens, associated as (q KQ_hᵀ)(G OV_h[-k:]ᵀ): G OV_hᵀ is one GEMM over all
    prompts ([E, B·D, D] × [E, D, H·k]), and what is left per prompt has k columns — a product with one row per
    query (the association `GramAttention` uses) is slow in batched BLAS.

    h [E, B, N + m, D], n_ctx = N, KQs [E, H·D, D] (as in GramAttention), OVr [E, D, H·k] (column (h, f) =
    OV_h[f, :]ᵀ for the k y-slot rows f).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(h: Tensor, n_ctx: int, KQs: Tensor, OVr: Tensor) -> tuple[Tensor, ...]:
        """→ (u [E, B, m, k], and for the backward: G, a, G OVᵀ by rows)."""
        E, B, T, D = h.shape
        m, HD, HK = T - n_ctx, KQs.shape[-2], OVr.shape[-1]
        H = HD // D
        c = h[:, :, :n_ctx].flatten(0, 1)  # [E·B, N, D]
        gram = c.mT @ c  # [E·B, D, D]
        q = h[:, :, n_ctx:].reshape(E, B * m, D)
        a = (q @ KQs.mT).view(E * B, m, HD)  # [E·B, m, H·D]
        go = (gram.view(E, B * D, D) @ OVr).view(E * B, D, H, HK // H)  # [E·B, D, H, k]: G OV_hᵀ
        gop = go.transpose(1, 2).reshape(E * B, HD, HK // H)  # [E·B, H·D, k], row (h, c)
        return (a @ gop).view(E, B, m, HK // H), gram, a, gop

    setup_context = GramAttention.setup_context

    @staticmethod
    def backward(ctx: Any, grad: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
        h, KQs, OVr, gram, a, gop = ctx.saved_tensors
        need_h, _, need_kq, need_ov = ctx.needs_input_grad
        E, B, T, D = h.shape
        N = ctx.n_ctx
        m, HD, HK = T - N, KQs.shape[-2], OVr.shape[-1]
        H, k = HD // D, HK // (HD // D)
        g = grad.reshape(E * B, m, k)
        da = (g @ gop.mT).view(E, B * m, HD)  # [E, B·m, H·D]
        d_go = (a.mT @ g).view(E * B, H, D, k).transpose(1, 2).reshape(E, B * D, HK)  # [E, B·D, H·k]
        d_ov = gram.view(E, B * D, D).mT @ d_go if need_ov else None  # [E, D, H·k]
        d_kq = da.mT @ h[:, :, N:].reshape(E, B * m, D) if need_kq else None  # [E, H·D, D]
        d_h = None
        if need_h:
            d_h = torch.empty_like(h)
            d_h[:, :, N:] = (da @ KQs).view(E, B, m, D)
            d_gram = (d_go @ OVr.mT).view(E * B, D, D)  # [E·B, D, D]
            c = h[:, :, :N].flatten(0, 1)
            d_h[:, :, :N] = (c @ (d_gram + d_gram.mT)).view(E, B, N, D)
        return d_h, None, d_kq, d_ov


def gram_attention(h: Tensor, n_ctx: int, KQ: Tensor, OV: Tensor) -> Tensor:
    """Σ_h OV_h G KQ_h h_t for every token, G the Gram matrix of the first n_ctx tokens: h [E, B, T, D],
    KQ and OV [E, H, D, D] → [E, B, T, D]."""
    E, H, D, _ = KQ.shape
    return GramAttention.apply(h, n_ctx, KQ.reshape(E, H * D, D), OV.mT.reshape(E, H * D, D))[0]


def gram_readout(h: Tensor, n_ctx: int, KQ: Tensor, OV: Tensor) -> Tensor:
    """The y-slots of Σ_h OV_h G KQ_h q for the query tokens q = h[:, :, n_ctx:]: h [E, B, N + m, D], KQ [E, H, D, D],
    OV [E, H, k, D] (OV_h's k y-slot rows) → [E, B, m, k]."""
    E, H, D, _ = KQ.shape
    k = OV.shape[-2]
    return GramReadout.apply(h, n_ctx, KQ.reshape(E, H * D, D), OV.permute(0, 3, 1, 2).reshape(E, D, H * k))[0]


def _layernorm(z: Tensor, layer: FastLayer) -> Tensor:
    """Per-token LayerNorm of z [E, B, T, D] with member-wise affine parameters [E, D] (none: identity)."""
    if layer.ln_weight is None or layer.ln_bias is None:
        return z
    normed = F.layer_norm(z, z.shape[-1:])
    return normed * layer.ln_weight[:, None, None, :] + layer.ln_bias[:, None, None, :]


def lsa_query_predictions(x: Tensor, y_ctx: Tensor, layers: Sequence[FastLayer]) -> Tensor:
    """LSA predictions at the queries: x [E, B, N + m, d] (context inputs, then the m queries), y_ctx [E, B, N, k]
    → [E, B, m, k].

    Tokens [x, y] and [x_q, 0] (the concat layout); K = len(layers) layers; the prediction is −(query y-slots)."""
    N, k = y_ctx.shape[-2:]
    m = x.shape[-2] - N
    z = torch.cat([x, F.pad(y_ctx, (0, 0, 0, m))], -1)  # [E, B, T, D]; the queries' y-slots are 0
    for layer in layers[:-1]:
        z = z + gram_attention(_layernorm(z, layer), N, layer.KQ, layer.OV)
    last = layers[-1]
    return -(z[:, :, N:, -k:] + gram_readout(_layernorm(z, last), N, last.KQ, last.OV[..., -k:, :]))
