"""Cost of one attention layer's kernel against sequence length: softmax (SDPA, causal), softmax with a
sliding window (SDPA with the banded mask transformers builds), and causal linear attention.

Prints time and peak memory per length and the fitted slope of log(cost) against log(length): about 2
for a kernel that computes a T x T score matrix, about 1 for linear attention. On a CPU, SDPA computes
every score even where the window masks it out, so the sliding window saves nothing here; kernels that
skip masked blocks (flash-attention's window) are GPU-only.

    python bench/attention_cost.py                     # B=1, 4 heads of 32, T = 256 ... 4096
    python bench/attention_cost.py --device cuda --lengths 1024 2048 4096 8192 16384
"""

import argparse
import math

import torch
import torch.nn.functional as F

from tiny_decoder.experiments.memory import timed_peak  # time and peak memory, CUDA or CPU RSS
from tiny_decoder.model.linear_attention import causal_linear_attention


def kernels(window: int):
    def softmax(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def sliding(q, k, v):
        t = q.shape[-2]
        i, j = torch.arange(t, device=q.device)[:, None], torch.arange(t, device=q.device)[None]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=(j <= i) & (i - j < window))

    return {"softmax (sdpa)": softmax, f"sliding window {window} (sdpa)": sliding, "linear": causal_linear_attention}


def measure(fn, q, k, v, repeats: int):
    with torch.no_grad():
        ms, peak = timed_peak(lambda: fn(q, k, v), q.device, repeats)
    return ms, max(peak, 0) / 2**20


def slope(xs, ys) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head_dim", type=int, default=32)
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    rows = {}
    for name, fn in kernels(a.window).items():
        rows[name] = []
        for t in a.lengths:
            torch.manual_seed(0)
            q, k, v = (torch.randn(1, a.heads, t, a.head_dim, device=a.device) for _ in range(3))
            rows[name].append(measure(fn, q, k, v, a.repeats))
    print(f"one layer's attention, batch 1, {a.heads} heads of {a.head_dim}, {a.device}; median of {a.repeats - 1} calls\n")
    print("| kernel | " + " | ".join(f"T={t}: ms, MiB" for t in a.lengths) + " | time slope | memory slope |")
    print("|---" * (len(a.lengths) + 3) + "|")
    for name, vals in rows.items():
        cells = " | ".join(f"{ms:.2f}, {mib:.1f}" for ms, mib in vals)
        mem = [v[1] for v in vals]
        mem_slope = f"{slope(a.lengths, mem):.2f}" if min(mem) >= 1 else "n/a (under 1 MiB somewhere)"
        print(f"| {name} | {cells} | {slope(a.lengths, [v[0] for v in vals]):.2f} | {mem_slope} |")
    return rows


if __name__ == "__main__":
    main()
