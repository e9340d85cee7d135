"""The Trainer is made of parts that each own one concern: these tests hold the parts' own rules, and the shape
of the house (every attribute set in __init__, train() a table of contents)."""

import ast
import inspect
from types import SimpleNamespace

import pytest

from tiny_decoder.training.budget import TimeBudget
from tiny_decoder.training.state import TrainState


class Clock:
    def __init__(self):
        self.now = 1000.0

    def time(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    import tiny_decoder.training.budget as budget_module

    clock = Clock()
    monkeypatch.setattr(budget_module, "time", clock)
    return clock


def one_process():
    return SimpleNamespace(num_processes=1)


def test_the_budget_plans_once_after_its_calibration_steps_and_shortens_the_schedule(clock):
    state, calls = TrainState(), []
    budget = TimeBudget(1.0, 100000, state, eval_steps=100000, eval_tokens=0, shorten=lambda n, why: calls.append((n, why)))
    budget.start()
    for _ in range(300):  # 0.1 s per step: 60 s fit about 580 steps (3 % margin)
        clock.now += 0.1
        state.step += 1
        budget.after_step(one_process(), tokens_per_step=64)
    assert len(calls) == 1 and calls[0][0] == budget.total_steps == state.planned_total_steps
    assert state.planned_from == 100000 and 500 < budget.total_steps < 600
    assert "the learning-rate schedule now ends at step" in calls[0][1]
    assert not budget.out_of_time()
    clock.now += 60
    assert budget.out_of_time()


def test_a_resumed_run_keeps_its_plan_only_for_the_same_schedule(clock):
    state = TrainState(step=300, planned_total_steps=580, planned_from=100000)
    assert TimeBudget(1.0, 100000, state, 100, 0, shorten=None).total_steps == 580
    assert TimeBudget(1.0, 2000, state, 100, 0, shorten=None).total_steps == 2000  # a new --max_steps: planned anew
    assert TimeBudget(None, 100000, state, 100, 0, shorten=None).total_steps == 100000  # no budget, no plan


def test_without_a_budget_nothing_is_planned(clock):
    state = TrainState()
    budget = TimeBudget(None, 50, state, 10, 0, shorten=lambda *a: pytest.fail("no budget, no plan"))
    for _ in range(250):
        clock.now += 1
        state.step += 1
        budget.after_step(one_process(), 64)
    assert budget.total_steps == 50 and state.planned_total_steps is None and not budget.out_of_time()


def test_the_trainer_sets_every_attribute_in_its_constructor_and_train_reads_as_a_table_of_contents():
    from tiny_decoder.training.trainer import Trainer

    tree = ast.parse(inspect.getsource(Trainer))
    methods = {n.name: n for n in tree.body[0].body if isinstance(n, ast.FunctionDef)}

    def assigned(node):
        return {
            n.attr
            for n in ast.walk(node)
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and getattr(n.value, "id", "") == "self"
        }

    in_init = assigned(methods["__init__"])
    elsewhere = {name: assigned(m) - in_init for name, m in methods.items() if assigned(m) - in_init}
    assert not elsewhere, f"attributes first set outside __init__: {elsewhere}"
    train = methods["train"]
    assert train.end_lineno - train.lineno + 1 <= 30


def guard(logging_steps=5):
    import torch

    from tiny_decoder.training.interrupts import DivergenceGuard

    acc = SimpleNamespace(num_processes=1)
    args = SimpleNamespace(logging_steps=logging_steps, learning_rate=3e-3)
    checkpointer = SimpleNamespace(last_checkpoint=lambda: None)
    objective = SimpleNamespace(divergence_hint=lambda: "")
    scheduler = SimpleNamespace(get_last_lr=lambda: [torch.tensor(3e-3).item()])
    return DivergenceGuard(args, acc, checkpointer, objective, scheduler)


@pytest.mark.parametrize("bad", ["loss", "gradient norm"])
def test_the_divergence_guard_records_on_the_device_and_names_the_first_bad_step_when_read(bad):
    import torch

    from tiny_decoder.training.interrupts import TrainingDiverged

    g = guard()
    nan = torch.tensor(float("nan"))
    for step in range(1, 6):  # step 2 goes bad; recording reads nothing back, so nothing raises here
        broken = step >= 2
        loss = nan if broken and bad == "loss" else torch.tensor(2.0)
        norm = nan if broken and bad == "gradient norm" else torch.tensor(1.0)
        g.check_step(step, loss, norm)
    g.check_step(6, nan, nan)
    with pytest.raises(TrainingDiverged, match=f"the training {bad} is not finite at step 2\\b"):
        g.raise_if_diverged()  # the one read: the first bad step, not the last


def test_the_divergence_guard_reads_nothing_until_a_step_goes_bad():
    import torch

    from tiny_decoder.training.interrupts import TrainingDiverged

    g = guard()
    g.raise_if_diverged()  # nothing recorded yet
    g.check_step(1, torch.tensor(2.0), None)
    g.raise_if_diverged()  # finite so far
    g.check_step(2, torch.tensor(float("inf")), None)
    with pytest.raises(TrainingDiverged, match="loss is not finite at step 2"):
        g.raise_if_diverged()


def simulate(clock, stable_fraction):
    """A 1-minute run: 0.1 s a step while calibrating, 0.15 s after (a CPU that slowed), an evaluation of 1 s every
    100 steps. Returns (the step it stopped at, the planned total then, the (step, plan) it announced)."""
    state, plans = TrainState(), []
    budget = TimeBudget(
        1.0,
        1000,
        state,
        100,
        eval_tokens=1920,
        shorten=lambda n, why: plans.append((state.step, n)),
        stable_fraction=stable_fraction,
    )
    budget.start()
    while state.step < budget.total_steps and not budget.out_of_time():
        clock.now += 0.1 if state.step < 200 else 0.15
        state.step += 1
        budget.after_step(one_process(), tokens_per_step=64)  # evaluation's estimate: 1920 / (3 * 64 / 0.1) = 1 s
        if state.step % 100 == 0:
            clock.now += 1.0
    return state.step, budget.total_steps, plans


def test_a_warmup_stable_decay_run_re_plans_while_stable_so_its_decay_ends_in_time(clock):
    once = simulate(clock, None)  # planned once at step 200 from the faster pace: the clock stops it mid-decay
    assert len(once[2]) == 1 and once[0] < once[1]
    clock.now = 1000.0
    step, total, plans = simulate(clock, 0.8)
    assert step == total and plans[0] == once[2][0] and len(plans) > 1  # re-planned, and the schedule ended
    assert total < once[1]
    for (_, before), (at, _) in zip(plans, plans[1:]):
        assert at < 0.8 * before  # each re-plan came while the plan in force was still in its stable phase
