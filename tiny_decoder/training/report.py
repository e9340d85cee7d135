"""What a run leaves for people: metrics.jsonl, a loss-curve PNG, the activation norms and loss window it
logs, and the descriptions of data and hardware its model card shows."""

import json
from pathlib import Path

import torch


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


def local_copy_of(local_path: str, dataset_name: str) -> bool:
    """Whether a local folder is a copy of the Hub dataset `dataset_name`: its name or README says so."""
    short = dataset_name.split("/")[-1].lower()
    p = Path(local_path).expanduser().resolve()
    folder = p if p.is_dir() else p.parent
    if short in folder.name.lower() or short in p.name.lower():
        return True
    readme = folder / "README.md"
    return readme.is_file() and short in readme.read_text(errors="replace")[:4000].lower()


def describe_data(data_args, reports) -> tuple[str | None, str]:
    """(Hub dataset id for the card's metadata or None, a description without local paths)."""
    name = data_args.dataset_name
    local = data_args.local_path
    if local and not local_copy_of(local, name):
        name, source = None, f"a local corpus ({Path(local).expanduser().resolve().name})"
    elif local:
        source = f"{name.split('/')[-1]} ({name}), a local copy"
    else:
        source = f"{name.split('/')[-1]} ({name})"
    if reports:
        return name, (
            f"{source}: {reports['train'].tokens:,} training tokens in {reports['train'].documents:,} documents, "
            f"validation {reports['validation'].tokens:,} tokens"
        )
    return name, f"{source} (streamed)"


def describe_hardware(accelerator) -> str:
    dev = accelerator.device
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = f"{dev.type}, {torch.get_num_threads()} threads"
    return f"{accelerator.num_processes} x {name}"


class ActivationNorms:
    """RMS of the residual stream after each block, averaged over the training forwards of a logging
    window (`--log_activation_norms`): whether the layers' activations stay balanced as training goes."""

    def __init__(self, model):
        self.sums, self.counts = {}, {}
        blocks = getattr(getattr(model, "model", model), "layers", None)
        if blocks is None:
            raise ValueError("--log_activation_norms needs a model with .model.layers (blocks); this one has none.")
        self.handles = [block.register_forward_hook(self._hook(i)) for i, block in enumerate(blocks)]

    def _hook(self, i):
        def record(module, args, output):
            if module.training:
                h = output[0] if isinstance(output, tuple) else output
                self.sums[i] = self.sums.get(i, 0.0) + h.detach().float().pow(2).mean().sqrt()
                self.counts[i] = self.counts.get(i, 0) + 1

        return record

    def pop(self) -> dict:
        """{'act_rms_<layer>': mean RMS, 'act_rms_spread': max / min over layers} since the last call."""
        out = {f"act_rms_{i}": float(self.sums[i]) / self.counts[i] for i in sorted(self.sums)}
        if out:
            out["act_rms_spread"] = max(out.values()) / max(min(out.values()), 1e-12)
        self.sums, self.counts = {}, {}
        return out

    def remove(self):
        for h in self.handles:
            h.remove()


class LogWindow:
    """The training loss (and the objective's own scalars, e.g. ce and kl) summed since the last log record."""

    def __init__(self, device, since: float):
        self.loss_sum = torch.zeros((), device=device)
        self.micro, self.steps, self.extras, self.since = 0, 0, {}, since  # micro-batches, optimizer steps, start

    def add(self, loss: torch.Tensor, extras: dict):
        self.loss_sum += loss.detach().float()
        for k, v in extras.items():
            self.extras[k] = self.extras.get(k, 0.0) + v.detach().float()
        self.micro += 1

    def pop(self, accelerator, now: float) -> tuple[float, dict]:
        """(mean loss, mean extras) over the window and the processes; the next window starts at `now`."""
        loss = accelerator.reduce(self.loss_sum / self.micro, reduction="mean").item()
        extras = {k: accelerator.reduce(v / self.micro, reduction="mean").item() for k, v in self.extras.items()}
        self.loss_sum, self.micro, self.steps, self.extras, self.since = self.loss_sum * 0, 0, 0, {}, now
        return loss, extras
