"""What a run reports while it trains: the loss window, metrics.jsonl, the trackers accelerate logs to, the
progress bar, activation norms and the utilisation (MFU) against this device's measured matmul rate."""

import time

from tqdm.auto import tqdm

from ..evaluation.throughput import flops_per_token, matmul_rate
from .precision import NAMES
from .report import ActivationNorms, LogWindow, MetricsLog


class MetricsLogger:
    """Owns the run's records and their cadence (`--logging_steps`, and the last step)."""

    def __init__(self, args, data_args, accelerator, module, n_params: int, state, precision: str, resumed: bool):
        """`module`: the plain model (for its config and the activation hooks); `n_params` counted before sharding."""
        self.args, self.accelerator, self.state, self.precision = args, accelerator, state, precision
        self.tokens_per_step = (
            data_args.block_size * args.per_device_train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes
        )
        self.flops_per_token = flops_per_token(n_params, module.config, data_args.block_size)
        self.peak_flops = matmul_rate(accelerator.device, precision)  # per device; measured once, then cached
        self.log = MetricsLog(args.output_dir, enabled=accelerator.is_main_process, resume_step=state.step if resumed else None)
        self.norms = ActivationNorms(module) if args.log_activation_norms else None
        self.window = LogWindow(accelerator.device, time.time())
        self.bar = tqdm(disable=True)  # opened by start()
        if args.report_to != "none":
            values = {**vars(args), **vars(data_args), **module.config.to_dict()}
            accelerator.init_trackers(
                "tiny-decoder", config={k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}
            )

    def start(self, total_steps: int):
        self.window = LogWindow(self.accelerator.device, time.time())
        main = self.accelerator.is_main_process
        self.bar = tqdm(total=total_steps, initial=self.state.step, disable=not main, dynamic_ncols=True, desc="train")

    def set_total(self, total_steps: int):
        self.bar.total = total_steps

    def add(self, loss, extras: dict):
        """A micro-batch's loss (and the objective's scalars) into the window."""
        self.window.add(loss, extras)

    def step_done(self):
        self.window.steps += 1
        self.bar.update(1)

    def due(self, last: bool) -> bool:
        return self.state.step % self.args.logging_steps == 0 or last

    def training_metrics(self, lr: float, rule_stats: dict) -> dict:
        """Loss (averaged over the window and the processes), lr, tokens/s, MFU and the step rule's statistics."""
        now, window = time.time(), self.window
        tokens_per_s = self.tokens_per_step * window.steps / max(now - window.since, 1e-9)
        loss, extras = window.pop(self.accelerator, now)
        record = {"loss": loss, "lr": lr, "tokens": self.state.tokens, "tokens_per_s": tokens_per_s, **extras}
        record.update(rule_stats, **(self.norms.pop() if self.norms is not None else {}))
        record["flops_per_s"] = tokens_per_s * self.flops_per_token
        record["mfu"] = record["flops_per_s"] / (self.peak_flops * self.accelerator.num_processes)
        self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:.0f}", mfu=f"{record['mfu']:.1%}")
        return record

    def write(self, record: dict, elapsed_s: float):
        """One line of metrics.jsonl and the trackers (a record with only the step is not written)."""
        if len(record) > 1:
            record["forward_passes"] = self.state.forward_passes
            self.log.write({**record, "elapsed_s": round(elapsed_s, 2)})
            self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=self.state.step)

    def note(self, text: str):
        self.bar.write(text)

    def close(self):
        self.bar.close()

    def utilisation(self) -> str:
        """'; training ran at 41 % of its measured fp32 matmul rate (...)': the mean MFU of the run's records."""
        mfus = [r["mfu"] for r in self.log.read() if "mfu" in r]
        if not mfus:
            return ""
        return (
            f"; training ran at {sum(mfus) / len(mfus):.0%} of its measured {NAMES[self.precision]} matmul rate "
            f"({self.peak_flops / 1e9:,.0f} GFLOP/s per device) on average"
        )
