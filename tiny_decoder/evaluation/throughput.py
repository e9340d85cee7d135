"""Throughput against the machine: FLOPs per token of a model, the measured matmul rate of a device (the
yardstick of MFU) and the utilisation a run reached. Shared by training logs, introspection and benches."""

import json
from pathlib import Path

import torch

from ..io.step_store import cache_root

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
    dtype_name = PRECISION_DTYPES.get(precision, "float32")
    key = f"{device_name(device)} | {dtype_name}"
    path = cache_root() / "matmul_rate.json"
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
