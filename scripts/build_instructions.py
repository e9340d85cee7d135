"""Make the offline TinyStories instruction set (chat JSONL) from a story corpus.

    python scripts/build_instructions.py --dataset_path ../shared/data/tinystories --output_dir runs/instruct

Each story becomes one conversation ("Write a story that uses the words: ..." or "... begins
with: ..."); see tiny_decoder/instructions.py. The corpus's own train/validation split is kept, so
validation instructions come from stories a model trained on the train split never saw.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tiny_decoder.cli import parse_args, run_command
from tiny_decoder.data import DataArguments, clean_and_split, load_raw_dataset
from tiny_decoder.data.instructions import build_instruction_set, content_words
from tiny_decoder.io.run_dir import INSTRUCTION_FILES, OutputLock, check_output_dir


@dataclass
class BuildArguments:
    output_dir: str = field(default="runs/instruct", metadata={"help": "Where train.jsonl and validation.jsonl go."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an instruction set already there."})
    seed: int = 0
    n_words: int = field(default=3, metadata={"help": "Words each 'uses the words' instruction asks for."})
    words_within: int = field(default=30, metadata={"help": "Draw the requested words from the story's first N words."})
    per_story: int = field(default=1, metadata={"help": "Conversations made from each training story (validation: one)."})

    def __post_init__(self):
        for name in ("n_words", "words_within", "per_story"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} {getattr(self, name)} must be >= 1.")
        if self.n_words > self.words_within:
            raise ValueError(
                f"--n_words {self.n_words} cannot be drawn from the first --words_within {self.words_within} words; "
                f"raise --words_within or lower --n_words."
            )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, data_args = parse_args((BuildArguments, DataArguments), argv)
    check_output_dir(args.output_dir, args.overwrite_output_dir, own=INSTRUCTION_FILES, what="an instruction set")
    with OutputLock(args.output_dir):
        return build(args, data_args)


def build(args, data_args) -> dict:
    parts, _ = clean_and_split(load_raw_dataset(data_args), data_args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in ("train", "validation"):
        texts = parts[split][data_args.text_column]
        conversations = build_instruction_set(
            texts,
            args.seed,
            validation_fraction=0.0,
            n_words=args.n_words,
            words_within=args.words_within,
            per_story=args.per_story if split == "train" else 1,
        )["train"]
        if split == "train" and not any(
            len(content_words(" ".join(t.split()[: args.words_within]))) >= args.n_words for t in texts
        ):
            raise ValueError(
                f"no training story has {args.n_words} content words among its first {args.words_within} words, so the "
                f"'uses the words' task would be empty; lower --n_words or raise --words_within."
            )
        tmp = out / f"{split}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(c) + "\n" for c in conversations))
        tmp.replace(out / f"{split}.jsonl")
        counts[split] = len(conversations)
    print(f"wrote {counts['train']:,} training and {counts['validation']:,} validation conversations to {out}")
    return counts


if __name__ == "__main__":
    run_command(main)
