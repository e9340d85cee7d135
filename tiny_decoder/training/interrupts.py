"""How a run stops early, and what it tells the user. Ctrl-C: the first asks for a checkpoint after the
current step, the second stops at once; either way the user is told what was saved and the exact command
that resumes. Divergence: a non-finite loss, gradient norm or weight stops the run at the step it happens,
naming the likely cause, and no non-finite weights are ever saved."""

import os
import shlex
import signal
import sys

import torch


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C, with a message that says what was saved and how to go on."""


class TrainingDiverged(ValueError):
    """The loss, gradient norm or weights became inf or nan."""


class StopRequest:
    """The first Ctrl-C (SIGINT) asks the loop to stop after the current optimizer step and save a
    checkpoint there; a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C as it is
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step and saving a checkpoint (press again to stop at once)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    def agreed(self, accelerator) -> bool:
        """Every process stops at the same step, or none does (a signal reaches them at different times).
        With several processes this is a collective: every process must call it at the same step."""
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def python_command() -> str:
    """The interpreter that is running, as a user would type it (relative when it lies below the working folder),
    so a printed command works without an activated venv."""
    exe = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd() + os.sep) else sys.executable
    return shlex.quote(exe)


def resume_command(command: str | None) -> str:
    base = command or "python " + " ".join(sys.argv)
    base = base.split(" --resume_from_checkpoint")[0]
    if base.startswith("python "):
        base = python_command() + base[len("python") :]
    return f"{base} --resume_from_checkpoint latest"


class DivergenceGuard:
    """Stops the run at the step where the loss or gradient norm turns inf/nan, and before any non-finite weights
    are saved. With several processes the step check is a collective, so it runs only at logging steps there (as
    the Ctrl-C agreement does); the checkpoints already written keep finite weights."""

    def __init__(self, args, accelerator, checkpointer, objective, scheduler):
        self.args, self.accelerator, self.checkpointer = args, accelerator, checkpointer
        self.objective, self.scheduler = objective, scheduler

    def check_step(self, step: int, loss_sum: torch.Tensor, grad_norm) -> None:
        """`grad_norm`: a tensor, or a float from some backends, or None without clipping."""
        acc = self.accelerator
        if acc.num_processes > 1 and step % self.args.logging_steps:
            return
        bad = ~torch.isfinite(loss_sum)
        if grad_norm is not None:
            bad = bad | ~torch.isfinite(torch.as_tensor(grad_norm, device=bad.device))
        if acc.num_processes > 1:
            bad = acc.reduce(bad.float().reshape(1), reduction="sum") > 0
        if bool(bad):
            what = "loss" if not torch.isfinite(loss_sum) else "gradient norm"
            self.diverged(f"the training {what} is not finite at step {step}")

    def check_weights(self, model, step: int) -> None:
        module = self.accelerator.unwrap_model(model, keep_torch_compile=False)
        if not bool(torch.stack([torch.isfinite(p).all() for p in module.parameters()]).all()):  # one sync, not one a tensor
            self.diverged(f"the weights hold inf or nan after step {step}")

    def diverged(self, what: str):
        last = self.checkpointer.last_checkpoint()
        kept = f"the last checkpoint, {last}, holds finite weights" if last else "no checkpoint was written"
        raise TrainingDiverged(
            f"training diverged: {what}. Likely cause: the learning rate ({self.scheduler.get_last_lr()[0]:g} at this "
            f"step, peak {self.args.learning_rate:g}) is too high{self.objective.divergence_hint()}; {kept}, and no "
            f"final model was saved. Lower --learning_rate (or raise --warmup_steps) and train again."
        )
