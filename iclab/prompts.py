"""The batch contract every task returns and every learner, model and trainer consumes: `Prompts`.

A prompt is n_ctx context points followed by queries, T = n_ctx + n_queries points in all. Each point has an input
x and a target y, real-valued or discrete:

    x   [B, T, d]  float   real inputs (regression, Reddy's item vectors)
        [B, T]     long    token ids < x_vocab (formal languages, symbolic items)
    y   [B, T]     float   scalar targets
        [B, T, k]  float   vector targets (softmax regression, linear dynamics)
        [B, T]     long    class labels < y_vocab (in-context classification)

Optional: `mask` [B, T] bool marks the points that are present (False: padding, never seen or scored); `f` the
noiseless targets (shaped like y, float), `w` [B, d] the linear task vector, `params` every parameter of each
prompt's function (leading dimension B). Moving or casting prompts (`to`) changes floating tensors only: token ids
and labels keep their integer dtype. `check` validates the contract (shapes and dtypes, never values, so it costs
no device synchronisation); it runs on construction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import overload

import torch
from torch import Tensor

__all__ = ["Prompts"]


@overload
def _move(t: Tensor, device, dtype) -> Tensor: ...
@overload
def _move(t: None, device, dtype) -> None: ...
@overload
def _move(t: Tensor | None, device, dtype) -> Tensor | None: ...
def _move(t: Tensor | None, device, dtype) -> Tensor | None:
    """t on `device`; cast to `dtype` only if it is floating (ids, labels and indices keep their dtype)."""
    if t is None:
        return None
    return t.to(device=device, dtype=dtype if t.is_floating_point() else None)


@dataclass(frozen=True)
class Prompts:
    """A batch of in-context prompts (module docstring): x, y, n_ctx and optional w, f, params, mask, vocabularies."""

    x: Tensor
    y: Tensor
    n_ctx: int
    w: Tensor | None = None
    f: Tensor | None = None
    params: dict[str, Tensor] | None = None
    mask: Tensor | None = None
    x_vocab: int | None = None
    y_vocab: int | None = None

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """ValueError (one line) unless shapes and dtypes follow the contract of the module docstring."""
        x, y = self.x, self.y
        discrete_x, discrete_y = not x.is_floating_point(), not y.is_floating_point()
        if x.dim() != (2 if discrete_x else 3):
            what = "token ids [B, T] (integer)" if discrete_x else "inputs [B, T, d] (float)"
            raise ValueError(f"prompts.x: must be {what}, got shape {tuple(x.shape)} of {x.dtype}")
        if discrete_y and y.dim() != 2:
            raise ValueError(f"prompts.y: labels must be [B, T] (integer), got shape {tuple(y.shape)}")
        if not discrete_y and y.dim() not in (2, 3):
            raise ValueError(f"prompts.y: must be [B, T] or [B, T, k] (float), got shape {tuple(y.shape)}")
        if tuple(y.shape[:2]) != tuple(x.shape[:2]):
            raise ValueError(f"prompts.y: leading shape {tuple(y.shape[:2])} differs from x's {tuple(x.shape[:2])}")
        T = x.shape[1]
        if isinstance(self.n_ctx, bool) or not isinstance(self.n_ctx, int) or not 0 <= self.n_ctx <= T:
            raise ValueError(f"prompts.n_ctx: must be an integer in [0, T = {T}], got {self.n_ctx!r}")
        if self.f is not None and tuple(self.f.shape) != tuple(y.shape) and not discrete_y:
            raise ValueError(f"prompts.f: shape {tuple(self.f.shape)} differs from y's {tuple(y.shape)}")
        if self.mask is not None and (self.mask.dtype != torch.bool or tuple(self.mask.shape) != tuple(x.shape[:2])):
            got = f"{self.mask.dtype} {tuple(self.mask.shape)}"
            raise ValueError(f"prompts.mask: must be bool [B, T] = {tuple(x.shape[:2])}, got {got}")
        for name, vocab, discrete in (("x_vocab", self.x_vocab, discrete_x), ("y_vocab", self.y_vocab, discrete_y)):
            if vocab is not None and (
                not discrete or isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1
            ):
                raise ValueError(f"prompts.{name}: an integer >= 1 for discrete {name[0]} only, got {vocab!r}")

    def check_finite(self) -> Prompts:
        """self, after a ValueError (one line) if x, y or f hold NaN or inf: the evaluation entry points
        (`iclab.evaluation.error_curves`, `iclab.analysis.compare.compare_learners`) call it on what they are given,
        so that bad data is named rather than turned into NaN errors. One pass over the tensors (a device sync)."""
        for name in ("x", "y", "f"):
            value = getattr(self, name)
            if value is not None and value.is_floating_point():
                bad = int((~torch.isfinite(value)).sum())
                if bad:
                    raise ValueError(f"prompts.{name}: {bad} non-finite values (NaN or inf); give finite inputs")
        return self

    # --- views ------------------------------------------------------------------------------------------------------
    @property
    def discrete_x(self) -> bool:
        """x holds token ids [B, T]."""
        return not self.x.is_floating_point()

    @property
    def discrete_y(self) -> bool:
        """y holds class labels [B, T]."""
        return not self.y.is_floating_point()

    @property
    def x_ctx(self) -> Tensor:
        """[B, n_ctx, d] (or [B, n_ctx] token ids)"""
        return self.x[:, : self.n_ctx]

    @property
    def y_ctx(self) -> Tensor:
        """[B, n_ctx] (or [B, n_ctx, k])"""
        return self.y[:, : self.n_ctx]

    @property
    def x_q(self) -> Tensor:
        """[B, n_queries, d] (or [B, n_queries] token ids)"""
        return self.x[:, self.n_ctx :]

    @property
    def y_q(self) -> Tensor:
        """[B, n_queries] (or [B, n_queries, k])"""
        return self.y[:, self.n_ctx :]

    @property
    def f_q(self) -> Tensor | None:
        """[B, n_queries] noiseless query targets, where known."""
        return None if self.f is None else self.f[:, self.n_ctx :]

    @property
    def mask_ctx(self) -> Tensor | None:
        """[B, n_ctx] which context points are present (None: all)."""
        return None if self.mask is None else self.mask[:, : self.n_ctx]

    def __len__(self) -> int:
        return self.x.shape[0]

    # --- transformations --------------------------------------------------------------------------------------------
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Prompts:
        """On `device`, floating tensors cast to `dtype`; integer tensors (ids, labels, indices) keep theirs."""
        params = None if self.params is None else {k: _move(v, device, dtype) for k, v in self.params.items()}
        return replace(
            self,
            x=_move(self.x, device, dtype),
            y=_move(self.y, device, dtype),
            w=_move(self.w, device, dtype),
            f=_move(self.f, device, dtype),
            mask=_move(self.mask, device, None),
            params=params,
        )

    def scaled(self, *, input_scale: float = 1.0, target_scale: float = 1.0) -> Prompts:
        """Out-of-distribution copy for linear families: x → αx (y = wᵀ(αx) + ε), or w → βw (y scales with β).
        Other families: `iclab.shifts` (scale_x, scale_y) re-evaluates their functions.

        Noise is kept as drawn; only the signal part of y changes.
        """
        if self.f is None or self.discrete_x or self.discrete_y:
            raise ValueError("prompts: scaling needs real inputs and targets with their noiseless values f")
        noise = self.y - self.f
        f = self.f * input_scale * target_scale
        w = None if self.w is None else self.w * target_scale
        params = self.params
        if params is not None and target_scale != 1.0:
            # only a linear family's function scales with its w; for any other family the scaled targets are no
            # longer f(x; params), so the params are dropped rather than left silently wrong
            params = {"w": w} if set(params) == {"w"} and w is not None else None
        return replace(self, x=self.x * input_scale, y=f + noise, f=f, w=w, params=params)

    def __getitem__(self, index: slice) -> Prompts:
        """The prompts `index` selects along the batch dimension (a slice)."""

        def take(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index]

        params = None if self.params is None else {k: v[index] for k, v in self.params.items()}
        return replace(
            self, x=self.x[index], y=self.y[index], w=take(self.w), f=take(self.f), mask=take(self.mask), params=params
        )
