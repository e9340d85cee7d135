"""The training loop: exact steps, multi-process equivalence, exact resume, checkpoint checks."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import cli_args, killed_at_checkpoint, metrics, run  # noqa: F401  (workdir is a conftest fixture)

ROOT = Path(__file__).resolve().parents[2]


def test_one_step_equals_a_hand_written_step(workdir, tmp_path):
    from accelerate.utils import set_seed

    from tiny_decoder import TinyDecoderConfig, TinyDecoderForCausalLM
    from tiny_decoder.data import DataArguments, build_lm_datasets
    from tiny_decoder.data.tokenizer import load_tokenizer
    from tiny_decoder.training.loaders import EpochSampler

    out = tmp_path / "one"
    run(cli_args(workdir, out, max_steps=1, warmup_steps=10, max_grad_norm=0.5, weight_decay=0.1))

    tok = load_tokenizer(str(workdir / "tok"))
    blocks, _ = build_lm_datasets(DataArguments(dataset_path=str(workdir / "data"), block_size=16), tok)
    config = TinyDecoderConfig.from_pretrained(out)
    set_seed(7)
    model = TinyDecoderForCausalLM._from_config(config, attn_implementation="sdpa").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = list(EpochSampler(len(blocks["train"]), 7))[:4]
    batch = torch.tensor([blocks["train"][i]["input_ids"] for i in first])
    loss = torch.nn.functional.cross_entropy(model(batch).logits[:, :-1].reshape(-1, config.vocab_size), batch[:, 1:].reshape(-1))
    loss.backward()
    params = [p for p in model.parameters()]
    norm = torch.sqrt(sum((p.grad**2).sum() for p in params))
    lr = 3e-3 * (1 / 10)  # warmup: step 0 of 10
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = p.grad * min(1.0, 0.5 / (norm + 1e-6))
            decay = 0.0 if (p.dim() < 2 or "embed" in name) else 0.1
            m = (1 - 0.9) * g
            v = (1 - 0.95) * g * g
            update = (m / (1 - 0.9)) / ((v / (1 - 0.95)).sqrt() + 1e-8)
            p.mul_(1 - lr * decay).sub_(lr * update)
    assert metrics(out)[0]["loss"] == pytest.approx(loss.item(), rel=1e-5)
    trained = load_file(str(out / "model.safetensors"))
    for name, p in model.state_dict().items():
        if name in trained:
            torch.testing.assert_close(trained[name], p, atol=1e-6, rtol=1e-5, msg=name)
            assert not torch.equal(trained[name], before[name]), f"{name} did not move"


def test_resume_after_a_crash_ends_with_identical_weights(workdir, tmp_path, monkeypatch):
    common = dict(
        max_steps=10,
        save_steps=2,
        gradient_accumulation_steps=2,
        per_device_train_batch_size=8,
        config_overrides="residual_dropout=0.1,attention_dropout=0.1",
        save_total_limit=None,
        max_train_samples=20,
    )
    run(cli_args(workdir, tmp_path / "straight", **common))

    with killed_at_checkpoint(monkeypatch, 6):
        run(cli_args(workdir, tmp_path / "crashed", **common))
    assert not (tmp_path / "crashed" / "model.safetensors").exists()
    state = json.loads((tmp_path / "crashed" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["epoch"] >= 1  # the resume point lies past an epoch boundary

    run(cli_args(workdir, tmp_path / "crashed", resume_from_checkpoint="latest", **common))
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    curve = lambda out: [(m["step"], m["loss"]) for m in metrics(out) if "loss" in m]  # noqa: E731
    assert curve(tmp_path / "crashed")[-4:] == curve(tmp_path / "straight")[-4:]


@pytest.mark.parametrize("damage", ["truncate", "delete", "no_manifest"])
def test_damaged_checkpoint_is_refused(workdir, tmp_path, damage):
    from tiny_decoder.training import CheckpointError

    out = tmp_path / "run"
    run(cli_args(workdir, out, max_steps=3, save_steps=3))
    ckpt = out / "checkpoint-3"
    if damage == "truncate":
        f = ckpt / "model.safetensors"
        f.write_bytes(f.read_bytes()[:100])
        expected = "truncated"
    elif damage == "delete":
        next(ckpt.glob("optimizer*")).unlink()
        expected = "missing optimizer"
    else:
        (ckpt / "manifest.json").unlink()
        expected = "not written completely"
    with pytest.raises(CheckpointError, match=expected):
        run(cli_args(workdir, out, max_steps=6, resume_from_checkpoint=str(ckpt)))
    if damage == "no_manifest":  # and 'latest' skips incomplete folders
        with pytest.raises(CheckpointError, match="no complete checkpoint"):
            run(cli_args(workdir, out, max_steps=6, resume_from_checkpoint="latest"))


def test_output_loads_with_auto_classes_and_generates(workdir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    result = run(cli_args(workdir, out))
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.use_cache is True and model.config.vocab_size == len(tok)
    ids = tok("Lily found", return_tensors="pt")
    gen = model.generate(**ids, max_new_tokens=5, do_sample=False, eos_token_id=None)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 5
    card = (out / "README.md").read_text()
    assert card.startswith('---\nlibrary_name: "transformers"') and "pipeline_tag" in card
    assert f"{result['eval_loss']:.4f}" in card
    evals = [m for m in metrics(out) if "eval_loss" in m]
    assert [m["step"] for m in evals] == [3, 6] and math.isclose(evals[-1]["eval_loss"], result["eval_loss"])
    assert (out / "loss_curve.png").stat().st_size > 1000


def test_push_to_hub_offline_fails_before_training(workdir, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="cannot be reached"):
        run(cli_args(workdir, tmp_path / "hub", push_to_hub="true", hub_model_id="me/tiny"))
    assert not (tmp_path / "hub" / "tokenizer").exists()


def test_presets_have_the_documented_sizes():
    from tiny_decoder import TinyDecoderConfig, TinyDecoderForCausalLM
    from tiny_decoder.training import PRESETS

    sizes = {}
    for name, shape in PRESETS.items():
        model = TinyDecoderForCausalLM(TinyDecoderConfig(vocab_size=4096, max_position_embeddings=256, **shape))
        sizes[name] = sum(p.numel() for p in model.parameters())
    assert 0.2e6 < sizes["nano"] < 0.45e6
    assert 1e6 <= sizes["tiny"] <= 2e6
    small = PRESETS["small"]
    assert (small["hidden_size"], small["num_hidden_layers"], small["num_attention_heads"]) == (288, 6, 6)


@pytest.mark.skipif(sys.platform != "linux", reason="gloo over torchrun is checked on Linux")
@pytest.mark.parametrize("optim", ["adamw_torch", "muon"])
def test_two_processes_match_one_with_double_accumulation(workdir, tmp_path, optim):
    """DDP averages the processes' gradients as accumulation averages micro-batches (Muon: over the whole matrix)."""
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    two = cli_args(workdir, tmp_path / "two", gradient_accumulation_steps=1, save_steps=100, optim=optim)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "scripts" / "train.py"),
        *two,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout + proc.stderr
    run(cli_args(workdir, tmp_path / "one", gradient_accumulation_steps=2, save_steps=100, optim=optim))
    a, b = metrics(tmp_path / "two"), metrics(tmp_path / "one")
    assert [m["step"] for m in a] == [m["step"] for m in b]
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4, abs=1e-5)
        assert x["tokens"] == y["tokens"]
    wa, wb = load_file(str(tmp_path / "two" / "model.safetensors")), load_file(str(tmp_path / "one" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4, msg=k)


def test_continue_from_a_saved_model_folder(workdir, tmp_path):
    first = tmp_path / "first"
    run(cli_args(workdir, first, max_steps=6))
    second = tmp_path / "second"
    run(cli_args(workdir, second, max_steps=2, model_name_or_path=str(first), tokenizer_name=None, warmup_steps=1))
    start_fresh = metrics(first)[0]["loss"]
    start_again = metrics(second)[0]["loss"]
    assert start_again < start_fresh - 0.1  # it began from the trained weights, not a fresh init
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(second).get_vocab() == AutoTokenizer.from_pretrained(first).get_vocab()
