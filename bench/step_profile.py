"""Where a training step's time goes, in fp32 and under bf16 autocast: torch.profiler's top operators.

Why bf16 reaches a smaller share of its (higher) matmul rate than fp32 does: the table shows which
operators get faster in bf16 (the matmuls) and which do not (attention, casts, the loss's softmax).

    python bench/step_profile.py                        # make train's model shape, batch 16 x 256, eager
    python bench/step_profile.py --fused_loss           # with make train's fused LM head + loss
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from tiny_decoder import TinyDecoderConfig, TinyDecoderForCausalLM
from tiny_decoder.training.arguments import PRESETS
from tiny_decoder.training.precision import NAMES, autocast_dtype


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--vocab_size", type=int, default=4096)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--block_size", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rows", type=int, default=10)
    p.add_argument("--fused_loss", action="store_true", help="config.fused_loss: the LM head + loss a block at a time")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    config = TinyDecoderConfig(
        **PRESETS[a.preset], vocab_size=a.vocab_size, max_position_embeddings=a.block_size, fused_loss=a.fused_loss
    )
    model = TinyDecoderForCausalLM(config).train()
    ids = torch.randint(0, a.vocab_size, (a.batch_size, a.block_size))
    for precision in ("no", "bf16"):
        dtype = autocast_dtype(precision)

        def step(dtype=dtype):
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            model.zero_grad(set_to_none=True)

        step()  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(a.steps):
                step()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        print(f"\n{NAMES[precision]}: {total / 1e3 / a.steps:.0f} ms per step (self CPU time, {a.steps} steps)")
        print("| operator | ms per step | share |\n|---|---|---|")
        for e in events[: a.rows]:
            print(f"| {e.key} | {e.self_cpu_time_total / 1e3 / a.steps:.1f} | {e.self_cpu_time_total / total:.1%} |")


if __name__ == "__main__":
    main()
