"""Mean + variance heads on any model, trained with the Gaussian negative log-likelihood (in-context uncertainty).

`MeanVarianceModel` wraps any ICLModel (the "trunk"). For a query with context (x_ctx, y_ctx):

    mean = trunk.predict(x_ctx, y_ctx, x_q)                      the trunk's own prediction and readout, unchanged
    h    = the trunk's final residual stream at the query token  (the last ``…hook_resid_post``, read in the same pass)
    var  = softplus(W₂ GELU(W₁ h + b₁) + b₂) + floor              a small MLP head, W₁ [H, W], W₂ [1, H]

and the loss is the mean Gaussian NLL ½ log(2π var) + (y − mean)² / (2 var). Gradients of the NLL reach the trunk
through both the mean and h, so the trunk learns to carry what the variance needs in its stream.

Design choices (and why):
  * An MLP head rather than a linear one: the Bayes predictive variance σ² + x_qᵀ Σ_post x_q is quadratic in the
    query and a nonlinear function of the context; the concat models (lsa, softmax, lla, lsa_features) have
    streams of width d + 1, and a linear read of [x_q + update, −ŷ] cannot form x_qᵀ A x_q. No LayerNorm in the
    head: it would erase ‖h‖, which the variance scales with.
  * Query token positions follow the layout (as `iclab.analysis.probes`): concat n + j; separate 2n + j;
    interleaved 2(n + j) in one masked pass (gpt), or the last token of each per-query sequence when the trunk
    runs one sequence per query (ssm: its cache batch is B·m, sequences of 2n + 1 tokens).
  * Models that train on every prefix (gpt, ssm: they define `predict_prefixes`, and their ½·MSE is averaged over
    every prefix) are trained with the NLL at every prefix in one causal pass, with the variance read at every x
    token. This keeps their objective's shape, and each prompt then covers every context size 0 … T − 1, which is
    where the Bayes variance varies most. Every other model: the NLL at the queries.
  * What the variance estimates: the NLL is minimised by var = E[(y − mean)² | prompt], the model's own expected
    squared error. It equals the Bayes predictive variance only where the mean is the Bayes mean; a model with a
    worse mean is calibrated to its own error (tests/test_variance.py measures both).
  * `predict` returns the mean, so evaluation and algorithm comparisons are unchanged; `predict_with_variance` and
    `predict_prefixes_with_variance` answer like `iclab.algorithms.least_squares.Bayes`.
  * The wrapper is transparent for analysis: `hook_points` are the trunk's (same names, e.g.
    ``blocks.0.hook_resid_post``), `forward` is the trunk's, and any other attribute (layout, layer_weights,
    predict_prefixes, …) is looked up on the trunk. Parameters are ``inner.*`` and ``var_head.*`` in state_dict.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iclab.evaluation import accepts_mask
from iclab.models.base import ICLModel, seeded_generator
from iclab.models.hooks import HookPoint
from iclab.shapes import Bool, Float, shape_checked
from iclab.tasks.base import Prompts

__all__ = ["FLOOR", "MeanVarianceModel", "VarianceHead", "gaussian_nll", "query_stream"]

FLOOR = 1e-4  # smallest predicted variance: keeps log var and 1/var finite when a noiseless target is fitted exactly
INIT_VAR = 1.0  # the head starts at var ≈ 1 whatever h is (small output weights, bias softplus⁻¹(1))


class _MaskedPredict(Protocol):
    """A trunk that declares `takes_mask` (lla): its predict accepts the context mask."""

    def predict(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor | None = None) -> Tensor: ...


def gaussian_nll(mean: Tensor, var: Tensor, y: Tensor) -> Tensor:
    """Elementwise Gaussian negative log-likelihood ½ log(2π var) + (y − mean)² / (2 var); any matching shapes."""
    return 0.5 * (torch.log(2 * math.pi * var) + (y - mean) ** 2 / var)


class VarianceHead(nn.Module):
    """var = softplus(W_2 GELU(W_1 h + b_1) + b_2) + floor: h [..., W] → [...] (> floor).

    W_1 [H, W] ~ N(0, 1/W), b_1 [H] = 0, W_2 [1, H] ~ N(0, 0.01/H), b_2 = softplus⁻¹(1 − floor), all drawn from
    `generator` (not nn.Linear's init, which would use the global RNG). The small W_2 starts every prediction near
    var = 1 while still passing gradients to W_1 and the trunk from the first step.
    """

    def __init__(self, width: int, hidden: int, floor: float = FLOOR, generator: torch.Generator | None = None):
        super().__init__()
        if not (floor > 0 and math.isfinite(floor)):
            raise ValueError(f"floor: must be a finite number > 0, got {floor}")
        self.floor = float(floor)
        self.W_1 = nn.Parameter(torch.randn((hidden, width), generator=generator) / math.sqrt(width))
        self.b_1 = nn.Parameter(torch.zeros(hidden))
        self.W_2 = nn.Parameter(torch.randn((1, hidden), generator=generator) * (0.1 / math.sqrt(hidden)))
        start = INIT_VAR - self.floor
        self.b_2 = nn.Parameter(torch.full((1,), start + math.log(-math.expm1(-start))))  # softplus⁻¹(start)
        self.hook_var = HookPoint()  # [...] the predicted variance

    def forward(self, h: Tensor) -> Tensor:
        raw = F.linear(F.gelu(F.linear(h, self.W_1, self.b_1)), self.W_2, self.b_2)  # [..., 1]
        return self.hook_var(F.softplus(raw[..., 0]) + self.floor)


def query_stream(act: Tensor, layout: Any, n: int, m: int) -> Tensor:
    """The residual stream at the m query tokens: act [B', L, W] from a trunk's `predict` pass → [B, m, W].

    The query tokens are the layout's (`query_positions`). An interleaved trunk that ran one sequence of 2n + 1
    tokens per query (L = 2n + 1, B' = B·m: ssm) has its query at the last token of each sequence instead.
    """
    if layout is None:
        raise ValueError("layout: variance heads read the query tokens of a token layout; the trunk has none")
    length = act.shape[1]
    if layout.name == "interleaved" and length == 2 * n + 1 and length != 2 * (n + m):
        if act.shape[0] % m:
            raise ValueError(f"interleaved stream of {length} tokens: batch {act.shape[0]} is not B·m (m = {m})")
        return act[:, 2 * n].reshape(act.shape[0] // m, m, act.shape[-1])  # [B·m, W] → [B, m, W]
    if layout.name == "interleaved" and length != 2 * (n + m):
        raise ValueError(f"interleaved stream of {length} tokens fits neither 2(n + m) = {2 * (n + m)} nor 2n + 1")
    return act[:, layout.query_positions(n, m)]


class MeanVarianceModel(ICLModel):
    """A trunk's mean plus a learned predictive variance (module docstring); trained with the Gaussian NLL.

    inner: any ICLModel with a layout (concat, interleaved, separate) and ``…hook_resid_post`` hook points.
    config: the ModelConfig (variance_head true); hidden: the head's hidden width (default max(64, 4W)).
    `prefix_training` is True for trunks with `predict_prefixes` (gpt, ssm): NLL at every prefix.
    """

    loss_name = "nll"
    takes_mask = True  # passed to a trunk that takes one, else absent points are zeroed (`predict_with_variance`)

    def __init__(
        self,
        inner: ICLModel,
        *,
        config: Any = None,
        hidden: int | None = None,
        floor: float = FLOOR,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        generator = seeded_generator(generator)  # never the global RNG
        self.inner = inner
        self.config = inner.config if config is None else config
        self.d = inner.d
        self.token_layout = getattr(inner, "layout", None)
        resid = [name for name in inner.hook_points() if name.endswith("hook_resid_post")]
        if not resid:
            raise ValueError(f"inner model {type(inner).__name__} has no …hook_resid_post hook point to read")
        self.hook = resid[-1]  # registration order: the last layer's residual stream
        width = self._stream_width()
        self.var_head = VarianceHead(width, hidden or max(64, 4 * width), floor, generator)
        self.prefix_training = inner.predicts_prefixes
        self.predicts_prefixes = inner.predicts_prefixes  # type: ignore[misc]  # the trunk's, by delegation

    def _stream_width(self) -> int:
        """W, the width of the hooked residual stream, from one tiny pass (n = 1, m = 1, d inputs)."""
        p = next(self.inner.parameters())
        x = torch.zeros(1, 2, self.d, dtype=p.dtype, device=p.device)
        with torch.no_grad():
            _, cache = self.inner.run_with_cache(x[:, :1], x[:, :1, 0], x[:, 1:], names=[self.hook], method="predict")
        return cache[self.hook].shape[-1]

    def __getattr__(self, name: str) -> Any:
        """Attributes the wrapper lacks (layout, layer_weights, predict_prefixes, …) are the trunk's."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("inner")  # not self._modules: no recursion mid-unpickle
            if inner is None or name.startswith("__"):
                raise
            return getattr(inner, name)

    def hook_points(self) -> dict[str, HookPoint]:
        """The trunk's hook points under their own names (so analyses read a wrapped model like a bare one), and
        ``var_head.hook_var`` [B, m] (or [B, T]), the predicted variance."""
        return {**self.inner.hook_points(), "var_head.hook_var": self.var_head.hook_var}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The trunk's forward (tokens in, tokens or outputs out)."""
        return self.inner(*args, **kwargs)

    @staticmethod
    def _masked(x_ctx: Tensor, y_ctx: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        if mask is None:
            return x_ctx, y_ctx
        keep = mask.to(x_ctx.dtype)  # [B, n]
        return x_ctx * keep.unsqueeze(-1), y_ctx * keep

    def predict_with_variance(
        self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d] → (mean [B, m], var [B, m]), one pass of the trunk.

        mask [B, n] (True: present) goes to a trunk that takes one (lla); other trunks see absent points as zero
        tokens, as `iclab.evaluation.prefix_predictions` does for them.
        """
        args: tuple[Tensor, ...] = (x_ctx, y_ctx, x_q)
        if mask is not None:
            args = (x_ctx, y_ctx, x_q, mask) if accepts_mask(self.inner) else (*self._masked(x_ctx, y_ctx, mask), x_q)
        mean, cache = self.inner.run_with_cache(*args, names=[self.hook], detach=False, method="predict")
        h = query_stream(cache[self.hook], self.token_layout, x_ctx.shape[1], x_q.shape[1])  # [B, m, W]
        return mean, self.var_head(h)

    @shape_checked
    def predict(
        self,
        x_ctx: Float[Tensor, "batch n_ctx d"],
        y_ctx: Float[Tensor, "batch n_ctx *k"],
        x_q: Float[Tensor, "batch n_q d"],
        mask: Bool[Tensor, "batch n_ctx"] | None = None,
    ) -> Float[Tensor, "batch n_q *k"]:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d] (mask [B, n] as `predict_with_variance`) → means [B, m]."""
        if mask is None:
            return self.inner.predict(x_ctx, y_ctx, x_q)
        if accepts_mask(self.inner):
            return cast(_MaskedPredict, self.inner).predict(x_ctx, y_ctx, x_q, mask)
        return self.inner.predict(*self._masked(x_ctx, y_ctx, mask), x_q)

    @shape_checked
    def predict_prefixes(
        self, x: Float[Tensor, "batch T d"], y: Float[Tensor, "batch T *k"]
    ) -> Float[Tensor, "batch T *k"]:
        """x [B, T, d], y [B, T] → means [B, T], the trunk's prefix predictions (causal trunks only)."""
        return self.inner.predict_prefixes(x, y)

    def predict_prefixes_with_variance(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, T, d], y [B, T] → (mean [B, T], var [B, T]); prediction t sees points < t (causal trunks only)."""
        if not self.prefix_training:
            raise ValueError(f"model {self.config.name!r} has no predict_prefixes (only causal models: gpt, ssm)")
        mean, cache = self.inner.run_with_cache(x, y, names=[self.hook], detach=False, method="predict_prefixes")
        h = cache[self.hook][:, 0::2]  # [B, 2T, W] → [B, T, W] at the x tokens (interleaved layout)
        return mean, self.var_head(h)

    @shape_checked
    def training_loss(self, prompts: Prompts) -> Float[Tensor, ""]:
        """Mean Gaussian NLL: at every prefix for causal trunks (gpt, ssm), else at the queries."""
        if self.prefix_training:
            mean, var = self.predict_prefixes_with_variance(prompts.x, prompts.y)
            return gaussian_nll(mean, var, prompts.y).mean()
        mean, var = self.predict_with_variance(prompts.x_ctx, prompts.y_ctx, prompts.x_q)
        return gaussian_nll(mean, var, prompts.y_q).mean()
