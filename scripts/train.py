"""Train a tiny-decoder model on TinyStories (or any corpus) with accelerate.

    python scripts/train.py configs/tiny_cpu.json                 # arguments from a JSON/YAML file
    python scripts/train.py --preset nano --dataset_path DIR --max_steps 100 --output_dir runs/nano
    accelerate launch scripts/train.py --preset small --mixed_precision bf16 ...   # GPUs, MPS

Arguments mirror transformers' TrainingArguments and run_clm.py; `--help` lists them all.
"""

import shlex
import sys

from transformers import HfArgumentParser

from tiny_decoder.data import DataArguments
from tiny_decoder.tokenizer import TokenizerArguments
from tiny_decoder.training import ModelArguments, TrainArguments, run_training


def parse(argv):
    parser = HfArgumentParser((ModelArguments, DataArguments, TokenizerArguments, TrainArguments))
    if argv and argv[0].endswith((".json", ".yaml", ".yml")):
        # A file first, then command-line flags that override it.
        loader = parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file
        base = loader(argv[0])
        if len(argv) == 1:
            return base
        import dataclasses

        parser.set_defaults(**{k: v for d in base for k, v in dataclasses.asdict(d).items()})
        return parser.parse_args_into_dataclasses(argv[1:])
    return parser.parse_args_into_dataclasses(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, tok_args, train_args = parse(argv)
    result = run_training(model_args, data_args, tok_args, train_args, command="python scripts/train.py " + shlex.join(argv))
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()  # a clean exit under torchrun on CPU
    return result


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError, RuntimeError) as err:  # DataError, CheckpointError, bad arguments, missing files
        sys.exit(f"error: {err}")
