"""The decode engine against generate() on the same model: batch-1 greedy and batch-32 sampling tokens/s.

    python bench/engine.py --model runs/tiny                    # make train's model
    python bench/engine.py --model runs/tiny --new_tokens 200 --batch 32

Each row is the best of --repeats after a warm-up (which also compiles the engine's decode step); greedy rows
check that the engine's tokens equal generate()'s.
"""

import argparse

from tiny_decoder.evaluation.speed import best_of as best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/tiny")
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--new_tokens", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import tiny_decoder  # noqa: F401
    from tiny_decoder.engine import Engine

    model = AutoModelForCausalLM.from_pretrained(a.model).eval()
    tok = AutoTokenizer.from_pretrained(a.model)
    prompt = [tok.eos_token_id] + tok(a.prompt, add_special_tokens=False)["input_ids"]
    n = a.new_tokens
    ids = torch.tensor([prompt])
    kw = dict(max_new_tokens=n, min_new_tokens=n, pad_token_id=tok.pad_token_id)
    rows = []

    def hf(batch, **extra):
        with torch.no_grad():
            torch.manual_seed(0)
            return model.generate(
                ids.repeat(batch, 1), attention_mask=torch.ones(batch, len(prompt), dtype=torch.long), **kw, **extra
            )[:, len(prompt) :].tolist()

    t_ref, ref = best(lambda: hf(1, do_sample=False), a.repeats)
    rows.append(("generate(), batch 1, greedy", n / t_ref, 1.0, ""))
    for compiled in (False, True):
        engine = Engine(model, compile=compiled)
        t, out = best(lambda e=engine: e.generate([prompt], n, eos_token_id=-1), a.repeats)
        rows.append(
            (f"Engine{' (compiled)' if compiled else ''}, batch 1, greedy", n / t, t_ref / t, "yes" if out[0] == ref[0] else "no")
        )
    sampling = dict(do_sample=True, top_k=50, top_p=0.95)
    t_ref_b, _ = best(lambda: hf(a.batch, **sampling), a.repeats)
    rows.append((f"generate(), batch {a.batch}, top-k 50 / top-p 0.95", a.batch * n / t_ref_b, 1.0, ""))
    for compiled in (False, True):
        engine = Engine(model, compile=compiled)
        t, _ = best(
            lambda e=engine: e.generate([prompt] * a.batch, n, temperature=1.0, top_k=50, top_p=0.95, seed=0, eos_token_id=-1),
            a.repeats,
        )
        rows.append(
            (
                f"Engine{' (compiled)' if compiled else ''}, batch {a.batch}, top-k 50 / top-p 0.95",
                a.batch * n / t,
                t_ref_b / t,
                "",
            )
        )
    print(f"{a.model}: {n} new tokens per row, best of {a.repeats} after a warm-up, {torch.get_num_threads()} threads\n")
    print("| path | tokens/s | vs generate() | same greedy tokens |\n|---|---|---|---|")
    for name, rate, ratio, same in rows:
        print(f"| {name} | {rate:,.0f} | {ratio:.2f}x | {same} |")
    return rows


if __name__ == "__main__":
    main()
