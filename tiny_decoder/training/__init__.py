"""Training on accelerate: arguments, optimizer and schedule, checkpoints, the loop, reports."""

from .arguments import PRESETS, ModelArguments, TrainArguments, build_config
from .checkpoint import CheckpointError, verify_checkpoint
from .loop import run_training

__all__ = ["PRESETS", "ModelArguments", "TrainArguments", "build_config", "CheckpointError", "verify_checkpoint", "run_training"]
