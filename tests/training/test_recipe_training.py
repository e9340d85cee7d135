"""The speedrun recipe's training switches: Muon beside AdamW (torch's own Muon, one schedule, both states in every
checkpoint, exact resume), transformers' warmup-stable-decay schedule (also when the time budget shortens it), and
the weight EMA (the formula, evaluation of both, the average saved, exact resume); bad values refused in one line."""

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import cli_args, killed_at_checkpoint, metrics, run, small_config  # noqa: F401
from tiny_decoder import TinyDecoderForCausalLM


def args_for(**over):
    base = dict(
        optim="muon",
        learning_rate=3e-3,
        weight_decay=0.1,
        adam_beta1=0.9,
        adam_beta2=0.95,
        adam_epsilon=1e-8,
        muon_learning_rate=None,
        muon_momentum=0.95,
        muon_weight_decay=None,
        muon_adjust_lr_fn="match_rms_adamw",
        lr_scheduler_type="cosine",
        warmup_steps=2,
        min_lr_ratio=0.1,
        wsd_decay_fraction=0.2,
        zo_switch_step=0,
    )
    return SimpleNamespace(**{**base, **over})


@pytest.mark.parametrize("tied", [True, False])
def test_muon_takes_the_blocks_matrices_and_adamw_the_rest(tied):
    from tiny_decoder.training.optimizers import build_optimizers

    model = TinyDecoderForCausalLM(small_config(tie_word_embeddings=tied, attention_bias=True))
    accelerator = SimpleNamespace(process_index=0, num_processes=1)
    (adamw, muon), scheduler = build_optimizers(model, args_for(), 10, accelerator)
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    blocks = {n for n, p in model.named_parameters() if n.startswith("model.layers.") and p.dim() == 2}
    assert {names[i] for i in in_muon} == blocks and len(blocks) == 2 * 7  # q k v o gate up down, 2 layers
    assert not in_muon & in_adamw and len(in_muon | in_adamw) == len(names)  # every weight once (a tied head once)
    assert "model.embed_tokens.weight" in {names[i] for i in in_adamw}
    assert tied or "lm_head.weight" in {names[i] for i in in_adamw}
    group = muon.param_groups[0]
    assert (group["initial_lr"], group["weight_decay"], group["momentum"], group["adjust_lr_fn"]) == (
        3e-3,
        0.1,
        0.95,
        "match_rms_adamw",
    )
    assert scheduler.get_last_lr()[0] == adamw.param_groups[0]["lr"]  # one schedule, AdamW's rate reported


def test_muon_trains_checkpoints_both_optimizers_and_resumes_exactly(workdir, tmp_path, monkeypatch):
    common = dict(max_steps=6, save_steps=2, save_total_limit=None, optim="muon", gradient_accumulation_steps=2)
    run(cli_args(workdir, tmp_path / "straight", **common))
    records = [m for m in metrics(tmp_path / "straight") if "loss" in m]
    assert records[-1]["loss"] < records[0]["loss"]
    ckpt = tmp_path / "straight" / "checkpoint-4"
    assert (ckpt / "optimizer.bin").is_file() and (ckpt / "optimizer_1.bin").is_file()  # AdamW's and Muon's states
    assert "## Optimizer" in (tmp_path / "straight" / "README.md").read_text()
    with killed_at_checkpoint(monkeypatch, 4):
        run(cli_args(workdir, tmp_path / "crashed", **common))
    run(cli_args(workdir, tmp_path / "crashed", resume_from_checkpoint="latest", **common))
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_warmup_stable_decay_is_transformers_schedule(workdir, tmp_path):
    from transformers import get_wsd_schedule

    run(cli_args(workdir, tmp_path / "wsd", max_steps=10, warmup_steps=2, lr_scheduler_type="warmup_stable_decay",
                 wsd_decay_fraction=0.5, min_lr_ratio=0.1))  # fmt: skip
    logged = {m["step"]: m["lr"] for m in metrics(tmp_path / "wsd") if "lr" in m}
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3e-3)
    reference = get_wsd_schedule(probe, num_warmup_steps=2, num_decay_steps=5, num_training_steps=10, min_lr_ratio=0.1)
    expected = {}
    for step in range(1, 11):
        probe.step()
        reference.step()
        expected[step] = reference.get_last_lr()[0]
    assert logged.keys() == expected.keys()
    assert all(logged[s] == pytest.approx(expected[s], rel=1e-9) for s in logged)
    assert logged[5] == pytest.approx(3e-3) and logged[10] == pytest.approx(3e-4)  # stable, then decayed to the floor


def test_the_time_budget_ends_a_warmup_stable_decay_schedule_where_it_fits(workdir, tmp_path, monkeypatch):
    from test_run_safety import virtual_clock

    virtual_clock(monkeypatch)
    out = tmp_path / "run"
    result = run(cli_args(workdir, out, max_steps=100000, max_train_minutes=0.5, eval_steps=100000, save_steps=100000,
                          logging_steps=1, min_lr_ratio=0.1, warmup_steps=5, lr_scheduler_type="warmup_stable_decay"))  # fmt: skip
    lrs = {m["step"]: m["lr"] for m in metrics(out) if "lr" in m}
    assert result["step"] == 580 and lrs[580] == pytest.approx(3e-3 * 0.1)  # the decay ended at the planned step
    assert lrs[400] == pytest.approx(3e-3)  # still stable before the last 20 %


def test_the_weight_average_is_the_formula():
    from tiny_decoder.training.ema import WeightEMA

    model = torch.nn.Linear(3, 2)
    ema, expected = WeightEMA(model, 0.9), model.weight.detach().clone()
    for n in range(30):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * model.weight.detach()
    torch.testing.assert_close(ema.shadow["weight"], expected)
    before = model.weight.detach().clone()
    with ema.swapped_in(model):
        torch.testing.assert_close(model.weight.detach(), expected)
    assert torch.equal(model.weight, before)  # the training weights come back


def test_the_weight_average_is_evaluated_saved_and_resumed_exactly(workdir, tmp_path, monkeypatch, capsys):
    common = dict(max_steps=6, save_steps=2, eval_steps=3, save_total_limit=None, ema_decay=0.8)
    result = run(cli_args(workdir, tmp_path / "straight", **common))
    evals = [m for m in metrics(tmp_path / "straight") if "eval_loss" in m]
    assert all("eval_loss_ema" in m and m["eval_loss_ema"] != m["eval_loss"] for m in evals)
    assert result["eval_loss"] == evals[-1]["eval_loss_ema"]  # the saved model's figure
    final = load_file(str(tmp_path / "straight" / "model.safetensors"))
    average = load_file(str(tmp_path / "straight" / "checkpoint-6" / "ema.safetensors"))
    raw = load_file(str(tmp_path / "straight" / "checkpoint-6" / "model.safetensors"))
    assert torch.equal(final["model.layers.0.mlp.up_proj.weight"], average["model.layers.0.mlp.up_proj.weight"])
    assert not torch.equal(final["model.layers.0.mlp.up_proj.weight"], raw["model.layers.0.mlp.up_proj.weight"])
    assert "saving the weight average (--ema_decay 0.8)" in capsys.readouterr().out
    assert "## Weight average" in (tmp_path / "straight" / "README.md").read_text()
    with killed_at_checkpoint(monkeypatch, 4):
        run(cli_args(workdir, tmp_path / "crashed", **common))
    run(cli_args(workdir, tmp_path / "crashed", resume_from_checkpoint="latest", **common))
    again = load_file(str(tmp_path / "crashed" / "model.safetensors"))
    assert all(torch.equal(final[k], again[k]) for k in final)
    state = json.loads((tmp_path / "crashed" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["step"] == 6


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ema_decay", "1.0"], r"--ema_decay 1.0 must be in \(0, 1\)"),
        (["--ema_decay", "0"], r"--ema_decay 0.0 must be in \(0, 1\)"),
        (
            ["--lr_scheduler_type", "warmup_stable_decay", "--wsd_decay_fraction", "0"],
            r"--wsd_decay_fraction 0.0 must be in \(0, 1\]",
        ),
        (["--lr_scheduler_type", "warmup_stable_decay", "--wsd_decay_fraction", "1.5"], r"--wsd_decay_fraction 1.5 must be"),
        (["--wsd_decay_fraction", "0.3"], "does nothing without --lr_scheduler_type warmup_stable_decay"),
        (["--muon_momentum", "0.9"], "--muon_momentum does nothing without --optim muon"),
        (["--optim", "muon", "--muon_momentum", "1.0"], r"--muon_momentum 1.0 must be in \[0, 1\)"),
        (["--optim", "muon", "--muon_learning_rate", "-1"], r"--muon_learning_rate -1.0 must be > 0"),
        (["--optim", "muon", "--muon_adjust_lr_fn", "moonshot"], r"muon_adjust_lr_fn='moonshot' is not supported"),
    ],
)
def test_bad_recipe_values_are_one_line_before_any_work(flags, message, tmp_path):
    from tiny_decoder.cli import parse_args
    from tiny_decoder.training import TrainArguments

    with pytest.raises(ValueError, match=message):
        parse_args((TrainArguments,), ["--output_dir", str(tmp_path / "out"), *flags])
    assert not (tmp_path / "out").exists()
