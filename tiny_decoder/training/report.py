"""What a run leaves for people: metrics.jsonl, a loss-curve PNG, throughput and MFU, and the
descriptions of data and hardware its model card shows."""

import json
from pathlib import Path

import torch

CACHE_ENV = "TINY_DECODER_CACHE"  # where measured matmul rates are kept (default ~/.cache/tiny_decoder)
PRECISION_DTYPES = {"no": "float32", "bf16": "bfloat16", "fp16": "float16"}


def flops_per_token(num_params: int, config, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the matmuls plus 12 * layers * seq * hidden for attention (PaLM, app. B)."""
    return 6 * num_params + 12 * config.num_hidden_layers * seq_len * config.hidden_size


def forward_flops_per_token(num_params: int, config, context: float) -> float:
    """Inference FLOPs per token at `context` tokens of keys: 2N for the matmuls plus 4 * layers * context * hidden
    for the scores and the weighted values (a third of the training count, attention at the given context)."""
    return 2 * num_params + 4 * config.num_hidden_layers * context * config.hidden_size


def device_name(device) -> str:
    """What the rate belongs to: the GPU's name, or the CPU's model and the threads torch uses."""
    import platform

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def measure_matmul_rate(device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """FLOP/s of a size x size x size matmul (median of `repeats` after a warm-up); its own RNG, so a run's
    random state is untouched."""
    import statistics
    import time

    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=g, device=device).to(dtype)
    b = torch.randn(size, size, generator=g, device=device).to(dtype)
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return 2 * size**3 / statistics.median(times[1:])


def matmul_rate(device, precision: str = "no") -> float:
    """The yardstick of MFU: this device's measured matmul FLOP/s in the run's precision, measured once per
    (device, dtype) and kept in $TINY_DECODER_CACHE/matmul_rate.json."""
    import os

    dtype_name = PRECISION_DTYPES.get(precision, "float32")
    key = f"{device_name(device)} | {dtype_name}"
    path = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tiny_decoder") / "matmul_rate.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached, dict) and isinstance(cached.get(key), (int, float)) and cached[key] > 0:
        return float(cached[key])
    rate = measure_matmul_rate(device, getattr(torch, dtype_name), 4096 if device.type == "cuda" else 2048)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**(cached if isinstance(cached, dict) else {}), key: rate}, indent=1))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: measured again next time
    return rate


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
