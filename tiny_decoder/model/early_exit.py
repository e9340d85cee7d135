"""Dynamic depth: early exit in cached decoding with CALM's state propagation (Schuster et al. 2022),
and the training losses that make intermediate exits useful.

- Exit: after each block from `early_exit_min_layer` on, the shared LM head reads the normed hidden
  state; when the top token's probability exceeds `early_exit_threshold` for every row of the batch,
  the token stops there. Only single-token decode steps exit (a prompt runs all layers).
- Cache: an exited token still needs keys and values in the deeper layers, which later tokens read.
  CALM copies the exit state upward: each deeper layer computes its K/V from that state (k_proj and
  v_proj only; no attention, no MLP), so the cache always holds every position in every layer.
  Chosen over LayerSkip's self-speculation because it needs no verification pass and no rollback.
- Training: `early_exit_loss_weight` adds the mean cross-entropy of the intermediate exits;
  `layer_dropout` skips blocks at random (LayerSkip), so later layers learn to work on earlier states.
- Where: `DynamicDepth`, a mixin whose forward is the dynamic layer loop (TinyDecoderDynamicDepthModel is
  TinyDecoderModel with it). TinyDecoderForCausalLM's body is one only while its config asks for early exit or
  layer dropout (`uses_dynamic_depth`; `set_early_exit` switches), so the default model's loop has no Python
  branch on data. The exit layer is returned, never kept as module state.
"""

import torch
import torch.nn.functional as F
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .positions import apply_rope


class ExitHead:
    """Decides, from a block's output, whether the token leaves here."""

    def __init__(self, norm, lm_head, threshold: float):
        self.norm, self.lm_head, self.threshold = norm, lm_head, threshold

    def __call__(self, h: torch.Tensor) -> bool:
        probs = F.softmax(self.lm_head(self.norm(h[:, -1:])).float(), dim=-1)
        return bool((probs.max(-1).values > self.threshold).all())


def exit_losses(model, hidden_states, labels) -> torch.Tensor:
    """Mean cross-entropy of the exits after every block but the last (the shared head on the normed state);
    0 when layer dropout left no intermediate block this step."""
    losses = []
    for h in hidden_states[:-1]:
        logits = model.lm_head(model.model.norm(h))
        losses.append(model.loss_function(logits=logits, labels=labels, vocab_size=model.config.vocab_size))
    return torch.stack(losses).mean() if losses else hidden_states[-1].new_zeros(())


def uses_dynamic_depth(config) -> bool:
    threshold = config.early_exit_threshold
    return (threshold is not None and threshold < 1) or config.layer_dropout > 0


def early_exit_kwargs(causal_lm, new_tokens: int, cache, labels) -> dict:
    """What TinyDecoderForCausalLM adds to its body's call: the exit head on decode steps of an early-exit model,
    and the hidden states when the exit losses are trained."""
    cfg, extra = causal_lm.config, {}
    threshold = cfg.early_exit_threshold
    decoding = not causal_lm.training and cache is not None and new_tokens == 1
    if threshold is not None and threshold < 1 and decoding and isinstance(causal_lm.model, DynamicDepth):
        extra["exit_head"] = ExitHead(causal_lm.model.norm, causal_lm.lm_head, threshold)  # decode steps only
    if cfg.early_exit_loss_weight > 0 and labels is not None and causal_lm.training:
        extra["output_hidden_states"] = True
    return extra


def fill_cache(block, hidden_states, position_embeddings, cache):
    """A block's keys and values of `hidden_states` into its cache layer, nothing else (CALM: a token that left at
    an earlier layer still needs them here): the attention's k/v projections (rotated for RoPE), no attention."""
    x = block.attn_norm(hidden_states) if block.pre_norm else hidden_states
    attn = block.self_attn
    shape = (*x.shape[:2], -1, attn.head_dim)
    k, v = attn.k_norm(attn.k_proj(x).view(shape)).transpose(1, 2), attn.v_proj(x).view(shape).transpose(1, 2)
    if position_embeddings is not None:
        k = apply_rope(k, *position_embeddings)
    cache.update(k, v, attn.layer_idx)


class DynamicDepth:
    """For TinyDecoderModel: a layer loop that can skip blocks (layer dropout, training) and let a decode step
    leave early (`exit_head`), the deeper layers' caches filled from the exit state."""

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache", warn_if_greater_or_equal_version=True)
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        exit_head: ExitHead | None = None,
        **kwargs,
    ):
        """`exit_head` (decode steps, given by TinyDecoderForCausalLM) decides after each block whether the token
        leaves there."""
        from .modeling_tiny_decoder import TinyDecoderModelOutput  # that file imports this one

        hidden_states, mask, positions, cache = self.embed(
            input_ids, attention_mask, position_ids, cache, inputs_embeds, use_cache, kwargs
        )
        layers = self.layers[: self.config.num_hidden_layers]
        last, exit_layer, min_layer, dropout = len(layers) - 1, None, self.config.early_exit_min_layer, self.config.layer_dropout
        for i, block in enumerate(layers):
            if exit_layer is not None:  # CALM: the exit state feeds the deeper layers' caches
                fill_cache(block, hidden_states, positions.rotary, cache)
                continue
            if block.training and dropout and i > 0 and float(torch.rand(())) < dropout:
                continue  # LayerSkip's layer dropout
            hidden_states = block(
                hidden_states,
                attention_mask=mask,
                position_embeddings=positions.rotary,
                cache=cache,
                **positions.attention_kwargs,
                **kwargs,
            )
            if exit_head is not None and min_layer <= i < last and exit_head(hidden_states):
                exit_layer = i
        if exit_head is not None and exit_layer is None:
            exit_layer = last
        return TinyDecoderModelOutput(last_hidden_state=self.norm(hidden_states), cache=cache, exit_layer=exit_layer)
