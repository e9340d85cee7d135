"""tiny-decoder: a decoder-only transformer written out in PyTorch, in Hugging Face's contract.

Design choices (each set by a field of `TinyDecoderConfig`):
- Token embedding; positions from one module chosen by `position_embedding` (positions.py) that returns
  what the layers need (a vector added to the embeddings, rotary cos/sin, or ALiBi's bias), so the
  forward never branches on the scheme.
- N identical blocks: attention then MLP, each a residual branch; the norm sits before the
  branch ("pre", GPT-2/Llama) or after the residual add ("post", the 2017 Transformer).
- Attention: separate q/k/v projections so k/v may have fewer heads (MHA, GQA, MQA);
  RoPE rotates q and k (`rope_parameters`: default, linear, dynamic, yarn, llama3, ...),
  ALiBi adds a distance bias to the scores. The kernel is chosen by the standard
  `attn_implementation` through transformers' attention interface: `eager_attention` below
  (scores, mask, softmax, weights @ V written out; the reference every other kernel is tested
  against, and the one that returns weights), "sdpa", "flex_attention", "flash_attention_*" or
  any kernel registered with `AttentionInterface`. Masks come from transformers' masking
  utilities, so padding, packed sequences (position_ids restarting) and static caches work
  the same for every kernel.
- Sliding-window attention (`sliding_window`, Mistral-style): a query sees itself and the
  window - 1 tokens before it; the mask is transformers' sliding-window mask and the cache keeps
  only the window (transformers' sliding-window cache layers).
- Linear attention (`attention_type="linear"`): causal, kernelised; an attention function with the
  interface of the others (linear_attention.py), chosen once per layer at init.
- Residuals: x + y, or orthogonal-parallel (`residual`, see residuals.py).
- Dynamic depth (early_exit.py): early exit in cached decoding with CALM's state propagation,
  exit losses and layer dropout for training. TinyDecoderModel's forward is the plain loop; while
  the config asks for dynamic depth, TinyDecoderForCausalLM's body is TinyDecoderDynamicDepthModel,
  whose forward (a mixin in early_exit.py) is the loop that can stop; the layer a token left at
  comes back in the output (`exit_layer`).
- MLP: up -> activation -> down (GELU, ReLU, SiLU, squared ReLU), or SwiGLU's gated pair.
- QK-norm (`qk_norm`, Qwen3's form): RMSNorm over the head dimension on q and k before RoPE.
- Logit soft-capping (`final_logit_softcapping`, Gemma 2): cap * tanh(logits / cap).
- Fused head + loss (`fused_loss`, fused_loss.py): in training, the LM head and cross-entropy a block of rows at a
  time, gradients made in the forward pass; the full logits never exist (the output's logits are None).
- Norms: RMSNorm or LayerNorm, statistics in float32.
- LM head tied to the token embedding by default; GPT-2 init (std 0.02, residual projections
  scaled by 1/sqrt(2 * layers), or zero with `zero_init_output_projections`).
- KV cache through transformers' `Cache` objects (`cache=`; `past_key_values=` still works
  with a FutureWarning), dynamic or static. The layer loop is one call per layer with no
  data-dependent Python branch, so `torch.compile(fullgraph=True)` and `torch.export` trace the
  default model.
- Hidden states and attention weights are recorded by transformers' output-capture hooks
  (`_can_record_outputs`), so `output_hidden_states=[i, j]` picks layers as with Llama.
- Task heads (sequence / token classification, extractive QA) are transformers' generic heads
  on top of `TinyDecoderModel`.
No nn.Transformer, nn.MultiheadAttention or transformers model classes are used as parts.
"""

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_layers import (
    GenericForQuestionAnswering,
    GenericForSequenceClassification,
    GenericForTokenClassification,
    GradientCheckpointingLayer,
)
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY, capture_outputs

from .configuration_tiny_decoder import TinyDecoderConfig
from .early_exit import DynamicDepth, early_exit_kwargs, exit_losses, uses_dynamic_depth
from .fused_loss import fused_causal_lm_loss
from .linear_attention import check_inputs as check_linear_attention_inputs
from .linear_attention import linear_attention
from .norms import at_least_float32, build_norm, build_qk_norm
from .positions import POSITION_MODULES, RotaryEmbedding, apply_rope
from .residuals import OrthogonalParallelResidual, build_residual

POSITION_INIT_FRACTION = 0.1  # learned position table's init std, as a fraction of initializer_range

# Kernels whose result the written-out eager kernel reproduces, so it can stand in when weights are asked for.
EAGER_EQUIVALENT = ("eager", "sdpa")


@dataclass
class TinyDecoderModelOutput(BaseModelOutputWithPast):
    """BaseModelOutputWithPast, plus `exit_layer`: the 0-based layer an early-exiting decode step left at
    (None when early exit was not in play)."""

    exit_layer: int | None = None


@dataclass
class TinyDecoderCausalLMOutput(CausalLMOutputWithPast):
    """CausalLMOutputWithPast, plus `exit_layer` as in TinyDecoderModelOutput."""

    exit_layer: int | None = None


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, S, d) -> (B, H_kv * n_rep, S, d): each kv head serves n_rep query heads."""
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def default_position_ids(attention_mask, t: int, past, device) -> torch.Tensor:
    """Positions of the T new tokens: counting only real tokens when a (B, past + T) mask is given, so left
    padding does not shift them (as generate() does); else past, past + 1, ... (1, T)."""
    if attention_mask is not None and attention_mask.dim() == 2:
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -t:]
    return (torch.arange(t, device=device) + past)[None]


def eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, position_bias=None, **kwargs):
    # A sliding window (kwargs["sliding_window"]) is already in the mask; flash kernels read it from kwargs.
    """softmax(q k^T * scaling + bias + mask) v, written out. Returns ((B, T, H, d) output, weights).

    `attention_mask` is an additive float mask or a boolean one (True = attend), (B|1, 1, T, S).
    """
    key, value = repeat_kv(key, module.num_key_value_groups), repeat_kv(value, module.num_key_value_groups)
    scores = query @ key.transpose(-2, -1) * scaling  # (B, H, T, S)
    if position_bias is not None:
        scores = scores + position_bias
    if attention_mask is not None:
        mask = attention_mask[..., : key.shape[-2]]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = (scores + mask).clamp(min=torch.finfo(scores.dtype).min)
    weights = F.softmax(at_least_float32(scores), dim=-1).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return (weights @ value).transpose(1, 2).contiguous(), weights


def cpu_bf16_autocast(x) -> bool:
    """Whether sdpa would run in bf16 on CPU under autocast, where its flash kernel is slower than in fp32 (the kernel
    computes in fp32 and converts on the way: bench/step_profile.py, make train's shape, a 2-core AVX-512-bf16 CPU,
    attention backward 65 against 42 ms a step); such attention is run in fp32 instead, which is also more exact."""
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TinyDecoderConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True  # read by the sdpa / flash / flex kernels
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=bias)
        self.o_proj.is_residual_output = True  # scaled (or zero) init, see _init_weights
        self.q_norm, self.k_norm = build_qk_norm(config), build_qk_norm(config)  # identities unless config.qk_norm
        self.linear = config.attention_type == "linear"

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        b, t, _ = hidden_states.shape
        shape = (b, t, -1, self.head_dim)  # -1: the heads this process holds (all, unless tensor-parallel)
        q = self.q_norm(self.q_proj(hidden_states).view(shape)).transpose(1, 2)  # (B, H, T, d)
        k = self.k_norm(self.k_proj(hidden_states).view(shape)).transpose(1, 2)  # (B, H_kv, T, d)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        if position_embeddings is not None:  # RoPE's cos, sin
            q, k = apply_rope(q, *position_embeddings), apply_rope(k, *position_embeddings)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, H_kv, S, d), S = past + T (or the static length)
        attend, precision = self.attention_function(kwargs.get("output_attentions")), nullcontext()
        if attend is ALL_ATTENTION_FUNCTIONS.get("sdpa") and cpu_bf16_autocast(q):
            q, k, v, precision = q.float(), k.float(), v.float(), torch.autocast("cpu", enabled=False)
        with precision:
            y, weights = attend(
                self,
                q,
                k,
                v,
                attention_mask,
                scaling=self.scaling,
                sliding_window=self.config.sliding_window,
                dropout=self.config.attention_dropout if self.training else 0.0,
                **kwargs,
            )
        return self.o_proj(y.reshape(b, t, -1)), weights

    def attention_function(self, output_attentions=False):
        """Linear attention, or the kernel `attn_implementation` names ("eager" -> ours); the eager kernel
        stands in for sdpa when weights are asked for (same result)."""
        if self.linear:
            return linear_attention
        impl = self.config._attn_implementation or "eager"
        if output_attentions and impl != "eager":
            if impl not in EAGER_EQUIVALENT:
                raise ValueError(
                    f"output_attentions=True needs attention weights, which attn_implementation={impl!r} does not "
                    "return; load the model with attn_implementation='eager' or call model.set_attn_implementation('eager')."
                )
            impl = "eager"
        return ALL_ATTENTION_FUNCTIONS.get_interface(impl, eager_attention)


class MLP(nn.Module):
    """down(act(up(x))), or SwiGLU's down(silu(gate(x)) * up(x)) (Shazeer 2020); relu2 is relu(x)**2."""

    ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "relu2": lambda x: F.relu(x).square()}

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
        self.attn_residual, self.mlp_residual = build_residual(config), build_residual(config)
        self.p_drop = config.residual_dropout

    def dropout(self, x):
        return F.dropout(x, self.p_drop, self.training) if self.p_drop else x

    def forward(self, hidden_states, attention_mask=None, position_embeddings=None, cache=None, **kwargs):
        x = hidden_states
        if self.pre_norm:
            a, _ = self.self_attn(self.attn_norm(x), position_embeddings, attention_mask, cache, **kwargs)
            x = self.attn_residual(x, self.dropout(a))
            return self.mlp_residual(x, self.dropout(self.mlp(self.mlp_norm(x))))
        a, _ = self.self_attn(x, position_embeddings, attention_mask, cache, **kwargs)
        x = self.attn_norm(self.attn_residual(x, self.dropout(a)))
        return self.mlp_norm(self.mlp_residual(x, self.dropout(self.mlp(x))))


class TinyDecoderPreTrainedModel(PreTrainedModel):
    config_class = TinyDecoderConfig
    config: TinyDecoderConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {"hidden_states": Block, "attentions": CausalSelfAttention}

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_output", False):
                # GPT-2: residual-branch outputs shrink with depth so the residual stream's variance stays flat;
                # zero_init_output_projections: each block starts as the identity.
                std = 0.0 if self.config.zero_init_output_projections else std / (2 * self.config.num_hidden_layers) ** 0.5
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            if getattr(module, "is_position_table", False):
                # Learned positions start at a tenth of the token embeddings' scale, so at init the input is the
                # token and position information grows as training needs it; at the same scale, random position
                # vectors drown the tokens (make experiment, nano: +0.66 nats over RoPE at std 0.02, +0.21 at this init).
                std = std * POSITION_INIT_FRACTION
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RotaryEmbedding):
            inv_freq, _ = module.compute_inv_freq(module.config)
            init.copy_(module.inv_freq, inv_freq)
            init.copy_(module.original_inv_freq, inv_freq)
        elif isinstance(module, OrthogonalParallelResidual):
            init.ones_(module.alpha)
            init.ones_(module.beta)
        elif hasattr(module, "weight") and module.__class__.__name__ in ("RMSNorm", "LayerNorm"):
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)


class TinyDecoderModel(TinyDecoderPreTrainedModel):
    """Embeddings -> blocks -> final norm; returns hidden states (no LM head)."""

    def __init__(self, config: TinyDecoderConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        # The position scheme, under the name its weights are saved with (embed_positions, rotary_emb, alibi, ...).
        name, positions = POSITION_MODULES[config.position_embedding]
        self.add_module(name, positions(config))
        self.embed_dropout = nn.Dropout(config.embedding_dropout)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers))
        # Post-norm blocks already end in a norm; pre-norm needs one before the head.
        self.norm = build_norm(config) if config.norm_position == "pre" else nn.Identity()
        self.gradient_checkpointing = False
        self.post_init()

    @property
    def positions(self) -> nn.Module:
        return getattr(self, POSITION_MODULES[self.config.position_embedding][0])

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache", warn_if_greater_or_equal_version=True)
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> TinyDecoderModelOutput:
        hidden_states, mask, positions, cache = self.embed(
            input_ids, attention_mask, position_ids, cache, inputs_embeds, use_cache, kwargs
        )
        for layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = layer(
                hidden_states,
                attention_mask=mask,
                position_embeddings=positions.rotary,
                cache=cache,
                **positions.attention_kwargs,
                **kwargs,
            )
        return TinyDecoderModelOutput(last_hidden_state=self.norm(hidden_states), cache=cache)

    def embed(self, input_ids, attention_mask, position_ids, cache, inputs_embeds, use_cache, kwargs):
        """What every layer gets: (hidden states (B, T, hidden), the mask, the PositionInputs, the cache).

        `kwargs` gains the output_attentions the mask was built for."""
        past = self.check_inputs(input_ids, inputs_embeds, attention_mask, cache)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if position_ids is None:
            position_ids = default_position_ids(attention_mask, inputs_embeds.shape[1], past, inputs_embeds.device)
        # The mask sees only a cache the caller passed: a fresh one is empty, and without it
        # packed sequences (position_ids restarting, no attention_mask) are detected.
        kwargs["output_attentions"] = kwargs.get("output_attentions") or self.config.output_attentions
        mask = self._attention_mask(inputs_embeds, attention_mask, cache, position_ids, kwargs["output_attentions"])
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        positions = self.positions.inputs(inputs_embeds, position_ids, cache=cache, past=past, mask=mask)
        return self.embed_dropout(positions.add_to(inputs_embeds)), mask, positions, cache

    def check_inputs(self, input_ids, inputs_embeds, attention_mask, cache) -> int | torch.Tensor:
        """Refuse what the model cannot take, in one line each; return the cached length (a tensor for a static
        cache)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if cache is not None and not isinstance(cache, Cache):
            raise TypeError(
                f"cache must be a transformers Cache (DynamicCache, StaticCache, ...), got {type(cache).__name__}; "
                "legacy tuples of (key, value) are not accepted."
            )
        if self.config.attention_type == "linear":
            check_linear_attention_inputs(cache, attention_mask)
        past = cache.get_seq_length() if cache is not None else 0
        t = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        tracing = torch.compiler.is_compiling() or isinstance(past, torch.Tensor)
        if not tracing and attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[-1] != past + t:
            raise ValueError(
                f"attention_mask covers {attention_mask.shape[-1]} positions but the cache holds {past} and the "
                f"input adds {t}; pass a mask over past and new tokens ({past + t})."
            )
        return past

    def _attention_mask(self, inputs_embeds, attention_mask, cache, position_ids, output_attentions=False):
        """The mask in the format the chosen kernel wants (None when `is_causal` says it all).

        When weights are asked for, sdpa's mask is materialised: the eager kernel that returns
        them has no `is_causal` shortcut.
        """
        make_mask = create_causal_mask if self.config.sliding_window is None else create_sliding_window_causal_mask
        return make_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
            allow_is_causal_skip=not output_attentions,
        )


class TinyDecoderDynamicDepthModel(DynamicDepth, TinyDecoderModel):
    """TinyDecoderModel with early exit and layer dropout: the layer loop of early_exit.py."""


class TinyDecoderForCausalLM(TinyDecoderPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: TinyDecoderConfig):
        super().__init__(config)
        self.model = TinyDecoderModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        self._choose_depth()

    def _choose_depth(self):
        """The body's class: TinyDecoderModel, or TinyDecoderDynamicDepthModel while the config asks for early exit or
        layer dropout. Same module and weights; only the forward's layer loop differs."""
        cls = TinyDecoderDynamicDepthModel if uses_dynamic_depth(self.config) else TinyDecoderModel
        if type(self.model) is not cls:
            self.model.__class__ = cls
            # transformers records hidden states for the classes PreTrainedModel.__init__ registered (by name)
            _CAN_RECORD_REGISTRY[self.model] = cls._can_record_outputs

    def save_pretrained(self, *args, **kwargs):
        # auto_map names only the saved class; add the base model and the task heads (same file)
        # so every Auto class loads the folder with trust_remote_code too.
        if self._auto_class is not None:
            module = TinyDecoderModel.__module__.split(".")[-1]
            entry = {auto: f"{module}.{cls.__name__}" for auto, cls in AUTO_CLASSES.items()}
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **entry}
        return super().save_pretrained(*args, **kwargs)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache", warn_if_greater_or_equal_version=True)
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> TinyDecoderCausalLMOutput:
        """labels: (B, T) token ids, -100 where ignored; shifted inside the loss.

        `num_items_in_batch` (passed by Trainer through **kwargs) makes the loss a sum divided by
        the token count of the whole accumulated batch, so accumulation matches one big batch.
        """
        new_tokens = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        depth = early_exit_kwargs(self, new_tokens, cache, labels)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **{**kwargs, **depth},
        )
        h = outputs.last_hidden_state
        loss = logits = None
        if self._fuses_loss(labels, kwargs):  # the head and the loss in blocks of rows; no logits kept
            loss = fused_causal_lm_loss(h, self.lm_head.weight, labels, kwargs.get("num_items_in_batch"))
        else:
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(h[:, keep, :])
            if self.config.final_logit_softcapping is not None:  # Gemma 2: cap * tanh(logits / cap)
                cap = self.config.final_logit_softcapping
                logits = cap * torch.tanh(logits / cap)
        if labels is not None:
            if loss is None:
                loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
            if "output_hidden_states" in depth:  # the exit losses: hidden_states are the embeddings, then each block's output
                loss = loss + self.config.early_exit_loss_weight * exit_losses(self, outputs.hidden_states[1:], labels)
        return TinyDecoderCausalLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            exit_layer=outputs.exit_layer,
        )

    def _fuses_loss(self, labels, kwargs) -> bool:
        """config.fused_loss applies while training with labels, gradients on, no soft-cap, no precomputed shift, and a
        head held whole by this process (a tensor-parallel shard's logits need the gather the plain head does)."""
        return (
            getattr(self.config, "fused_loss", False)
            and labels is not None
            and self.training
            and torch.is_grad_enabled()
            and self.config.final_logit_softcapping is None
            and "shift_labels" not in kwargs
            and type(self.lm_head.weight.data) is torch.Tensor
        )

    def set_early_exit(self, threshold: float | None, min_layer: int | None = None):
        """Change the early-exit threshold (and first layer) of this model; the body's layer loop follows."""
        if threshold is not None and not 0 <= threshold <= 1:
            raise ValueError(f"early-exit threshold {threshold} must be in [0, 1] (None: never exit).")
        self.config.early_exit_threshold = threshold
        if min_layer is not None:
            self.config.early_exit_min_layer = min_layer
        self._choose_depth()


class TinyDecoderForSequenceClassification(GenericForSequenceClassification, TinyDecoderPreTrainedModel):
    """Scores from the last non-pad token (needs config.pad_token_id), as for Llama."""


class TinyDecoderForTokenClassification(GenericForTokenClassification, TinyDecoderPreTrainedModel):
    """One label per token from its hidden state."""


class TinyDecoderForQuestionAnswering(GenericForQuestionAnswering, TinyDecoderPreTrainedModel):
    """Start/end logits per token for extractive QA."""


# The generic heads build their body with AutoModel.from_config: register it here, so that also
# works where this file was loaded as remote code (trust_remote_code) without the package.
AutoModel.register(TinyDecoderConfig, TinyDecoderModel, exist_ok=True)
AUTO_CLASSES = {
    "AutoModel": TinyDecoderModel,
    "AutoModelForCausalLM": TinyDecoderForCausalLM,
    "AutoModelForSequenceClassification": TinyDecoderForSequenceClassification,
    "AutoModelForTokenClassification": TinyDecoderForTokenClassification,
    "AutoModelForQuestionAnswering": TinyDecoderForQuestionAnswering,
}
