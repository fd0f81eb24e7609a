"""iclab: in-context learning lab — train sequence models on in-context tasks and explain them by the algorithms
they implement (von Oswald et al. and the field around it).

Public API (the subpackages hold the rest: iclab.tasks, iclab.models, iclab.algorithms, iclab.analysis, …).
"""

from iclab.algorithms.construct import construct_gd, construct_gdpp
from iclab.algorithms.gd import GD, GDPlusPlus
from iclab.algorithms.least_squares import OLS, Ridge
from iclab.algorithms.tuning import tune_steps
from iclab.analysis import compare_learners, half_mse, implicit_linear_map, weight_match
from iclab.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    TaskConfig,
    TrainConfig,
    model_config,
    task_config,
)
from iclab.experiments.presets import preset
from iclab.models import LSA
from iclab.runs import RunDir
from iclab.tasks import Prompts, make_task
from iclab.training import train

__version__ = "0.1.0"

__all__ = [
    "GD",
    "LSA",
    "OLS",
    "ConfigError",
    "ExperimentConfig",
    "GDPlusPlus",
    "ModelConfig",
    "Prompts",
    "Ridge",
    "RunDir",
    "TaskConfig",
    "TrainConfig",
    "__version__",
    "compare_learners",
    "construct_gd",
    "construct_gdpp",
    "half_mse",
    "implicit_linear_map",
    "make_task",
    "model_config",
    "preset",
    "task_config",
    "train",
    "tune_steps",
    "weight_match",
]
