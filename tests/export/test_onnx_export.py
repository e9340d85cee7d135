"""--format onnx: a decoder with past keys and values that ONNX Runtime runs: logits equal ours within 1e-4, and a
greedy decode loop written in onnxruntime gives our greedy tokens."""

import json

import numpy as np
import pytest
import torch

from conftest import run_script, small_config
from tiny_decoder import TinyDecoderForCausalLM

pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.slow  # each export traces the model (~8 s)


@pytest.mark.parametrize(
    "over",
    [dict(num_key_value_heads=2), dict(num_key_value_heads=1, position_embedding="learned")],
    ids=["gqa_rope", "mqa_learned"],
)
def test_onnx_runtime_gives_our_logits_and_greedy_tokens(tmp_path, tiny_tokenizer, over):
    from tiny_decoder.export.onnx import greedy_decode

    torch.manual_seed(0)
    cfg = small_config(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        max_position_embeddings=64,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
        **over,
    )
    model = TinyDecoderForCausalLM(cfg).eval()
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    path = run_script(
        "export", ["--model_name_or_path", str(tmp_path / "model"), "--format", "onnx", "--output_dir", str(tmp_path / "onnx")]
    )
    assert (tmp_path / "onnx" / "tokenizer.json").exists()
    info = json.loads((tmp_path / "onnx" / "onnx_decoder.json").read_text())
    session = ort.InferenceSession(str(path))
    ids = torch.randint(3, cfg.vocab_size, (1, 9))
    empty = np.zeros((1, info["num_key_value_heads"], 0, info["head_dim"]), dtype=np.float32)
    feeds = {"input_ids": ids.numpy(), "position_ids": np.arange(9)[None]}
    feeds.update({name: empty for name in info["inputs"][2:]})
    logits, *present = session.run(None, feeds)
    with torch.no_grad():
        ours = model(ids).logits.numpy()
    assert np.abs(logits - ours).max() < 1e-4
    assert present[0].shape == (1, cfg.num_key_value_heads, 9, cfg.head_dim)
    new = greedy_decode(session, info, ids[0].tolist(), max_new_tokens=12, stop_at_eos=False)
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)[0, 9:].tolist()
    assert new == ref
