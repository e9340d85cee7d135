"""Validation during a run: the mean next-token loss on the validation blocks, every `--eval_steps` and at the end."""

import math

from ..evaluation.loss import mean_loss


class Validator:
    def __init__(self, accelerator, eval_dl, eval_steps: int, max_eval_batches: int | None):
        self.accelerator, self.eval_dl, self.eval_steps, self.max_batches = accelerator, eval_dl, eval_steps, max_eval_batches
        self.last_loss: float | None = None

    def due(self, step: int, last: bool) -> bool:
        return step % self.eval_steps == 0 or last

    def evaluate(self, model) -> float:
        """Mean loss over every process's share, without torch.compile: a forward-only graph and a short last batch
        would each cost a compile. (FSDP1's wrapper stays.)"""
        acc = self.accelerator
        if acc.distributed_type != "FSDP":
            model = acc.unwrap_model(model, keep_torch_compile=False)
        self.last_loss = mean_loss(model, self.eval_dl, accelerator=acc, max_batches=self.max_batches)
        return self.last_loss

    def record(self, model) -> dict:
        """{'eval_loss', 'eval_ppl'} for the metrics record."""
        loss = self.evaluate(model)
        return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50))}
