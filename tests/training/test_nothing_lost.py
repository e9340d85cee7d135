"""Nothing lost, nothing silent: a run stopped at its end still gets its final model, every checkpoint opens
with from_pretrained, and a run whose loss turns non-finite stops at that step without saving bad weights."""

import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import cli_args, run  # noqa: F401  (workdir is a conftest fixture)


def test_ctrl_c_during_the_last_step_still_saves_the_final_model(workdir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    import tiny_decoder.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module.StopRequest, "agreed", lambda self, accelerator: True)  # Ctrl-C in every step
    out = tmp_path / "run"
    result = run(cli_args(workdir, out, max_steps=1, save_steps=10))  # the first step is the last
    assert result["step"] == 1 and (out / "README.md").exists()
    final = AutoModelForCausalLM.from_pretrained(out)
    ckpt = load_file(str(out / "checkpoint-1" / "model.safetensors"))
    assert torch.equal(final.model.norm.weight, ckpt["model.norm.weight"])


def test_ctrl_c_before_the_end_still_stops_without_a_final_model(workdir, tmp_path, monkeypatch):
    import tiny_decoder.training.trainer as trainer_module
    from tiny_decoder.training.interrupts import TrainingInterrupted

    monkeypatch.setattr(trainer_module.StopRequest, "agreed", lambda self, accelerator: True)
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="stopped by Ctrl-C at step 1; checkpoint-1 holds it"):
        run(cli_args(workdir, out, max_steps=3))
    assert not (out / "model.safetensors").exists() and (out / "checkpoint-1").is_dir()


def test_a_run_killed_during_its_final_save_finishes_its_outputs_when_resumed(workdir, tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    import tiny_decoder.training.checkpointer as checkpointer_module

    out = tmp_path / "run"
    real = checkpointer_module.save_atomically

    def killed(folder, *savers):
        if folder == str(out):  # the final save (the tokenizer's own folder is saved at the start)
            raise KeyboardInterrupt("simulated kill during the final save")
        return real(folder, *savers)

    monkeypatch.setattr(checkpointer_module, "save_atomically", killed)
    with pytest.raises(KeyboardInterrupt):
        run(cli_args(workdir, out, max_steps=3, save_steps=3))
    monkeypatch.undo()
    assert (out / "checkpoint-3").is_dir() and not (out / "model.safetensors").exists()
    result = run(cli_args(workdir, out, max_steps=3, save_steps=3, resume_from_checkpoint="latest"))
    assert not result.get("finished_already") and result["step"] == 3 and math.isfinite(result["eval_loss"])
    assert "final model was never saved: saving it now" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(out)
    ckpt = load_file(str(out / "checkpoint-3" / "model.safetensors"))
    assert torch.equal(model.model.embed_tokens.weight, ckpt["model.embed_tokens.weight"])
    assert (out / "README.md").exists()


def test_every_checkpoint_opens_with_from_pretrained(workdir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    run(cli_args(workdir, out, max_steps=2, save_steps=1, save_total_limit=None))
    ids = torch.tensor([[5, 9, 17, 3, 11]])
    final = AutoModelForCausalLM.from_pretrained(out).eval()
    for step in (1, 2):
        folder = out / f"checkpoint-{step}"
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert 0 < len(tokenizer) <= model.config.vocab_size
        if step == 2:  # the last checkpoint is the final model
            assert torch.equal(model(ids).logits, final(ids).logits)


def nan_after(monkeypatch, calls: int):
    """The objective's loss turns nan after `calls` micro-batches (a diverging run, made deterministic)."""
    from tiny_decoder.training.objectives import CausalLMObjective

    real = CausalLMObjective.__call__
    seen = {"n": 0}

    def call(self, model, batch):
        loss, extras = real(self, model, batch)
        seen["n"] += 1
        return (loss * float("nan") if seen["n"] > calls else loss), extras

    monkeypatch.setattr(CausalLMObjective, "__call__", call)


def test_a_non_finite_loss_stops_the_run_at_that_step_and_saves_no_bad_weights(workdir, tmp_path, monkeypatch):
    from tiny_decoder.training.interrupts import TrainingDiverged

    nan_after(monkeypatch, 4)
    out = tmp_path / "run"
    with pytest.raises(
        TrainingDiverged,
        match=r"training diverged: the training loss is not finite at step 5.*"
        r"learning rate .* too high.*checkpoint-4, holds finite weights",
    ):
        run(cli_args(workdir, out, max_steps=20, save_steps=2, logging_steps=1))
    assert not (out / "model.safetensors").exists()
    assert not (out / "checkpoint-6").exists()  # it stopped at step 5: no later step ran
    weights = load_file(str(out / "checkpoint-4" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    from conftest import metrics

    assert max(r["step"] for r in metrics(out)) == 4  # the non-finite step is not logged as a result


def test_a_learning_rate_that_blows_up_is_stopped_with_the_cause_named(workdir, tmp_path):
    from tiny_decoder.training.interrupts import TrainingDiverged

    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="training diverged.*learning rate"):
        run(cli_args(workdir, out, max_steps=30, warmup_steps=0, learning_rate=1e4, max_grad_norm=0.0, save_steps=100))
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("flag", ["learning_rate", "weight_decay", "max_grad_norm", "max_train_minutes"])
def test_infinite_float_arguments_are_refused(workdir, tmp_path, flag):
    with pytest.raises(ValueError, match=f"--{flag} inf is not a finite number"):
        run(cli_args(workdir, tmp_path / "run", **{flag: float("inf")}))


def test_an_infinite_distillation_temperature_is_refused():
    from tiny_decoder.training.objectives.distillation import DistillationArguments

    with pytest.raises(ValueError, match="--temperature inf is not a finite number"):
        DistillationArguments(teacher_name_or_path="runs/tiny", temperature=float("inf"))


def test_a_warmup_longer_than_the_run_is_warned_about(workdir, tmp_path, capsys):
    run(cli_args(workdir, tmp_path / "run", max_steps=3, warmup_steps=10))
    assert "warning: --warmup_steps 10 is not below the run's 3 steps" in capsys.readouterr().out


def test_between_logging_steps_a_non_finite_loss_is_caught_before_the_next_save_naming_its_step(workdir, tmp_path, monkeypatch):
    from tiny_decoder.training.interrupts import TrainingDiverged

    nan_after(monkeypatch, 6)  # step 7 is the first non-finite one; logging every 5, checkpoints every 4
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"the training loss is not finite at step 7\b.*checkpoint-4, holds finite"):
        run(cli_args(workdir, out, max_steps=20, save_steps=4, logging_steps=5))
    assert not (out / "checkpoint-8").exists() and not (out / "model.safetensors").exists()
    from conftest import metrics

    assert max(r["step"] for r in metrics(out)) == 6  # validation at step 6 (finite); nothing from step 7 on
