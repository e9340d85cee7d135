"""fp32 against bf16 autocast: the same run (preset, data, steps, seed) in each precision, and what each reached.

`--mixed_precision auto` keeps bf16 where it is faster; this shows what that costs in quality: the validation
loss of both runs after the same steps (the issue's bar: within 0.02), with each run's training speed and the
share of its precision's measured matmul rate. Runs are sequential, in this process, through the package's
Trainer; nothing else should run meanwhile.

    python bench/precision.py                                   # `tiny` preset, make train's data and shape, 600 steps
    python bench/precision.py --max_steps 2400 --torch_compile true
"""

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from tiny_decoder.experiments.common import evaluations, metrics, run_settings, train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny_cpu.json"), help="the run's settings (make train's)")
    p.add_argument("--dataset_path", default=None, help="default: the config's")
    p.add_argument("--max_steps", type=int, default=600)
    p.add_argument("--eval_steps", type=int, default=200)
    p.add_argument("--torch_compile", default="false", choices=["true", "false"])
    p.add_argument("--precisions", nargs="+", default=["no", "bf16"], choices=["no", "bf16", "fp16"])
    p.add_argument("--output_dir", default=None, help="where the runs go (default: a temporary folder)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse(argv)
    base = run_settings(a.config, a.dataset_path)
    base.update(
        max_steps=a.max_steps,
        max_train_minutes=None,  # the same steps in both precisions, whatever their speed
        eval_steps=a.eval_steps,
        save_steps=a.max_steps,
        num_samples=0,
        torch_compile=a.torch_compile == "true",
        warmup_steps=min(base.get("warmup_steps", 100), a.max_steps // 10),
    )
    root = Path(a.output_dir or tempfile.mkdtemp(prefix="precision-bench-"))
    rows = {}
    for precision in a.precisions:
        out = root / precision
        train(
            {**base, "mixed_precision": precision, "output_dir": str(out), "overwrite_output_dir": True}, f"precision {precision}"
        )
        evals = evaluations(out)
        records = [r for r in metrics(out) if "mfu" in r][1:]  # the first window holds compilation and warm-up
        rows[precision] = dict(
            evals=[(r["step"], r["eval_loss"]) for r in evals],
            tokens_per_s=sum(r["tokens_per_s"] for r in records) / max(len(records), 1),
            mfu=sum(r["mfu"] for r in records) / max(len(records), 1),
        )
    names = {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}
    ref = rows[a.precisions[0]]
    print(
        f"\n{base['preset']} preset, {a.max_steps} steps of {base['per_device_train_batch_size']} x {base['block_size']}, seed "
        f"{base.get('seed', 42)}, compile {a.torch_compile}; validation loss at each evaluation; runs in {root}"
    )
    steps = [s for s, _ in ref["evals"]]
    print(
        "| precision | tokens/s | % of its matmul rate | " + " | ".join(f"val @ {s}" for s in steps) + " | final - first row's |"
    )
    print("|---|---|---|" + "---|" * len(steps) + "---|")
    for precision, row in rows.items():
        losses = [loss for _, loss in row["evals"]]
        print(
            f"| {names[precision]} | {row['tokens_per_s']:,.0f} | {row['mfu']:.1%} | "
            + " | ".join(f"{v:.4f}" for v in losses)
            + f" | {losses[-1] - ref['evals'][-1][1]:+.4f} |"
        )


if __name__ == "__main__":
    main()
