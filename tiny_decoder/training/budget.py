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
