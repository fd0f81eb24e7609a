"""Named experiment configs (`iclab train --preset NAME`, `iclab presets`): each paper's live beside its
reproduction (`iclab.experiments.<paper>.PRESETS`); this module gathers them and adds the general ones.
"""

from __future__ import annotations

from iclab.config import ExperimentConfig, TrainConfig
from iclab.experiments import garg, he, von_oswald
from iclab.models.lsa import LSAConfig
from iclab.tasks.linear import LinearConfig
from iclab.validation import ConfigError

__all__ = ["PRESETS", "preset"]


def _gaussian(d: int, n: int, noise_var: float) -> ExperimentConfig:
    # The Gaussian setting of the one-layer theory (docs/papers.md): x, w ~ N(0, I), noisy labels.
    return ExperimentConfig(
        task=LinearConfig(d=d, n_points=n, x_dist="gaussian", x_scale=1.0, noise_var=noise_var),
        model=LSAConfig(layers=1),
        train=TrainConfig(steps=4000, lr=2e-3, schedule="cosine"),
        name=f"gaussian-d{d}-n{n}-s{noise_var:g}",
    )


PRESETS: dict[str, ExperimentConfig] = {
    **von_oswald.PRESETS,
    "gaussian": _gaussian(10, 20, 0.25),
    **he.PRESETS,
    **garg.PRESETS,
}


def preset(name: str) -> ExperimentConfig:
    """The named preset; unknown names list the valid ones."""
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown value {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]
