"""Supervised fine-tuning: turn a trained tiny-decoder into a model that follows instructions.

    python scripts/build_instructions.py --dataset_path ../shared/data/tinystories --output_dir runs/instruct
    python scripts/sft.py --model_name_or_path runs/tiny --dataset_path runs/instruct --output_dir runs/tiny-sft
    python scripts/sft.py configs/sft_cpu.json                    # what `make sft` runs

Data: chat JSONL ({"messages": [...]} or {"prompt", "completion"}). Every argument of
scripts/train.py works here (same loop, checkpoints, resume, logs, card); `--help` lists them.
"""

from tiny_decoder.cli import run_command
from tiny_decoder.commands import run_training
from tiny_decoder.training.objectives.sft import SFTObjective


def sft_objective(model_args, *_):
    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required: the trained model to fine-tune (e.g. runs/tiny).")
    return SFTObjective()


def main(argv=None):
    return run_training("sft", argv, objective=sft_objective)


if __name__ == "__main__":
    run_command(main)
