"""Cut a model down to chosen units: a new, smaller TinyDecoderForCausalLM with sliced weights.

Nothing is masked: each kept unit's rows and columns are copied into a model built from a
smaller config. What keeps the output exact when the removed units contribute nothing:
- hidden channels leave every matrix that reads or writes the residual stream, the
  embeddings (and the tied head with them), a learned position table and every norm. RMSNorm
  divides by the mean square over channels, so its weights are scaled by sqrt(d / d') and eps
  by d / d': a channel holding zeros then changes nothing. LayerNorm also subtracts the mean,
  which a removed channel shifts, so there pruning hidden channels is approximate (as in
  Minitron). Sinusoidal positions are a function of the width, so they become a learned
  table holding the kept channels' values (exact for every position up to the context).
- heads go by whole KV groups (a KV head and the query heads that share it); each head keeps
  its width, so the config gets an explicit head_dim. ALiBi heads keep their own slopes
  (config.alibi_slopes), which is why ALiBi models keep the same head indices in every layer.
- MLP channels: gate and up rows with the down column of the same channel.
- layers: whole blocks, renumbered for the KV cache.
"""

import math
from dataclasses import dataclass

import torch

from ..model.configuration_tiny_decoder import TinyDecoderConfig
from ..model.modeling_tiny_decoder import TinyDecoderForCausalLM
from ..model.positions import alibi_slopes, sinusoidal_embedding


@dataclass
class Keep:
    """Indices of what survives (in the original model's numbering, sorted)."""

    hidden: torch.Tensor  # (hidden_size',) channels
    layers: list[int]
    kv_groups: list[torch.Tensor]  # per kept layer: KV groups
    mlp: list[torch.Tensor]  # per kept layer: MLP channels


def pruned_config(
    config: TinyDecoderConfig,
    hidden_size: int,
    num_layers: int,
    num_kv_heads: int,
    intermediate_size: int,
    kept_heads: torch.Tensor | None = None,
) -> TinyDecoderConfig:
    """The config of the smaller model; `kept_heads` (query heads, shared by all layers) picks ALiBi slopes."""
    n_rep = config.num_attention_heads // config.num_key_value_heads
    fields = config.to_dict()
    fields.update(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_kv_heads * n_rep,
        num_key_value_heads=num_kv_heads,
        head_dim=config.head_dim,
        intermediate_size=intermediate_size,
    )
    if config.position_embedding == "alibi" and num_kv_heads != config.num_key_value_heads:
        slopes = config.alibi_slopes or alibi_slopes(config.num_attention_heads).tolist()
        heads = kept_heads if kept_heads is not None else torch.arange(num_kv_heads * n_rep)
        fields["alibi_slopes"] = [slopes[i] for i in heads.tolist()]
    if hidden_size != config.hidden_size:
        if config.position_embedding == "sinusoidal":
            fields["position_embedding"] = "learned"
        if config.norm == "rmsnorm":
            fields["norm_eps"] = config.norm_eps * config.hidden_size / hidden_size
    for key in ("architectures", "auto_map", "transformers_version", "_name_or_path", "model_type"):
        fields.pop(key, None)
    return TinyDecoderConfig(**fields)


def count_parameters(config: TinyDecoderConfig) -> int:
    """Parameters of a model with this config (the tied head counted once), without allocating it."""
    with torch.device("meta"):
        model = TinyDecoderForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


def _heads_of(groups: torch.Tensor, n_rep: int) -> torch.Tensor:
    """KV groups -> the query heads they serve (repeat_kv: group g serves heads g*n_rep .. g*n_rep+n_rep-1)."""
    return (groups[:, None] * n_rep + torch.arange(n_rep)).flatten()


def _dims_of(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()


@torch.no_grad()
def prune_to(model: TinyDecoderForCausalLM, keep: Keep) -> TinyDecoderForCausalLM:
    """A new model holding only the kept units' weights (dtype and attention implementation carried over)."""
    cfg = model.config
    n_rep, hd = cfg.num_attention_heads // cfg.num_key_value_heads, cfg.head_dim
    if cfg.position_embedding == "alibi" and any(not torch.equal(g, keep.kv_groups[0]) for g in keep.kv_groups):
        raise ValueError("ALiBi slopes are per head index: keep the same heads in every layer.")
    new_cfg = pruned_config(
        cfg, len(keep.hidden), len(keep.layers), len(keep.kv_groups[0]), len(keep.mlp[0]), _heads_of(keep.kv_groups[0], n_rep)
    )
    new_cfg._attn_implementation = cfg._attn_implementation
    sd, h = model.state_dict(), keep.hidden
    scale = math.sqrt(cfg.hidden_size / len(h)) if cfg.norm == "rmsnorm" else 1.0
    out = {"model.embed_tokens.weight": sd["model.embed_tokens.weight"][:, h]}
    if cfg.position_embedding == "learned":
        out["model.embed_positions.weight"] = sd["model.embed_positions.weight"][:, h]
    elif new_cfg.position_embedding == "learned":  # was sinusoidal
        positions = torch.arange(cfg.max_position_embeddings)[None]
        table = cfg.sinusoidal_scale * sinusoidal_embedding(positions, cfg.hidden_size, torch.float32)[0]
        out["model.embed_positions.weight"] = table[:, h]

    def norm(old: str, new: str):
        out[new + ".weight"] = sd[old + ".weight"][h] * scale
        if old + ".bias" in sd:
            out[new + ".bias"] = sd[old + ".bias"][h]

    def linear(old: str, new: str, rows=None, cols=None):
        w = sd[old + ".weight"]
        w = w[rows] if rows is not None else w
        out[new + ".weight"] = w[:, cols] if cols is not None else w
        if old + ".bias" in sd:
            out[new + ".bias"] = sd[old + ".bias"][rows] if rows is not None else sd[old + ".bias"]

    for i, old_i in enumerate(keep.layers):
        o, n = f"model.layers.{old_i}.", f"model.layers.{i}."
        q_dims = _dims_of(_heads_of(keep.kv_groups[i], n_rep), hd)
        kv_dims = _dims_of(keep.kv_groups[i], hd)
        linear(o + "self_attn.q_proj", n + "self_attn.q_proj", q_dims, h)
        linear(o + "self_attn.k_proj", n + "self_attn.k_proj", kv_dims, h)
        linear(o + "self_attn.v_proj", n + "self_attn.v_proj", kv_dims, h)
        linear(o + "self_attn.o_proj", n + "self_attn.o_proj", h, q_dims)
        for qk in ("q_norm", "k_norm"):  # over the head dimension, which pruning keeps whole
            if f"{o}self_attn.{qk}.weight" in sd:
                out[f"{n}self_attn.{qk}.weight"] = sd[f"{o}self_attn.{qk}.weight"]
        m = keep.mlp[i]
        if o + "mlp.gate_proj.weight" in sd:
            linear(o + "mlp.gate_proj", n + "mlp.gate_proj", m, h)
        linear(o + "mlp.up_proj", n + "mlp.up_proj", m, h)
        linear(o + "mlp.down_proj", n + "mlp.down_proj", h, m)
        norm(o + "attn_norm", n + "attn_norm")
        norm(o + "mlp_norm", n + "mlp_norm")
    if "model.norm.weight" in sd:
        norm("model.norm", "model.norm")
    if cfg.tie_word_embeddings:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    else:
        out["lm_head.weight"] = sd["lm_head.weight"][:, h]

    dtype = next(model.parameters()).dtype
    small = TinyDecoderForCausalLM(new_cfg).to(dtype)
    small.load_state_dict({k: v.contiguous() for k, v in out.items()}, strict=True)
    return small.train(model.training)
