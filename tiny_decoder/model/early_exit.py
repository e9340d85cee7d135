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
