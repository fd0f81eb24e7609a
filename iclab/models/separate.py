"""von Oswald's induction-head view: separate x and y tokens, a softmax layer that copies x_i next to y_i, then LSA.

Tokens (iclab.tokens.SeparateLayout, pair positions): x token [x_i, 0, p(i)], y token [0, y_i, p(i)], query token
[x_qj, 0, p(n + j)], width D = d + 1 + P; the first 2n tokens are the context (keys and values of every layer).
Positions are one-hot over P = config.max_points pair indices by default, so x_i and y_i share p(i) and a head
with a large positional KQ block attends from y_i to its own pair {x_i, y_i}.

Layer 0 ("copy"): multi-head softmax attention with learned per-head W_Q, W_K, W_V [H, D, D] and W_O [H, D, D],
    e_j ← e_j + Σ_h W_O,h Σ_{i<2n} softmax_i((W_Q,h e_j)ᵀ(W_K,h e_i) / √D) W_V,h e_i
(no bias, no LayerNorm, no 1/N); keys/values from the 2n context tokens only.
Layers 1..K: the K-layer LSA of iclab.models.lsa on the resulting width-D tokens, keys/values from the same 2n
    context tokens (config.layers = K counts the LSA layers; tied, heads, layernorm, init_scale as for LSA).
Weights: `model.copy` and `model.layer_weights(l)` (LSA layer l) both answer W_Q, W_K, W_V, W_O and KQ, OV, scale
in iclab.models.base's convention.
Readout: ŷ_j = −(y-slot of query token j after the last layer), the vO/LSA sign convention.

After the copy, each pair's y_i token holds ≈ (x_i, y_i), i.e. a concat token, and one LSA layer can do a GD step.
`copy_scores` measures the copy (attention mass from y_i onto x_i), `plot_copy_pattern` draws the pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from iclab.config import ConfigError
from iclab.models.base import AttentionWeights, ICLModel, seeded_generator
from iclab.models.hooks import HookedModule, HookPoint
from iclab.models.lsa import LSA, LSAConfig, LSAWeights
from iclab.models.softmax import SoftmaxAttentionLayer
from iclab.plotting import new_figure, save_figure
from iclab.shapes import Float, shape_checked
from iclab.tasks.base import Prompts
from iclab.tokens import SeparateLayout
from iclab.validation import check_int

__all__ = [
    "SeparateConfig",
    "SeparateTokenModel",
    "SoftmaxCopyLayer",
    "copy_patterns",
    "copy_scores",
    "plot_copy_pattern",
]


@dataclass(frozen=True)
class SeparateConfig(LSAConfig):
    """Separate x and (0, y) tokens: a softmax copy layer, then LSA layers (`SeparateTokenModel`)."""

    name: ClassVar[str] = "separate"

    max_points: int = 256
    """the longest prompt (points) the one-hot positions cover"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("model.max_points", self.max_points, 1)


PATTERN = "copy.attn.hook_pattern"


class SoftmaxCopyLayer(AttentionWeights, HookedModule):
    """Multi-head softmax attention over the context tokens (iclab.models.softmax.SoftmaxAttentionLayer, scores
    scaled by 1/√D) with a residual update; weights [heads, D, D].

    Hook points: ``attn.hook_q`` [B, T, H, D], ``attn.hook_k`` / ``attn.hook_v`` [B, 2n, H, D],
    ``attn.hook_pattern`` [B, H, T, 2n] (softmax probabilities; each row sums to 1), ``hook_attn_out`` and
    ``hook_resid_post`` [B, T, D]. Initialisation: W_Q, W_K entries ~ N(0, 1/D); W_V, W_O entries ~ N(0, 0.01/D),
    so the layer starts close to the identity and its random mixing does not drown the tokens (with N(0, 1/D)
    some seeds settle at twice the one-step-GD loss).
    """

    def __init__(self, width: int, heads: int, generator: torch.Generator | None = None):
        super().__init__()
        std = 1 / math.sqrt(width)
        self.attn = SoftmaxAttentionLayer(width, heads, std, generator, scale=std)
        with torch.no_grad():  # W_V, W_O drawn as the others, then shrunk 10x
            self.attn.W_V.mul_(0.1)
            self.attn.W_O.mul_(0.1)
        self.hook_attn_out = HookPoint()
        self.hook_resid_post = HookPoint()

    W_Q = property(lambda self: self.attn.W_Q)
    W_K = property(lambda self: self.attn.W_K)
    W_V = property(lambda self: self.attn.W_V)
    W_O = property(lambda self: self.attn.W_O)
    scale = property(lambda self: self.attn.scale, doc="1/√D: score(key i, query j) = e_iᵀ KQ e_j / √D")

    def forward(self, z: Tensor, n_keys: int) -> Tensor:
        """z [B, T, D] → [B, T, D]; the first n_keys tokens are keys and values."""
        return self.hook_resid_post(z + self.hook_attn_out(self.attn(z, n_keys)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the layer was built on SoftmaxAttentionLayer hold copy.W_Q, not copy.attn.W_Q
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            if prefix + name in state_dict:
                state_dict[f"{prefix}attn.{name}"] = state_dict.pop(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class SeparateTokenModel(ICLModel):
    """Softmax copy layer + K LSA layers on SeparateLayout tokens (module docstring); also a Learner.

    Config fields used: max_points (one-hot position size P; prompts need n + m ≤ max_points), heads (of the
    copy layer and of each LSA layer), layers (K LSA layers), tied, layernorm, init_scale (LSA).
    `layout`: another SeparateLayout (e.g. sinusoidal positions, ``positions="token"``) with scalar targets
    and the y-slot readout. Hook points: ``copy.*`` (SoftmaxCopyLayer) and ``lsa.blocks.{l}.*`` (LSA).
    """

    layout: SeparateLayout

    def __init__(
        self,
        config: SeparateConfig,
        d: int,
        *,
        generator: torch.Generator | None = None,
        layout: SeparateLayout | None = None,
    ):
        super().__init__()
        generator = seeded_generator(generator)  # never the global RNG
        if layout is None:
            layout = SeparateLayout(pos_dim=config.max_points, pos_kind="onehot", positions="pair")
        if layout.k is not None or layout.readout_from != "y_slot":
            raise ValueError("layout: SeparateTokenModel needs scalar targets (k=None) and readout_from='y_slot'")
        self.config = config
        self.d = d
        self.layout = layout
        width = layout.width(d)  # D = d + 1 + P
        self.copy = SoftmaxCopyLayer(width, config.heads, generator)
        self.lsa = LSA(config, width - 1, generator=generator)  # LSA over width-D tokens

    def layer_weights(self, layer: int) -> LSAWeights:
        """LSA layer `layer`'s weights ([heads, D, D] each)."""
        return self.lsa.layer_weights(layer)

    def forward(self, tokens: Tensor, n_ctx: int) -> Tensor:
        """tokens [B, 2n + m, D] (n = n_ctx pairs) → tokens of the same shape after the copy and LSA layers."""
        n_keys = self.layout.n_keys(n_ctx)
        return self.lsa(self.copy(tokens, n_keys), n_keys)

    def encode(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d] → tokens [B, 2n + m, D]."""
        points = x_ctx.shape[1] + x_q.shape[1]
        if self.layout.pos_kind == "onehot" and self.layout.positions == "pair" and points > self.layout.pos_dim:
            raise ConfigError(  # the prompt is longer than the run's config allows: the user's to fix
                f"model.max_points: prompts of {points} points (context + queries) need max_points ≥ {points}, "
                f"got {self.layout.pos_dim}"
            )
        return self.layout.encode_parts(x_ctx, y_ctx, x_q)

    @shape_checked
    def predict(
        self,
        x_ctx: Float[Tensor, "batch n_ctx d"],
        y_ctx: Float[Tensor, "batch n_ctx *k"],
        x_q: Float[Tensor, "batch n_q d"],
    ) -> Float[Tensor, "batch n_q *k"]:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d] → predictions [B, m] = −(query y-slots)."""
        n = x_ctx.shape[1]
        return self.layout.readout(self(self.encode(x_ctx, y_ctx, x_q), n), n)


# ---------------------------------------------------------------------------------------------------------------
# analysis


@torch.no_grad()
def copy_patterns(model: SeparateTokenModel, prompts: Prompts) -> Tensor:
    """The copy layer's attention pattern on `prompts`: [B, H, 2n + m, 2n] (rows: tokens, columns: keys)."""
    tokens = model.encode(prompts.x_ctx, prompts.y_ctx, prompts.x_q)
    _, cache = model.run_with_cache(tokens, prompts.n_ctx, names=[PATTERN])
    return cache[PATTERN]


def copy_scores(model: SeparateTokenModel, prompts: Prompts) -> dict[str, float | list[float]]:
    """How much the copy layer attends from each y_i token to its own pair's x_i token.

    Returns (means over prompts and pairs i; per head, and for the best head):
      ``copy_mass``  max over heads of the mean mass on x_i (the copying head);
      ``per_head``   [H] mean mass on x_i;   ``self_mass_per_head`` [H] mean mass y_i puts on itself;
      ``chance``     1/(2n), the mass of uniform attention;
      ``copy_head``  index of the best head.
    """
    pattern = copy_patterns(model, prompts)  # [B, H, 2n+m, 2n]
    n = prompts.n_ctx
    pairs = torch.arange(n, device=pattern.device)
    on_x = pattern[:, :, 2 * pairs + 1, 2 * pairs]  # [B, H, n]: row y_i, column x_i
    on_self = pattern[:, :, 2 * pairs + 1, 2 * pairs + 1]  # [B, H, n]: row y_i, column y_i
    per_head = on_x.double().mean(dim=(0, 2))  # [H]
    best = int(per_head.argmax())
    return {
        "copy_mass": float(per_head[best]),
        "per_head": per_head.tolist(),
        "self_mass_per_head": on_self.double().mean(dim=(0, 2)).tolist(),
        "chance": 1.0 / (2 * n),
        "copy_head": best,
    }


def plot_copy_pattern(model: SeparateTokenModel, prompts: Prompts, path: str | Path, *, title: str = "") -> Path:
    """Heatmaps of the copy layer's mean attention pattern (one panel per head); rows are the 2n + m tokens
    (x_1, y_1, …, x_n, y_n, queries q_1 …), columns the 2n context keys; colour = mean softmax weight in [0, 1].
    Writes a PNG via iclab.plotting.save_figure and returns its path."""
    mean = copy_patterns(model, prompts).double().mean(0).cpu().numpy()  # [H, 2n+m, 2n]
    n, heads, rows = prompts.n_ctx, mean.shape[0], mean.shape[1]
    labels = [f"{c}{i + 1}" for i in range(n) for c in ("x", "y")]
    row_labels = labels + [f"q{j + 1}" for j in range(rows - 2 * n)]
    fig = new_figure(0.5 + 4.2 * heads, 4.4)
    axes = fig.subplots(1, heads, squeeze=False)[0]
    for h, ax in enumerate(axes):
        image = ax.imshow(mean[h], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(f"copy layer, head {h}", fontsize="medium")
        ax.set_xlabel("key token")
        ax.set_ylabel("token")
        if 2 * n <= 40:
            ax.set_xticks(range(2 * n), labels, fontsize="x-small", rotation=90)
            ax.set_yticks(range(rows), row_labels, fontsize="x-small")
    fig.colorbar(image, ax=list(axes), shrink=0.9, label="attention weight")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
