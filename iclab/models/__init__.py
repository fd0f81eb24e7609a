"""Sequence models over tokens; each is also a Learner (predict(x_ctx, y_ctx, x_q) → [B, m])."""

from __future__ import annotations

import torch

from iclab.config import ConfigError, ModelConfig
from iclab.models.hooks import HookedModule, HookPoint
from iclab.models.lsa import LSA, LSAWeights

__all__ = ["LSA", "MODELS", "HookPoint", "HookedModule", "LSAWeights", "make_model"]

MODELS = {"lsa": LSA}


def make_model(config: ModelConfig, d: int, *, generator: torch.Generator | None = None) -> LSA:
    if config.name not in MODELS:
        raise ConfigError(f"model.name: unknown value {config.name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[config.name](config, d, generator=generator)
