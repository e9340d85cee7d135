"""Validation during a run: the mean next-token loss on the validation blocks, every `--eval_steps` and at the end;
with a weight average (ema.py), of both the training weights and the average."""

import math

from ..evaluation.loss import mean_loss


class Validator:
    def __init__(self, accelerator, eval_dl, eval_steps: int, max_eval_batches: int | None, ema=None):
        self.accelerator, self.eval_dl, self.eval_steps, self.max_batches = accelerator, eval_dl, eval_steps, max_eval_batches
        self.ema = ema
        self.last_loss: float | None = None  # of the model the run saves (the average, when there is one)

    def due(self, step: int, last: bool) -> bool:
        return step % self.eval_steps == 0 or last

    def evaluate(self, model) -> float:
        """Mean loss over every process's share, without torch.compile: a forward-only graph and a short last batch
        would each cost a compile. (FSDP1's wrapper stays.)"""
        return self.record(model)["eval_loss_ema" if self.ema is not None else "eval_loss"]

    def record(self, model) -> dict:
        """{'eval_loss', 'eval_ppl'} (and 'eval_loss_ema', 'eval_ppl_ema') for the metrics record."""
        acc = self.accelerator
        if acc.distributed_type != "FSDP":
            model = acc.unwrap_model(model, keep_torch_compile=False)
        loss = mean_loss(model, self.eval_dl, accelerator=acc, max_batches=self.max_batches)
        out = {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50))}
        if self.ema is not None:
            with self.ema.swapped_in(acc.unwrap_model(model, keep_torch_compile=False)):
                average = mean_loss(model, self.eval_dl, accelerator=acc, max_batches=self.max_batches)
            out.update(eval_loss_ema=average, eval_ppl_ema=math.exp(min(average, 50)))
        self.last_loss = out.get("eval_loss_ema", loss)
        return out
