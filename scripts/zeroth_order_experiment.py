"""Zeroth-order (SPSA/MeZO) against AdamW backprop: fine-tuning a trained model and training from scratch.

    python scripts/zeroth_order_experiment.py --base_model runs/tiny --dataset_path ../shared/data/tinystories
    python scripts/zeroth_order_experiment.py ... --budget 4      # 4x the steps of every arm (a GPU)

Four runs of the package's own training loop on TinyStories, same data, seed, batch and schedule shape:
- fine-tune: `base_model` (e.g. `make train`'s) pruned to half its parameters (`scripts/prune.py`, as `make
  distill` does), then recovered by training; AdamW vs zeroth-order. (A trained model fine-tuned on more of
  the same stories, or on the SFT set, has too little to gain in a few hundred steps for either optimizer.)
- scratch: the `nano` preset from a fresh initialisation; AdamW vs zeroth-order.
Then a table (validation loss, forward passes, wall-clock, and how many forward passes zeroth-order needed
to reach the loss AdamW had after its K steps), the peak memory of one step of each kind against an
inference forward of the same batch (bench/zeroth_order.py, separate processes), and curves of validation
loss against forward passes and against wall-clock: table.md, curves.png, results.json in --output_dir.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--use_cpu", "true", "--min_lr_ratio", "0", "--weight_decay", "0", "--num_samples", "1",
          "--max_new_tokens", "60", "--report_to", "none", "--seed", "0", "--overwrite_output_dir", "true",
          "--save_total_limit", "1"]
# (setting, arm): (steps at budget 1, evaluations, flags)
# Learning rates: the largest of a 3x grid that did not diverge in 100 steps (zeroth-order: 3e-4 recovering the
# pruned model, where 1e-3 diverged; 3e-3 from scratch, where 1e-2 diverged).
ARMS = {
    ("fine-tune", "adamw"): (100, 20, ["--learning_rate", "3e-3", "--warmup_steps", "10"]),
    ("fine-tune", "zeroth_order"): (1000, 10, ["--optim", "zeroth_order", "--learning_rate", "3e-4", "--warmup_steps", "0"]),
    ("scratch", "adamw"): (100, 20, ["--preset", "nano", "--learning_rate", "3e-3", "--warmup_steps", "10"]),
    ("scratch", "zeroth_order"): (1000, 10, ["--preset", "nano", "--optim", "zeroth_order", "--learning_rate", "3e-3",
                                             "--warmup_steps", "0"]),
}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base_model", default="runs/tiny", help="the trained model to fine-tune (`make train` writes runs/tiny)")
    p.add_argument("--dataset_path", default="../shared/data/tinystories", help="TinyStories folder (train/validation.jsonl)")
    p.add_argument("--output_dir", default="runs/zeroth-order")
    p.add_argument("--budget", type=float, default=1.0, help="scales every arm's steps")
    p.add_argument("--max_eval_batches", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=16, help="training and evaluation batch (and the memory rows')")
    p.add_argument("--block_size", type=int, default=256)
    p.add_argument("--settings", nargs="+", default=["fine-tune", "scratch"], choices=["fine-tune", "scratch"])
    return p.parse_args(argv)


def check_inputs(a):
    if "fine-tune" in a.settings and not (Path(a.base_model) / "config.json").is_file():
        raise SystemExit(f"error: --base_model {a.base_model} is not a saved model folder; run `make train` first "
                         f"(it writes runs/tiny), or pass another folder.")
    if a.dataset_path and not (Path(a.dataset_path) / "train.jsonl").is_file():  # "" = the Hub's TinyStories
        raise SystemExit(f"error: --dataset_path {a.dataset_path} has no train.jsonl; point it at a TinyStories folder.")


def run_arm(a, setting, arm, out: Path) -> Path:
    steps, evals, flags = ARMS[(setting, arm)]
    steps = max(2, round(steps * a.budget))
    folder = out / f"{setting}-{arm}"
    base = ["--model_name_or_path", str(out / "pruned")] if setting == "fine-tune" else ["--vocab_size", "4096"]
    every = max(1, steps // evals)
    shape = ["--per_device_train_batch_size", str(a.batch_size), "--per_device_eval_batch_size", str(a.batch_size),
             "--block_size", str(a.block_size)]
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), *COMMON, *shape, "--dataset_path", a.dataset_path, *base, *flags,
           "--max_steps", str(steps), "--eval_steps", str(every), "--save_steps", str(steps), "--logging_steps",
           str(max(1, every // 2)), "--max_eval_batches", str(a.max_eval_batches), "--output_dir", str(folder)]
    print(f"\n=== {setting} / {arm}: {steps} steps\n{' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True)
    return folder


def curve(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "eval_loss" in r]


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
        text += (f"; not AdamW's {missed['eval_loss']:.3f} after K = {missed['step']} within its "
                 f"{zo[-1]['forward_passes']:,} forward passes (it ended at {zo[-1]['eval_loss']:.3f})")
    return text + ". An AdamW step is one forward and one backward."


def memory_rows(setting, out: Path, a) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    import zeroth_order as bench

    shape = f"--config_name={out / 'pruned'}" if setting == "fine-tune" else "--preset=nano"
    argv = [shape, "--vocab_size=4096", f"--batch_size={a.batch_size}", f"--block_size={a.block_size}", "--repeats=3",
            "--device=cpu"]
    return {m: bench.run_child(m, argv) for m in ("inference", "zeroth_order", "adamw")}


def plot(results: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: dict) -> str:
    lines = ["| setting | optimizer | steps | forward passes | wall-clock, min | val loss, first eval | val loss, end | "
             "step memory above the model, MiB (inference = 1) |", "|---|---|---|---|---|---|---|---|"]
    notes = []
    for setting, res in results.items():
        mem = res["memory"]
        infer = mem["inference"]["peak_mib"]
        for arm, rows in res["curves"].items():
            m = mem[arm]["peak_mib"]
            lines.append(f"| {setting} | {arm} | {rows[-1]['step']} | {rows[-1]['forward_passes']:,} | "
                         f"{rows[-1]['elapsed_s'] / 60:.1f} | {rows[0]['eval_loss']:.3f} | {rows[-1]['eval_loss']:.3f} | "
                         f"{m:.0f} ({m / infer:.2f}x) |")
        adamw, zo = res["curves"]["adamw"], res["curves"]["zeroth_order"]
        notes.append(f"- {setting}: " + match_summary(adamw, zo))
        lines.append(f"| {setting} | inference forward (reference) | | | | | | {infer:.0f} (1.00x) |")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def main(argv=None):
    a = parse(sys.argv[1:] if argv is None else argv)
    check_inputs(a)
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "fine-tune" in a.settings and not (out / "pruned" / "model.safetensors").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "prune.py"), "--model_name_or_path", a.base_model,
                        "--target_params", "50%", "--dataset_path", a.dataset_path, "--output_dir", str(out / "pruned"),
                        "--overwrite_output_dir", "true"], check=True)
    results = {}
    for setting in a.settings:
        curves = {arm: curve(run_arm(a, setting, arm, out)) for arm in ("adamw", "zeroth_order")}
        results[setting] = {"curves": curves, "memory": memory_rows(setting, out, a)}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "curves.png")
    text = table(results)
    (out / "table.md").write_text(text)
    print("\n" + text + f"\nwritten: {out / 'table.md'}, {out / 'curves.png'}, {out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
