"""The decode engine against generate() on the same model: batch-1 greedy and batch-32 sampling tokens/s.

    python bench/engine.py --model runs/tiny                    # make train's model
    python bench/engine.py --model runs/tiny --new_tokens 200 --batch 32
    python bench/engine.py --model runs/tiny --break_even        # when compiling pays: Engine's compile="auto" rule
    python bench/engine.py --model runs/tiny --profile           # where a compiled batch-1 decode step's time goes
    python bench/engine.py --model runs/tiny --profile --profile_with False --profile_batch 32   # the eager step

Each row runs in a process of its own (what one path leaves in the allocator slowed the next one by up to 15 % when
they shared a process) and is the best of --repeats after a warm-up (which also compiles the engine's decode step);
the first call's time is a column of its own. Greedy rows check that the engine's tokens equal generate()'s.
"By default" is Engine(model) as constructed without arguments, twice: before anything is stored (a fresh machine)
and in a later process, once compile='aot' (or auto's own rule, after AUTO_COMPILE_STEPS) has stored its step - the
run's step store is a temporary folder that starts empty.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from tiny_decoder.evaluation.speed import best_of as best
from tiny_decoder.io.step_store import CACHE_ENV

ROWS = (
    "generate-1",
    "engine-1",
    "engine-compiled-1",
    "engine-aot-1",
    "engine-stored-1",
    "generate-B",
    "engine-B",
    "engine-compiled-B",
    "engine-aot-B",
    "engine-stored-B",
)
# A row's name before its batch -> compile=. "engine" and "engine-stored" are both Engine(model) as constructed by
# default: the first before anything is stored (a fresh machine), the second in a later process, after the
# compile="aot" row kept its step in the run's step store.
MODES = {"engine": "auto", "engine-compiled": True, "engine-aot": "aot", "engine-stored": "auto"}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/tiny")
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--new_tokens", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--break_even", action="store_true", help="the decode steps after which compiling has paid")
    p.add_argument("--profile", action="store_true", help="torch.profiler over one compiled batch-1 greedy run")
    p.add_argument("--profile_with", default="True", choices=["True", "aot", "False"], help="--profile's compile=")
    p.add_argument("--profile_batch", type=int, default=1, help="--profile's batch (above 1: top-k 50 / top-p 0.95)")
    p.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)  # a child process measures one row
    return p.parse_args(argv)


def measure(a) -> dict:
    """One row in this process: {"seconds": best time, "tokens": the first row's new tokens, "first": the first
    call's time}."""
    import time

    import torch

    from tiny_decoder.engine import Engine

    model, tok, prompt = load(a)
    n, batch = a.new_tokens, 1 if a.row.endswith("-1") else a.batch
    sampling = {} if batch == 1 else dict(temperature=1.0, top_k=50, top_p=0.95)
    if a.row.startswith("generate"):
        ids = torch.tensor([prompt] * batch)
        extra = dict(do_sample=False) if batch == 1 else dict(do_sample=True, top_k=50, top_p=0.95)

        def run():
            with torch.no_grad():
                torch.manual_seed(0)
                out = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=n,
                    min_new_tokens=n,
                    pad_token_id=tok.pad_token_id,
                    **extra,
                )
            return out[:, len(prompt) :].tolist()
    else:
        engine = Engine(model, compile=MODES[a.row.rsplit("-", 1)[0]])

        def run():
            return engine.generate([prompt] * batch, n, seed=0, eos_token_id=-1, **sampling)

    start = time.perf_counter()
    run()
    first = time.perf_counter() - start  # what a user's first call costs: compiling, or loading a stored step
    seconds, out = best(run, a.repeats)
    return {"seconds": seconds, "tokens": out[0], "batch": batch, "first": first}


def load(a):
    """The model, its tokenizer and the prompt's token ids (EOS first)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import tiny_decoder  # noqa: F401

    model = AutoModelForCausalLM.from_pretrained(a.model).eval()
    tok = AutoTokenizer.from_pretrained(a.model)
    return model, tok, [tok.eos_token_id] + tok(a.prompt, add_special_tokens=False)["input_ids"]


def profile(a):
    """Per step of one run (compiled batch-1 greedy unless --profile_with / --profile_batch say otherwise): the
    compiled graph, Dynamo's guard lookup, the rest (the Python loop, sampling, the cache's bookkeeping), then
    torch.profiler's top operators."""
    import time

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from tiny_decoder.engine import Engine

    model, _, prompt = load(a)
    engine = Engine(model, compile={"True": True, "aot": "aot", "False": False}[a.profile_with])
    sampling = {} if a.profile_batch == 1 else dict(temperature=1.0, top_k=50, top_p=0.95, seed=0)

    def run():
        return engine.generate([prompt] * a.profile_batch, a.new_tokens, eos_token_id=-1, **sampling)

    for _ in range(1 + a.repeats):  # the first compiles; the others warm the allocator and caches
        run()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        run()
        total = time.perf_counter() - t0
    events = prof.key_averages()

    def per_token_us(prefix):
        return sum(e.cpu_time_total for e in events if e.key.startswith(prefix)) / a.new_tokens

    graph, guards = per_token_us("Torch-Compiled Region"), per_token_us("TorchDynamo Cache Lookup")
    step = total * 1e6 / a.new_tokens  # under the profiler, which adds its own cost
    print(
        f"per step: {step:.0f} us in all, compiled region {graph:.0f} us ({graph / step:.0%}), Dynamo's guard "
        f"lookup {guards:.0f} us, the rest {step - graph - guards:.0f} us\n"
    )
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))


def break_even(a):
    """Per batch size: an eager and a compiled decode step (best of --repeats), what the first compiled call cost
    beyond a later one (compilation; for a step the store kept, loading it), and the decode steps after which the
    compiled Engine is ahead - what AUTO_COMPILE_STEPS in tiny_decoder/engine.py stands for."""
    import time

    from tiny_decoder.engine import Engine

    model, _, prompt = load(a)
    print(
        "| batch | compiled by | eager ms/step | compiled ms/step | compilation (or loading), s | break-even decode steps |\n"
        "|---|---|---|---|---|---|"
    )
    for batch in (1, a.batch):
        timed = {}
        for compile in (False, True, "aot", "auto"):  # auto, last: it finds the step "aot" stored
            engine = Engine(model, compile=compile)

            def run(engine=engine, prompts=[prompt] * batch):
                return engine.generate(prompts, a.new_tokens, eos_token_id=-1)

            t0 = time.perf_counter()
            run()
            first = time.perf_counter() - t0
            seconds, _ = best(run, a.repeats)
            timed[compile] = (seconds / a.new_tokens, first - seconds)
        eager = timed[False][0]
        for compile, name in ((True, "torch.compile"), ("aot", "AOTInductor"), ("auto", "AOTInductor, stored (loaded)")):
            compiled, compilation = timed[compile]
            steps = compilation / (eager - compiled) if eager > compiled else float("inf")
            print(f"| {batch} | {name} | {eager * 1e3:.2f} | {compiled * 1e3:.2f} | {compilation:.2f} | {steps:,.0f} |")


def main(argv=None):
    a = parse(argv if argv is not None else sys.argv[1:])
    if a.row:
        print("ROW " + json.dumps(measure(a)))
        return None
    # The run's own step store (its rows' processes inherit it): empty at first, as on a fresh machine; removed after.
    store, before = tempfile.mkdtemp(prefix="bench-engine-"), os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = store
    try:
        return break_even(a) if a.break_even else profile(a) if a.profile else table(a, argv)
    finally:
        shutil.rmtree(store, ignore_errors=True)
        if before is None:
            del os.environ[CACHE_ENV]
        else:
            os.environ[CACHE_ENV] = before


def table(a, argv):
    """Every row, each in a process of its own, and the table."""
    import torch

    results = {}
    for row in ROWS:
        argv_row = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--row", row]
        out = subprocess.run(argv_row, capture_output=True, text=True, check=True).stdout
        results[row] = json.loads(out.split("ROW ", 1)[1])
    n = a.new_tokens
    names = {
        "generate-1": "generate(), batch 1, greedy",
        "engine-1": "Engine(model) by default, nothing stored, batch 1, greedy",
        "engine-compiled-1": "Engine (compile=True: torch.compile), batch 1, greedy",
        "engine-aot-1": "Engine (compile='aot': AOTInductor, stores its step), batch 1, greedy",
        "engine-stored-1": "Engine(model) by default, a later process (the step stored), batch 1, greedy",
        "generate-B": f"generate(), batch {a.batch}, top-k 50 / top-p 0.95",
        "engine-B": f"Engine(model) by default, nothing stored, batch {a.batch}, top-k 50 / top-p 0.95",
        "engine-compiled-B": f"Engine (compile=True: torch.compile), batch {a.batch}, top-k 50 / top-p 0.95",
        "engine-aot-B": f"Engine (compile='aot': AOTInductor, stores its step), batch {a.batch}, top-k 50 / top-p 0.95",
        "engine-stored-B": f"Engine(model) by default, a later process (the step stored), batch {a.batch}, top-k 50 / top-p 0.95",
    }
    rows = []
    for row in ROWS:
        r, ref = results[row], results["generate-1" if row.endswith("-1") else "generate-B"]
        same = "" if row.startswith("generate") or r["batch"] > 1 else ("yes" if r["tokens"] == ref["tokens"] else "no")
        rows.append((names[row], r["batch"] * n / r["seconds"], ref["seconds"] / r["seconds"], same, r["first"]))
    print(
        f"{a.model}: {n} new tokens per row, best of {a.repeats} after a warm-up, each row in its own process, "
        f"{torch.get_num_threads()} threads; the rows share a step store that starts empty\n"
    )
    print("| path | tokens/s | vs generate() | same greedy tokens | first call, s |\n|---|---|---|---|---|")
    for name, rate, ratio, same, first in rows:
        print(f"| {name} | {rate:,.0f} | {ratio:.2f}x | {same} | {first:.2f} |")
    return rows


if __name__ == "__main__":
    main()
