"""The same trained model in every runtime it exports to: batch-1 greedy generation tokens/s for one prompt, and
the file size of each format. Every runtime's tokens are checked against PyTorch's.

    python bench/runtimes.py --model runs/tiny                # make train's model; exports into a temporary folder
    python bench/runtimes.py --model runs/tiny --new_tokens 256 --repeats 5
    python bench/runtimes.py --model runs/tiny --rounds 31     # more paired rounds of the Engine against llama.cpp

Rows: PyTorch (ours, generate() with the dynamic cache; ours, static cache + torch.compile; the package's decode
engine: as constructed by default with nothing stored, compiled by torch.compile and by AOTInductor, and by default
once AOTInductor's step is stored; an EOS does not end the run), transformers' LlamaForCausalLM (the --format llama
export), ONNX Runtime (the --format onnx export, a greedy loop with its
KV cache), llama.cpp through llama-cpp-python on the GGUF export when that package is installed (an optional
extra `make setup` does not install: `pip install llama-cpp-python`, which builds llama.cpp with cmake).
"""

import argparse
import tempfile
from pathlib import Path

from tiny_decoder.evaluation.speed import best_of


def best_rate(fn, new_tokens: int, repeats: int) -> tuple[float, list[int]]:
    seconds, tokens = best_of(fn, repeats)  # after a warm-up (and compilation)
    return new_tokens / seconds, tokens


def size_mb(*paths) -> float:
    return sum(p.stat().st_size for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()) / 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/tiny")
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--new_tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=15, help="paired rounds of the Engine's AOTInductor step against llama.cpp f32")
    a = p.parse_args(argv)

    import onnxruntime as ort
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import tiny_decoder  # noqa: F401
    from tiny_decoder.export.gguf import save_gguf
    from tiny_decoder.export.llama import save_llama_folder
    from tiny_decoder.export.onnx import greedy_decode, save_onnx

    torch.set_num_threads(torch.get_num_threads())
    model = AutoModelForCausalLM.from_pretrained(a.model).eval()
    tok = AutoTokenizer.from_pretrained(a.model)
    prompt = [tok.eos_token_id] + tok(a.prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt])
    n = min(a.new_tokens, model.config.max_position_embeddings - len(prompt))
    kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    out = Path(tempfile.mkdtemp(prefix="runtimes-"))
    save_llama_folder(model, tok, str(out / "llama"), a.model)
    save_onnx(model, str(out / "onnx" / "model.onnx"))
    for t in ("f32", "f16", "q8_0"):
        save_gguf(model, tok, str(out / f"model-{t}.gguf"), t)
    llama = AutoModelForCausalLM.from_pretrained(out / "llama").eval()
    session = ort.InferenceSession(str(out / "onnx" / "model.onnx"))
    import json

    info = json.loads((out / "onnx" / "onnx_decoder.json").read_text())

    def gen(m, **extra):
        def run():
            with torch.no_grad():
                return m.generate(ids, **kw, **extra)[0, len(prompt) :].tolist()

        return run

    rows = []
    ref_rate, ref = best_rate(gen(model), n, a.repeats)
    rows.append(("PyTorch, ours: generate(), dynamic cache", ref_rate, ref, size_mb(Path(a.model) / "model.safetensors")))
    rate, toks = best_rate(gen(model, cache_implementation="static"), n, a.repeats)
    rows.append(("PyTorch, ours: generate(), static cache", rate, toks, None))
    from transformers import CompileConfig

    compiled = CompileConfig(fullgraph=True)
    compiled._compile_all_devices = True  # generate() compiles the decode step on CUDA only unless told
    rate, toks = best_rate(gen(model, cache_implementation="static", compile_config=compiled), n, a.repeats)
    rows.append(("PyTorch, ours: generate(), static cache + torch.compile", rate, toks, None))
    from tiny_decoder.engine import Engine

    runs = {}  # the compiled Engine's and llama.cpp f32's calls, for the paired rounds
    steps = out / "steps"  # the Engines' step store: empty at first, as on a fresh machine
    for name, compile in (
        ("Engine(model), nothing stored", "auto"),
        ("Engine(model, compile=True)", True),
        ("Engine(model, compile='aot')", "aot"),
        ("Engine(model), the step compile='aot' stored", "auto"),
    ):
        engine = Engine(model, compile=compile, cache_dir=steps)
        runs["engine"] = lambda engine=engine: engine.generate([prompt], n, eos_token_id=-1)[0]  # the last: stored
        rate, toks = best_rate(runs["engine"], n, a.repeats)
        rows.append((f"PyTorch, ours: {name}, the package's decode engine", rate, toks, None))
    rate, toks = best_rate(gen(llama), n, a.repeats)
    rows.append(("transformers LlamaForCausalLM (--format llama)", rate, toks, size_mb(out / "llama" / "model.safetensors")))
    rate, toks = best_rate(lambda: greedy_decode(session, info, prompt, n, stop_at_eos=False), n, a.repeats)
    rows.append(("ONNX Runtime, greedy loop with KV cache (--format onnx)", rate, toks, size_mb(out / "onnx")))
    try:
        from llama_cpp import Llama
    except ImportError:
        Llama = None
    for t in ("f32", "f16", "q8_0"):
        path = out / f"model-{t}.gguf"
        if Llama is None:
            rows.append((f"llama.cpp, GGUF {t} (llama-cpp-python not installed)", None, None, size_mb(path)))
            continue
        llm = Llama(
            model_path=str(path), n_ctx=model.config.max_position_embeddings, verbose=False, n_threads=torch.get_num_threads()
        )

        def run(llm=llm):
            llm.reset()
            toks = []
            for token in llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0, reset=True):
                toks.append(token)
                if len(toks) == n:
                    break
            return toks

        rate, toks = best_rate(run, n, a.repeats)
        rows.append((f"llama.cpp, GGUF {t} (llama-cpp-python)", rate, toks, size_mb(path)))
        if t == "f32":
            runs["llama.cpp"] = run

    print(
        f"{a.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; prompt {a.prompt!r} "
        f"({len(prompt)} tokens), {n} new tokens, greedy, batch 1, best of {a.repeats} after a warm-up, "
        f"{torch.get_num_threads()} threads\n"
    )
    print("| runtime | tokens/s | vs PyTorch generate() | same tokens as PyTorch | file size, MB |")
    print("|---|---|---|---|---|")
    for name, rate, toks, mb in rows:
        same = (
            ""
            if toks is None
            else (
                "yes"
                if toks == ref
                else f"first {next((i for i, (x, y) in enumerate(zip(toks, ref)) if x != y), len(ref))} of {n}"
            )
        )
        print(
            f"| {name} | {'' if rate is None else f'{rate:,.0f}'} | {'' if rate is None else f'{rate / ref_rate:.2f}x'} | "
            f"{same} | {'' if mb is None else f'{mb:.2f}'} |"
        )
    if "llama.cpp" in runs:
        print(paired(runs["engine"], runs["llama.cpp"], n, a.rounds))
    return rows


def paired(engine_run, llamacpp_run, new_tokens: int, rounds: int) -> str:
    """The Engine's AOTInductor step (by default, once stored) against llama.cpp f32, one call each per round, back to back (their order alternating):
    this CPU's speed drifts over seconds to minutes (llama.cpp's best-of row moved ~1.45x between runs), which
    cancels in each round's ratio; the median and range of the ratios say how the two compare."""
    import time

    ratios, rates = [], {"engine": [], "llama.cpp": []}
    for r in range(rounds):
        timed = {}
        for name, fn in (("engine", engine_run), ("llama.cpp", llamacpp_run))[:: 1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            fn()
            timed[name] = time.perf_counter() - start
            rates[name].append(new_tokens / timed[name])
        ratios.append(timed["llama.cpp"] / timed["engine"])
    ratios.sort()
    median = {name: sorted(v)[len(v) // 2] for name, v in rates.items()}
    return (
        f"\nEngine (AOTInductor's step) / llama.cpp f32, tokens/s per paired round ({rounds} rounds): median {ratios[len(ratios) // 2]:.2f}x, "
        f"range {ratios[0]:.2f}-{ratios[-1]:.2f}x; median tokens/s: Engine {median['engine']:,.0f}, "
        f"llama.cpp {median['llama.cpp']:,.0f}"
    )


if __name__ == "__main__":
    main()
