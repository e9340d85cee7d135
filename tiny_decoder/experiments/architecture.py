"""One architecture (or training-recipe) switch at a time on TinyStories: every variant trained for the same tokens,
seed and schedule, then one table (parameters, validation loss, tokens/s, step memory, activation-norm spread) and
one loss-curve picture. `scripts/experiment.py` (`make experiment`) is its command line.

Each variant is the Trainer with `config_overrides` (so it is saved in config.json and loads anywhere); the
tokenizer is trained once, by the baseline, and shared. Step memory is one AdamW step of the saved shape in
a separate process (experiments/memory.py), the same batch for all. The early-exit variant is also decoded
token by token at several thresholds (loss, mean exit layer, tokens/s). Writes table.md, curves.png and
results.json into output_dir.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from .common import evaluations, metrics, pyplot, save_figure, stored_parameters, train
from .memory import StepShape, measure_in_child

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
    # the speedrun recipe's architecture switches (modded-nanogpt, nanochat)
    "qk_norm": "qk_norm=true",
    "relu2": "hidden_act=relu2",
    "softcap": "final_logit_softcapping=30",
    "zero_init": "zero_init_output_projections=true",
}
TRAINING_VARIANTS = {  # name: Trainer arguments against the baseline's (AdamW, cosine, no average)
    "muon": {"optim": "muon"},
    "wsd": {"lr_scheduler_type": "warmup_stable_decay"},
    "ema": {"ema_decay": 0.99},
}
ALL_VARIANTS = [*VARIANTS, *TRAINING_VARIANTS]
EXIT_THRESHOLDS = [1.0, 0.9, 0.7, 0.5, 0.3]
STEPS = 300  # at budget 1


@dataclass
class ArchitectureExperimentArguments:
    dataset_path: str = field(default="../shared/data/tinystories", metadata={"help": 'TinyStories folder ("" = the Hub).'})
    output_dir: str = "runs/experiment"
    variants: list[str] = field(default_factory=lambda: list(ALL_VARIANTS), metadata={"help": f"A subset of {ALL_VARIANTS}."})
    preset: str = "nano"
    budget: float = field(default=1.0, metadata={"help": f"Scales the steps ({STEPS} at 1)."})
    batch_size: int = 16
    block_size: int = 128
    vocab_size: int = 2048
    learning_rate: float = 3e-3
    max_eval_batches: int = 8
    seeds: list[int] = field(
        default_factory=lambda: [0],
        metadata={"help": "Seeds to train every variant with; the table shows the mean validation loss and each seed's."},
    )
    use_cpu: bool = field(default=True, metadata={"help": "false: accelerate's device (a GPU)."})
    mixed_precision: str = field(
        default="no", metadata={"help": "'no', 'bf16', 'fp16' or 'auto' (the faster on this machine, timed per run)."}
    )

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in ALL_VARIANTS]
        if unknown:
            raise ValueError(f"--variants {unknown}: not variants; choose from {ALL_VARIANTS}.")
        if self.dataset_path and not (Path(self.dataset_path) / "train.jsonl").is_file():
            raise ValueError(f"--dataset_path {self.dataset_path} has no train.jsonl; point it at a TinyStories folder.")
        if not self.budget > 0:
            raise ValueError(f"--budget {self.budget} must be > 0.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"--seeds {self.seeds}: give one or more different seeds >= 0.")


def run(a: ArchitectureExperimentArguments) -> tuple[dict, list[dict] | None]:
    """Train every variant (the baseline first: it trains the shared tokenizer), then write the table, curves, results."""
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = max(2, round(STEPS * a.budget))
    names = ["baseline"] + [n for n in a.variants if n != "baseline"]
    results = {}
    for name in names:
        folder = train(train_values(a, name, steps, out), name)  # the first seed: curves, norms, speed, memory
        losses = [summarize(folder)["val_loss"]]
        for seed in a.seeds[1:]:
            values = {**train_values(a, name, steps, out), "seed": seed, "output_dir": str(out / f"{name}-seed{seed}")}
            losses.append(summarize(train(values, f"{name}, seed {seed}"))["val_loss"])
        config = json.loads((folder / "config.json").read_text())
        results[name] = {
            **summarize(folder),
            "val_loss": sum(losses) / len(losses),
            "val_losses": losses,
            "params": stored_parameters(folder),
            "memory_mib": step_memory(folder, a),
            "config": {k: config.get(k) for k in ("position_embedding", "norm", "attention_type")},
        }
    exits = early_exit_rows(out / "early_exit_training", a) if "early_exit_training" in results else None
    (out / "results.json").write_text(json.dumps({"variants": results, "early_exit": exits}, indent=1))
    plot(results, out / "curves.png")
    text = table(results, exits, a, steps)
    (out / "table.md").write_text(text)
    print("\n" + text + f"\nwritten: {out / 'table.md'}, {out / 'curves.png'}, {out / 'results.json'}")
    return results, exits


def train_values(a, name: str, steps: int, out: Path) -> dict:
    """The Trainer's arguments for one variant: the same tokens, seed and schedule for all."""
    tokenizer = {"vocab_size": a.vocab_size} if name == "baseline" else {"tokenizer_name": str(out / "baseline")}
    overrides = {"config_overrides": VARIANTS[name]} if VARIANTS.get(name) else dict(TRAINING_VARIANTS.get(name, {}))
    return {
        "preset": a.preset,
        "dataset_path": a.dataset_path,
        **tokenizer,
        "block_size": a.block_size,
        "per_device_train_batch_size": a.batch_size,
        "per_device_eval_batch_size": a.batch_size,
        "max_steps": steps,
        "learning_rate": a.learning_rate,
        "warmup_steps": max(1, steps // 10),
        "min_lr_ratio": 0.0,
        "eval_steps": max(1, steps // 6),
        "logging_steps": max(1, steps // 30),
        "save_steps": steps,
        "save_total_limit": 1,
        "max_eval_batches": a.max_eval_batches,
        "log_activation_norms": True,
        "seed": a.seeds[0],
        "num_samples": 0,
        "report_to": "none",
        "overwrite_output_dir": True,
        "output_dir": str(out / name),
        "use_cpu": a.use_cpu,
        "mixed_precision": a.mixed_precision,
        **overrides,
    }


def summarize(folder: Path) -> dict:
    logged = [r for r in metrics(folder) if "loss" in r]
    evals = evaluations(folder)
    speeds = [r["tokens_per_s"] for r in logged[1:]] or [r["tokens_per_s"] for r in logged]
    spread = [r["act_rms_spread"] for r in logged if "act_rms_spread" in r]
    last_norms = {k: v for k, v in (logged[-1] if logged else {}).items() if k.startswith("act_rms_") and k != "act_rms_spread"}
    return {
        "val_loss": evals[-1].get("eval_loss_ema", evals[-1]["eval_loss"]),  # the saved model's (the average's, with one)
        "tokens_per_s": sum(speeds) / len(speeds),
        "act_rms_spread": spread[-1] if spread else None,
        "act_rms": last_norms,
        "curve": [(r["step"], r["eval_loss"]) for r in evals],
    }


def step_memory(folder: Path, a) -> float:
    import torch

    device = "cpu" if a.use_cpu or not torch.cuda.is_available() else "cuda"
    shape = StepShape(config_name=str(folder), batch_size=a.batch_size, block_size=a.block_size, repeats=2, device=device)
    return measure_in_child("adamw", shape)["peak_mib"]


def early_exit_rows(folder: Path, a) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM

    from ..data import DataArguments, build_lm_datasets, load_raw_dataset
    from ..data.tokenizer import load_tokenizer
    from ..evaluation.early_exit import evaluate_early_exit

    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = load_tokenizer(str(folder))
    data_args = DataArguments(dataset_path=a.dataset_path, block_size=a.block_size, max_eval_samples=64)
    blocks, _ = build_lm_datasets(data_args, tok, load_raw_dataset(data_args))
    seqs = [torch.tensor(blocks["validation"][i]["input_ids"]) for i in range(min(8, len(blocks["validation"])))]
    return evaluate_early_exit(model, seqs, EXIT_THRESHOLDS, prompt_tokens=1)


def overrides_text(name: str) -> str:
    if VARIANTS.get(name):
        return VARIANTS[name]
    return " ".join(f"--{k} {v}" for k, v in TRAINING_VARIANTS.get(name, {}).items()) or "-"


def plot(results: dict, path: Path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab20").colors  # a colour each, for up to 20 variants
    for i, (name, r) in enumerate(results.items()):
        steps, losses = zip(*r["curve"])
        ax.plot(steps, losses, marker="o", ms=3, label=name, color=colors[i % len(colors)])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    save_figure(fig, path)


def table(results: dict, exits: list[dict] | None, a, steps: int) -> str:
    base = results.get("baseline")
    lines = [
        f"{a.preset} preset, {steps} steps x {a.batch_size} x {a.block_size} tokens, lr {a.learning_rate:g}, "
        f"seed{'s' if len(a.seeds) > 1 else ''} {', '.join(map(str, a.seeds))}; validation on {a.max_eval_batches} batches"
        + ("; val loss is the mean over the seeds, the other columns are the first seed's" if len(a.seeds) > 1 else ""),
        "",
        "| variant | overrides | parameters | val loss | vs baseline | "
        + ("per seed | " if len(a.seeds) > 1 else "")
        + "tokens/s | AdamW step memory, MiB | activation RMS per layer | spread (max/min) |",
        "|---|---|---|---|---|" + ("---|" if len(a.seeds) > 1 else "") + "---|---|---|---|",
    ]
    for name, r in results.items():
        delta = f"{r['val_loss'] - base['val_loss']:+.3f}" if base and name != "baseline" else ""
        norms = " / ".join(f"{v:.2f}" for _, v in sorted(r["act_rms"].items(), key=lambda kv: int(kv[0].split("_")[-1])))
        spread = f"{r['act_rms_spread']:.2f}" if r["act_rms_spread"] is not None else ""
        per_seed = (" / ".join(f"{v:.3f}" for v in r["val_losses"]) + " | ") if len(a.seeds) > 1 else ""
        lines.append(
            f"| {name} | {overrides_text(name)} | {r['params']:,} | {r['val_loss']:.3f} | {delta} | {per_seed}"
            f"{r['tokens_per_s']:,.0f} | {r['memory_mib']:.0f} | {norms} | {spread} |"
        )
    text = "\n".join(lines) + "\n"
    if exits:
        text += (
            "\nEarly exit (the early_exit_training model, cached decoding token by token on validation blocks):\n\n"
            "| threshold | loss | perplexity | mean exit layer | tokens/s |\n|---|---|---|---|---|\n"
        )
        text += "".join(
            f"| {r['threshold']:g} | {r['loss']:.3f} | {r['perplexity']:.1f} | {r['mean_exit_layer']:.2f} | "
            f"{r['tokens_per_s']:.0f} |\n"
            for r in exits
        )
    return text
