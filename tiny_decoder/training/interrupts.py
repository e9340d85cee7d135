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
    """Stops the run when the loss or gradient norm turns inf/nan, naming the first such step, and before any
    non-finite weights are saved. Each step only records, on the device, the first step that was not finite; the
    Trainer reads that record (one host sync) before it writes anything - a log line, a validation, a checkpoint -
    so a GPU step never waits for the host in between (with several processes the read is a collective, at the same
    steps on every process)."""

    def __init__(self, args, accelerator, checkpointer, objective, scheduler):
        self.args, self.accelerator, self.checkpointer = args, accelerator, checkpointer
        self.objective, self.scheduler = objective, scheduler
        self.first_bad = None  # device tensor (step, 1 = loss / 2 = gradient norm) of the first non-finite step; 0 = none

    def check_step(self, step: int, loss_sum: torch.Tensor, grad_norm) -> None:
        """Record the step if it is the first non-finite one, without reading anything back. `grad_norm`: a tensor,
        or a float from some backends, or None without clipping."""
        bad_loss = ~torch.isfinite(loss_sum.detach()).reshape(())
        bad = bad_loss
        if grad_norm is not None:
            bad = bad | ~torch.isfinite(torch.as_tensor(grad_norm, device=bad.device)).reshape(())
        if self.first_bad is None:
            self.first_bad = torch.zeros(2, dtype=torch.long, device=bad.device)
        kind = torch.where(bad_loss, 1, 2)  # which one, if this step was not finite
        seen = torch.stack([torch.full_like(kind, step), kind])
        self.first_bad = torch.where(bad & (self.first_bad[0] == 0), seen, self.first_bad)

    def raise_if_diverged(self) -> None:
        """Read the record (a collective with several processes: call it at the same step on every one)."""
        if self.first_bad is None:
            return
        first = self.first_bad
        if self.accelerator.num_processes > 1:  # the earliest non-finite step of any process
            every = self.accelerator.gather(first[None])
            every = every[every[:, 0] > 0]
            first = every[every[:, 0].argmin()] if len(every) else first
        step, kind = first.tolist()
        if step:
            self.diverged(f"the training {'loss' if kind == 1 else 'gradient norm'} is not finite at step {step}")

    def check_weights(self, model, step: int) -> None:
        module = self.accelerator.unwrap_model(model, keep_torch_compile=False)
        if not bool(torch.stack([torch.isfinite(p).all() for p in module.parameters()]).all()):  # one sync, not one a tensor
            self.diverged(f"the weights hold inf or nan after step {step}")

    def diverged(self, what: str):
        last = self.checkpointer.last_checkpoint()
        kept = f"the last checkpoint, {last}, holds finite weights" if last else "no checkpoint was written"
        raise TrainingDiverged(
            f"training diverged: {what}. Likely cause: the learning rate ({self.scheduler.get_last_lr()[0]:g} now, "
            f"peak {self.args.learning_rate:g}) is too high{self.objective.divergence_hint()}; {kept}, and no "
            f"final model was saved. Lower --learning_rate (or raise --warmup_steps) and train again."
        )
