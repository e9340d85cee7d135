"""Train a tiny-decoder model on TinyStories (or any corpus) with accelerate.

    python scripts/train.py configs/tiny_cpu.json                 # arguments from a JSON/YAML file
    python scripts/train.py --preset nano --dataset_path DIR --max_steps 100 --output_dir runs/nano
    .venv/bin/accelerate launch scripts/train.py --preset small --mixed_precision bf16 ...   # GPUs, MPS

Arguments mirror transformers' TrainingArguments and run_clm.py; `--help` lists them all.
"""

from tiny_decoder.cli import run_command
from tiny_decoder.commands import run_training


def main(argv=None):
    return run_training("train", argv)


if __name__ == "__main__":
    run_command(main)
