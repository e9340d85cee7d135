"""`--mixed_precision auto`: the choice logic against a fake clock, the real timing helper, and a run that
records what it chose (log, card, checkpoint) and keeps it on resume."""

import json

import pytest
import torch

from conftest import cli_args, metrics, run  # noqa: F401  (workdir is a conftest fixture)
from tiny_decoder.training.precision import PrecisionChoice, candidates_for, choose_precision, time_model_step


class FakeClock:
    """Time advances only when a step runs: `cost[(precision, full)]` seconds per step."""

    def __init__(self, cost):
        self.now, self.cost, self.calls = 0.0, cost, []

    def __call__(self):
        return self.now

    def step(self, precision, full):
        self.calls.append((precision, full))
        self.now += self.cost[(precision, full)]


def costs(fp32, bf16, probe_fp32=0.01, probe_bf16=0.01):
    return {("no", True): fp32, ("bf16", True): bf16, ("no", False): probe_fp32, ("bf16", False): probe_bf16}


def test_the_faster_precision_is_chosen():
    clock = FakeClock(costs(fp32=0.30, bf16=0.20))
    result = choose_precision(["no", "bf16"], clock.step, clock=clock)
    assert result.choice == "bf16"
    assert result.seconds == {"no": pytest.approx(0.30), "bf16": pytest.approx(0.20)}
    assert "1.50x faster than fp32" in result.reason()
    # a probe each, then warm-up + 3 timed full steps each
    assert clock.calls.count(("no", False)) == clock.calls.count(("bf16", False)) == 1
    assert clock.calls.count(("no", True)) == clock.calls.count(("bf16", True)) == 4
    assert clock.calls[4:] == [("no", True), ("bf16", True)] * 3  # after probes and warm-ups: interleaved rounds


def test_fp32_stays_unless_the_other_is_clearly_faster():
    clock = FakeClock(costs(fp32=0.30, bf16=0.29))  # 3 % faster: not worth the changed numbers
    assert choose_precision(["no", "bf16"], clock.step, clock=clock).choice == "no"
    clock = FakeClock(costs(fp32=0.20, bf16=0.40))
    result = choose_precision(["bf16", "no"], clock.step, clock=clock)  # the order given does not matter
    assert result.choice == "no" and result.reason().startswith("fp32: 0.200 s per step vs bf16 0.400 s")


def test_a_precision_emulated_in_software_is_dropped_after_one_probe():
    clock = FakeClock(costs(fp32=0.30, bf16=24.0, probe_bf16=1.5))  # AVX2: bf16 ~80x slower
    result = choose_precision(["no", "bf16"], clock.step, clock=clock)
    assert result.choice == "no"
    assert ("bf16", True) not in clock.calls  # never timed on a full batch
    assert "bf16" in result.dropped and "bf16 probe 150x slower, not timed" in result.reason()
    assert clock.calls.count(("bf16", False)) == 2  # looked at twice before being ruled out
    assert clock.now == pytest.approx(0.01 + 2 * 1.5 + 4 * 0.30)  # probes, then fp32's warm-up and 3 timed steps


def test_the_best_of_the_timed_steps_counts():
    # probes; warm-ups; then rounds of (fp32, bf16): a load in round 1 slows both, bf16 has one lucky step
    times = iter([0.01, 0.01] + [0.9, 0.9] + [0.9, 1.5, 0.3, 0.2, 0.3, 0.25])
    now = [0.0]

    def step(p, full):
        now[0] += next(times)

    assert choose_precision(["no", "bf16"], step, clock=lambda: now[0]).seconds == pytest.approx({"no": 0.3, "bf16": 0.2})


def test_candidates_per_device():
    assert candidates_for(torch.device("cpu")) == ["no", "bf16"]
    assert candidates_for(torch.device("cpu"), zeroth_order=True) == ["no", "bf16"]
    assert "fp16" not in candidates_for(torch.device("mps"), zeroth_order=True)
    assert candidates_for(torch.device("mps")) == ["no", "bf16", "fp16"]


def test_a_single_candidate_says_so():
    assert PrecisionChoice("no", {"no": 0.1}).reason() == "fp32: the only candidate on this device"


def test_the_timing_step_runs_and_leaves_the_model_and_the_rng_alone():
    from conftest import small_config
    from tiny_decoder import TinyDecoderForCausalLM

    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(small_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    run_step = time_model_step(model, 4, 16, torch.device("cpu"))
    for precision in ("no", "bf16"):
        for full in (False, True):
            run_step(precision, full)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_auto_records_its_choice_and_a_resume_keeps_it(workdir, tmp_path, monkeypatch):
    import tiny_decoder.training.trainer as trainer_module

    chosen = PrecisionChoice("bf16", {"no": 0.3, "bf16": 0.2})
    monkeypatch.setattr(trainer_module, "choose_precision", lambda candidates, run_step: chosen)
    out = tmp_path / "run"
    run(cli_args(workdir, out, max_steps=4, save_steps=2, mixed_precision="auto"))
    card = (out / "README.md").read_text()
    assert "bf16 (chosen by --mixed_precision auto: bf16 autocast: 0.200 s per step vs fp32 0.300 s" in card
    assert json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["precision"] == "bf16"

    def must_not_time(candidates, run_step):
        raise AssertionError("a resumed auto run must keep its precision, not time again")

    monkeypatch.setattr(trainer_module, "choose_precision", must_not_time)
    result = run(cli_args(workdir, out, max_steps=6, save_steps=2, mixed_precision="auto", resume_from_checkpoint="latest"))
    assert result["step"] == 6
    assert "kept from" in (out / "README.md").read_text()


def test_auto_really_times_and_trains(workdir, tmp_path, capsys):
    out = tmp_path / "run"
    run(cli_args(workdir, out, max_steps=2, save_steps=2, mixed_precision="auto"))
    said = capsys.readouterr().out
    assert "--mixed_precision auto chose " in said
    precision = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["precision"]
    assert precision in ("no", "bf16")
    assert [r["step"] for r in metrics(out) if "loss" in r]


def test_a_probe_slowed_by_a_passing_load_gets_a_second_look():
    times = iter([0.01, 0.05] + [0.01] + [0.3, 0.2] + [0.3, 0.2] * 3)  # bf16's first probe 5x (a load), then normal
    now = [0.0]

    def step(p, full):
        now[0] += next(times)

    result = choose_precision(["no", "bf16"], step, clock=lambda: now[0])
    assert result.choice == "bf16" and not result.dropped


def test_runs_in_one_process_may_use_different_precisions(workdir, tmp_path):
    """bench/precision.py trains fp32 then bf16 in one process: accelerate's state must not pin the first."""
    from tiny_decoder.experiments.common import train

    values = dict(
        preset="nano", dataset_path=str(workdir / "data"), tokenizer_name=str(workdir / "tok"), block_size=16,
        per_device_train_batch_size=4, per_device_eval_batch_size=8, max_steps=2, warmup_steps=1, save_steps=2,
        eval_steps=2, max_eval_batches=2, num_samples=0, report_to="none", use_cpu=True,
    )  # fmt: skip
    for precision in ("no", "bf16"):
        out = train({**values, "mixed_precision": precision, "output_dir": str(tmp_path / precision)}, precision)
        assert json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["precision"] == precision


@pytest.mark.skipif(__import__("sys").platform != "linux", reason="gloo over torchrun is checked on Linux")
def test_two_processes_agree_on_one_precision(workdir, tmp_path):
    """Each process times; the main one's choice is broadcast, so both build the same Accelerator (no hang, one line)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "scripts" / "train.py"), *cli_args(workdir, out, max_steps=2, save_steps=2, mixed_precision="auto")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr
    assert said.count("--mixed_precision auto chose ") == 1 and "2 process(es)" in said
    assert json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["precision"] in ("no", "bf16")
