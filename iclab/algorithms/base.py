"""The Learner protocol shared by reference algorithms and trained models, and its masked-context base class.

A learner answers
    predict(x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d], mask [B, n] | None) -> [B, m]
    predict_prefixes(x [B, T, d], y [B, T]) -> [B, T]     (prediction t sees points < t; t = 0 sees none)
and declares what it supports (class attributes, read by evaluation and the trainer; never discovered):
    takes_mask          predict accepts `mask` (otherwise absent points reach it as zero tokens)
    predicts_prefixes   predict_prefixes exists (one causal pass, or batched over prefixes)
Vector-valued targets (y [B, n, k], e.g. softmax regression) are handled by `MaskedLearner` as k independent
scalar problems: predictions are then [B, m, k] / [B, T, k].

Design: every algorithm is written once against a *masked* context. `mask[b, i]` says whether context point i of
prompt b is present; masked points arrive zeroed (x and y) so that sums such as XᵀX and Xᵀy ignore them without
extra work, and algorithms for which a zero row is not neutral (kNN, trees, the ReLU net, Lasso's 1/n) read the
mask. With that one contract, `predict_prefixes` is generic and batched over prefix lengths: prompt b at prefix
t becomes a context of max(T − 1, 1) slots of which the first t are present. That generic path is also the naive
reference for learners that override `predict_prefixes` with a faster one (cumulative sums for ridge, GD, …).

An empty context (t = 0, or all points masked) reaches the learner like any other: most predict 0, the prior mean
of every task family; dMMSE predicts the mean of its pool.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from iclab.shapes import Bool, Float, shape_checked

__all__ = ["Learner", "MaskedLearner", "expand_prefixes", "prefix_mask"]


@runtime_checkable
class Learner(Protocol):
    """Anything that predicts query targets from a context: trained models and algorithms alike."""

    name: str
    takes_mask: bool
    predicts_prefixes: bool

    def predict(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor: ...


def prefix_mask(T: int, device: torch.device | str | None = None) -> Tensor:
    """[T, S] bool, S = max(T − 1, 1) slots: row t marks the context slots visible to prefix t (slots i < t).

    T = 1 keeps one (always masked) slot, so even a lone empty context reaches the learner, whose answer to no
    context need not be 0 (dMMSE answers the pool mean)."""
    t = torch.arange(T, device=device).unsqueeze(1)
    i = torch.arange(max(T - 1, 1), device=device).unsqueeze(0)
    return i < t


def expand_prefixes(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One masked problem per (prompt, prefix): x [B, T, d], y [B, T] →
    x_ctx [B·T, S, d], y_ctx [B·T, S] (masked slots zeroed), x_q [B·T, 1, d], mask [B·T, S]; S = max(T − 1, 1)."""
    B, T, d = x.shape
    S = max(T - 1, 1)
    mask = prefix_mask(T, x.device).unsqueeze(0).expand(B, T, S).reshape(B * T, S)  # [B·T, S]
    x_ctx = x[:, None, :S, :].expand(B, T, S, d).reshape(B * T, S, d)
    y_ctx = y[:, None, :S].expand(B, T, S).reshape(B * T, S)
    x_ctx = x_ctx * mask.unsqueeze(-1).to(x.dtype)
    y_ctx = y_ctx * mask.to(y.dtype)
    x_q = x.reshape(B * T, 1, d)
    return x_ctx, y_ctx, x_q, mask


def _per_output(predict, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor | None) -> Tensor:
    """Vector targets y_ctx [B, n, k] → [B, m, k], one scalar problem per output coordinate (folded into B)."""
    B, n, k = y_ctx.shape

    def rep(t: Tensor) -> Tensor:  # [B, ...] → [B·k, ...]
        return t.unsqueeze(1).expand(B, k, *t.shape[1:]).reshape(B * k, *t.shape[1:])

    y = y_ctx.permute(0, 2, 1).reshape(B * k, n)
    out = predict(rep(x_ctx), y, rep(x_q), None if mask is None else rep(mask))  # [B·k, m]
    return out.reshape(B, k, -1).permute(0, 2, 1)


class MaskedLearner:
    """Base class: subclasses implement `predict_masked`; `predict` and `predict_prefixes` come for free.

    `chunk_elements` bounds the size of one expanded prefix batch (B·T·(T−1)·d elements) in `predict_prefixes`.
    """

    name: str = "learner"
    takes_mask: ClassVar[bool] = True
    predicts_prefixes: ClassVar[bool] = True
    chunk_elements: int = 1 << 24

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d] and y_ctx [B, n] with masked slots zeroed, x_q [B, m, d], mask [B, n] bool → [B, m]."""
        raise NotImplementedError

    @shape_checked
    def predict(
        self,
        x_ctx: Float[Tensor, "batch n_ctx d"],
        y_ctx: Float[Tensor, "batch n_ctx *k"],
        x_q: Float[Tensor, "batch n_q d"],
        mask: Bool[Tensor, "batch n_ctx"] | None = None,
    ) -> Float[Tensor, "batch n_q *k"]:
        """[B, m] (or [B, m, k]) predictions for the queries from the (optionally masked) context."""
        if y_ctx.dim() == 3:  # vector targets [B, n, d_y]: each output coordinate is its own scalar problem
            return _per_output(self.predict, x_ctx, y_ctx, x_q, mask)
        if mask is None:
            mask = torch.ones(x_ctx.shape[:2], dtype=torch.bool, device=x_ctx.device)
        else:
            x_ctx = x_ctx * mask.unsqueeze(-1).to(x_ctx.dtype)
            y_ctx = y_ctx * mask.to(y_ctx.dtype)
        return self.predict_masked(x_ctx, y_ctx, x_q, mask)

    @shape_checked
    def predict_prefixes(
        self, x: Float[Tensor, "batch T d"], y: Float[Tensor, "batch T *k"]
    ) -> Float[Tensor, "batch T *k"]:
        """x [B, T, d], y [B, T] (or [B, T, k]) → [B, T] (or [B, T, k]): prediction t from points < t. Vector
        targets are k scalar problems folded into the batch; each scalar problem goes to `scalar_prefixes`."""
        if y.dim() == 3:
            B, T, k = y.shape
            x_rep = x.unsqueeze(1).expand(B, k, *x.shape[1:]).reshape(B * k, *x.shape[1:])
            out = self.scalar_prefixes(x_rep, y.permute(0, 2, 1).reshape(B * k, T))  # [B·k, T]
            return out.reshape(B, k, T).permute(0, 2, 1)
        return self.scalar_prefixes(x, y)

    def scalar_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T], scalar targets: the generic masked path, one masked problem per prefix
        (chunked over B). Learners with a faster form (cumulative sums, QR updates) override this."""
        B, T, d = x.shape
        per_prompt = T * max(T - 1, 1) * max(d, 1)
        step = max(1, self.chunk_elements // per_prompt)
        parts = []
        for s in range(0, B, step):
            x_ctx, y_ctx, x_q, mask = expand_prefixes(x[s : s + step], y[s : s + step])
            parts.append(self.predict_masked(x_ctx, y_ctx, x_q, mask).reshape(-1, T))
        return torch.cat(parts)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
