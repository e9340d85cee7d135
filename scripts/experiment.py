"""One architecture switch at a time on TinyStories (tiny_decoder/experiments/architecture.py): every variant
trained for the same tokens, seed and schedule, then one table and one loss-curve picture.

    python scripts/experiment.py --dataset_path ../shared/data/tinystories            # ~10 min on 2 CPU cores
    python scripts/experiment.py --budget 20 --preset small --use_cpu false --mixed_precision bf16   # a GPU
    python scripts/experiment.py --variants baseline sliding_window linear_attention  # a subset
"""

import sys

from tiny_decoder.cli import parse_args, run_command
from tiny_decoder.experiments.architecture import ArchitectureExperimentArguments, run


def main(argv=None):
    (args,) = parse_args((ArchitectureExperimentArguments,), sys.argv[1:] if argv is None else argv)
    return run(args)


if __name__ == "__main__":
    run_command(main)
