"""The pruning plan and the cut: how many layers, KV groups and channels a target size keeps (Minitron's
width-first rule), which units by importance, and `prune_model` that applies it."""

from dataclasses import dataclass, field

import torch

from .importance import Importance, collect_importance
from .surgery import Keep, count_parameters, prune_to, pruned_config


@dataclass
class Sizes:
    hidden_size: int
    num_layers: int
    num_heads: int  # query heads per layer
    intermediate_size: int


def parse_target(target: str | float | int, current: int) -> int:
    """'50%', '0.5' (fractions of the current size) or '650000' (a count) -> a parameter count."""
    text = str(target).strip()
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise ValueError(
            f"target {target!r} is not a number: give a fraction (0.5), a percentage (50%) or a parameter count (650000)."
        ) from None
    # A percentage, or a number below 1, is a fraction; anything else (650000, 1e5) is a count.
    fraction = text.endswith("%") or value < 1
    if not fraction and value != int(value):
        raise ValueError(
            f"target {target!r} is neither a fraction below 1 nor a whole parameter count; give e.g. 0.5, 50% or 650000."
        )
    count = round(value * current) if fraction else int(value)
    if count <= 0:
        raise ValueError(f"target {target!r} leaves no parameters; give a size above 0.")
    if count >= current:
        raise ValueError(
            f"target {target!r} ({count:,} parameters) is not below the model's {current:,}: pruning only "
            f"removes; give less than 100%."
        )
    return count


def _check_sizes(config, sizes: Sizes) -> None:
    n_rep = config.num_attention_heads // config.num_key_value_heads
    limits = (
        ("num_layers", sizes.num_layers, config.num_hidden_layers, "layer"),
        ("num_heads", sizes.num_heads, config.num_attention_heads, "head"),
        ("intermediate_size", sizes.intermediate_size, config.intermediate_size, "MLP channel"),
        ("hidden_size", sizes.hidden_size, config.hidden_size, "hidden channel"),
    )
    for name, value, now, unit in limits:
        if value < 1:
            raise ValueError(f"--{name} {value} leaves no {unit}; keep at least one.")
        if value > now:
            raise ValueError(f"--{name} {value} is more than the model's {now}; pruning only removes.")
    if sizes.num_heads % n_rep:
        raise ValueError(
            f"--num_heads {sizes.num_heads}: heads go by whole KV groups of {n_rep} query heads "
            f"(num_attention_heads / num_key_value_heads); give a multiple of {n_rep}."
        )


def plan_sizes(
    config, target: int | None = None, hidden_size=None, num_layers=None, num_heads=None, intermediate_size=None
) -> Sizes:
    """Explicit sizes as given; a parameter `target` solves the hidden and MLP sizes not given."""

    def given(value, default):
        return default if value is None else value

    sizes = Sizes(
        given(hidden_size, config.hidden_size),
        given(num_layers, config.num_hidden_layers),
        given(num_heads, config.num_attention_heads),
        given(intermediate_size, config.intermediate_size),
    )
    _check_sizes(config, sizes)
    if target is None:
        if sizes == Sizes(config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size):
            raise ValueError("Nothing to prune: give a target (--target_params 50%) or smaller sizes.")
        return sizes
    free_hidden, free_mlp = hidden_size is None, intermediate_size is None
    if not (free_hidden or free_mlp):
        raise ValueError("Give either a target or both --hidden_size and --intermediate_size, not all three.")
    n_rep = config.num_attention_heads // config.num_key_value_heads

    def count(h, i):
        return count_parameters(pruned_config(config, h, sizes.num_layers, sizes.num_heads // n_rep, i))

    def mlp_for(h):
        return max(1, round(config.intermediate_size * h / config.hidden_size)) if free_mlp else sizes.intermediate_size

    if free_hidden:  # the largest width whose model fits (count grows with h)
        lo, hi = 0, config.hidden_size
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if count(mid, mlp_for(mid)) <= target else (lo, mid - 1)
        if lo == 0:
            raise ValueError(
                f"target {target:,} parameters is below the smallest model on this path "
                f"({count(1, mlp_for(1)):,}); give a larger target or fewer fixed sizes."
            )
        sizes.hidden_size = lo
    if free_mlp:  # fill up with MLP channels: the count is linear in them
        h = sizes.hidden_size
        base, per = count(h, 1), count(h, 2) - count(h, 1)
        if base > target:
            raise ValueError(f"target {target:,} parameters is below the smallest model with hidden_size {h} ({base:,}).")
        sizes.intermediate_size = min(config.intermediate_size, 1 + (target - base) // per)
    _check_sizes(config, sizes)
    return sizes


def choose_units(importance: Importance, config, sizes: Sizes) -> Keep:
    """The most important units of each kind, in their original order."""

    def top(scores, k):
        return torch.topk(scores, k).indices.sort().values

    n_kv = sizes.num_heads // (config.num_attention_heads // config.num_key_value_heads)
    layers = top(importance.layers, sizes.num_layers).tolist()
    if config.position_embedding == "alibi":  # one head set for all layers (slopes go by head index)
        shared = top(importance.heads.sum(0), n_kv)
        groups = [shared for _ in layers]
    else:
        groups = [top(importance.heads[i], n_kv) for i in layers]
    return Keep(
        hidden=top(importance.hidden, sizes.hidden_size),
        layers=layers,
        kv_groups=groups,
        mlp=[top(importance.mlp[i], sizes.intermediate_size) for i in layers],
    )


@dataclass
class PruneReport:
    before: dict
    after: dict
    sizes: Sizes
    keep: Keep
    removed: dict = field(default_factory=dict)

    def describe(self) -> str:
        """What went, in words, e.g. for the model card."""
        r, parts = self.removed, []
        if r["layers"]:
            parts.append(f"layers {r['layers']}")
        if r["kv_groups_per_layer"]:
            parts.append(f"{r['kv_groups_per_layer']} KV group(s) of heads per layer")
        if r["mlp_channels_per_layer"]:
            parts.append(f"{r['mlp_channels_per_layer']} MLP channels per layer")
        if r["hidden_channels"]:
            parts.append(f"{r['hidden_channels']} hidden channels")
        return ", ".join(parts) + f" ({self.before['params']:,} -> {self.after['params']:,} parameters)"


def prune_model(
    model,
    calibration_batches,
    target=None,
    hidden_size=None,
    num_layers=None,
    num_heads=None,
    intermediate_size=None,
    layer_metric: str = "block_influence",
):
    """(smaller model, PruneReport). `target`: a count, a fraction or a percentage of the current parameters."""
    cfg = model.config
    current = sum(p.numel() for p in model.parameters())
    target_count = parse_target(target, current) if target is not None else None
    sizes = plan_sizes(cfg, target_count, hidden_size, num_layers, num_heads, intermediate_size)
    importance = collect_importance(model, calibration_batches, layer_metric)
    keep = choose_units(importance, cfg, sizes)
    small = prune_to(model, keep)
    shape = lambda c: {
        "params": sum(p.numel() for p in c.parameters()),
        "hidden_size": c.config.hidden_size,  # noqa: E731
        "num_layers": c.config.num_hidden_layers,
        "num_heads": c.config.num_attention_heads,
        "num_key_value_heads": c.config.num_key_value_heads,
        "intermediate_size": c.config.intermediate_size,
    }
    before, after = shape(model), shape(small)
    removed = {
        "layers": [i for i in range(cfg.num_hidden_layers) if i not in keep.layers],
        "hidden_channels": cfg.hidden_size - sizes.hidden_size,
        "kv_groups_per_layer": cfg.num_key_value_heads - after["num_key_value_heads"],
        "mlp_channels_per_layer": cfg.intermediate_size - sizes.intermediate_size,
    }
    if target_count is not None:
        before["target"] = target_count
    return small, PruneReport(before, after, sizes, keep, removed)
