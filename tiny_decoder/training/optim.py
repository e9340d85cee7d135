"""Optimizers (AdamW; or Muon for the blocks' matrices with AdamW for the rest) and a
warmup-then-decay learning-rate schedule.

AdamW decays matrices only. Muon (Jordan et al. 2024, `torch.optim.Muon`) orthogonalises each
hidden weight matrix's momentum by Newton-Schulz iterations; embeddings, the head and the norms
stay on AdamW, as Muon's authors prescribe. Its step size is matched to AdamW's update RMS
(`adjust_lr_fn="match_rms_adamw"`), so one --learning_rate and one schedule drive both.
"""

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


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the given matrices, AdamW for the other groups, seen as one optimizer.

    Its param_groups are the inner optimizers' own dicts, so a scheduler setting `lr` on them
    drives both; state_dict holds both inner states.
    """

    def __init__(self, matrices, adamw_groups, *, lr, weight_decay, betas, eps, momentum=0.95):
        self.muon = torch.optim.Muon(matrices, lr=lr, weight_decay=weight_decay, momentum=momentum,
                                     adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, eps=eps)
        super().__init__(self.muon.param_groups + self.adamw.param_groups, {})

    @torch.no_grad()
    def step(self, closure=None):
        self.muon.step()
        self.adamw.step()

    def state_dict(self):
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict):
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self.muon.param_groups + self.adamw.param_groups  # loading made new group dicts


def build_optimizer(model, args, total_steps: int):
    betas = (args.adam_beta1, args.adam_beta2)
    if getattr(args, "optim", "adamw") == "muon":
        blocks = [m for m in model.modules() if m.__class__.__name__ == "Block"]
        matrices = list({id(p): p for b in blocks for p in b.parameters() if p.dim() == 2 and p.requires_grad}.values())
        if not matrices:
            raise ValueError("--optim muon found no Block weight matrices to optimise; use --optim adamw.")
        chosen = {id(p) for p in matrices}
        rest = [{**g, "params": [p for p in g["params"] if id(p) not in chosen]} for g in param_groups(model, args.weight_decay)]
        optimizer = MuonWithAdamW(matrices, [g for g in rest if g["params"]], lr=args.learning_rate,
                                  weight_decay=args.weight_decay, betas=betas, eps=args.adam_epsilon)
    else:
        optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.learning_rate, betas=betas,
                                      eps=args.adam_epsilon)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(args.lr_scheduler_type, args.warmup_steps, total_steps, args.min_lr_ratio)
    )
    return optimizer, scheduler
