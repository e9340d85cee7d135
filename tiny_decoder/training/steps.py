"""What one micro-batch does: the rule the trainer calls as `step_rules.rule_for(step)(model, objective, batch)`
inside `accelerator.accumulate`; the optimizer's own step runs at the end of an accumulation (accelerate
skips it before). Backprop, zeroth-order (forward passes only), or a hybrid switching at a step."""


class BackpropStep:
    """Loss, backward, clipping at the accumulation's end, the optimizers' step (one, or Muon's pair)."""

    def __init__(self, accelerator, optimizers: list, max_grad_norm: float):
        self.accelerator, self.optimizers, self.max_grad_norm = accelerator, optimizers, max_grad_norm
        self.forward_passes = 0
        self.grad_norm = None  # before clipping, at the last optimizer step (when clipping)

    def __call__(self, model, objective, batch):
        loss, extras = objective(model, batch)
        self.accelerator.backward(loss)
        if self.accelerator.sync_gradients and self.max_grad_norm > 0:
            self.grad_norm = self.accelerator.clip_grad_norm_(model.parameters(), self.max_grad_norm)
        for optimizer in self.optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        self.forward_passes += 1
        return loss, extras

    def pop_stats(self) -> dict:
        return {}


class ZerothOrderStep:
    """Forward passes only (no autograd graph, eval mode as in MeZO: no dropout between the +/- probes)."""

    def __init__(self, accelerator, optimizer):
        self.accelerator, self.optimizer = accelerator, optimizer
        self.zo = getattr(optimizer, "optimizer", optimizer)  # inside accelerate's wrapper

    @property
    def forward_passes(self) -> int:
        return self.zo.forward_passes

    def __call__(self, model, objective, batch):
        module = self.accelerator.unwrap_model(model)  # not the DDP wrapper: probes need no gradient sync
        was_training = module.training
        module.eval()
        try:
            loss = self.zo.probe(module, lambda m: objective(m, batch)[0])
        finally:
            module.train(was_training)
        self.optimizer.step()
        return loss, {}

    def pop_stats(self) -> dict:
        return self.zo.pop_stats()


class StepRules:
    """The rule for each optimizer step: one rule, or two phases switching at `switch_step` (hybrid)."""

    def __init__(self, rules: list, switch_step: int = 0):
        self.rules, self.switch_step = rules, switch_step

    def rule_for(self, step: int):
        return self.rules[0 if len(self.rules) == 1 or step < self.switch_step else 1]

    @property
    def forward_passes(self) -> int:
        return sum(r.forward_passes for r in self.rules)

    @property
    def grad_norm(self):
        """The last gradient norm a backprop rule measured (None: none, or no clipping)."""
        norms = [r.grad_norm for r in self.rules if getattr(r, "grad_norm", None) is not None]
        return norms[0] if norms else None

    def pop_stats(self) -> dict:
        out = {}
        for r in self.rules:
            out.update(r.pop_stats())
        return out


def build_step_rules(args, accelerator, optimizers) -> StepRules:
    """The micro-batch rule(s) for the prepared optimizers of build_optimizers."""
    from .zeroth_order import ZerothOrderOptimizer

    if args.optim == "muon":  # AdamW and Muon step together
        return StepRules([BackpropStep(accelerator, optimizers, args.max_grad_norm)])
    rules = [
        ZerothOrderStep(accelerator, o)
        if isinstance(getattr(o, "optimizer", o), ZerothOrderOptimizer)
        else BackpropStep(accelerator, [o], args.max_grad_norm)
        for o in optimizers
    ]
    return StepRules(rules, args.zo_switch_step)
