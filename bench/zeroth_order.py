"""Memory and time of one zeroth-order step against an inference forward and a backprop (AdamW) step.

Same model, batch and device for every row; each mode runs in a process of its own, so its peak
memory is its own: on CUDA `max_memory_allocated`, on a CPU the process's peak RSS above what it
held just before the first step (Linux: the high-water mark is reset there through
/proc/self/clear_refs), so model, batch and imports count for no mode.

    python bench/zeroth_order.py                          # `tiny` preset, batch 16 x 256, vocab 4096
    python bench/zeroth_order.py --preset small --device cuda --batch_size 64
"""

import argparse
import dataclasses
import sys

from tiny_decoder.experiments.memory import MODES, StepShape, measure_in_child


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
    return p.parse_known_args(argv)[0]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    shape = StepShape(**{f.name: getattr(a, f.name) for f in dataclasses.fields(StepShape)})
    rows = [measure_in_child(m, shape) for m in a.modes]
    ref = next((r for r in rows if r["mode"] == "inference"), rows[0])
    print(
        f"{a.config_name or a.preset + ' preset'}, batch {a.batch_size} x {a.block_size}, vocab {a.vocab_size}, {a.device}, "
        f"{a.directions} direction(s) per zeroth-order step, median of {a.repeats - 1} steps after the first\n"
    )
    print("| mode | what a step does | forwards | ms per step | peak memory above the model, MiB | vs inference |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["peak_mib"] / ref["peak_mib"] if ref["peak_mib"] > 0 else float("nan")
        print(f"| {r['mode']} | {MODES[r['mode']]} | {r['forwards']} | {r['ms']:.1f} | {r['peak_mib']:.1f} | {ratio:.2f}x |")
    return rows


if __name__ == "__main__":
    main()
