"""von Oswald's deep representations: LSA on jointly learned MLP features, and the "MLP + GD" baseline.

FeatureLSA ("lsa_features"): φ(x) = W₂ GELU(W₁x + b₁) + b₂, R^d → R^H → R^F (H = feature_hidden, F = feature_dim),
then the K-layer LSA of `iclab.models.lsa` on the concat layout over tokens [φ(x_i), y_i] (query [φ(x_q), 0]);
prediction −(query's final y-slot), as for LSA. φ and the LSA weights are trained together on ½·MSE.
GELU rather than ReLU: a smooth basis for smooth targets (sine waves); with ReLU, φ is piecewise linear in x.

FeatureGD: K GD steps from W = 0 (`iclab.algorithms.gd.gd_predict`) on the features φ(x_i) of any feature map —
typically a trained FeatureLSA's own φ — with the steps given or tuned on held-out prompts mapped through φ
(`tune_feature_steps`). vO's finding: LSA on learned features ≈ GD on those features.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.gd import gd_predict
from iclab.metrics import half_mse
from iclab.models.base import ICLModel, seeded_generator
from iclab.models.hooks import HookPoint
from iclab.models.lsa import LSA, LSAConfig, LSAWeights
from iclab.shapes import Float, shape_checked
from iclab.tasks.base import Prompts
from iclab.tokens import ConcatLayout
from iclab.validation import check_int

__all__ = ["FeatureGD", "FeatureLSA", "FeatureLSAConfig", "FeatureMLP", "tune_feature_steps"]


@dataclass(frozen=True)
class FeatureLSAConfig(LSAConfig):
    """LSA on jointly learned MLP features of x (von Oswald et al.'s deep representations; `FeatureLSA`)."""

    name: ClassVar[str] = "lsa_features"

    feature_hidden: int = 64
    """hidden units of the embedding MLP"""
    feature_dim: int = 16
    """learned feature dimension fed to LSA"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("model.feature_hidden", self.feature_hidden, 1)
        check_int("model.feature_dim", self.feature_dim, 1)


FeatureMap = Callable[[Tensor], Tensor]  # x [..., d] → φ(x) [..., F]


class FeatureMLP(nn.Module):
    """φ(x) = W_2 GELU(W_1 x + b_1) + b_2: x [..., d] → [..., F]; W_1 [H, d], b_1 [H], W_2 [F, H], b_2 [F].

    Initialisation from `generator`: W_1 ~ N(0, 1/d), b_1 ~ N(0, 1), W_2 ~ N(0, 1/H), b_2 = 0 (unit-scale
    pre-activations for unit-scale inputs).
    """

    def __init__(self, d: int, hidden: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        self.W_1 = nn.Parameter(torch.randn((hidden, d), generator=generator) / math.sqrt(d))
        self.b_1 = nn.Parameter(torch.randn((hidden,), generator=generator))
        self.W_2 = nn.Parameter(torch.randn((dim, hidden), generator=generator) / math.sqrt(hidden))
        self.b_2 = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        h = nn.functional.gelu(x @ self.W_1.T + self.b_1)  # [..., H]
        return h @ self.W_2.T + self.b_2  # [..., F]


class FeatureLSA(ICLModel):
    """K-layer LSA on learned features: tokens [φ(x), y] of width F + 1 (F = config.feature_dim).

    Config fields used: feature_hidden, feature_dim (φ), and the LSA's layers, tied, heads, layernorm,
    init_scale. Hook points: ``hook_features`` [B, n + m, F] (φ of context then query inputs) and the LSA's
    ``lsa.blocks.{l}.attn.hook_{q,k,v,pattern}``, ``lsa.blocks.{l}.hook_attn_out``, ``lsa.blocks.{l}.hook_resid_post``.
    `self.lsa` is a plain `LSA` over F-dimensional inputs, so LSA analyses (weight match, effective
    preconditioner) apply to it in feature coordinates.
    """

    layout = ConcatLayout()

    def __init__(self, config: FeatureLSAConfig, d: int, *, generator: torch.Generator | None = None):
        super().__init__()
        generator = seeded_generator(generator)  # never the global RNG
        self.config = config
        self.d = d
        self.phi = FeatureMLP(d, config.feature_hidden, config.feature_dim, generator)
        self.hook_features = HookPoint()
        self.lsa = LSA(config, config.feature_dim, generator=generator)

    def layer_weights(self, layer: int) -> LSAWeights:
        """Layer `layer`'s LSA weights ([heads, F + 1, F + 1] each)."""
        return self.lsa.layer_weights(layer)

    def features(self, x: Tensor) -> Tensor:
        """x [..., d] → φ(x) [..., F] in x's dtype (the learned representation; no hook)."""
        return self.phi(x.to(self.phi.W_1.dtype)).to(x.dtype)

    def forward(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d] → predictions [B, m]."""
        n = x_ctx.shape[1]
        feats = self.hook_features(self.phi(torch.cat([x_ctx, x_q], dim=1)))  # [B, n+m, F]
        tokens = self.layout.encode_parts(feats[:, :n], y_ctx, feats[:, n:])  # [B, n+m, F+1]
        return self.layout.readout(self.lsa(tokens, n), n)  # [B, m]

    @shape_checked
    def predict(
        self,
        x_ctx: Float[Tensor, "batch n_ctx d"],
        y_ctx: Float[Tensor, "batch n_ctx *k"],
        x_q: Float[Tensor, "batch n_q d"],
    ) -> Float[Tensor, "batch n_q *k"]:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d] → predictions [B, m]."""
        return self(x_ctx, y_ctx, x_q)


def _as_feature_map(features: FeatureMap | FeatureLSA) -> FeatureMap:
    return features.features if isinstance(features, FeatureLSA) else features


class FeatureGD(MaskedLearner):
    """Learner "MLP + GD": len(etas) GD steps from W = 0 on (φ(x_i), y_i), prediction W·φ(x_q).

    `features`: a FeatureLSA (its learned φ) or any map x [..., d] → [..., F], differentiable in x (so
    `implicit_linear_map` and model cos see φ). Masked context points (MaskedLearner's contract) get zero
    features, so they drop out of the gradient sums as in `GD`; `predict_prefixes` comes from MaskedLearner.
    With the identity map this is `GD`. `precond` A [F, F]: W ← W − η A ∇L. A trained one-layer, one-head
    FeatureLSA's own GD form is FeatureGD.tuned(model, prompts, precond=A) with
    A = iclab.analysis.compare.effective_preconditioner(model.lsa) (then η ≈ the context length N).
    """

    def __init__(self, features: FeatureMap | FeatureLSA, etas: Sequence[float], precond: Tensor | None = None):
        self.feature_map = _as_feature_map(features)
        self.etas = [float(e) for e in etas]
        if not self.etas or not all(math.isfinite(e) for e in self.etas):
            raise ValueError(f"etas: must be a non-empty list of finite numbers, got {list(etas)}")
        self.precond = precond
        self.name = f"feature_gd:{len(self.etas)}"

    @classmethod
    def tuned(
        cls,
        features: FeatureMap | FeatureLSA,
        prompts: Prompts,
        steps: int = 1,
        *,
        tied: bool = False,
        precond: Tensor | None = None,
    ) -> FeatureGD:
        """FeatureGD with `steps` steps tuned on `prompts` (held-out, not the evaluation set) mapped through φ."""
        return cls(features, tune_feature_steps(features, prompts, steps, tied=tied, precond=precond), precond)

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n] (masked rows zero), x_q [B, m, d], mask [B, n] → [B, m]."""
        f_ctx = self.feature_map(x_ctx) * mask.unsqueeze(-1).to(x_ctx.dtype)  # [B, n, F]
        f_q = self.feature_map(x_q)  # [B, m, F]
        return gd_predict(f_ctx, y_ctx, f_q, self.etas, n=mask.sum(-1), precond=self.precond)


def tune_feature_steps(
    features: FeatureMap | FeatureLSA,
    prompts: Prompts,
    steps: int = 1,
    *,
    tied: bool = False,
    precond: Tensor | None = None,
) -> tuple[float, ...]:
    """GD steps minimising the ½·MSE of `steps` GD steps on prompts mapped through φ (float64).

    One step: the loss is quadratic in η, so the optimum is exact, η* = Σ a·y / Σ a² with a the one-step
    prediction at η = 1. More steps: L-BFGS with a strong-Wolfe line search from η* decaying to η*/2 (distinct
    starts: the K-step loss is symmetric in the steps). Tied: one η shared by all steps.
    """
    if steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps}")
    phi = _as_feature_map(features)
    with torch.no_grad():
        f_ctx = phi(prompts.x_ctx).double()  # [B, n, F]
        f_q = phi(prompts.x_q).double()  # [B, m, F]
    y_ctx, y_q = prompts.y_ctx.double(), prompts.y_q.double()  # [B, n], [B, m]
    A = None if precond is None else precond.double()
    a = gd_predict(f_ctx, y_ctx, f_q, [1.0], precond=A)  # [B, m]
    eta1 = ((a * y_q).sum() / (a * a).sum().clamp_min(1e-300)).item()
    if steps == 1:
        return (eta1,)
    n_free = 1 if tied else steps
    etas = (eta1 * torch.linspace(1.0, 0.5, n_free, dtype=torch.float64)).requires_grad_(True)

    def objective() -> Tensor:
        pred = gd_predict(f_ctx, y_ctx, f_q, etas.expand(steps) if tied else etas, precond=A)
        return half_mse(pred, y_q)

    opt = torch.optim.LBFGS([etas], lr=1.0, max_iter=200, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    out = etas.detach().expand(steps) if tied else etas.detach()
    return tuple(out.tolist())
