"""Train a byte-level BPE tokenizer on a dataset's text column and save it as an HF tokenizer folder.

    python scripts/train_tokenizer.py --dataset_path ../shared/data/tinystories --vocab_size 4096 \
        --output_dir runs/tokenizer
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from tiny_decoder.cli import parse_args, run_command
from tiny_decoder.data import DataArguments, clean_and_split, load_raw_dataset
from tiny_decoder.data.tokenizer import TokenizerArguments, text_batches, train_bpe_tokenizer
from tiny_decoder.io.run_dir import (
    TOKENIZER_FILES,
    OutputDirError,
    OutputLock,
    check_output_dir,
    clear_run,
    save_atomically,
)


@dataclass
class OutputArguments:
    output_dir: str = field(default="runs/tokenizer", metadata={"help": "Folder for the saved tokenizer."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a tokenizer already in output_dir."})


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    data_args, tok_args, out_args = parse_args((DataArguments, TokenizerArguments, OutputArguments), argv)
    out = Path(out_args.output_dir)
    # checked before the work, not after it: a model folder (or anything but a tokenizer) is never written into
    old = check_output_dir(out_args.output_dir, out_args.overwrite_output_dir, own=TOKENIZER_FILES, what="a tokenizer")
    with OutputLock(out_args.output_dir):
        return train_and_save(data_args, tok_args, out, old)


def train_and_save(data_args, tok_args, out: Path, old: list):
    splits, _ = clean_and_split(load_raw_dataset(data_args), data_args)
    batches = text_batches(splits["train"], data_args.text_column, max_documents=tok_args.tokenizer_max_documents)
    tokenizer = train_bpe_tokenizer(batches, tok_args.vocab_size, data_args.block_size, tok_args.min_frequency)
    clear_run(old)
    save_atomically(str(out), tokenizer.save_pretrained)
    if not (out / "tokenizer.json").is_file():
        raise OutputDirError(f"the tokenizer was not saved to {str(out)!r}; check that the folder is writable.")
    sample = [t for b in text_batches(splits["validation"], data_args.text_column, max_documents=200) for t in b]
    chars = sum(map(len, sample))
    tokens = sum(len(x) for x in tokenizer(sample, add_special_tokens=False, verbose=False)["input_ids"])
    print(
        f"saved a {len(tokenizer)}-token tokenizer to {out}; "
        f"{chars / max(tokens, 1):.2f} characters per token on {len(sample)} validation documents"
    )
    return tokenizer


if __name__ == "__main__":
    run_command(main)
