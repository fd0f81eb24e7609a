"""Sequence models over tokens; each is also a Learner (predict(x_ctx, y_ctx, x_q) → [B, m]) and defines its
training loss (iclab.models.base). Families (ModelConfig.name; definitions in each class's docstring):

  lsa            linear self-attention on the concat layout (von Oswald)
  softmax        multi-head softmax attention (He et al.)
  gpt            pre-LN causal transformer on the interleaved layout (Garg, Raventós, Akyürek, Fu)
  lsa_features   LSA on jointly learned MLP features of x (von Oswald's deep representations)
  separate       separate x and (0, y) tokens: a softmax copy layer, then LSA (von Oswald's induction-head view)
  lla            local linear attention
  ssm            an attention-free gated linear recurrence with a selective scan (Mamba-style)
"""

from __future__ import annotations

import importlib

import torch

from iclab.config import VECTOR_MODELS, ConfigError, ModelConfig
from iclab.models.base import ICLModel, seeded_generator
from iclab.models.hooks import HookedModule, HookPoint
from iclab.models.lsa import LSA, LSAWeights

__all__ = ["LSA", "MODELS", "HookPoint", "HookedModule", "ICLModel", "LSAWeights", "make_model", "model_class"]

# name → "module:Class", imported on first use
MODELS = {
    "lsa": "iclab.models.lsa:LSA",
    "softmax": "iclab.models.softmax:SoftmaxAttention",
    "gpt": "iclab.models.gpt:GPT",
    "lsa_features": "iclab.models.features:FeatureLSA",
    "separate": "iclab.models.separate:SeparateTokenModel",
    "lla": "iclab.models.lla:LocalLinearAttentionModel",
    "ssm": "iclab.models.ssm:SelectiveSSM",
}


def model_class(name: str) -> type[ICLModel]:
    if name not in MODELS:
        raise ConfigError(f"model.name: unknown value {name!r}; choose one of: {', '.join(MODELS)}")
    module, _, cls = MODELS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_model(
    config: ModelConfig, d: int, *, k: int | None = None, generator: torch.Generator | None = None
) -> ICLModel:
    """The model named by config.name for inputs of dimension d (and vector targets y ∈ R^k: gpt only, see
    ExperimentConfig.target_dim), initialised from `generator`; with config.variance_head, wrapped in a
    `MeanVarianceModel` (iclab.models.variance) whose head is drawn after it."""
    generator = seeded_generator(generator)  # one stream: the variance head is drawn after the model, not beside it
    if k is None:
        model = model_class(config.name)(config, d, generator=generator)
    elif config.name in VECTOR_MODELS and not config.variance_head:
        model = model_class(config.name)(config, d, k=k, generator=generator)
    else:
        raise ConfigError(
            f"model.name: vector targets (k = {k}) need model {', '.join(VECTOR_MODELS)} without a "
            f"variance head, got {config.name!r}"
        )
    if config.variance_head:
        from iclab.models.variance import MeanVarianceModel

        model = MeanVarianceModel(model, config=config, generator=generator)
    return model
