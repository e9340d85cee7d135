"""Compare model folders on the same validation blocks: one markdown table.

    python scripts/compare.py --models runs/tiny runs/tiny-pruned runs/tiny-distilled runs/tiny-scratch \
        --dataset_path ../shared/data/tinystories --output_json runs/compare.json

Columns: parameters, training tokens (from each folder's metrics.jsonl), validation loss (measured
here, on identical blocks, with the first model's tokenizer), its change against the first model,
and greedy generation tokens/s on this machine. Models must share the tokenizer.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tiny_decoder.cli import check_output_file, parse_args, run_command
from tiny_decoder.data import DataArguments, build_lm_datasets, load_raw_dataset
from tiny_decoder.data.tokenizer import load_tokenizer
from tiny_decoder.evaluation.loss import blocks_loss
from tiny_decoder.evaluation.speed import generation_speed
from tiny_decoder.io.sources import check_model_source
from tiny_decoder.training.objectives import CausalLMObjective


@dataclass
class CompareArguments:
    models: list[str] = field(default_factory=list, metadata={"help": "Model folders; the first is the reference."})
    per_device_eval_batch_size: int = 64
    max_eval_batches: int | None = None
    output_json: str | None = field(default=None, metadata={"help": "Also write the rows here."})

    def __post_init__(self):
        if not self.models:
            raise ValueError("--models needs at least one model folder.")
        check_output_file(self.output_json)
        if self.per_device_eval_batch_size < 1:
            raise ValueError(f"--per_device_eval_batch_size {self.per_device_eval_batch_size} must be >= 1.")
        if self.max_eval_batches is not None and self.max_eval_batches < 1:
            raise ValueError(f"--max_eval_batches {self.max_eval_batches} must be >= 1 (leave it out for all).")


def training_tokens(folder: Path) -> int:
    """Tokens the folder's own training run saw (0 for a model that was only pruned)."""
    log = folder / "metrics.jsonl"
    if not log.exists():
        return 0
    seen = [json.loads(line).get("tokens") for line in log.read_text().splitlines() if line.strip()]
    return max([t for t in seen if t is not None], default=0)


def main(argv=None):
    from transformers import AutoModelForCausalLM

    argv = sys.argv[1:] if argv is None else argv
    args, data_args = parse_args((CompareArguments, DataArguments), argv)
    for name in args.models:
        check_model_source(name, "models")
    tokenizer = load_tokenizer(args.models[0], data_args.block_size)
    for name in args.models[1:]:
        if load_tokenizer(name).get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"{name!r} does not use {args.models[0]!r}'s tokenizer; losses would not be comparable.")
    blocks, _ = build_lm_datasets(data_args, tokenizer, load_raw_dataset(data_args))
    prompt = CausalLMObjective().prompt_ids(tokenizer, "Once upon a time")
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(name).eval()
        rows.append(
            {
                "model": name,
                "params": sum(p.numel() for p in model.parameters()),
                "tokens": training_tokens(Path(name)),
                "val_loss": blocks_loss(model, blocks["validation"], args.per_device_eval_batch_size, args.max_eval_batches),
                "generate_tok_s": generation_speed(model, prompt),
            }
        )
    ref = rows[0]["val_loss"]
    print(f"\nvalidation: {len(blocks['validation'])} blocks of {data_args.block_size} tokens\n")
    print("| model | parameters | training tokens | validation loss | vs first | generate tokens/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['params']:,} | {r['tokens']:,} | {r['val_loss']:.4f} | "
            f"{(r['val_loss'] / ref - 1) * 100:+.1f} % | {r['generate_tok_s']:.0f} |"
        )
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    run_command(main)
