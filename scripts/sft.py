"""Supervised fine-tuning: turn a trained tiny-decoder into a model that follows instructions.

    python scripts/build_instructions.py --dataset_path ../shared/data/tinystories --output_dir runs/instruct
    python scripts/sft.py --model_name_or_path runs/tiny --dataset_path runs/instruct --output_dir runs/tiny-sft
    python scripts/sft.py configs/sft_cpu.json                    # what `make sft` runs

Data: chat JSONL ({"messages": [...]} or {"prompt", "completion"}). Every argument of
scripts/train.py works here (same loop, checkpoints, resume, logs, card); `--help` lists them.
"""

import shlex
import sys

from tiny_decoder.cli import parse_args, run_command
from tiny_decoder.data import DataArguments
from tiny_decoder.data.tokenizer import TokenizerArguments
from tiny_decoder.training import ModelArguments, TrainArguments, Trainer
from tiny_decoder.training.objectives.sft import SFTObjective


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, tok_args, train_args = parse_args(
        (ModelArguments, DataArguments, TokenizerArguments, TrainArguments), argv
    )
    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required: the trained model to fine-tune (e.g. runs/tiny).")
    trainer = Trainer(
        model_args, data_args, tok_args, train_args, objective=SFTObjective(), command="python scripts/sft.py " + shlex.join(argv)
    )
    return trainer.train()


if __name__ == "__main__":
    run_command(main)
