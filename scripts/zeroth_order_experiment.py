"""Zeroth-order (SPSA/MeZO) against AdamW backprop: fine-tuning a trained model and training from scratch.

    python scripts/zeroth_order_experiment.py --base_model runs/tiny --dataset_path ../shared/data/tinystories
    python scripts/zeroth_order_experiment.py ... --budget 4      # 4x the steps of every arm (a GPU)

The study itself is tiny_decoder/experiments/zeroth_order.py.
"""

import sys

from tiny_decoder.cli import parse_args, run_command
from tiny_decoder.experiments.zeroth_order import ZerothOrderExperimentArguments, run


def main(argv=None):
    (args,) = parse_args((ZerothOrderExperimentArguments,), sys.argv[1:] if argv is None else argv)
    return run(args)


if __name__ == "__main__":
    run_command(main)
