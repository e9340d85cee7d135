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
- Where: a layer runner chosen once at init (`build_layer_runner`): `run_all_layers` (one call per
  layer, no Python branch on data) unless the config asks for early exit or layer dropout, when
  `DynamicDepth` runs the layers. The exit layer is returned, never kept as module state.
"""

import torch
import torch.nn.functional as F


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


def run_all_layers(layers, hidden_states, exit_head=None, **layer_kwargs):
    """The plain transformer: one call per layer. Returns (hidden states, None: no token left early)."""
    for block in layers:
        hidden_states = block(hidden_states, **layer_kwargs)
    return hidden_states, None


class DynamicDepth:
    """The layer runner for early exit (decode steps given an `exit_head`) and layer dropout (training)."""

    def __init__(self, config):
        self.layer_dropout, self.min_layer = config.layer_dropout, config.early_exit_min_layer

    def __call__(self, layers, hidden_states, exit_head=None, **layer_kwargs):
        """(hidden states, the 0-based layer the token left at, or None without an exit head)."""
        last = len(layers) - 1
        exit_layer = None
        for i, block in enumerate(layers):
            if exit_layer is not None:  # CALM: the exit state feeds the deeper layers' caches
                block.fill_cache(hidden_states, layer_kwargs.get("position_embeddings"), layer_kwargs.get("cache"))
                continue
            if block.training and self.layer_dropout and i > 0 and float(torch.rand(())) < self.layer_dropout:
                continue  # LayerSkip's layer dropout
            hidden_states = block(hidden_states, **layer_kwargs)
            if exit_head is not None and self.min_layer <= i < last and exit_head(hidden_states):
                exit_layer = i
        if exit_head is not None and exit_layer is None:
            exit_layer = last
        return hidden_states, exit_layer


def build_layer_runner(config):
    """Chosen once, from the config: dynamic depth only where the config asks for it."""
    threshold = config.early_exit_threshold
    if (threshold is not None and threshold < 1) or config.layer_dropout > 0:
        return DynamicDepth(config)
    return run_all_layers
