"""Speed and memory of tiny-decoder against the machine, with transformers' LlamaForCausalLM of the same shape
kept as a parity guard.

Both models: RoPE, RMSNorm, SwiGLU, the same heads, sizes and SDPA attention. Each row gives tokens/s,
the FLOP/s that makes (6N + attention per trained token, 2N + attention per generated one) and its share of
this device's matmul rate in the row's precision, measured in this run before and after the training rounds (a
CPU's speed drifts by 10-20 % over minutes, so the rate cached by tiny_decoder.evaluation.throughput.matmul_rate for
the training logs' MFU may be another minute's), then Llama's tokens/s and the ratio, all measured in this run.

    python bench/speed.py                          # hidden 256, 4 layers, 8 heads, 2 kv heads, ctx 256, fp32
    python bench/speed.py --autocast bf16          # the training step under bf16 autocast (CPUs with bf16 units)
    python bench/speed.py --autocast bf16 --fused_loss   # ours with the LM head + loss fused (Llama's row unfused)
    python bench/speed.py --autocast bf16 --fused_loss --compile_train   # both train steps compiled, as make train's
    python bench/speed.py --device cuda --dtype bfloat16
"""

import argparse
import gc
import os
import time

import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from tiny_decoder import TinyDecoderConfig, TinyDecoderForCausalLM  # noqa: E402
from tiny_decoder.evaluation.throughput import (  # noqa: E402
    PRECISION_DTYPES,
    device_name,
    flops_per_token,
    forward_flops_per_token,
    measure_matmul_rate,
)
from tiny_decoder.training.precision import NAMES, autocast_dtype  # noqa: E402


def build(kind, a, device, dtype):
    shape = dict(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        intermediate_size=a.intermediate,
        max_position_embeddings=a.ctx + a.new_tokens,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    if kind == "tiny-decoder":
        cfg = TinyDecoderConfig(position_embedding="rope", norm="rmsnorm", hidden_act="swiglu", fused_loss=a.fused_loss, **shape)
        model = TinyDecoderForCausalLM._from_config(cfg, attn_implementation="sdpa")
    else:
        cfg = LlamaConfig(hidden_act="silu", rms_norm_eps=1e-5, **shape)
        model = LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa")
    return model.to(device=device, dtype=dtype)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_reset(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark (CPU)


def train_step_time(model, a, device):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(3, a.vocab, (a.batch, a.ctx), device=device)
    times = []
    autocast = autocast_dtype(a.autocast)
    for i in range(a.warmup + a.steps):
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    return min(times)


def generation_modes(a):
    """Name -> generate() kwargs: the default dynamic cache, a static cache, and a static cache
    with the decode step compiled as one graph (transformers' own auto-compile path)."""
    from transformers import CompileConfig

    compiled = CompileConfig(fullgraph=True, mode="default")
    compiled._compile_all_devices = True  # generate() compiles on GPUs only unless told
    modes = {"dynamic cache": {}, "static cache": dict(cache_implementation="static", disable_compile=True)}
    if not a.no_compile:
        modes["static cache + torch.compile(fullgraph)"] = dict(cache_implementation="static", compile_config=compiled)
    return modes


@torch.no_grad()
def generate_tps(model, a, device, **kwargs):
    model.eval()
    prompt = torch.randint(3, a.vocab, (1, 16), generator=torch.Generator().manual_seed(0)).to(device)
    model.generate(prompt, max_new_tokens=4, do_sample=False, **kwargs)  # warm-up (and compile) outside the timing
    best, out = 0.0, None
    for _ in range(a.gen_repeats):
        sync(device)
        t0 = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False, **kwargs)
        sync(device)
        best = max(best, (out.shape[1] - prompt.shape[1]) / (time.perf_counter() - t0))
    return best, out


KINDS = ("tiny-decoder", "llama")


def peak_memory_in_subprocess(kind):
    """Peak memory of one model's training steps in a fresh process (CPU RSS is a high-water mark)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, __file__, *sys.argv[1:], "--memory_only", kind], capture_output=True, text=True, check=True
    ).stdout
    return float(out.split("PEAK_MB")[1].split()[0])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv_heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=704)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--new_tokens", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--gen_repeats", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7, help="training rounds, alternating the two models (odd: a median)")
    p.add_argument("--no_compile", action="store_true", help="Skip the torch.compile generation row.")
    p.add_argument("--fused_loss", action="store_true", help="Our model trains with config.fused_loss (Llama cannot).")
    p.add_argument(
        "--compile_train", action="store_true", help="Both models train through torch.compile(model), as make train does."
    )
    p.add_argument("--memory_only", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--autocast", default="none", choices=["none", "bf16", "fp16"], help="Autocast for the training step.")
    a = p.parse_args()
    device, dtype = torch.device(a.device), getattr(torch, a.dtype)

    if a.memory_only:  # child process: one model, report its peak memory
        model = build(a.memory_only, a, device, dtype)
        peak_reset(device)
        a.warmup, a.steps = 0, 2
        train_step_time(model, a, device)
        print(f"PEAK_MB {peak_mb(device):.1f}")
        return

    models = {kind: build(kind, a, device, dtype) for kind in KINDS}
    modes = generation_modes(a)
    results = {
        kind: dict(params=sum(p.numel() for p in m.parameters()), step=[], **{m: [] for m in modes}) for kind, m in models.items()
    }
    # Alternate the two models round by round so warm-up and machine noise hit both alike;
    # all training rounds first, then all generation rounds (no training allocations in between).
    trained = {kind: torch.compile(m) if a.compile_train else m for kind, m in models.items()}  # compiled in warm-up
    weights = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}[a.dtype]
    train_precision = weights if a.autocast == "none" else a.autocast
    precisions = sorted({weights, train_precision})
    rates = {p: [] for p in precisions}  # the matmul rate before and after the training rounds: their mean is the yardstick

    def measure_rates():
        for p in precisions:
            rates[p].append(
                measure_matmul_rate(device, getattr(torch, PRECISION_DTYPES[p]), 4096 if device.type == "cuda" else 2048)
            )

    measure_rates()
    for r in range(a.rounds):
        for kind in KINDS if r % 2 == 0 else KINDS[::-1]:
            results[kind]["step"].append(train_step_time(trained[kind], a, device))
    measure_rates()
    rate = {p: sum(v) / len(v) for p, v in rates.items()}
    greedy = {}
    for mode, kwargs in modes.items():
        for r in range(2 * a.rounds):
            for kind in KINDS if r % 2 == 0 else KINDS[::-1]:
                tps, out = generate_tps(models[kind], a, device, **kwargs)
                results[kind][mode].append(tps)
                greedy.setdefault(kind, out)
                if not torch.equal(out, greedy[kind]):  # every cache and compile mode must give the same tokens
                    raise SystemExit(f"{kind}: greedy tokens with {mode} differ from the dynamic cache's")
    # Parity from paired rounds: the two models' steps of one round ran back to back, so machine noise that drifts
    # over minutes cancels in each round's ratio; the median and range of those ratios say how far apart they are.
    paired = sorted(a_ / b_ for a_, b_ in zip(results["llama"]["step"], results["tiny-decoder"]["step"]))  # ours/Llama speed
    for kind in KINDS:
        results[kind]["step"] = min(results[kind]["step"])
        for mode in modes:
            results[kind][mode] = max(results[kind][mode])
        results[kind]["mem"] = peak_memory_in_subprocess(kind)

    ours, ref = results["tiny-decoder"], results["llama"]
    shape = TinyDecoderConfig(num_hidden_layers=a.layers, hidden_size=a.hidden)
    train_tokens = a.batch * a.ctx
    rows = [
        (
            "train step (fwd+bwd+AdamW)",
            train_precision,
            train_tokens / ours["step"],
            train_tokens / ref["step"],
            flops_per_token(ours["params"], shape, a.ctx),
        )
    ]
    mean_context = 16 + a.new_tokens / 2  # the prompt, then on average half the new tokens
    for mode in modes:
        rows.append(
            (
                f"generate, greedy, batch 1, {mode}",
                weights,
                ours[mode],
                ref[mode],
                forward_flops_per_token(ours["params"], shape, mean_context),
            )
        )
    print(
        f"train step{' (torch.compile)' if a.compile_train else ''}: best of {a.rounds} rounds x {a.steps} steps; generate: best of {2 * a.rounds} x {a.gen_repeats} "
        "(after a warm-up call that also compiles); greedy tokens checked equal across cache modes"
    )
    print(f"device={device} ({device_name(device)}) weights={a.dtype} autocast={a.autocast} torch={torch.__version__}")
    print(
        f"shape: hidden {a.hidden}, layers {a.layers}, heads {a.heads}/{a.kv_heads} kv, vocab {a.vocab}, "
        f"ctx {a.ctx}, batch {a.batch}, params ours {ours['params']:,} / llama {ref['params']:,}; matmul rate measured before / after the training rounds: "
        + ", ".join(f"{NAMES[p]} {v[0] / 1e9:,.0f} / {v[1] / 1e9:,.0f} GFLOP/s" for p, v in rates.items())
    )
    print("| row | precision | tokens/s | GFLOP/s | % of matmul rate | Llama tokens/s | ours/Llama |")
    print("|---|---|---|---|---|---|---|")
    for name, precision, tps, ref_tps, fpt in rows:
        print(
            f"| {name} | {NAMES[precision]} | {tps:,.0f} | {tps * fpt / 1e9:,.1f} | {tps * fpt / rate[precision]:.1%} | "
            f"{ref_tps:,.0f} | {tps / ref_tps:.3f} |"
        )
    print(
        f"\ntrain step, ours/Llama tokens/s per paired round ({a.rounds} rounds): median {paired[len(paired) // 2]:.3f}, "
        f"range {paired[0]:.3f}-{paired[-1]:.3f} (the table's column: best step of each model)"
    )
    print(
        f"\npeak memory in training (CPU: process RSS): tiny-decoder {ours['mem']:.0f} MiB, Llama {ref['mem']:.0f} MiB, "
        f"ratio {ours['mem'] / ref['mem']:.3f}"
    )


if __name__ == "__main__":
    main()
