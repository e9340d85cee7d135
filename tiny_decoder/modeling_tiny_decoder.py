"""tiny-decoder: a decoder-only transformer written out in PyTorch, in Hugging Face's contract.

Design choices (each set by a field of `TinyDecoderConfig`):
- Token embedding, optionally plus absolute positions ("learned" table or "sinusoidal").
- N identical blocks: attention then MLP, each a residual branch; the norm sits before the
  branch ("pre", GPT-2/Llama) or after the residual add ("post", the 2017 Transformer).
- Attention: separate q/k/v projections so k/v may have fewer heads (MHA, GQA, MQA);
  RoPE rotates q and k, ALiBi adds a distance bias to the scores; two implementations chosen by
  the standard `attn_implementation`: "eager" (scores, mask, softmax, weights @ V written out,
  returns the weights) and "sdpa" (torch's fused kernel).
- MLP: up -> activation -> down, or SwiGLU's gated pair.
- Norms: RMSNorm or LayerNorm, statistics in float32.
- LM head tied to the token embedding by default; GPT-2 init (std 0.02, residual projections
  scaled by 1/sqrt(2 * layers)).
- KV cache through transformers' `Cache` objects (`cache=`, alias `past_key_values=`), so
  `generate()` works with greedy, top-k and top-p decoding.
No nn.Transformer, nn.MultiheadAttention or transformers model classes are used as parts.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_tiny_decoder import TinyDecoderConfig
from .norms import build_norm
from .positions import alibi_bias, apply_rope, rope_cos_sin, sinusoidal_embedding


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, S, d) -> (B, H_kv * n_rep, S, d): each kv head serves n_rep query heads."""
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def eager_attention(q, k, v, bias, is_causal: bool, dropout: float, training: bool):
    """softmax(q k^T / sqrt(d) + bias) v, written out. Returns (output, weights)."""
    k, v = repeat_kv(k, q.shape[1] // k.shape[1]), repeat_kv(v, q.shape[1] // v.shape[1])
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias
    elif is_causal:
        t, s = scores.shape[-2:]
        future = torch.ones(t, s, dtype=torch.bool, device=q.device).triu(s - t + 1)
        scores = scores.masked_fill(future, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores.float(), dim=-1).to(q.dtype)
    weights = F.dropout(weights, p=dropout, training=training)
    return weights @ v, weights


def sdpa_attention(q, k, v, bias, is_causal: bool, dropout: float, training: bool):
    """The same computation through torch's fused kernel (kv heads shared, not copied); no weights."""
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias, dropout_p=dropout if training else 0.0,
        is_causal=is_causal and bias is None, enable_gqa=q.shape[1] != k.shape[1],
    )
    return out, None


ATTENTION_FUNCTIONS = {"eager": eager_attention, "sdpa": sdpa_attention}


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TinyDecoderConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)
        self.o_proj.is_residual_output = True  # scaled init, see _init_weights

    def forward(self, x, rope=None, bias=None, is_causal=True, cache=None, output_attentions=False):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, H_kv, T, d)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, H_kv, S, d), S = past + T
        impl = "eager" if output_attentions else (self.config._attn_implementation or "sdpa")
        if impl not in ATTENTION_FUNCTIONS:
            raise ValueError(f"attn_implementation={impl!r} is not supported by tiny_decoder; use 'eager' or 'sdpa'.")
        y, weights = ATTENTION_FUNCTIONS[impl](
            q, k, v, bias, is_causal, self.config.attention_dropout, self.training
        )
        y = y.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim)
        return self.o_proj(y), weights


class MLP(nn.Module):
    """down(act(up(x))), or SwiGLU's down(silu(gate(x)) * up(x)) (Shazeer 2020)."""

    ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}

    def __init__(self, config: TinyDecoderConfig):
        super().__init__()
        self.gated = config.hidden_act == "swiglu"
        bias = config.mlp_bias
        self.act = F.silu if self.gated else self.ACTIVATIONS[config.hidden_act]
        if self.gated:
            self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)
        self.down_proj.is_residual_output = True

    def forward(self, x):
        h = self.act(self.gate_proj(x)) * self.up_proj(x) if self.gated else self.act(self.up_proj(x))
        return self.down_proj(h)


class Block(GradientCheckpointingLayer):
    """One transformer layer; `norm_position` decides where the two norms sit."""

    def __init__(self, config: TinyDecoderConfig, layer_idx: int):
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.attn_norm = build_norm(config)
        self.self_attn = CausalSelfAttention(config, layer_idx)
        self.mlp_norm = build_norm(config)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.residual_dropout)

    def forward(self, x, rope=None, bias=None, is_causal=True, cache=None, output_attentions=False):
        if self.pre_norm:
            a, weights = self.self_attn(self.attn_norm(x), rope, bias, is_causal, cache, output_attentions)
            x = x + self.dropout(a)
            x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        else:
            a, weights = self.self_attn(x, rope, bias, is_causal, cache, output_attentions)
            x = self.attn_norm(x + self.dropout(a))
            x = self.mlp_norm(x + self.dropout(self.mlp(x)))
        return x, weights


class TinyDecoderPreTrainedModel(PreTrainedModel):
    config_class = TinyDecoderConfig
    config: TinyDecoderConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    _supports_attention_backend = False

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_output", False):
                # GPT-2: residual-branch outputs shrink with depth so the residual stream's variance stays flat.
                std = std / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif hasattr(module, "weight") and module.__class__.__name__ in ("RMSNorm", "LayerNorm"):
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)


class TinyDecoderModel(TinyDecoderPreTrainedModel):
    """Embeddings -> blocks -> final norm; returns hidden states (no LM head)."""

    def __init__(self, config: TinyDecoderConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.position_embedding == "learned":
            self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.embedding_dropout)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers))
        # Post-norm blocks already end in a norm; pre-norm needs one before the head.
        self.norm = build_norm(config) if config.norm_position == "pre" else nn.Identity()
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ):
        cfg = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        cache = cache if cache is not None else past_key_values
        use_cache = cfg.use_cache if use_cache is None else use_cache
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if cache is not None and not isinstance(cache, Cache):
            raise TypeError(f"cache must be a transformers Cache (e.g. DynamicCache), got {type(cache).__name__}.")
        if use_cache and cache is None:
            cache = DynamicCache(config=cfg)
        if not use_cache:
            cache = None

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        b, t, _ = inputs_embeds.shape
        past = cache.get_seq_length() if cache is not None else 0
        device = inputs_embeds.device
        if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[-1] != past + t:
            raise ValueError(
                f"attention_mask covers {attention_mask.shape[-1]} positions but the cache holds {past} and the "
                f"input adds {t}; pass a mask over past and new tokens ({past + t})."
            )
        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2:
                # Count only real tokens, so left padding does not shift positions (as generate() does).
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -t:]
            else:
                position_ids = torch.arange(past, past + t, device=device)[None]  # (1, T), broadcast over batch

        h = inputs_embeds
        if cfg.position_embedding == "learned":
            if int(position_ids.max()) >= cfg.max_position_embeddings:
                raise ValueError(
                    f"position {int(position_ids.max())} is beyond max_position_embeddings="
                    f"{cfg.max_position_embeddings} of the learned position table; shorten the input."
                )
            h = h + self.embed_positions(position_ids)
        elif cfg.position_embedding == "sinusoidal":
            h = h + sinusoidal_embedding(position_ids, cfg.hidden_size, h.dtype)
        h = self.dropout(h)

        rope = rope_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta, h.dtype) if cfg.position_embedding == "rope" else None
        bias, is_causal = self._attention_bias(attention_mask, t, past + t, h.dtype, device)

        all_hidden, all_attn = [], []
        for block in self.layers:
            if output_hidden_states:
                all_hidden.append(h)
            h, weights = block(h, rope=rope, bias=bias, is_causal=is_causal, cache=cache, output_attentions=output_attentions)
            if output_attentions:
                all_attn.append(weights)
        h = self.norm(h)
        if output_hidden_states:
            all_hidden.append(h)

        out = BaseModelOutputWithPast(
            last_hidden_state=h,
            cache=cache,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attn) if output_attentions else None,
        )
        return out if return_dict else out.to_tuple()

    def _attention_bias(self, attention_mask, q_len, kv_len, dtype, device):
        """Additive (B|1, H|1, q_len, kv_len) bias, or None when is_causal alone says it all.

        Masked entries get dtype's min, not -inf, so a fully padded query row stays finite.
        """
        cfg = self.config
        padding = attention_mask is not None and (attention_mask.dim() == 4 or not bool(attention_mask.all()))
        if not padding and cfg.position_embedding != "alibi":
            # No bias needed: is_causal covers training and prefill; one new token sees every key.
            if q_len == 1 or q_len == kv_len:
                return None, q_len > 1
        neg = torch.finfo(dtype).min
        if attention_mask is not None and attention_mask.dim() == 4:
            m = attention_mask
            bias = m if m.is_floating_point() else torch.zeros(m.shape, dtype=dtype, device=device).masked_fill(~m.bool(), neg)
            bias = bias.to(dtype)
        else:
            q_pos = torch.arange(kv_len - q_len, kv_len, device=device)
            allowed = q_pos[:, None] >= torch.arange(kv_len, device=device)[None, :]  # (T, S) causal
            allowed = allowed[None, None]
            if attention_mask is not None:
                allowed = allowed & attention_mask.bool()[:, None, None, :]
            bias = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, neg)
        if cfg.position_embedding == "alibi":
            bias = bias + alibi_bias(cfg.num_attention_heads, q_len, kv_len, device, dtype, cfg.alibi_slopes)
            bias = bias.clamp(min=neg)
        return bias, False


class TinyDecoderForCausalLM(TinyDecoderPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: TinyDecoderConfig):
        super().__init__(config)
        self.model = TinyDecoderModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def save_pretrained(self, *args, **kwargs):
        # auto_map names only the saved class; add the base model (same file) so AutoModel loads
        # the folder with trust_remote_code too.
        if self._auto_class is not None:
            entry = {"AutoModel": f"{TinyDecoderModel.__module__.split('.')[-1]}.{TinyDecoderModel.__name__}"}
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **entry}
        return super().save_pretrained(*args, **kwargs)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ):
        """labels: (B, T) token ids, -100 where ignored; shifted inside the loss.

        `num_items_in_batch` (passed by Trainer through **kwargs) makes the loss a sum divided by
        the token count of the whole accumulated batch, so accumulation matches one big batch.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        h = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(h[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        out = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return out if return_dict else out.to_tuple()
