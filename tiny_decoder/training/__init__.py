"""Training on accelerate: the Trainer that owns a run (trainer.py) and its state (state.py), arguments,
objectives (objectives/), optimizers and schedule (optimizers.py), step rules (steps.py), checkpoints,
the run folder's rules and what a run reports."""

from .arguments import PRESETS, ModelArguments, TrainArguments, build_config
from .checkpoint import CheckpointError, verify_checkpoint
from .state import TrainState
from .trainer import Trainer

__all__ = [
    "PRESETS",
    "ModelArguments",
    "TrainArguments",
    "build_config",
    "CheckpointError",
    "verify_checkpoint",
    "TrainState",
    "Trainer",
]
