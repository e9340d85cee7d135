"""What the trainer minimises: next-token cross-entropy (causal_lm.py), distillation from a teacher
(distillation.py) and supervised fine-tuning on chat data (sft.py). A new kind of training is a new
objective, never a second copy of the trainer."""

from .causal_lm import CausalLMObjective

__all__ = ["CausalLMObjective"]
