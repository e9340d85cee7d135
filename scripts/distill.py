"""Distil a teacher into a student with the training loop of scripts/train.py.

    python scripts/distill.py --teacher_name_or_path runs/tiny --model_name_or_path runs/pruned \
        --dataset_path ../shared/data/tinystories --alpha 1.0 --output_dir runs/distilled
    python scripts/distill.py configs/distill_cpu.json            # arguments from a JSON/YAML file

The student is a preset (`--preset`), a config (`--config_name`) or weights (`--model_name_or_path`,
e.g. a pruned model); it uses the teacher's tokenizer unless told otherwise. Every argument of
scripts/train.py works here; `--help` lists them, with the distillation ones.
"""

import shlex
import sys

from tiny_decoder.cli import parse_args, run_command
from tiny_decoder.data import DataArguments
from tiny_decoder.data.tokenizer import TokenizerArguments
from tiny_decoder.training import ModelArguments, TrainArguments, Trainer
from tiny_decoder.training.objectives.distillation import DistillationArguments, DistillationObjective


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, tok_args, train_args, kd_args = parse_args(
        (ModelArguments, DataArguments, TokenizerArguments, TrainArguments, DistillationArguments), argv
    )
    if not tok_args.tokenizer_name and not model_args.model_name_or_path:
        tok_args.tokenizer_name = kd_args.teacher_name_or_path  # a fresh student speaks the teacher's tokens
    objective = DistillationObjective.from_args(kd_args)
    trainer = Trainer(
        model_args, data_args, tok_args, train_args, objective=objective, command="python scripts/distill.py " + shlex.join(argv)
    )
    result = trainer.train()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    run_command(main)
