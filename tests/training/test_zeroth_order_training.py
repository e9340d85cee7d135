"""`scripts/train.py --optim zeroth_order`: the loop's logs, checkpoints, exact resume, processes, hybrid
schedule and card with forward passes only; and a zeroth-order step's peak memory against inference."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import cli_args, killed_at_checkpoint, metrics, run  # noqa: F401  (workdir is a conftest fixture)

ROOT = Path(__file__).resolve().parents[2]
ZO = dict(optim="zeroth_order", learning_rate=2e-3, warmup_steps=0, weight_decay=0.0)


def test_train_script_trains_with_forward_passes_only(workdir, tmp_path):
    out = tmp_path / "zo"
    run(
        cli_args(
            workdir,
            out,
            max_steps=40,
            zo_num_directions=4,
            zo_batched="true",
            eval_steps=40,
            save_steps=40,
            max_eval_batches=None,
            **ZO,
        )
    )
    rows = [r for r in metrics(out) if "loss" in r]
    assert [r["forward_passes"] for r in rows][:2] == [8, 16]  # 4 directions x (+, -) per step
    assert all({"zo_grad_norm", "zo_proj_std", "zo_loss_diff", "zo_eps", "zo_step_factor"} <= r.keys() for r in rows)
    first = sum(r["loss"] for r in rows[:5]) / 5
    last = sum(r["loss"] for r in rows[-5:]) / 5
    assert last < first - 0.1  # the loss falls without a single backward
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert "## Zeroth-order training" in card.text and "zeroth-order" in card.data.tags
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    saved = load_file(str(out / "model.safetensors"))
    assert torch.equal(model.model.embed_tokens.weight, saved["model.embed_tokens.weight"])


def test_zeroth_order_resume_is_exact(workdir, tmp_path, monkeypatch):
    common = dict(
        max_steps=8,
        save_steps=2,
        gradient_accumulation_steps=2,
        save_total_limit=None,
        zo_momentum=0.5,
        zo_tensor_fraction=0.5,
        zo_num_directions=2,
        max_train_samples=20,
        **ZO,
    )
    run(cli_args(workdir, tmp_path / "straight", **common))
    with killed_at_checkpoint(monkeypatch, 6):
        run(cli_args(workdir, tmp_path / "crashed", **common))
    run(cli_args(workdir, tmp_path / "crashed", resume_from_checkpoint="latest", **common))
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    curve = lambda out: [(m["step"], m["loss"], m["forward_passes"]) for m in metrics(out) if "loss" in m]  # noqa: E731
    assert curve(tmp_path / "crashed") == curve(tmp_path / "straight")


def test_hybrid_runs_zeroth_order_then_backprop(workdir, tmp_path):
    out = tmp_path / "hybrid"
    run(
        cli_args(
            workdir,
            out,
            max_steps=6,
            zo_hybrid="zo_then_backprop",
            zo_switch_step=3,
            backprop_learning_rate=1e-2,
            lr_scheduler_type="constant",
            save_steps=6,
            **ZO,
        )
    )
    rows = [r for r in metrics(out) if "loss" in r]
    assert [("zo_grad_norm" in r) for r in rows] == [True] * 3 + [False] * 3
    assert [r["lr"] for r in rows] == [2e-3] * 3 + [1e-2] * 3
    assert (out / "checkpoint-6" / "optimizer_1.bin").exists()  # AdamW's moments are checkpointed too
    assert "Hybrid schedule: zeroth-order for the first 3 steps, then AdamW backprop" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    "flags, message",
    [
        (dict(optim="sgd"), "optim='sgd' is not supported"),
        (dict(optim="zeroth_order", torch_compile="true"), "--torch_compile does not combine"),
        (dict(optim="zeroth_order", mixed_precision="fp16"), "fp16 does not combine"),
        (dict(optim="zeroth_order", zo_eps=0), r"zo_eps=0.0 must be in \(0, 1\]"),
        (dict(optim="zeroth_order", zo_eps=1e6), r"zo_eps=1000000.0 must be in \(0, 1\]: a probe larger than the weights"),
        (dict(optim="zeroth_order", zo_tensor_fraction=0), "zo_tensor_fraction=0.0 must be in"),
        (dict(optim="zeroth_order", zo_momentum=1), "zo_momentum=1.0 must be in"),
        (dict(optim="zeroth_order", zo_hybrid="zo_then_backprop"), "needs --zo_switch_step"),
        (dict(zo_hybrid="zo_then_backprop", zo_switch_step=2), "needs --optim zeroth_order"),
    ],
)
def test_bad_zeroth_order_arguments_are_refused(workdir, tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        run(cli_args(workdir, tmp_path / "bad", **flags))
    assert not (tmp_path / "bad").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="gloo over torchrun is checked on Linux")
def test_two_processes_match_one_with_double_accumulation(workdir, tmp_path):
    """Each process probes its own directions on its own batch and all apply the same update: two processes
    equal one with two micro-batches, with no gradient all-reduce."""
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    common = dict(save_steps=100, zo_num_directions=2, **ZO)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "scripts" / "train.py"),
        *cli_args(workdir, tmp_path / "two", gradient_accumulation_steps=1, **common),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run(cli_args(workdir, tmp_path / "one", gradient_accumulation_steps=2, **common))
    a, b = metrics(tmp_path / "two"), metrics(tmp_path / "one")
    assert [m["step"] for m in a] == [m["step"] for m in b]
    for x, y in zip(a, b):
        if "loss" in x:
            assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
            assert x["forward_passes"] == y["forward_passes"]
            assert x["zo_grad_norm"] == pytest.approx(y["zo_grad_norm"], rel=1e-4)
    wa, wb = load_file(str(tmp_path / "two" / "model.safetensors")), load_file(str(tmp_path / "one" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=1e-5, msg=k)


@pytest.mark.slow
def test_a_zeroth_order_step_needs_about_inference_memory():
    """Measured in separate processes (experiments/memory.py): peak memory a step adds above the model."""
    from tiny_decoder.experiments.memory import StepShape, measure_in_child

    # The `tiny` preset at batch 16 x 256: backprop keeps ~4 layers of activations besides the 64 MiB of logits.
    shape = StepShape(preset="tiny", vocab_size=4096, batch_size=16, block_size=256, repeats=2, device="cpu")
    rows = {m: measure_in_child(m, shape) for m in ("inference", "zeroth_order", "adamw")}
    infer, zo, adamw = (rows[m]["peak_mib"] for m in ("inference", "zeroth_order", "adamw"))
    assert infer > 64  # the logits alone are 64 MiB: the measurement sees the activations
    assert zo < 1.3 * infer + 8, json.dumps(rows)
    assert adamw > 1.5 * zo, json.dumps(rows)


def test_every_logged_record_carries_forward_passes(workdir, tmp_path):
    """Evaluations off the logging grid too (loss vs compute curves read them)."""
    out = tmp_path / "grid"
    run(cli_args(workdir, out, max_steps=6, logging_steps=2, eval_steps=3, **ZO))
    rows = metrics(out)
    assert any("eval_loss" in r and "loss" not in r for r in rows)  # step 3: an evaluation alone
    assert all(r["forward_passes"] == 2 * r["step"] for r in rows)
