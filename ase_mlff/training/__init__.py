"""Training: typed configuration, the trainer, losses, checkpoints and resume."""

from ase_mlff.training.config import DataConfig, ExperimentConfig, TrainConfig
from ase_mlff.training.trainer import Trainer, TrainResult

__all__ = ["DataConfig", "ExperimentConfig", "TrainConfig", "TrainResult", "Trainer"]
