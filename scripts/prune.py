"""Prune a trained tiny-decoder to a smaller one: whole layers, heads, MLP and hidden channels.

    python scripts/prune.py --model_name_or_path runs/tiny --target_params 50% --output_dir runs/pruned \
        --dataset_path ../shared/data/tinystories
    python scripts/prune.py --model_name_or_path runs/tiny --num_layers 3 --hidden_size 96 --output_dir runs/p2

Importance comes from --calibration_samples training blocks; the table compares parameters,
validation loss and generation speed before and after. The output folder loads with
AutoModelForCausalLM (with or without trust_remote_code) and holds the tokenizer and a card.
"""

import shlex
import sys

from tiny_decoder.cli import parse_args, run_command
from tiny_decoder.data import DataArguments
from tiny_decoder.pruning.run import PruneArguments, prune_folder


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, data_args = parse_args((PruneArguments, DataArguments), argv)
    return prune_folder(args, data_args, command="python scripts/prune.py " + shlex.join(argv))


if __name__ == "__main__":
    run_command(main)
