"""A tiny-decoder as one GGUF file (llama.cpp's format, `llama` architecture), tokenizer inside.

The model must be expressible as a Llama (see llama.py); the file holds llama.cpp's tensor names (q and k
rows permuted into its rotary layout, as its own converter does), the byte-level BPE (tokens, types, merges,
special ids, chat template) and f32, f16 or q8_0 weights (norms stay f32). Readers we did not write check
it: transformers' GGUF loader in the tests, llama.cpp where it is installed.
"""

import json
from pathlib import Path

import numpy as np
import torch

from .llama import check_exportable, llama_state_dict

OUTTYPES = ("f32", "f16", "q8_0")
# Llama's names (after llama.py's renames) -> llama.cpp's.
NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_blockers(config) -> list[str]:
    """What GGUF's llama architecture (here) does not carry beyond Llama's own limits."""
    out = []
    rope = config.rope_parameters or {}
    if rope.get("rope_type", "default") != "default":
        out.append(f"rope_parameters.rope_type={rope.get('rope_type')!r} (only the default RoPE is written)")
    if config.attention_bias or config.mlp_bias:
        out.append("attention_bias/mlp_bias=True")
    return out


def check_gguf(config) -> None:
    """Llama's limits, then what this writer does not carry; one line naming the fields."""
    if getattr(config, "qk_norm", False):
        raise ValueError(
            "GGUF is written here in llama.cpp's `llama` architecture, which has no QK-norm (qk_norm=True: llama.cpp's "
            "`qwen3`, not written yet); --format hf writes a Qwen3ForCausalLM folder."
        )
    check_exportable(config)
    blockers = gguf_blockers(config)
    if blockers:
        raise ValueError(f"this model cannot be written as GGUF here ({', '.join(blockers)}); --format llama still works.")


def permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotary halves -> llama.cpp's interleaved pairs, per head (llama.cpp's convert_hf_to_gguf)."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_name(name: str) -> str:
    if name in NAMES:
        return NAMES[name]
    _, _, index, rest = name.split(".", 3)  # model.layers.{i}.rest
    return f"blk.{index}.{LAYER_NAMES[rest]}"


def tokenizer_metadata(tokenizer, vocab_size: int) -> dict:
    """Tokens (byte-level spellings) by id, padded to the model's rows, their types, the merges."""
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = data["model"]["vocab"]
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [5] * vocab_size  # unused, until a real token fills the row
    for token, i in {**vocab, **{t["content"]: t["id"] for t in data.get("added_tokens", [])}}.items():
        if i < vocab_size:
            tokens[i], types[i] = token, 1
    for added in data.get("added_tokens", []):
        if added["id"] < vocab_size:
            types[added["id"]] = 3 if added.get("special") else 4  # control / user-defined
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return {"tokens": tokens, "types": types, "merges": merges}


def save_gguf(model, tokenizer, path: str, outtype: str = "f32", name: str = "tiny-decoder") -> None:
    import gguf

    if outtype not in OUTTYPES:
        raise ValueError(f"--outtype {outtype!r} is not one of {list(OUTTYPES)}.")
    cfg = model.config
    check_gguf(cfg)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(file_type[outtype])
    meta = tokenizer_metadata(tokenizer, cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(meta["tokens"])
    w.add_token_types(meta["types"])
    w.add_token_merges(meta["merges"])
    for setter, token_id in (
        (w.add_bos_token_id, cfg.bos_token_id),
        (w.add_eos_token_id, cfg.eos_token_id),
        (w.add_pad_token_id, cfg.pad_token_id),
    ):
        if token_id is not None:
            setter(token_id)
    w.add_add_bos_token(False)
    if getattr(tokenizer, "chat_template", None):
        w.add_chat_template(tokenizer.chat_template)
    for key, tensor in llama_state_dict(model).items():
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if key.endswith("q_proj.weight"):
            data = permute(data, cfg.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            data = permute(data, cfg.num_key_value_heads)
        if data.ndim == 1 or outtype == "f32":
            w.add_tensor(gguf_name(key), data)
        elif outtype == "f16":
            w.add_tensor(gguf_name(key), data.astype(np.float16))
        else:
            quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gguf_name(key), quantized, raw_shape=quantized.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_file_name(source: str, outtype: str) -> str:
    return f"{Path(source).name or 'model'}-{outtype}.gguf"


def export_gguf_folder(source: str, output_dir: str, outtype: str = "f32", overwrite: bool = False) -> Path:
    """Load a saved tiny-decoder folder and write `<name>-<outtype>.gguf` into output_dir: under a temporary name
    first, renamed when complete; the folder rule of every script (one writer, nothing foreign overwritten)."""
    import os

    from ..io.run_dir import OutputLock, check_output_dir
    from .source import load_tiny_decoder

    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ValueError("--format gguf needs the gguf package: pip install 'tiny-decoder[export]' (or gguf).") from None
    model, tokenizer = load_tiny_decoder(source)
    check_gguf(model.config)
    name = gguf_file_name(source, outtype)
    own = {gguf_file_name(source, t) for t in OUTTYPES} | {name + ".tmp"}
    check_output_dir(output_dir, overwrite, own=own, what="a GGUF export")
    target = Path(output_dir) / name
    with OutputLock(output_dir):
        tmp = target.with_name(name + ".tmp")
        save_gguf(model, tokenizer, str(tmp), outtype, name=Path(source).name or "tiny-decoder")
        os.replace(tmp, target)
    return target
