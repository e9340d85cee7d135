"""Distil a teacher into a student with the training loop of scripts/train.py.

    python scripts/distill.py --teacher_name_or_path runs/tiny --model_name_or_path runs/pruned \
        --dataset_path ../shared/data/tinystories --alpha 1.0 --output_dir runs/distilled
    python scripts/distill.py configs/distill_cpu.json            # arguments from a JSON/YAML file

The student is a preset (`--preset`), a config (`--config_name`) or weights (`--model_name_or_path`,
e.g. a pruned model); it uses the teacher's tokenizer unless told otherwise. Every argument of
scripts/train.py works here; `--help` lists them, with the distillation ones.
"""

from tiny_decoder.cli import run_command
from tiny_decoder.commands import run_training
from tiny_decoder.training.objectives.distillation import DistillationArguments, DistillationObjective


def distillation_objective(model_args, data_args, tok_args, train_args, kd_args):
    if not tok_args.tokenizer_name and not model_args.model_name_or_path:
        tok_args.tokenizer_name = kd_args.teacher_name_or_path  # a fresh student speaks the teacher's tokens
    return DistillationObjective.from_args(kd_args)


def main(argv=None):
    return run_training("distill", argv, extra_types=(DistillationArguments,), objective=distillation_objective)


if __name__ == "__main__":
    run_command(main)
