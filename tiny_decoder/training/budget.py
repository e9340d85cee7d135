"""Fit the learning-rate schedule to a time budget (`--max_train_minutes`).

A run that is cut off by the clock stops with its learning rate still high, and a model that was
never annealed is much worse than one trained for fewer steps on a schedule that ended. So once
the speed of this machine is known (timed over steps 20..200: after torch.compile's first steps,
and long enough that a slow start does not set the plan), the run plans how many steps fit, and
the schedule ends at that step. With warmup 100 the cosine has barely begun by step 200, so the
change of its length moves the learning rate by well under 1 %. The plan
is saved in every checkpoint, so a resumed run keeps it. A CPU's speed drifts over minutes (make train: 0.234 s a
step while calibrating, 0.267 later), so with a warmup-stable-decay schedule the plan is made again after every
evaluation window while the run is still in its stable phase, from the pace of that window (its evaluation
included): moving the end of a schedule whose learning rate is still flat changes nothing already done. The clock
guard stays in place for a machine that slows down during the decay.
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

    `shorten(planned, message)` is called when the plan cuts the schedule and whenever a re-plan moves its end
    (shorter or, on a machine that sped up, longer; the Trainer re-aims the learning rate schedule and says so)."""

    def __init__(
        self,
        max_train_minutes: float | None,
        total_steps: int,
        state,
        eval_steps: int,
        eval_tokens: int,
        shorten,
        stable_fraction: float | None = None,
    ):
        """stable_fraction: the share of the schedule before its decay (WSD: 1 - decay fraction), during which the
        plan is re-made every window; None: plan once (a cosine's learning rate depends on its length throughout)."""
        self.max_minutes, self.state, self.eval_steps, self.eval_tokens = max_train_minutes, state, eval_steps, eval_tokens
        self.stable_fraction, self.window, self.eval_s = stable_fraction, None, 0.0
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
        """Time the calibration steps; at their end, plan (every process the same plan); then re-plan."""
        state = self.state
        if not self.max_minutes or self.total_steps <= state.step:
            return
        if state.planned_total_steps is not None:
            return self._replan(accelerator)
        if self.calibration is None and state.step >= CALIBRATION[0]:
            self.calibration = (state.step, time.time())
        elif self.calibration is not None and state.step - self.calibration[0] >= CALIBRATION[1] - CALIBRATION[0]:
            self._plan(accelerator, tokens_per_step)

    def _plan(self, accelerator, tokens_per_step: int):
        state, now, (step0, t0) = self.state, time.time(), self.calibration
        per_step = (now - t0) / (state.step - step0)
        eval_s = self.eval_tokens / (3 * tokens_per_step / per_step)  # a forward costs about a third of a training step
        planned = plan_total_steps(
            state.step, self.total_steps, now - self.started, per_step, self.max_minutes * 60, self.eval_steps, eval_s
        )
        planned = agreed(accelerator, planned)
        state.planned_total_steps, state.planned_from = planned, self.total_steps
        self.eval_s, self.window = eval_s, (state.step, now)
        if planned < self.total_steps:
            self.shorten(
                planned,
                f"max_train_minutes={self.max_minutes}: at {per_step:.2f} s per step, {planned} of {self.total_steps} "
                f"steps fit; the learning-rate schedule now ends at step {planned}",
            )
        self.total_steps = planned

    def _replan(self, accelerator):
        """Every window (the evaluation interval, or the calibration's length without evaluations) while the
        schedule is in its stable phase: plan again from the window's pace, evaluations included."""
        state, now = self.state, time.time()
        if self.stable_fraction is None:
            return
        if self.window is None:  # resumed: the first window starts here
            self.window = (state.step, now)
            return
        step0, t0 = self.window
        window = self.eval_steps if self.eval_steps < state.planned_from else CALIBRATION[1] - CALIBRATION[0]
        if state.step - step0 < window or state.step >= self.stable_fraction * self.total_steps:
            return
        per_step = (now - t0) / (state.step - step0)  # one evaluation per window already in it: only the last one added
        fit = plan_total_steps(
            state.step, state.planned_from, now - self.started, per_step, self.max_minutes * 60, 10**12, self.eval_s
        )
        before_decay = math.ceil((state.step + 1) / self.stable_fraction)  # the decay must still lie ahead
        planned = agreed(accelerator, max(fit, min(before_decay, state.planned_from)))
        self.window = (state.step, now)
        if planned != self.total_steps:
            self.shorten(
                planned,
                f"max_train_minutes={self.max_minutes}: re-planned at step {state.step}, {per_step:.3f} s per step "
                f"with evaluations; the learning-rate schedule now ends at step {planned} (was {self.total_steps})",
            )
            state.planned_total_steps = self.total_steps = planned


def agreed(accelerator, planned: int) -> int:
    """Every process must take the same number of steps: the smallest plan. accelerate's reduce has no "min" (it
    would sum), so the max of the negated plans."""
    if accelerator.num_processes == 1:
        return planned
    import torch

    return -int(accelerator.reduce(torch.tensor([-planned], device=accelerator.device), reduction="max").item())
