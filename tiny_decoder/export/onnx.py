"""A tiny-decoder as an ONNX decoder with past keys and values, run by ONNX Runtime.

Exported with torch.onnx's dynamo exporter from the model's own forward (not optimum's exporter on the Llama
export): it needs no exporter that must keep up with transformers' releases, it covers every config that
torch.export traces rather than only the Llama-expressible ones, and the graph runs the same cache code as
PyTorch. Inputs: input_ids (B, T), position_ids (B, T), past_key_i / past_value_i (B, H_kv, P, d) for every
layer (P = 0 for the prompt); outputs: logits (B, T, V) and present_key_i / present_value_i (B, H_kv, P + T, d).
`greedy_decode` is the loop a runtime writes around it.
"""

import json
from pathlib import Path

import numpy as np
import torch

INFO = "onnx_decoder.json"


class OnnxDecoder(torch.nn.Module):
    """The traced function: tensors in, tensors out, the cache rebuilt from the past tensors each call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, position_ids, past):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(self.model.config.num_hidden_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, position_ids=position_ids, cache=cache, use_cache=True)
        present = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    kv = [(i, k) for i in range(num_layers) for k in ("key", "value")]
    return ["input_ids", "position_ids"] + [f"past_{k}_{i}" for i, k in kv], ["logits"] + [f"present_{k}_{i}" for i, k in kv]


def check_onnx(config) -> None:
    """Refuse, before anything is written, a config this decoder's inputs cannot express."""
    if getattr(config, "attention_type", "softmax") == "linear":
        raise ValueError(
            "attention_type='linear' keeps a running state, not past keys and values, so it does not fit this "
            "decoder's inputs (and traces to fixed lengths); export a softmax-attention model, or use the native folder."
        )


def save_onnx(model, path: str) -> dict:
    """Export `model` (eval mode, float32) to `path`; returns what a runtime needs to feed it (also written beside)."""
    cfg = model.config
    check_onnx(cfg)
    model = model.eval().float()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    inputs, outputs = io_names(cfg.num_hidden_layers)
    ids = torch.randint(0, cfg.vocab_size, (1, 3))
    positions = torch.arange(4, 7)[None]
    past = tuple(torch.zeros(1, cfg.num_key_value_heads, 4, cfg.head_dim) for _ in range(2 * cfg.num_hidden_layers))
    seq = torch.export.Dim("sequence", min=1, max=cfg.max_position_embeddings)
    cached = torch.export.Dim("past", min=1, max=cfg.max_position_embeddings)
    batch = torch.export.Dim("batch", min=1, max=1024)
    shapes = ({0: batch, 1: seq}, {0: batch, 1: seq}, tuple({0: batch, 2: cached} for _ in past))
    try:
        torch.onnx.export(
            OnnxDecoder(model),
            (ids, positions, past),
            path,
            dynamo=True,
            dynamic_shapes=shapes,
            input_names=inputs,
            output_names=outputs,
            verbose=False,
        )
    except Exception as err:  # noqa: BLE001 - any exporter failure means the same thing to the user
        first = str(err).strip().splitlines()[0][:300]
        raise ValueError(
            f"this configuration could not be exported to ONNX ({type(err).__name__}: {first}); the native "
            f"folder and --format llama are unaffected."
        ) from None
    info = {
        "num_layers": cfg.num_hidden_layers,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "eos_token_id": cfg.eos_token_id,
        "inputs": inputs,
        "outputs": outputs,
    }
    (Path(path).parent / INFO).write_text(json.dumps(info, indent=2))
    return info


def greedy_decode(session, info: dict, prompt: list[int], max_new_tokens: int, stop_at_eos: bool = True) -> list[int]:
    """Batch-1 greedy decoding with the KV cache, in ONNX Runtime: the prompt once, then one token a step."""
    empty = np.zeros((1, info["num_key_value_heads"], 0, info["head_dim"]), dtype=np.float32)
    past = [empty] * (2 * info["num_layers"])
    ids, start, new = list(prompt), 0, []
    step = np.array([ids], dtype=np.int64)
    for _ in range(max_new_tokens):
        feeds = {"input_ids": step, "position_ids": np.arange(start, start + step.shape[1], dtype=np.int64)[None]}
        feeds.update(zip(info["inputs"][2:], past))
        logits, *past = session.run(None, feeds)
        token = int(logits[0, -1].argmax())
        new.append(token)
        if stop_at_eos and token == info["eos_token_id"]:
            break
        start += step.shape[1]
        step = np.array([[token]], dtype=np.int64)
    return new


def export_onnx_folder(source: str, output_dir: str, overwrite: bool = False) -> Path:
    """Load a saved tiny-decoder folder and write model.onnx, onnx_decoder.json and the tokenizer into output_dir
    (built in a temporary folder and moved in; the folder rule of every script)."""
    from ..io.run_dir import OutputLock, check_output_dir, clear_run, save_atomically
    from .source import load_tiny_decoder

    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ValueError("--format onnx needs onnx and onnxscript: pip install 'tiny-decoder[export]'.") from None
    model, tokenizer = load_tiny_decoder(source)
    check_onnx(model.config)
    own = {
        "model.onnx",
        "model.onnx.data",
        INFO,
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
        ".final.tmp",
    }
    old = check_output_dir(output_dir, overwrite, own=own, what="an ONNX export")
    with OutputLock(output_dir):
        clear_run(old)
        save_atomically(output_dir, lambda folder: save_onnx(model, str(Path(folder) / "model.onnx")), tokenizer.save_pretrained)
    return Path(output_dir) / "model.onnx"
