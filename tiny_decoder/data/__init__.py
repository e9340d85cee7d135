"""What the model reads: text corpora (Hub, local files, streams) cleaned, split and packed into blocks
(corpus.py), the BPE tokenizer (tokenizer.py), the chat template (chat.py) and the instruction set built
from stories (instructions.py)."""

from .corpus import (
    DataArguments,
    DataError,
    SplitReport,
    build_lm_datasets,
    check_utf8,
    clean_and_split,
    format_report,
    group_texts,
    in_validation,
    load_raw_dataset,
)

__all__ = [
    "DataArguments",
    "DataError",
    "SplitReport",
    "build_lm_datasets",
    "check_utf8",
    "clean_and_split",
    "format_report",
    "group_texts",
    "in_validation",
    "load_raw_dataset",
]
