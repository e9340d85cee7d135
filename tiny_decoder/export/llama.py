"""A tiny-decoder as a plain transformers folder: `LlamaForCausalLM`, or `Qwen3ForCausalLM` for a model with QK-norm.
No custom code, no trust_remote_code.

The default preset is, layer for layer, a Llama (pre-norm RMSNorm, RoPE, SwiGLU, no biases, GQA, tied head), so
the export renames two norms and writes Llama's config; the weights are copied bit for bit and the logits agree to
float rounding. With `qk_norm` it is, layer for layer, a Qwen3 (the same, plus RMSNorm over the head dimension on
q and k before RoPE), whose q_norm/k_norm weights keep their names. A config neither can express is refused with
every field that blocks it.
"""

import json
from pathlib import Path

import torch

# Our name -> Llama's, for the two tensors whose names differ (everything else is named alike).
RENAMES = {".attn_norm.": ".input_layernorm.", ".mlp_norm.": ".post_attention_layernorm."}
LLAMA_ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")


def llama_blockers(config, qk_norm_ok: bool = False) -> list[str]:
    """The fields (as `name=value`) that keep `config` from being a Llama (with `qk_norm_ok`, a Llama or a Qwen3,
    which differ by QK-norm only); empty when it is one."""
    blockers = []

    def need(name, ok):
        if not ok:
            blockers.append(f"{name}={getattr(config, name)!r}")

    need("position_embedding", config.position_embedding == "rope")
    need("norm", config.norm == "rmsnorm")
    need("norm_position", config.norm_position == "pre")
    need("hidden_act", config.hidden_act == "swiglu")
    need("attention_type", config.attention_type == "softmax")
    need("residual", config.residual == "add")
    need("sliding_window", config.sliding_window is None)
    need("early_exit_threshold", config.early_exit_threshold is None or config.early_exit_threshold >= 1)
    need("qk_norm", qk_norm_ok or not getattr(config, "qk_norm", False))
    need("final_logit_softcapping", getattr(config, "final_logit_softcapping", None) is None)
    rope = config.rope_parameters or {}
    if config.position_embedding == "rope":
        if rope.get("rope_type", "default") not in LLAMA_ROPE_TYPES:
            blockers.append(f"rope_parameters.rope_type={rope.get('rope_type')!r}")
        if rope.get("partial_rotary_factor", 1.0) != 1.0:
            blockers.append(f"rope_parameters.partial_rotary_factor={rope['partial_rotary_factor']!r}")
    return blockers


def hf_architecture(config) -> str:
    """'qwen3' for a model with QK-norm (Qwen3's attention), else 'llama'."""
    return "qwen3" if getattr(config, "qk_norm", False) else "llama"


def hf_blockers(config) -> list[str]:
    """The fields that keep `config` from being a Llama, or with QK-norm a Qwen3; empty when it is one."""
    blockers = llama_blockers(config, qk_norm_ok=True)
    if hf_architecture(config) == "qwen3" and config.mlp_bias:
        blockers.append("mlp_bias=True")  # Qwen3's MLP has no biases
    return blockers


def check_exportable(config) -> None:
    blockers = hf_blockers(config)
    if blockers:
        name = "a Qwen3" if hf_architecture(config) == "qwen3" else "a Llama"
        raise ValueError(
            f"this model is not expressible as {name} ({', '.join(blockers)} differ from its architecture); "
            f"its native folder (remote code: trust_remote_code=True, or `import tiny_decoder`) still works everywhere "
            f"transformers runs."
        )


def llama_config(config):
    """LlamaConfig (Qwen3Config for a QK-norm model) with the same shapes, RoPE, norm epsilon, special tokens, tying."""
    from transformers import LlamaConfig, Qwen3Config

    shared = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        hidden_act="silu",
        max_position_embeddings=config.max_position_embeddings,
        initializer_range=config.initializer_range,
        rms_norm_eps=config.norm_eps,
        rope_parameters=dict(config.rope_parameters),
        attention_bias=config.attention_bias,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        use_cache=True,
    )
    if hf_architecture(config) == "qwen3":  # Qwen3's MLP has no biases (mlp_bias is a blocker there)
        return Qwen3Config(**shared, use_sliding_window=False)
    return LlamaConfig(**shared, mlp_bias=config.mlp_bias)


def llama_state_dict(model) -> dict[str, torch.Tensor]:
    """Our weights under Llama's names (the tied head stays tied: Llama's loader ties it from the config)."""
    out = {}
    for name, tensor in model.state_dict().items():
        for ours, theirs in RENAMES.items():
            name = name.replace(ours, theirs)
        out[name] = tensor
    if model.config.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    return out


def to_llama(model):
    """A LlamaForCausalLM (Qwen3ForCausalLM with QK-norm) with this model's weights (same dtype), in eval mode."""
    from transformers import LlamaForCausalLM, Qwen3ForCausalLM

    check_exportable(model.config)
    cls = Qwen3ForCausalLM if hf_architecture(model.config) == "qwen3" else LlamaForCausalLM
    llama = cls(llama_config(model.config)).to(next(model.parameters()).dtype)
    missing, unexpected = llama.load_state_dict(llama_state_dict(model), strict=False)
    missing = [k for k in missing if not (model.config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"the Llama export does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if model.config.tie_word_embeddings:
        llama.tie_weights()
    if getattr(model, "generation_config", None) is not None:
        llama.generation_config = model.generation_config
    return llama.eval()


def save_llama_folder(model, tokenizer, folder: str, source: str) -> None:
    """model + tokenizer (a plain fast tokenizer, chat template kept) + a card naming the source as base_model,
    written into `folder` (the caller makes it atomic)."""
    llama = to_llama(model)
    llama.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _plain_tokenizer_config(Path(folder))
    (Path(folder) / "README.md").write_text(_card(llama.config, source))


def _plain_tokenizer_config(folder: Path) -> None:
    """No custom classes or auto_map in tokenizer_config.json: AutoTokenizer loads it with no question asked."""
    path = folder / "tokenizer_config.json"
    data = json.loads(path.read_text())
    data.pop("auto_map", None)
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _card(config, source: str) -> str:
    """The card; `base_model` only for a Hub id (the Hub links it), never a path of this machine."""
    from ..io.sources import hub_id

    n = config.num_hidden_layers
    shown = hub_id(source) or Path(source).name  # a folder's name, not where it lies on this machine
    meta = f"base_model: {source}\n" if hub_id(source) else ""
    arch, cls = ("qwen3", "Qwen3") if config.model_type == "qwen3" else ("llama", "Llama")
    return (
        "---\nlibrary_name: transformers\npipeline_tag: text-generation\n"
        f"{meta}tags:\n- {arch}\n- tiny-decoder\n- text-generation\n---\n\n"
        f"# {Path(source).name} as a {cls}\n\n"
        f"A plain `{cls}ForCausalLM` ({n} layers, hidden {config.hidden_size}, {config.num_attention_heads} heads, "
        f"{config.num_key_value_heads} KV heads) exported from the tiny-decoder model `{shown}` by `scripts/export.py "
        f"--format hf`: the same weights under {cls}'s names, so it loads anywhere {cls} does, with no custom code.\n\n"
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'model = AutoModelForCausalLM.from_pretrained("<this folder>")\n'
        'tokenizer = AutoTokenizer.from_pretrained("<this folder>")\n```\n'
    )


def export_llama_folder(source: str, output_dir: str, overwrite: bool = False) -> Path:
    """Load a saved tiny-decoder folder, refuse what Llama cannot express, write the Llama folder atomically
    (under one writer's lock, never into a folder holding anything else)."""
    from ..io.run_dir import MODEL_FILES, OutputLock, check_output_dir, clear_run, save_atomically
    from .source import load_tiny_decoder

    model, tokenizer = load_tiny_decoder(source)
    check_exportable(model.config)
    old = check_output_dir(output_dir, overwrite, own=MODEL_FILES, what="a Llama/Qwen3 export")
    with OutputLock(output_dir):
        clear_run(old)
        save_atomically(output_dir, lambda folder: save_llama_folder(model, tokenizer, folder, source))
    return Path(output_dir)


class LlamaHubExport:
    """`--push_to_hub --hub_format llama`: the Trainer refuses a config Llama cannot express before training
    (`check`) and uploads the Llama folder instead of the native one (`save_folder`). Passed in by the scripts,
    so training never imports the export formats."""

    check = staticmethod(check_exportable)
    save_folder = staticmethod(save_llama_folder)
