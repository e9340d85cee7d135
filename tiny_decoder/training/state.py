"""Where a run is, as one object: the trainer advances it, checkpoints carry it (trainer_state.json),
and a resumed run starts from it exactly where the interrupted one stopped."""

from dataclasses import asdict, dataclass

OPTIONAL = ("planned_total_steps", "planned_from", "precision", "block_size")


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this process consumed in the epoch (the data position)
    tokens: int = 0  # trained on, all processes
    forward_passes: int = 0  # batches forwarded, all processes (loss against compute, for zeroth-order runs)
    objective: dict | None = None  # the objective's signature, so a resume can say when the loss changed
    planned_total_steps: int | None = None  # the time budget's plan (see budget.py), made once per run
    planned_from: int | None = None  # ... and the schedule length it shortened
    precision: str | None = None  # accelerate's mixed_precision the run uses (what `auto` chose), for resumes
    block_size: int | None = None  # tokens per training block: a resume must keep it (the data position counts blocks)

    def state_dict(self) -> dict:
        """A JSON-ready dict; the optional keys only once set (the format of earlier checkpoints)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in OPTIONAL}

    def load_state_dict(self, state: dict) -> None:
        """Read a checkpoint's state; fields that older checkpoints lack keep their defaults."""
        for key, default in asdict(TrainState()).items():
            setattr(self, key, state.get(key, default))
