"""What a run leaves for people: metrics.jsonl, a loss-curve PNG, throughput and MFU."""

import json
from pathlib import Path

# Dense bf16 peak FLOP/s (no sparsity) of cards whose name torch reports.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12, "4090": 165e12}


def flops_per_token(num_params: int, config, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the matmuls plus 12 * layers * seq * hidden for attention (PaLM, app. B)."""
    return 6 * num_params + 12 * config.num_hidden_layers * seq_len * config.hidden_size


def device_peak_flops(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


class MetricsLog:
    """Appends one JSON object per event to output_dir/metrics.jsonl."""

    def __init__(self, output_dir: str, enabled: bool = True, resume_step: int | None = None):
        """A fresh log, or (resume_step given) the old one cut back to the steps up to the checkpoint's,
        so a resumed run never logs a step twice."""
        self.path = Path(output_dir) / "metrics.jsonl"
        self.enabled = enabled
        if not enabled or not self.path.exists():
            return
        if resume_step is None:
            self.path.unlink()
            return
        kept = [r for r in self.read() if r.get("step", 0) <= resume_step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(self.path)

    def write(self, record: dict):
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        """The records; a line cut short by a crash is skipped."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def plot_loss_curve(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
