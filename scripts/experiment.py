"""One architecture switch at a time on TinyStories: every variant trained for the same tokens, seed and
schedule, then one table (parameters, validation loss, tokens/s, step memory, activation-norm spread) and
one loss-curve picture.

    python scripts/experiment.py --dataset_path ../shared/data/tinystories            # ~10 min on 2 CPU cores
    python scripts/experiment.py --budget 20 --preset small --device_flags "--mixed_precision bf16"   # a GPU
    python scripts/experiment.py --variants baseline sliding_window linear_attention  # a subset

Each variant is `scripts/train.py` with `--config_overrides` (so it is saved in config.json and loads
anywhere); the tokenizer is trained once and shared. Step memory is one AdamW step of the saved shape in
a separate process (bench/zeroth_order.py), the same batch for all. The early-exit variant is also
decoded token by token at several thresholds (loss, mean exit layer, tokens/s). Writes table.md,
curves.png and results.json into --output_dir.
"""

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: config overrides against the baseline (RoPE, RMSNorm, pre-norm, SwiGLU, MHA, full softmax)
    "baseline": "",
    "alibi": "position_embedding=alibi",
    "learned_positions": "position_embedding=learned",
    "sinusoidal": "position_embedding=sinusoidal",
    "no_positions": "position_embedding=none",
    "layernorm": "norm=layernorm",
    "post_norm": "norm_position=post",
    "gelu": "hidden_act=gelu",
    "gqa_2kv": "num_key_value_heads=2",
    "sliding_window": "sliding_window=32",
    "linear_attention": "attention_type=linear",
    "orthogonal_parallel": "residual=orthogonal_parallel",
    "early_exit_training": "early_exit_loss_weight=0.3,layer_dropout=0.1",
}
EXIT_THRESHOLDS = [1.0, 0.9, 0.7, 0.5, 0.3]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset_path", default="../shared/data/tinystories", help='TinyStories folder ("" = the Hub)')
    p.add_argument("--output_dir", default="runs/experiment")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--preset", default="nano")
    p.add_argument("--budget", type=float, default=1.0, help="scales the steps (300 at 1)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--block_size", type=int, default=128)
    p.add_argument("--vocab_size", type=int, default=2048)
    p.add_argument("--learning_rate", type=float, default=3e-3)
    p.add_argument("--max_eval_batches", type=int, default=8)
    p.add_argument("--device_flags", default="--use_cpu true", help="extra train.py flags for the device")
    return p.parse_args(argv)


def train(a, name: str, steps: int, out: Path) -> Path:
    folder = out / name
    # The baseline trains the tokenizer (always first, so never a stale one); every variant reuses it.
    tokenizer = ["--vocab_size", str(a.vocab_size)] if name == "baseline" else ["--tokenizer_name", str(out / "baseline")]
    overrides = VARIANTS[name]
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--preset", a.preset, "--dataset_path", a.dataset_path,
           *tokenizer, "--block_size", str(a.block_size), "--per_device_train_batch_size", str(a.batch_size),
           "--per_device_eval_batch_size", str(a.batch_size), "--max_steps", str(steps), "--learning_rate", str(a.learning_rate),
           "--warmup_steps", str(max(1, steps // 10)), "--min_lr_ratio", "0", "--eval_steps", str(max(1, steps // 6)),
           "--logging_steps", str(max(1, steps // 30)), "--save_steps", str(steps), "--save_total_limit", "1",
           "--max_eval_batches", str(a.max_eval_batches), "--log_activation_norms", "true", "--seed", "0",
           "--num_samples", "0", "--report_to", "none", "--overwrite_output_dir", "true", "--output_dir", str(folder),
           *(["--config_overrides", overrides] if overrides else []), *shlex.split(a.device_flags)]
    print(f"\n=== {name}: {overrides or 'baseline'}", flush=True)
    subprocess.run(cmd, check=True)
    return folder


def summarize(folder: Path) -> dict:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_loss" in r]
    speeds = [r["tokens_per_s"] for r in logged[1:]] or [r["tokens_per_s"] for r in logged]
    spread = [r["act_rms_spread"] for r in logged if "act_rms_spread" in r]
    last_norms = {k: v for k, v in (logged[-1] if logged else {}).items() if k.startswith("act_rms_") and k != "act_rms_spread"}
    return {"val_loss": evals[-1]["eval_loss"], "tokens_per_s": sum(speeds) / len(speeds),
            "act_rms_spread": spread[-1] if spread else None, "act_rms": last_norms,
            "curve": [(r["step"], r["eval_loss"]) for r in evals]}


def step_memory(folder: Path, a) -> float:
    sys.path.insert(0, str(ROOT / "bench"))
    import zeroth_order as bench

    argv = [f"--config_name={folder}", f"--batch_size={a.batch_size}", f"--block_size={a.block_size}", "--repeats=2",
            "--device=cpu" if "--use_cpu true" in a.device_flags else ""]
    return bench.run_child("adamw", [x for x in argv if x])["peak_mib"]


def early_exit_rows(folder: Path, a) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM

    from tiny_decoder.data import DataArguments, build_lm_datasets, load_raw_dataset
    from tiny_decoder.evaluation.early_exit import evaluate_early_exit
    from tiny_decoder.data.tokenizer import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = load_tokenizer(str(folder))
    data_args = DataArguments(dataset_path=a.dataset_path, block_size=a.block_size, max_eval_samples=64)
    blocks, _ = build_lm_datasets(data_args, tok, load_raw_dataset(data_args))
    seqs = [torch.tensor(blocks["validation"][i]["input_ids"]) for i in range(min(8, len(blocks["validation"])))]
    return evaluate_early_exit(model, seqs, EXIT_THRESHOLDS, prompt_tokens=1)


def plot(results: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab20").colors  # a colour each, for up to 20 variants
    for i, (name, r) in enumerate(results.items()):
        steps, losses = zip(*r["curve"])
        ax.plot(steps, losses, marker="o", ms=3, label=name, color=colors[i % len(colors)])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: dict, exits: list[dict] | None, a, steps: int) -> str:
    base = results.get("baseline")
    lines = [f"{a.preset} preset, {steps} steps x {a.batch_size} x {a.block_size} tokens, lr {a.learning_rate:g}, seed 0; "
             f"validation on {a.max_eval_batches} batches", "",
             "| variant | overrides | parameters | val loss | vs baseline | tokens/s | AdamW step memory, MiB | "
             "activation RMS per layer | spread (max/min) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        delta = f"{r['val_loss'] - base['val_loss']:+.3f}" if base and name != "baseline" else ""
        norms = " / ".join(f"{v:.2f}" for _, v in sorted(r["act_rms"].items(), key=lambda kv: int(kv[0].split("_")[-1])))
        spread = f"{r['act_rms_spread']:.2f}" if r["act_rms_spread"] is not None else ""
        lines.append(f"| {name} | {VARIANTS[name] or '-'} | {r['params']:,} | {r['val_loss']:.3f} | {delta} | "
                     f"{r['tokens_per_s']:,.0f} | {r['memory_mib']:.0f} | {norms} | {spread} |")
    text = "\n".join(lines) + "\n"
    if exits:
        text += ("\nEarly exit (the early_exit_training model, cached decoding token by token on validation blocks):\n\n"
                 "| threshold | loss | perplexity | mean exit layer | tokens/s |\n|---|---|---|---|---|\n")
        text += "".join(f"| {r['threshold']:g} | {r['loss']:.3f} | {r['perplexity']:.1f} | {r['mean_exit_layer']:.2f} | "
                        f"{r['tokens_per_s']:.0f} |\n" for r in exits)
    return text


def main(argv=None):
    a = parse(sys.argv[1:] if argv is None else argv)
    if a.dataset_path and not (Path(a.dataset_path) / "train.jsonl").is_file():
        raise SystemExit(f"error: --dataset_path {a.dataset_path} has no train.jsonl; point it at a TinyStories folder.")
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = max(2, round(300 * a.budget))
    names = ["baseline"] + [n for n in a.variants if n != "baseline"]  # the baseline trains the shared tokenizer
    results = {}
    for name in names:
        folder = train(a, name, steps, out)
        config = json.loads((folder / "config.json").read_text())
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), "pt") as f:  # the tied head is stored once
            params = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
        results[name] = {**summarize(folder), "params": params, "memory_mib": step_memory(folder, a),
                         "config": {k: config.get(k) for k in ("position_embedding", "norm", "attention_type")}}
    exits = early_exit_rows(out / "early_exit_training", a) if "early_exit_training" in results else None
    (out / "results.json").write_text(json.dumps({"variants": results, "early_exit": exits}, indent=1))
    plot(results, out / "curves.png")
    text = table(results, exits, a, steps)
    (out / "table.md").write_text(text)
    print("\n" + text + f"\nwritten: {out / 'table.md'}, {out / 'curves.png'}, {out / 'results.json'}")
    return results, exits


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    main()
