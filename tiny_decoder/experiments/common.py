"""What every study shares: one run of the package's own Trainer from a dict of its arguments (the names
of scripts/train.py's flags, checked by the same parser), and reading a run's metrics back."""

import json
from pathlib import Path

from transformers import HfArgumentParser

from ..data import DataArguments
from ..data.tokenizer import TokenizerArguments
from ..training import ModelArguments, TrainArguments, Trainer

TRAIN_ARGUMENTS = (ModelArguments, DataArguments, TokenizerArguments, TrainArguments)


def train(values: dict, title: str) -> Path:
    """Train in this process with `values` (e.g. {"preset": "nano", "max_steps": 300, ...}); returns output_dir."""
    print(f"\n=== {title}: {json.dumps(values)}", flush=True)
    from accelerate.state import AcceleratorState

    parsed = HfArgumentParser(TRAIN_ARGUMENTS).parse_dict(values)  # unknown names and bad values fail here
    try:
        Trainer(*parsed, command=f"{title} (tiny_decoder.experiments)").train()
    finally:
        AcceleratorState._reset_state()  # the next run may use another precision (processes and devices stay)
    return Path(values["output_dir"])


def run_settings(config: str, dataset_path: str | None = None) -> dict:
    """A training argument file (e.g. configs/tiny_cpu.json) as a dict, its data folder replaced by `dataset_path`
    when given; exits with one line when that folder is missing."""
    import sys

    values = json.loads(Path(config).read_text())
    if dataset_path:
        values["dataset_path"] = dataset_path
    if not (Path(values["dataset_path"]).exists() or values["dataset_path"] == "hub"):
        sys.exit(f"error: no data at {values['dataset_path']!r}; pass --dataset_path (a folder with train/validation.jsonl)")
    return values


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]


def evaluations(folder: Path) -> list[dict]:
    """The run's validation records, in step order."""
    return [r for r in metrics(folder) if "eval_loss" in r]


def stored_parameters(folder: Path) -> int:
    """Parameters in the saved weights (a tied head is stored once)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(Path(folder) / "model.safetensors"), "pt") as f:
        for key in f.keys():
            n = 1
            for d in f.get_slice(key).get_shape():
                n *= d
            total += n
    return total


def save_figure(fig, path: Path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
