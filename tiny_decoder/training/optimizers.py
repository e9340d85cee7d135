"""The optimizers a run builds (AdamW with decay only on matrices; Muon on the blocks' weight matrices beside AdamW
for the rest; zeroth-order SPSA, alone or in a hybrid schedule with AdamW) and the learning-rate schedule they
share (warmup, then cosine / linear / constant, or transformers' warmup-stable-decay)."""

import math

import torch


def param_groups(model: torch.nn.Module, weight_decay: float, params: list | None = None) -> list[dict]:
    """No weight decay on norms, biases and embeddings (1-D tensors and embedding tables). `params`: a subset of
    the model's (default: all that train)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay = [], []
    for p in _trainable(model) if params is None else params:
        (no_decay if p.dim() < 2 or id(p) in embeddings else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _trainable(model) -> list:
    seen, out = set(), []
    for p in model.parameters():  # tied weights appear once
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def muon_split(model) -> tuple[list, list]:
    """(the weight matrices inside the blocks, for Muon; the rest, for AdamW): embeddings, the LM head (tied or not),
    norms, biases and other vectors stay with AdamW, as in Keller Jordan's and Moonshot's recipes."""
    outside = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        outside.add(id(head.weight))
    matrices, rest = [], []
    for p in _trainable(model):
        (matrices if p.dim() == 2 and id(p) not in outside else rest).append(p)
    if not matrices:
        raise ValueError("--optim muon found no weight matrices inside the model's blocks to orthogonalise; use adamw_torch.")
    return matrices, rest


def build_muon(model, args) -> list:
    """[AdamW for the rest, Muon for the blocks' matrices]: both step every optimizer step, one schedule drives both."""
    matrices, rest = muon_split(model)
    muon = torch.optim.Muon(
        matrices,
        lr=args.muon_learning_rate or args.learning_rate,
        weight_decay=args.weight_decay if args.muon_weight_decay is None else args.muon_weight_decay,
        momentum=args.muon_momentum,
        adjust_lr_fn=args.muon_adjust_lr_fn,
    )
    adamw = torch.optim.AdamW(
        param_groups(model, args.weight_decay, rest),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    return [adamw, muon]


def schedule(args, total_steps: int):
    """The multiplier of the peak rate at each step, for `args.lr_scheduler_type` and a run of `total_steps`."""
    if args.lr_scheduler_type == "warmup_stable_decay":
        return wsd_lambda(args.warmup_steps, total_steps, args.wsd_decay_fraction, args.min_lr_ratio)
    return lr_lambda(args.lr_scheduler_type, args.warmup_steps, total_steps, args.min_lr_ratio)


def wsd_lambda(warmup_steps: int, total_steps: int, decay_fraction: float, min_ratio: float):
    """transformers' get_wsd_schedule (linear warmup, flat, cosine decay to min_ratio over the last decay_fraction of
    the steps), taken from the scheduler it builds so that the time budget can re-aim it at a shorter run."""
    from transformers import get_wsd_schedule

    decay = max(1, round(total_steps * decay_fraction))
    warmup = min(warmup_steps, total_steps - decay)
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = get_wsd_schedule(
        probe, num_warmup_steps=warmup, num_decay_steps=decay, num_training_steps=total_steps, min_lr_ratio=min_ratio
    )
    return scheduler.lr_lambdas[0]


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
    """One schedule over several optimizers: the two phases of a hybrid run (switching at `switch_step`; reports the
    lr of the phase the last optimizer step was in), or Muon's pair (no switch; reports AdamW's, the first)."""

    def __init__(self, schedulers, switch_step: int | None = None):
        self.schedulers, self.switch_step = schedulers, switch_step

    def step(self):
        import warnings

        with warnings.catch_warnings():  # the idle phase's optimizer has not stepped: expected, not a misuse
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            for s in self.schedulers:
                s.step()

    def get_last_lr(self):
        if self.switch_step is None:
            return self.schedulers[0].get_last_lr()
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
    elif args.optim == "muon":
        optimizers = build_muon(model, args)
    else:
        zo = build_zeroth_order(model, args, args.learning_rate, accelerator.process_index, accelerator.num_processes)
        optimizers = [zo]
        if args.zo_hybrid != "none":
            adamw = build_adamw(model, args, args.backprop_learning_rate)
            optimizers = [zo, adamw] if args.zo_hybrid == "zo_then_backprop" else [adamw, zo]
    multiplier = schedule(args, total_steps)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, multiplier) for o in optimizers]
    if len(schedulers) == 1:
        return optimizers, schedulers[0]
    return optimizers, SchedulerGroup(schedulers, args.zo_switch_step if args.optim == "zeroth_order" else None)


def optimizer_card_section(args) -> str:
    """Markdown for the model card when the run did not train by AdamW alone (or kept a weight average)."""
    average = (
        f"\n## Weight average\n\nThese are the weights' exponential moving average (decay {args.ema_decay:g}, ema.py), "
        f"kept beside training; the validation figures are the average's.\n"
        if args.ema_decay
        else ""
    )
    return _optimizer_section(args) + average


def _optimizer_section(args) -> str:
    if args.optim == "muon":
        lr = args.muon_learning_rate or args.learning_rate
        decay = args.weight_decay if args.muon_weight_decay is None else args.muon_weight_decay
        return (
            f"\n## Optimizer\n\nMuon (torch.optim.Muon: orthogonalised Nesterov momentum {args.muon_momentum:g}, "
            f"adjust_lr_fn={args.muon_adjust_lr_fn}) on the weight matrices inside the blocks at peak learning rate "
            f"{lr:g}, weight decay {decay:g}; AdamW at {args.learning_rate:g} on the embeddings, head, norms and biases.\n"
        )
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
