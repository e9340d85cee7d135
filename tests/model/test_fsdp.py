"""FSDP2 shards this model on CPU (gloo) and its gathered weights load in one process.

accelerate 1.15 turns FSDP on for GPU-like devices only, so the training script's FSDP path
(configs/accelerate/fsdp2.yaml) needs GPUs; this checks the part that does not: torch's
fully_shard on our Block, and the full state dict as accelerate gathers it for a checkpoint.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # subprocesses / whole runs

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(sys.platform != "linux", reason="gloo over torchrun is checked on Linux")
def test_fsdp2_sharded_training_loads_in_a_single_process(tmp_path):
    from tiny_decoder import TinyDecoderConfig, TinyDecoderForCausalLM

    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "tests" / "fsdp_worker.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_file(str(tmp_path / "model.safetensors"))
    assert "lm_head.weight" not in state and not any(k.startswith(("_orig_mod.", "module.")) for k in state)
    model = TinyDecoderForCausalLM(TinyDecoderConfig.from_pretrained(tmp_path)).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["lm_head.weight"] and unexpected == []
    fixed = torch.arange(32).remainder(97).view(2, 16)
    with torch.no_grad():
        logits = model(input_ids=fixed).logits
    torch.testing.assert_close(logits, load_file(str(tmp_path / "logits.safetensors"))["logits"], atol=1e-5, rtol=1e-4)
