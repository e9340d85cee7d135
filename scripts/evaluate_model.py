"""Perplexity of a causal LM (a folder or a Hub name; ours or any transformers model) on a dataset split or a
text/JSONL file, with sample generations for fixed prompts at a fixed seed.

    python scripts/evaluate_model.py --model_name_or_path runs/tiny --dataset_path ../shared/data/tinystories
    python scripts/evaluate_model.py --model_name_or_path runs/tiny --dataset_path stories.txt --stride 128 --output_json ppl.json

Texts longer than the model's context need --stride (sliding windows); see tiny_decoder/evaluation/perplexity.py.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tiny_decoder.cli import check_output_file, parse_args, run_command
from tiny_decoder.data import DataArguments, load_raw_dataset
from tiny_decoder.evaluation.perplexity import perplexity
from tiny_decoder.evaluation.sampling import sample_texts
from tiny_decoder.io.sources import check_model_source


@dataclass
class EvaluateArguments:
    model_name_or_path: str = field(metadata={"help": "A saved folder or a Hub name (any causal LM)."})
    split: str = field(default="validation", metadata={"help": "Dataset split to score (a single file has 'train')."})
    max_samples: int | None = field(default=None, metadata={"help": "Score only the first N texts."})
    batch_size: int = 8
    max_length: int | None = field(default=None, metadata={"help": "Window length; default: the model's context."})
    stride: int | None = field(default=None, metadata={"help": "Sliding-window step for texts longer than the context."})
    prompts: list[str] = field(
        default_factory=lambda: ["Once upon a time", "Lily and Tom went to the park."],
        metadata={"help": "Prompts for the sample generations."},
    )
    max_new_tokens: int = 60
    seed: int = 0
    output_json: str | None = field(default=None, metadata={"help": "Also write the numbers and samples here."})
    write_card: bool = field(
        default=False,
        metadata={
            "help": "Add the numbers, parameter table and samples to the model folder's card (README.md) and its model-index."
        },
    )
    trust_remote_code: bool = False

    def __post_init__(self):
        check_output_file(self.output_json)
        for name in ("batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} {getattr(self, name)} must be >= 1.")
        for name in ("max_samples", "max_length", "stride"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} {getattr(self, name)} must be >= 1 (leave it out for the default).")
        if not any(p.strip() for p in self.prompts):
            raise ValueError("--prompts needs at least one non-empty prompt.")


def load_model(name: str, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import tiny_decoder  # noqa: F401  (registers our classes with the Auto factories)

    check_model_source(name)
    model = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=trust_remote_code).eval()
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    return model, tokenizer


def samples(model, tokenizer, prompts, max_new_tokens, seed):
    """One sample per prompt, each from the same seed (so a prompt's text does not depend on the others)."""
    return [
        {"prompt": p, "text": sample_texts(model, tokenizer, [tokenizer(p)["input_ids"]], max_new_tokens, seed)[0]}
        for p in prompts
    ]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, data_args = parse_args((EvaluateArguments, DataArguments), argv)
    model, tokenizer = load_model(args.model_name_or_path, args.trust_remote_code)
    raw = load_raw_dataset(data_args)
    if args.split not in raw and len(raw) == 1:  # a single text/JSONL file: its one split
        args.split = next(iter(raw))
    if args.split not in raw:
        raise ValueError(f"The data has no split {args.split!r}; it has {sorted(raw)}. Pass --split NAME.")
    split = raw[args.split]
    if data_args.text_column not in split.column_names:
        raise ValueError(
            f"text_column={data_args.text_column!r} is not in the data; its columns are "
            f"{split.column_names}. Pass --text_column NAME."
        )
    texts = split[data_args.text_column][: args.max_samples]
    result = perplexity(model, tokenizer, texts, args.batch_size, args.max_length, args.stride, progress=True)
    shown = samples(model, tokenizer, args.prompts, args.max_new_tokens, args.seed)
    print(f"\n{args.model_name_or_path} on {data_args.local_path or data_args.dataset_name} [{args.split}], {result.texts} texts")
    print(
        f"| loss | perplexity | tokens | tokens/s |\n|---|---|---|---|\n"
        f"| {result.loss:.4f} | {result.perplexity:.2f} | {result.tokens:,} | {result.tokens_per_s:,.0f} |"
    )
    for s in shown:
        print(f"\n> {s['prompt']}  (seed {args.seed})\n{s['text']}")
    if args.output_json:
        report = {**result.to_dict(), "model": args.model_name_or_path, "split": args.split, "samples": shown}
        Path(args.output_json).write_text(json.dumps(report, indent=2))
    if args.write_card:
        if not Path(args.model_name_or_path).is_dir():
            raise ValueError("--write_card updates a local model folder's README.md; give a folder.")
        from tiny_decoder.evaluation.introspection import format_parameter_table, parameter_table
        from tiny_decoder.io.cards import evaluation_section, update_card_evaluation

        dataset = data_args.dataset_name if not data_args.local_path else Path(data_args.local_path).name
        section = evaluation_section(
            result, dataset, args.split, args.stride, format_parameter_table(parameter_table(model)), shown
        )
        update_card_evaluation(
            args.model_name_or_path, Path(args.model_name_or_path).name, section, dataset, args.split, result.perplexity
        )
        print(f"updated {args.model_name_or_path}/README.md")
    return result


if __name__ == "__main__":
    run_command(main)
