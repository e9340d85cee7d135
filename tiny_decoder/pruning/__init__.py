"""Structured pruning: remove whole layers, KV groups, MLP channels and hidden channels.

    pruned, report = prune_model(model, calibration_batches, target="50%")
    pruned, report = prune_model(model, batches, hidden_size=96, intermediate_size=256, num_layers=3)

Importance comes from one pass over a calibration set (importance.py); the cut is real
(surgery.py). A target size without explicit sizes shrinks width the way Minitron found best at
a given budget: hidden and MLP channels by the same fraction, heads and depth kept, then MLP
channels added back one at a time until the next would overshoot.
"""

from .importance import LAYER_METRICS, Importance, collect_importance
from .plan import PruneReport, Sizes, parse_target, plan_sizes, prune_model
from .surgery import Keep, count_parameters, prune_to, pruned_config

__all__ = [
    "LAYER_METRICS",
    "Importance",
    "Keep",
    "PruneReport",
    "Sizes",
    "collect_importance",
    "count_parameters",
    "parse_target",
    "plan_sizes",
    "prune_model",
    "prune_to",
    "pruned_config",
]
