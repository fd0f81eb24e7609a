"""Sequence models over tokens; each is also a Learner (predict(x_ctx, y_ctx, x_q) → [B, m]) and defines its
training loss (iclab.models.base). Families (the registry MODELS; each module holds the family's config class and
its network):

  lsa            linear self-attention on the concat layout (von Oswald)
  softmax        multi-head softmax attention (He et al.)
  gpt            pre-LN causal transformer on the interleaved layout (Garg, Raventós, Akyürek, Fu)
  lsa_features   LSA on jointly learned MLP features of x (von Oswald's deep representations)
  separate       separate x and (0, y) tokens: a softmax copy layer, then LSA (von Oswald's induction-head view)
  lla            local linear attention
  ssm            an attention-free gated linear recurrence with a selective scan (Mamba-style)
  attn_only      Reddy's attention-only causal transformer with an MLP classifier (class labels, or real targets)
"""

from __future__ import annotations

from typing import Any

import torch

from iclab.config import ModelConfig
from iclab.models.attn_only import AttnOnly, AttnOnlyConfig
from iclab.models.base import ICLModel, seeded_generator
from iclab.models.features import FeatureLSA, FeatureLSAConfig
from iclab.models.gpt import GPT, GPTConfig
from iclab.models.hooks import HookedModule, HookPoint
from iclab.models.lla import LLAConfig, LocalLinearAttentionModel
from iclab.models.lsa import LSA, LSAConfig, LSAWeights
from iclab.models.separate import SeparateConfig, SeparateTokenModel
from iclab.models.softmax import SoftmaxAttention, SoftmaxConfig
from iclab.models.ssm import SelectiveSSM, SSMConfig
from iclab.registry import Registry
from iclab.validation import ConfigError

__all__ = ["LSA", "MODELS", "HookPoint", "HookedModule", "ICLModel", "LSAWeights", "make_model", "model_class"]

# One line per family: its config class (which carries the name) and its network.
MODELS: Registry[ModelConfig, ICLModel] = Registry("model")
MODELS.register(LSAConfig, LSA)
MODELS.register(SoftmaxConfig, SoftmaxAttention)
MODELS.register(GPTConfig, GPT)
MODELS.register(FeatureLSAConfig, FeatureLSA)
MODELS.register(SeparateConfig, SeparateTokenModel)
MODELS.register(LLAConfig, LocalLinearAttentionModel)
MODELS.register(SSMConfig, SelectiveSSM)
MODELS.register(AttnOnlyConfig, AttnOnly)


def model_class(name: str) -> type[ICLModel]:
    """The network class of family `name`; ConfigError listing the families otherwise."""
    return MODELS.implementation(name)


def make_model(
    config: ModelConfig,
    d: int,
    *,
    k: int | None = None,
    n_labels: int | None = None,
    generator: torch.Generator | None = None,
) -> ICLModel:
    """The model named by config.name for inputs of dimension d (and vector targets y ∈ R^k: gpt only, see
    ExperimentConfig.target_dim; or class labels < n_labels: the families that declare `label_targets`, see
    ExperimentConfig.label_vocab), initialised from `generator`; with config.variance_head, wrapped in a
    `MeanVarianceModel` (iclab.models.variance) whose head is drawn after it."""
    generator = seeded_generator(generator)  # one stream: the variance head is drawn after the model, not beside it
    cls: Any = model_class(config.name)
    if n_labels is not None:
        if not config.label_targets or config.variance_head or k is not None:
            labels = [n for n in MODELS.names() if MODELS.config_class(n).label_targets]
            raise ConfigError(
                f"model.name: class labels (L = {n_labels}) need model {', '.join(labels)} without a variance "
                f"head, got {config.name!r}"
            )
        return cls(config, d, n_labels=n_labels, generator=generator)
    if k is None:
        model = cls(config, d, generator=generator)
    elif config.vector_targets and not config.variance_head:
        model = cls(config, d, k=k, generator=generator)
    else:
        vector = [n for n in MODELS.names() if MODELS.config_class(n).vector_targets]
        raise ConfigError(
            f"model.name: vector targets (k = {k}) need model {', '.join(vector)} without a "
            f"variance head, got {config.name!r}"
        )
    if config.variance_head:
        from iclab.models.variance import MeanVarianceModel

        model = MeanVarianceModel(model, config=config, generator=generator)
    return model
