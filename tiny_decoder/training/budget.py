"""Fit the learning-rate schedule to a time budget (`--max_train_minutes`).

A run that is cut off by the clock stops with its learning rate still high, and a model that was
never annealed is much worse than one trained for fewer steps on a schedule that ended. So once
the speed of this machine is known (timed over steps 20..200: after torch.compile's first steps,
and long enough that a slow start does not set the plan), the run plans how many steps fit, and
the schedule ends at that step. With warmup 100 the cosine has barely begun by step 200, so the
change of its length moves the learning rate by well under 1 %. The plan
is saved in every checkpoint, so a resumed run keeps it; the clock guard stays in place for a
machine that slows down later.
"""

import math
import time

CALIBRATION = (20, 200)  # the steps timed


def plan_total_steps(
    step: int,
    total_steps: int,
    elapsed_s: float,
    seconds_per_step: float,
    budget_s: float,
    eval_steps: int,
    eval_s: float,
    margin: float = 0.03,
) -> int:
    """How many steps this run can take in budget_s, at most total_steps and at least step + 1.

    elapsed_s: seconds since training started; eval_s: seconds one evaluation takes; evaluations
    happen every eval_steps and at the end.
    """
    left = budget_s * (1 - margin) - elapsed_s
    evals_left = (total_steps - step) // eval_steps + 1  # the most there can be
    fit = math.floor((left - evals_left * eval_s) / max(seconds_per_step, 1e-9))
    return max(step + 1, min(total_steps, step + fit))


class TimeBudget:
    """The run's clock against `--max_train_minutes`: the schedule's length (the plan a resumed run kept, or the
    data's), the calibration steps, the plan, and whether time is out.

    `shorten(planned, message)` is called once when the plan cuts the schedule (the Trainer re-aims the learning
    rate schedule and says so)."""

    def __init__(self, max_train_minutes: float | None, total_steps: int, state, eval_steps: int, eval_tokens: int, shorten):
        self.max_minutes, self.state, self.eval_steps, self.eval_tokens = max_train_minutes, state, eval_steps, eval_tokens
        kept_plan = state.planned_total_steps and state.planned_from == total_steps and max_train_minutes
        self.total_steps = state.planned_total_steps if kept_plan else total_steps
        self.shorten = shorten
        self.calibration: tuple[int, float] | None = None  # (step, time) where the timed steps began
        self.started = time.time()

    def start(self):
        self.started = time.time()

    def elapsed_s(self) -> float:
        return time.time() - self.started

    def minutes(self) -> float:
        return self.elapsed_s() / 60

    def out_of_time(self) -> bool:
        return self.max_minutes is not None and self.minutes() >= self.max_minutes

    def after_step(self, accelerator, tokens_per_step: int):
        """Time the calibration steps; at their end, plan once (every process the same plan)."""
        state = self.state
        if not self.max_minutes or state.planned_total_steps is not None or self.total_steps <= state.step:
            return
        if self.calibration is None and state.step >= CALIBRATION[0]:
            self.calibration = (state.step, time.time())
        elif self.calibration is not None and state.step - self.calibration[0] >= CALIBRATION[1] - CALIBRATION[0]:
            self._plan(accelerator, tokens_per_step)

    def _plan(self, accelerator, tokens_per_step: int):
        import torch

        state, now, (step0, t0) = self.state, time.time(), self.calibration
        per_step = (now - t0) / (state.step - step0)
        eval_s = self.eval_tokens / (3 * tokens_per_step / per_step)  # a forward costs about a third of a training step
        planned = plan_total_steps(
            state.step, self.total_steps, now - self.started, per_step, self.max_minutes * 60, self.eval_steps, eval_s
        )
        if accelerator.num_processes > 1:  # every process must take the same number of steps
            # accelerate's reduce has no "min" (it would sum): take the max of the negated plans
            planned = -int(accelerator.reduce(torch.tensor([-planned], device=accelerator.device), reduction="max").item())
        state.planned_total_steps, state.planned_from = planned, self.total_steps
        if planned < self.total_steps:
            self.shorten(
                planned,
                f"max_train_minutes={self.max_minutes}: at {per_step:.2f} s per step, {planned} of {self.total_steps} "
                f"steps fit; the learning-rate schedule now ends at step {planned}",
            )
        self.total_steps = planned
