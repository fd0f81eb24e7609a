"""Reddy (2023)'s network: a causal attention-only transformer with an MLP classifier (docs/papers.md §8).

    e_l   = tok_l W_E + b_E (items) or W_label[ℓ] (labels), + W_pos[l]   the interleaved stream x_1, ℓ_1, …, x_q
    r     = r + Attn(r)                                                  per layer: no LayerNorm, no MLP block
    out_l = MLP(r_l)                                                     classifier: `classifier_layers` linear
                                                                         layers, ReLU between, the last of width L

Read at the query's item token, the classifier's L outputs are the logits of the query's label (cross-entropy
training, `ICLModel.training_loss`); with real targets (n_labels None) the last layer has one output and the model
is trained as a GPT is (½·MSE over every prefix). Attention is `iclab.models.gpt.Attention` (causal multi-head
softmax, fused W_QKV, the same hook points and `layer_weights`), so everything that reads a GPT's attention reads
this model's. Everything that is not the block or the head is the GPT's: the read-in, the label table, positions,
`predict` and `predict_prefixes`.

Reddy's choices, and where iclab departs (recalled from Reddy 2023 §2, not re-read in this session): two attention
layers of one head each, attention-only with residual connections, then a three-layer ReLU MLP classifier that
outputs the L label probabilities; his tokens concatenate the D = 63 item or label vector with a one-hot position
(65 dimensions, width 128), and labels are fixed random vectors. Here positions are learned and added, labels are
a learned table (`gpt.label_table`), and the width is `width` (default 128). Initialisation: attention as the GPT's
(N(0, 0.02²), residual projections scaled by 1/√(2·layers)); read-in and classifier layers nn.Linear's default.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iclab.config import ModelConfig
from iclab.models.base import ICLModel, seeded_generator
from iclab.models.gpt import GPT, GPT2_STD, Attention, _normal, _uniform, label_table
from iclab.models.hooks import HookedModule, HookPoint
from iclab.tokens import InterleavedLayout
from iclab.validation import check_int, fail

__all__ = ["AttnOnly", "AttnOnlyBlock", "AttnOnlyConfig"]


@dataclass(frozen=True)
class AttnOnlyConfig(ModelConfig):
    """Reddy's attention-only transformer with an MLP classifier (`AttnOnly`); defaults are Reddy 2023's two
    layers of one head."""

    name: ClassVar[str] = "attn_only"
    label_targets: ClassVar[bool] = True

    layers: int = 2
    """attention layers"""
    heads: int = 1
    """attention heads per layer"""
    width: int = 128
    """residual-stream width d_model (a multiple of heads)"""
    classifier_hidden: int = 128
    """hidden width of the MLP classifier"""
    classifier_layers: int = 3
    """linear layers of the MLP classifier (ReLU between them; 1: a linear read-out)"""
    max_points: int = 256
    """the longest prompt (points) positional embeddings cover"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("model.width", self.width, 1)
        if self.width % self.heads:
            fail("model.width", f"a multiple of model.heads ({self.heads})", self.width)
        check_int("model.classifier_hidden", self.classifier_hidden, 1)
        check_int("model.classifier_layers", self.classifier_layers, 1)
        check_int("model.max_points", self.max_points, 1)


class AttnOnlyBlock(HookedModule):
    """resid_post = resid_pre + Attn(resid_pre): [B, L, d_model] → same (no LayerNorm, no MLP)."""

    def __init__(self, width: int, heads: int, out_std: float, generator: torch.Generator | None = None):
        super().__init__()
        self.attn = Attention(width, heads, out_std, generator)
        self.hook_resid_pre = HookPoint()  # [B, L, d_model]
        self.hook_attn_out = HookPoint()  # [B, L, d_model]
        self.hook_resid_post = HookPoint()  # [B, L, d_model]

    def forward(self, resid: Tensor, mask: Tensor | None = None) -> Tensor:
        resid = self.hook_resid_pre(resid)
        return self.hook_resid_post(resid + self.hook_attn_out(self.attn(resid, mask)))


class AttnOnly(GPT):
    """Reddy's network (module docstring) on the interleaved layout; a Learner like the GPT it extends.

    Hook points: hook_embed, hook_pos_embed, blocks.{l}.hook_resid_pre / hook_attn_out / hook_resid_post,
    blocks.{l}.attn.hook_q / hook_k / hook_v / hook_attn_scores / hook_pattern / hook_z, hook_classifier_in
    ([B, L, d_model], the final residual stream).
    """

    config: AttnOnlyConfig  # type: ignore[assignment]  # the GPT's methods read only width, max_points and layers

    def __init__(
        self,
        config: AttnOnlyConfig,
        d: int,
        *,
        k: int | None = None,
        n_labels: int | None = None,
        generator: torch.Generator | None = None,
    ):
        ICLModel.__init__(self)  # not GPT.__init__: the blocks and the head differ
        generator = seeded_generator(generator)  # never the global RNG
        if k is not None:
            raise ValueError("attn_only: vector targets are not supported (k must be None)")
        self.layout = InterleavedLayout(None)
        self.config, self.d, self.n_labels = config, d, n_labels
        width = config.width
        out_std = GPT2_STD / math.sqrt(2 * config.layers)
        self.W_E = _uniform((d, width), 1 / math.sqrt(d), generator)  # read-in, nn.Linear default init
        self.b_E = _uniform((width,), 1 / math.sqrt(d), generator)
        if n_labels is not None:
            self.W_label = label_table(n_labels, width, generator)
        self.W_pos = _normal((2 * config.max_points, width), GPT2_STD, generator)
        self.blocks = nn.ModuleList(
            AttnOnlyBlock(width, config.heads, out_std, generator) for _ in range(config.layers)
        )
        sizes = [width] + [config.classifier_hidden] * (config.classifier_layers - 1) + [n_labels or 1]
        self.classifier_W = nn.ParameterList(
            _uniform((a, b), 1 / math.sqrt(a), generator) for a, b in itertools.pairwise(sizes)
        )  # [fan_in, fan_out] each, nn.Linear default init
        self.classifier_b = nn.ParameterList(
            _uniform((b,), 1 / math.sqrt(a), generator) for a, b in itertools.pairwise(sizes)
        )
        self.hook_embed = HookPoint()  # [B, L, d_model] read-in of the tokens
        self.hook_pos_embed = HookPoint()  # [L, d_model]
        self.hook_classifier_in = HookPoint()  # [B, L, d_model] final residual (predict: queries only)

    def unembed(self, resid: Tensor) -> Tensor:
        """Final residual stream [B, L, d_model] → [B, L, L_labels] logits (or [B, L, 1]): the MLP classifier."""
        h = self.hook_classifier_in(resid)
        last = len(self.classifier_W) - 1
        for i, (W, b) in enumerate(zip(self.classifier_W, self.classifier_b)):
            h = h @ W + b
            if i < last:
                h = F.relu(h)
        return h
