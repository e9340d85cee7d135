"""Memory and time of one zeroth-order step against an inference forward and a backprop (AdamW) step.

Same model, batch and device for every row; each mode runs in a process of its own, so its peak
memory is its own: on CUDA `max_memory_allocated`, on a CPU the process's peak RSS above what it
held just before the first step (Linux: the high-water mark is reset there through
/proc/self/clear_refs), so model, batch and imports count for no mode.

    python bench/zeroth_order.py                          # `tiny` preset, batch 16 x 256, vocab 4096
    python bench/zeroth_order.py --preset small --device cuda --batch_size 64
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = {  # name: what one step does
    "inference": "one forward, no_grad (the reference)",
    "zeroth_order": "SPSA step: 2 forwards per direction, update from seeds",
    "zeroth_order_batched": "the same probes in one vmap'd forward",
    "adamw": "forward + backward + AdamW step",
}


def measure(mode: str, a) -> dict:
    """One mode in this process: {'ms': median step time, 'peak_mib': peak memory the steps added, 'forwards'}."""
    import torch

    from tiny_decoder import TinyDecoderConfig, TinyDecoderForCausalLM
    from tiny_decoder.evaluation.finite_difference import default_loss
    from tiny_decoder.training import PRESETS
    from tiny_decoder.training.zeroth_order import ZerothOrderOptimizer

    torch.manual_seed(0)
    device = torch.device(a.device)
    if a.config_name:  # a saved model's shape (its weights do not change the cost)
        config = TinyDecoderConfig.from_pretrained(a.config_name)
    else:
        shape = {**PRESETS[a.preset], **({"hidden_size": a.hidden_size} if a.hidden_size else {})}
        config = TinyDecoderConfig(vocab_size=a.vocab_size, max_position_embeddings=a.block_size, **shape)
    model = TinyDecoderForCausalLM._from_config(config, attn_implementation=a.attn_implementation).to(device)
    ids = torch.randint(3, config.vocab_size, (a.batch_size, a.block_size), device=device)
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
        opt = ZerothOrderOptimizer(model.parameters(), lr=1e-6, num_directions=a.directions,
                                   batched=mode == "zeroth_order_batched")
        model.eval()

        def step():
            opt.probe(model, loss_fn)
            opt.step()
    ms, peak = timed_peak(step, device, a.repeats)
    forwards = {"inference": 1, "adamw": 1}.get(mode, 2 * a.directions)
    return {"mode": mode, "ms": ms, "peak_mib": peak / 2**20, "forwards": forwards}


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


def run_child(mode: str, argv: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TRANSFORMERS_VERBOSITY="error"))
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--hidden_size", type=int, default=None)
    p.add_argument("--config_name", default=None, help="a saved model folder (or config.json): its shape instead of a preset")
    p.add_argument("--vocab_size", type=int, default=4096)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--block_size", type=int, default=256)
    p.add_argument("--directions", type=int, default=1, help="zeroth-order directions per step")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--attn_implementation", default="sdpa")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_known_args(argv)[0]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if a.child:
        print(json.dumps(measure(a.child, a)))
        return None
    passed = [f"--{k}={v}" for k, v in vars(a).items() if k not in ("modes", "child") and v is not None]
    rows = [run_child(m, passed) for m in a.modes]
    ref = next((r for r in rows if r["mode"] == "inference"), rows[0])
    print(f"{a.config_name or a.preset + ' preset'}, batch {a.batch_size} x {a.block_size}, vocab {a.vocab_size}, {a.device}, "
          f"{a.directions} direction(s) per zeroth-order step, median of {a.repeats - 1} steps after the first\n")
    print("| mode | what a step does | forwards | ms per step | peak memory above the model, MiB | vs inference |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["peak_mib"] / ref["peak_mib"] if ref["peak_mib"] > 0 else float("nan")
        print(f"| {r['mode']} | {MODES[r['mode']]} | {r['forwards']} | {r['ms']:.1f} | {r['peak_mib']:.1f} | {ratio:.2f}x |")
    return rows


if __name__ == "__main__":
    main()
