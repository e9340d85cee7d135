"""AdamW with decay only on matrices, and a warmup-then-decay learning-rate schedule."""

import math

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on norms, biases and embeddings (1-D tensors and embedding tables)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():  # tied weights appear once
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if p.dim() < 2 or id(p) in embeddings else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(kind: str, warmup_steps: int, total_steps: int, min_ratio: float):
    """Multiplier of the peak lr at step s: linear warmup, then cosine/linear decay to min_ratio."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1 - progress
        return min_ratio + (1 - min_ratio) * shape

    return f


def build_optimizer(model, args, total_steps: int):
    optimizer = torch.optim.AdamW(
        param_groups(model, args.weight_decay), lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(args.lr_scheduler_type, args.warmup_steps, total_steps, args.min_lr_ratio)
    )
    return optimizer, scheduler
