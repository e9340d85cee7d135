"""Tensor- and pipeline-parallel plans: the names match real modules, and a 2-process CPU (gloo)
tensor-parallel model gives the unsharded model's logits."""

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import small_config
from tiny_decoder import TinyDecoderConfig, TinyDecoderForCausalLM

ROOT = Path(__file__).resolve().parents[2]


def test_tp_plan_names_real_linear_layers_and_covers_every_projection():
    model = TinyDecoderForCausalLM(small_config())
    modules = dict(model.model.named_modules())
    for pattern in TinyDecoderConfig.base_model_tp_plan:
        hits = [n for n in modules if fnmatch.fnmatch(n, pattern.replace("*", "[0-9]*"))]
        assert len(hits) == model.config.num_hidden_layers, pattern
        assert all(isinstance(modules[n], nn.Linear) for n in hits)
    planned = {p.split(".", 2)[-1] for p in TinyDecoderConfig.base_model_tp_plan}
    linears = {n.split(".", 2)[-1] for n, m in modules.items() if isinstance(m, nn.Linear)}
    assert planned == linears  # no projection left unsharded
    names = [n for n, _ in model.named_modules()]
    for pattern in model._tp_plan:  # the LM's own plan (lm_head) joined with the prefixed base plan
        assert any(fnmatch.fnmatch(n, pattern.replace("*", "[0-9]*")) for n in names), pattern


def test_pp_plan_names_real_modules_and_forward_arguments():
    import inspect

    from tiny_decoder.model.modeling_tiny_decoder import Block

    model = TinyDecoderForCausalLM(small_config())
    for name in TinyDecoderConfig.base_model_pp_plan:
        assert hasattr(model.model, name), name
    block_args = inspect.signature(Block.forward).parameters
    assert {"hidden_states", "attention_mask"} <= set(block_args)
    assert "inputs_embeds" in inspect.signature(model.model.forward).parameters


@pytest.mark.skipif(sys.platform != "linux", reason="gloo over torchrun is checked on Linux")
@pytest.mark.slow
def test_two_process_tensor_parallel_forward_matches_the_unsharded_model(tmp_path):
    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(small_config(num_attention_heads=4, num_key_value_heads=2)).eval()
    model.save_pretrained(tmp_path / "model")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "tests" / "tp_worker.py"),
        str(tmp_path / "model"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = torch.arange(24).remainder(60).view(2, 12) + 3
    with torch.no_grad():
        want = model(ids, use_cache=False).logits
        want_gen = model.generate(ids[:, :4], max_new_tokens=6, do_sample=False)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["logits"], want, atol=1e-5, rtol=1e-4)
        assert torch.equal(got["generated"], want_gen)
    shapes = json.loads((tmp_path / "shapes0.json").read_text())
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == [16, 32]  # half of the 4 heads x 8 channels
    assert shapes["model.layers.0.mlp.down_proj.weight"][1] == model.config.intermediate_size // 2
