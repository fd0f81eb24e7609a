"""Training: the trainer, checkpoints and resume."""

from iclab.training.trainer import TrainingDiverged, TrainResult, evaluate_half_mse, load_model, train

__all__ = ["TrainResult", "TrainingDiverged", "evaluate_half_mse", "load_model", "train"]
