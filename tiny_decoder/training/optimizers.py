"""The optimizers a run builds (AdamW with decay only on matrices; zeroth-order SPSA, alone or in a hybrid
schedule with AdamW) and the warmup-then-decay learning-rate schedule they share."""

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


def build_adamw(model, args, learning_rate: float) -> torch.optim.AdamW:
    """The one AdamW of the package: the run's betas and eps, decay on matrices only."""
    return torch.optim.AdamW(
        param_groups(model, args.weight_decay), lr=learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )


class SchedulerGroup:
    """One schedule over several optimizers (the two phases of a hybrid run, switching at `switch_step`); reports
    the lr of the phase the last optimizer step was in."""

    def __init__(self, schedulers, switch_step: int):
        self.schedulers, self.switch_step = schedulers, switch_step

    def step(self):
        import warnings

        with warnings.catch_warnings():  # the idle phase's optimizer has not stepped: expected, not a misuse
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            for s in self.schedulers:
                s.step()

    def get_last_lr(self):
        last_step = max(self.schedulers[0].last_epoch - 1, 0)  # LambdaLR counts the steps it was stepped
        return self.schedulers[0 if last_step < self.switch_step else 1].get_last_lr()

    @property
    def lr_lambdas(self):
        return self.schedulers[0].lr_lambdas

    @lr_lambdas.setter
    def lr_lambdas(self, value):
        for s in self.schedulers:
            s.lr_lambdas = [value[0]] * len(s.lr_lambdas)

    def state_dict(self):
        return {"schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, state):
        for s, st in zip(self.schedulers, state["schedulers"]):
            s.load_state_dict(st)


def build_zeroth_order(model, args, learning_rate: float, process_index: int = 0, num_processes: int = 1):
    from .zeroth_order import ZerothOrderOptimizer

    return ZerothOrderOptimizer(
        param_groups(model, args.weight_decay),
        lr=learning_rate,
        eps=args.zo_eps,
        num_directions=args.zo_num_directions,
        difference=args.zo_difference,
        adaptive_eps=args.zo_adaptive_eps,
        tensor_fraction=args.zo_tensor_fraction,
        momentum=args.zo_momentum,
        clip=args.zo_clip,
        line_search=args.zo_line_search,
        batched=args.zo_batched,
        seed=args.seed,
        process_index=process_index,
        num_processes=num_processes,
    )


def build_optimizers(model, args, total_steps: int, accelerator) -> tuple[list, object]:
    """([optimizer] or, for a hybrid run, [first phase's, second phase's], scheduler)."""
    if args.optim == "adamw_torch":
        optimizers = [build_adamw(model, args, args.learning_rate)]
    else:
        zo = build_zeroth_order(model, args, args.learning_rate, accelerator.process_index, accelerator.num_processes)
        optimizers = [zo]
        if args.zo_hybrid != "none":
            adamw = build_adamw(model, args, args.backprop_learning_rate)
            optimizers = [zo, adamw] if args.zo_hybrid == "zo_then_backprop" else [adamw, zo]
    schedule = lr_lambda(args.lr_scheduler_type, args.warmup_steps, total_steps, args.min_lr_ratio)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in optimizers]
    return optimizers, (schedulers[0] if len(schedulers) == 1 else SchedulerGroup(schedulers, args.zo_switch_step))


def optimizer_card_section(args) -> str:
    """Markdown for the model card when the run did not train by backprop alone."""
    if args.optim != "zeroth_order":
        return ""
    how = (
        f"{args.zo_difference} differences along {args.zo_num_directions} random direction(s) per micro-batch, "
        f"eps {args.zo_eps:g}{' scaled to each tensor' + chr(39) + 's RMS' if args.zo_adaptive_eps else ''}"
    )
    extra = [
        f"{args.zo_tensor_fraction:.0%} of the tensors per step" if args.zo_tensor_fraction < 1 else "",
        f"EMA {args.zo_momentum:g}" if args.zo_momentum else "",
        f"clip {args.zo_clip:g}" if args.zo_clip else "",
        "line search" if args.zo_line_search else "",
    ]
    text = (
        f"\n## Zeroth-order training\n\nTrained with forward passes only (SPSA / MeZO, Malladi et al. 2023): "
        f"{how}; {', '.join(e for e in extra if e) or 'no other options'}; learning rate {args.learning_rate:g}.\n"
    )
    if args.zo_hybrid != "none":
        first, second = (
            ("zeroth-order", "AdamW backprop") if args.zo_hybrid == "zo_then_backprop" else ("AdamW backprop", "zeroth-order")
        )
        text += (
            f"Hybrid schedule: {first} for the first {args.zo_switch_step} steps, then {second} "
            f"(AdamW at learning rate {args.backprop_learning_rate:g}).\n"
        )
    return text
