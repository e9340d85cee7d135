"""Train a tiny-decoder model on TinyStories (or any corpus) with accelerate.

    python scripts/train.py configs/tiny_cpu.json                 # arguments from a JSON/YAML file
    python scripts/train.py --preset nano --dataset_path DIR --max_steps 100 --output_dir runs/nano
    .venv/bin/accelerate launch scripts/train.py --preset small --mixed_precision bf16 ...   # GPUs, MPS

Arguments mirror transformers' TrainingArguments and run_clm.py; `--help` lists them all.
"""

import shlex
import sys

from tiny_decoder.cli import parse_args, run_command
from tiny_decoder.data import DataArguments
from tiny_decoder.data.tokenizer import TokenizerArguments
from tiny_decoder.training import ModelArguments, TrainArguments, Trainer


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, tok_args, train_args = parse_args(
        (ModelArguments, DataArguments, TokenizerArguments, TrainArguments), argv
    )
    trainer = Trainer(model_args, data_args, tok_args, train_args, command="python scripts/train.py " + shlex.join(argv))
    result = trainer.train()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()  # a clean exit under torchrun on CPU
    return result


if __name__ == "__main__":
    run_command(main)
