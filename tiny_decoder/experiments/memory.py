"""Time and peak memory of one training (or inference) step, each kind measured in a process of its own,
so its peak is its own: on CUDA `max_memory_allocated`, on a CPU the process's peak RSS above what it held
just before the first step (Linux: the high-water mark is reset there through /proc/self/clear_refs), so
model, batch and imports count for no mode. Used by bench/zeroth_order.py, bench/attention_cost.py and the
experiments.

    python -m tiny_decoder.experiments.memory adamw '{"preset": "tiny", "batch_size": 16}'   # one child
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

MODES = {  # name: what one step does
    "inference": "one forward, no_grad (the reference)",
    "zeroth_order": "SPSA step: 2 forwards per direction, update from seeds",
    "zeroth_order_batched": "the same probes in one vmap'd forward",
    "adamw": "forward + backward + AdamW step",
}


@dataclass
class StepShape:
    """The model and batch a step runs on: a preset (optionally wider), or a saved model's config."""

    preset: str = "tiny"
    hidden_size: int | None = None
    config_name: str | None = None  # a saved model folder (or config.json): its shape; its weights do not change the cost
    vocab_size: int = 4096
    batch_size: int = 16
    block_size: int = 256
    directions: int = 1  # zeroth-order directions per step
    repeats: int = 5
    device: str = "cpu"
    attn_implementation: str = "sdpa"


def measure(mode: str, shape: StepShape) -> dict:
    """One mode in this process: {'mode', 'ms': median step time, 'peak_mib': peak memory the steps added, 'forwards'}."""
    import torch

    from ..evaluation.finite_difference import default_loss
    from ..model import TinyDecoderConfig, TinyDecoderForCausalLM
    from ..training.arguments import PRESETS
    from ..training.zeroth_order import ZerothOrderOptimizer

    torch.manual_seed(0)
    device = torch.device(shape.device)
    if shape.config_name:
        config = TinyDecoderConfig.from_pretrained(shape.config_name)
    else:
        dims = {**PRESETS[shape.preset], **({"hidden_size": shape.hidden_size} if shape.hidden_size else {})}
        config = TinyDecoderConfig(vocab_size=shape.vocab_size, max_position_embeddings=shape.block_size, **dims)
    model = TinyDecoderForCausalLM._from_config(config, attn_implementation=shape.attn_implementation).to(device)
    ids = torch.randint(3, config.vocab_size, (shape.batch_size, shape.block_size), device=device)
    batch = {"input_ids": ids, "labels": ids}
    loss_fn = lambda m: default_loss(m, batch)  # noqa: E731
    if mode == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        model.train()

        def step():
            loss_fn(model).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    elif mode == "inference":
        model.eval()

        def step():
            with torch.no_grad():
                loss_fn(model)
    else:
        opt = ZerothOrderOptimizer(
            model.parameters(), lr=1e-6, num_directions=shape.directions, batched=mode == "zeroth_order_batched"
        )
        model.eval()

        def step():
            opt.probe(model, loss_fn)
            opt.step()

    ms, peak = timed_peak(step, device, shape.repeats)
    forwards = {"inference": 1, "adamw": 1}.get(mode, 2 * shape.directions)
    return {"mode": mode, "ms": ms, "peak_mib": peak / 2**20, "forwards": forwards}


def measure_in_child(mode: str, shape: StepShape) -> dict:
    """`measure` in a fresh Python process (the only way a CPU peak is the mode's own)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {list(MODES)}.")
    cmd = [sys.executable, "-m", "tiny_decoder.experiments.memory", mode, json.dumps(asdict(shape))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TRANSFORMERS_VERBOSITY="error"))
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed_peak(step, device, repeats: int) -> tuple[float, int]:
    """(median ms of the calls after the first, peak bytes the calls added): CUDA's allocator, or the RSS on a CPU."""
    import torch

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    else:
        start = _reset_cpu_peak()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() if cuda else _cpu_peak()) - start
    return 1000 * statistics.median(times[1:] or times), peak


def _status_kib(field: str) -> int:
    import re

    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _reset_cpu_peak() -> int:
    """Bytes resident now, with the peak reset to now (Linux); elsewhere the peak so far (a lower bound)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_peak() -> int:
    try:
        return _status_kib("VmHWM") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], StepShape(**json.loads(sys.argv[2])))))
