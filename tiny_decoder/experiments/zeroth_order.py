"""Zeroth-order (SPSA/MeZO) against AdamW backprop: fine-tuning a trained model and training from scratch.

Four runs of the package's own Trainer on TinyStories, same data, seed, batch and schedule shape:
- fine-tune: `base_model` (e.g. `make train`'s) pruned to half its parameters (`scripts/prune.py`, as `make
  distill` does), then recovered by training; AdamW vs zeroth-order. (A trained model fine-tuned on more of
  the same stories, or on the SFT set, has too little to gain in a few hundred steps for either optimizer.)
- scratch: the `nano` preset from a fresh initialisation; AdamW vs zeroth-order.
Then a table (validation loss, forward passes, wall-clock, and how many forward passes zeroth-order needed
to reach the loss AdamW had after its K steps), the peak memory of one step of each kind against an
inference forward of the same batch (experiments/memory.py, separate processes), and curves of validation
loss against forward passes and against wall-clock: table.md, curves.png, results.json in output_dir.
`scripts/zeroth_order_experiment.py` (`make zeroth-order`) is its command line.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..data import DataArguments
from ..pruning.run import PruneArguments, prune_folder
from .common import evaluations, pyplot, save_figure, train
from .memory import StepShape, measure_in_child

SETTINGS = ("fine-tune", "scratch")
COMMON = {
    "use_cpu": True,
    "min_lr_ratio": 0.0,
    "weight_decay": 0.0,
    "num_samples": 1,
    "max_new_tokens": 60,
    "report_to": "none",
    "seed": 0,
    "overwrite_output_dir": True,
    "save_total_limit": 1,
}
# (setting, arm): (steps at budget 1, evaluations, the arm's own Trainer arguments)
# Learning rates: the largest of a 3x grid that did not diverge in 100 steps (zeroth-order: 3e-4 recovering the
# pruned model, where 1e-3 diverged; 3e-3 from scratch, where 1e-2 diverged).
ARMS = {
    ("fine-tune", "adamw"): (100, 20, {"learning_rate": 3e-3, "warmup_steps": 10}),
    ("fine-tune", "zeroth_order"): (1000, 10, {"optim": "zeroth_order", "learning_rate": 3e-4, "warmup_steps": 0}),
    ("scratch", "adamw"): (100, 20, {"preset": "nano", "learning_rate": 3e-3, "warmup_steps": 10}),
    ("scratch", "zeroth_order"): (
        1000,
        10,
        {"preset": "nano", "optim": "zeroth_order", "learning_rate": 3e-3, "warmup_steps": 0},
    ),
}


@dataclass
class ZerothOrderExperimentArguments:
    base_model: str = field(
        default="runs/tiny", metadata={"help": "The trained model to fine-tune (`make train` writes runs/tiny)."}
    )
    dataset_path: str = field(
        default="../shared/data/tinystories", metadata={"help": "TinyStories folder (train/validation.jsonl)."}
    )
    output_dir: str = "runs/zeroth-order"
    budget: float = field(default=1.0, metadata={"help": "Scales every arm's steps."})
    max_eval_batches: int = 8
    batch_size: int = field(default=16, metadata={"help": "Training and evaluation batch (and the memory rows')."})
    block_size: int = 256
    settings: list[str] = field(default_factory=lambda: list(SETTINGS), metadata={"help": f"A subset of {list(SETTINGS)}."})

    def __post_init__(self):
        unknown = [s for s in self.settings if s not in SETTINGS]
        if unknown:
            raise ValueError(f"--settings {unknown}: choose from {list(SETTINGS)}.")
        if "fine-tune" in self.settings and not (Path(self.base_model) / "config.json").is_file():
            raise ValueError(
                f"--base_model {self.base_model} is not a saved model folder; run `make train` first "
                f"(it writes runs/tiny), or pass another folder."
            )
        if self.dataset_path and not (Path(self.dataset_path) / "train.jsonl").is_file():  # "" = the Hub's TinyStories
            raise ValueError(f"--dataset_path {self.dataset_path} has no train.jsonl; point it at a TinyStories folder.")
        if not self.budget > 0:
            raise ValueError(f"--budget {self.budget} must be > 0.")


def run(a: ZerothOrderExperimentArguments) -> dict:
    """Prune the base model (once), train every arm, measure step memory; write the table, curves and results."""
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "fine-tune" in a.settings and not (out / "pruned" / "model.safetensors").exists():
        prune_folder(
            PruneArguments(
                model_name_or_path=a.base_model, target_params="50%", output_dir=str(out / "pruned"), overwrite_output_dir=True
            ),
            DataArguments(dataset_path=a.dataset_path),
            command=f"prune {a.base_model} to 50% (tiny_decoder.experiments.zeroth_order)",
        )
    results = {}
    for setting in a.settings:
        curves = {arm: evaluations(run_arm(a, setting, arm, out)) for arm in ("adamw", "zeroth_order")}
        results[setting] = {"curves": curves, "memory": memory_rows(setting, out, a)}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "curves.png")
    text = table(results)
    (out / "table.md").write_text(text)
    print("\n" + text + f"\nwritten: {out / 'table.md'}, {out / 'curves.png'}, {out / 'results.json'}")
    return results


def run_arm(a, setting: str, arm: str, out: Path) -> Path:
    steps, evals, own = ARMS[(setting, arm)]
    steps = max(2, round(steps * a.budget))
    every = max(1, steps // evals)
    start = {"model_name_or_path": str(out / "pruned")} if setting == "fine-tune" else {"vocab_size": 4096}
    values = {
        **COMMON,
        "per_device_train_batch_size": a.batch_size,
        "per_device_eval_batch_size": a.batch_size,
        "block_size": a.block_size,
        "dataset_path": a.dataset_path,
        **start,
        **own,
        "max_steps": steps,
        "eval_steps": every,
        "save_steps": steps,
        "logging_steps": max(1, every // 2),
        "max_eval_batches": a.max_eval_batches,
        "output_dir": str(out / f"{setting}-{arm}"),
    }
    return train(values, f"{setting} / {arm}: {steps} steps")


def memory_rows(setting: str, out: Path, a) -> dict:
    shape = StepShape(
        config_name=str(out / "pruned") if setting == "fine-tune" else None,
        preset="nano",
        vocab_size=4096,
        batch_size=a.batch_size,
        block_size=a.block_size,
        repeats=3,
        device="cpu",
    )
    return {m: measure_in_child(m, shape) for m in ("inference", "zeroth_order", "adamw")}


def forwards_to_match(zo: list[dict], target: float):
    """Forward passes of the first zeroth-order evaluation at or below `target` (None: not reached)."""
    return next((r["forward_passes"] for r in zo if r["eval_loss"] <= target), None)


def match_summary(adamw: list[dict], zo: list[dict]) -> str:
    """How far zeroth-order got in AdamW's curve: the forward passes it needed for AdamW's K-step loss."""
    matched, missed = [], None
    for row in adamw:
        n = forwards_to_match(zo, row["eval_loss"])
        if n is None:
            missed = row
            break
        matched.append(f"K = {row['step']} ({row['eval_loss']:.3f}): {n:,} forward passes ({n / row['step']:.0f}x)")
    text = "zeroth-order matched AdamW's validation loss after K steps for " + ("; ".join(matched) if matched else "no K")
    if missed is not None:
        text += (
            f"; not AdamW's {missed['eval_loss']:.3f} after K = {missed['step']} within its "
            f"{zo[-1]['forward_passes']:,} forward passes (it ended at {zo[-1]['eval_loss']:.3f})"
        )
    return text + ". An AdamW step is one forward and one backward."


def plot(results: dict, path: Path):
    plt = pyplot()
    settings = list(results)
    fig, axes = plt.subplots(len(settings), 2, figsize=(11, 4 * len(settings)), squeeze=False)
    for row, setting in zip(axes, settings):
        for arm, rows in results[setting]["curves"].items():
            row[0].plot([r["forward_passes"] for r in rows], [r["eval_loss"] for r in rows], marker="o", label=arm)
            row[1].plot([r["elapsed_s"] / 60 for r in rows], [r["eval_loss"] for r in rows], marker="o", label=arm)
        row[0].set_xlabel("forward passes (batches)")
        row[1].set_xlabel("wall-clock, minutes")
        for ax in row:
            ax.set_ylabel("validation loss")
            ax.set_title(setting)
            ax.grid(alpha=0.3)
            ax.legend()
    save_figure(fig, path)


def table(results: dict) -> str:
    lines = [
        "| setting | optimizer | steps | forward passes | wall-clock, min | val loss, first eval | val loss, end | "
        "step memory above the model, MiB (inference = 1) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for setting, res in results.items():
        mem = res["memory"]
        infer = mem["inference"]["peak_mib"]
        for arm, rows in res["curves"].items():
            m = mem[arm]["peak_mib"]
            lines.append(
                f"| {setting} | {arm} | {rows[-1]['step']} | {rows[-1]['forward_passes']:,} | "
                f"{rows[-1]['elapsed_s'] / 60:.1f} | {rows[0]['eval_loss']:.3f} | {rows[-1]['eval_loss']:.3f} | "
                f"{m:.0f} ({m / infer:.2f}x) |"
            )
        adamw, zo = res["curves"]["adamw"], res["curves"]["zeroth_order"]
        notes.append(f"- {setting}: " + match_summary(adamw, zo))
        lines.append(f"| {setting} | inference forward (reference) | | | | | | {infer:.0f} (1.00x) |")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
