"""Today's recipe against the speedrun recipe: `make train`'s config trained twice in one run, on the same data and
machine, in the same time budget - once as it was (AdamW, cosine, GPT-2 init, no QK-norm, no average) and once with
the recipe's switches - then one table and one picture of both validation curves against wall-clock minutes.

The table: final validation loss, the minutes each run needed to first reach validation 3.0, 2.9 and 2.85 (from
metrics.jsonl's `elapsed_s` at each evaluation: the resolution is one --eval_steps), and training tokens/s. The runs
are sequential, in this process, through the package's Trainer; nothing else should run meanwhile (26 min on 2 CPU
cores at the config's 13-minute budget).

    python bench/recipe.py                                         # writes runs/recipe-bench/{table.md,curves.png}
    python bench/recipe.py --max_train_minutes 3 --eval_steps 100  # a quick look
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from tiny_decoder.experiments.common import evaluations, metrics, pyplot, run_settings, save_figure, train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The 2023 recipe, written out, so the comparison holds whatever configs/tiny_cpu.json adopts.
TODAY = {
    "optim": "adamw_torch",
    "lr_scheduler_type": "cosine",
    "ema_decay": None,
    "config_overrides": "embedding_dropout=0.1",
}
# The switches that won their rows beyond the seed spread in `scripts/experiment.py --seeds 0 1 2` (README) and
# that every export keeps: Muon and warmup-stable-decay. (Squared ReLU won too, but no other runtime runs it.)
RECIPE = {
    "optim": "muon",
    "lr_scheduler_type": "warmup_stable_decay",
    "ema_decay": None,
    "config_overrides": "embedding_dropout=0.1",
}
TARGETS = (3.0, 2.9, 2.85)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny_cpu.json"), help="the run's settings (make train's)")
    p.add_argument("--dataset_path", default=None, help="default: the config's")
    p.add_argument("--max_train_minutes", type=float, default=None, help="default: the config's")
    p.add_argument("--eval_steps", type=int, default=150, help="evaluation cadence: the time-to-target resolution")
    p.add_argument("--recipe", default=json.dumps(RECIPE), help="the second run's flags, as JSON")
    p.add_argument("--output_dir", default=str(ROOT / "runs" / "recipe-bench"))
    return p.parse_args(argv)


def minutes_to(evals: list[dict], target: float) -> float | None:
    return next((r["elapsed_s"] / 60 for r in evals if r["eval_loss"] <= target), None)


def main(argv=None):
    a = parse(argv)
    base = run_settings(a.config, a.dataset_path)
    base.update(eval_steps=a.eval_steps, save_steps=10**9, num_samples=0, report_to="none", overwrite_output_dir=True)
    if a.max_train_minutes:
        base["max_train_minutes"] = a.max_train_minutes
    out = Path(a.output_dir)
    runs = {"today": {**base, **TODAY}, "recipe": {**base, **json.loads(a.recipe)}}
    rows = {}
    for name, values in runs.items():
        folder = out / name
        train({**{k: v for k, v in values.items() if v is not None}, "output_dir": str(folder)}, f"recipe bench: {name}")
        evals = evaluations(folder)
        speeds = [r["tokens_per_s"] for r in metrics(folder) if "tokens_per_s" in r][1:]
        rows[name] = dict(
            final=evals[-1]["eval_loss"],
            steps=evals[-1]["step"],
            curve=[(r["elapsed_s"] / 60, r["eval_loss"]) for r in evals],
            to=[minutes_to(evals, t) for t in TARGETS],
            tokens_per_s=sum(speeds) / max(len(speeds), 1),
        )
    text = table(rows, runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    plot(rows, out / "curves.png")
    print("\n" + text + f"\nwritten: {out / 'table.md'}, {out / 'curves.png'}")
    return rows


def table(rows: dict, runs: dict) -> str:
    def show(m):
        return f"{m:.1f}" if m is not None else "not reached"

    lines = [
        f"`make train`'s config ({runs['today'].get('max_train_minutes')} min budget), evaluated every "
        f"{runs['today']['eval_steps']} steps; recipe flags: {json.dumps({k: v for k, v in runs['recipe'].items() if runs['today'].get(k) != v and k != 'output_dir'})}",
        "",
        "| run | steps | final validation | " + " | ".join(f"min to {t:g}" for t in TARGETS) + " | tokens/s |",
        "|---|---|---|" + "---|" * len(TARGETS) + "---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['steps']} | {r['final']:.4f} | "
            + " | ".join(show(m) for m in r["to"])
            + f" | {r['tokens_per_s']:,.0f} |"
        )
    today, recipe = rows["today"]["to"], rows["recipe"]["to"]
    ratios = [f"{b / a:.2f}x" if a and b else "-" for a, b in zip(today, recipe)]
    lines.append(f"| recipe / today | | {rows['recipe']['final'] - rows['today']['final']:+.4f} | " + " | ".join(ratios) + " | |")
    return "\n".join(lines) + "\n"


def plot(rows: dict, path: Path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in rows.items():
        ax.plot(*zip(*r["curve"]), marker="o", ms=3, label=name)
    for t in TARGETS:
        ax.axhline(t, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("wall-clock minutes")
    ax.set_ylabel("validation loss")
    ax.set_ylim(top=min(4.5, max(max(loss for _, loss in r["curve"]) for r in rows.values())))
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
