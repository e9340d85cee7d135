"""What the training loop minimises, as one object the loop calls on every micro-batch.

The loop owns data, optimizer, checkpoints and logs; an objective owns the loss. Plain
pre-training is `CausalLMObjective`; distillation (a teacher in the loop) subclasses it, so a new
kind of training is a new objective, never a second copy of the loop.
"""

import torch


class CausalLMObjective:
    """Next-token cross-entropy on `labels` (-100 = ignored), the loss `scripts/train.py` trains."""

    name = "causal_lm"
    tags: tuple[str, ...] = ()  # extra Hub tags for the model card

    def prepare(self, model, tokenizer, accelerator, compile: bool = False) -> None:
        """Called once before training, with the unwrapped student: check compatibility, place helpers,
        compile the loss's own arithmetic when the run compiles (`--torch_compile`)."""

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss to backpropagate, extra scalars to log, e.g. {"ce": ..., "kl": ...})."""
        out = model(input_ids=batch["input_ids"], labels=batch["labels"], attention_mask=batch.get("attention_mask"),
                    use_cache=False)
        return out.loss, {}

    def signature(self) -> dict:
        """The settings that shape the loss; saved in checkpoints so a resume can say when they change."""
        return {"objective": self.name}

    def card_section(self) -> str:
        """Markdown for the model card (empty: nothing beyond the training table)."""
        return ""
