"""Every command in docs/walkthrough.md runs, on a tiny model standing in for runs/tiny."""

import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, small_config

pytestmark = pytest.mark.slow  # subprocesses / whole runs


def blocks(text, lang):
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_walkthrough_commands_run(tmp_path, tiny_tokenizer):
    from tiny_decoder import TinyDecoderForCausalLM

    torch.manual_seed(0)
    model_dir = tmp_path / "tiny"
    TinyDecoderForCausalLM(small_config(vocab_size=len(tiny_tokenizer))).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    page = (ROOT / "docs" / "walkthrough.md").read_text()
    swap = lambda s: (
        s.replace("runs/tiny", str(model_dir))
        .replace("docs/inspect", str(tmp_path / "inspect"))  # noqa: E731
        .replace(".venv/bin/python", sys.executable)
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    bash, python = blocks(page, "bash"), blocks(page, "python")
    assert bash and python
    for cmd in bash:
        proc = subprocess.run(swap(cmd), shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "inspect" / "attention.png").exists()
    for code in python:
        proc = subprocess.run([sys.executable, "-c", swap(code)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "model.layers.1 (Block)" in proc.stdout and "| total" in proc.stdout
    assert (ROOT / "docs" / "inspect" / "attention.png").read_bytes()[:4] == b"\x89PNG"  # the picture the page shows
