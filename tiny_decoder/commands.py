"""The one entry of the three training commands (scripts/train.py, distill.py, sft.py): the top floor, where the
Trainer meets the export formats it may push (passed in, so training never imports them)."""

import sys

from .cli import parse_args


def run_training(script: str, argv: list[str] | None = None, extra_types: tuple = (), objective=None) -> dict:
    """scripts/train.py, distill.py and sft.py: parse the training arguments (and `extra_types`), build the Trainer
    with `objective(model_args, data_args, tok_args, train_args, *extras)` (None: next-token loss), train, and
    tear the process group down (a clean exit under torchrun), also when training fails."""
    import shlex

    from .data import DataArguments
    from .data.tokenizer import TokenizerArguments
    from .export.llama import LlamaHubExport
    from .training import ModelArguments, TrainArguments, Trainer

    argv = sys.argv[1:] if argv is None else argv
    try:
        model_args, data_args, tok_args, train_args, *extras = parse_args(
            (ModelArguments, DataArguments, TokenizerArguments, TrainArguments, *extra_types), argv
        )
        chosen = objective(model_args, data_args, tok_args, train_args, *extras) if objective is not None else None
        exporter = LlamaHubExport() if train_args.hub_format == "llama" else None
        command = f"python scripts/{script}.py " + shlex.join(argv)
        trainer = Trainer(model_args, data_args, tok_args, train_args, objective=chosen, command=command, hub_exporter=exporter)
        return trainer.train()
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
