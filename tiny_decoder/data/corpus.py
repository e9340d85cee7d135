"""Text corpora -> packed blocks of token ids, through `datasets`.

Flow: source (Hub name, local .txt/.jsonl/.parquet, or a stream) -> drop empty documents ->
train/validation split (the dataset's own, else a hash of each document) -> tokenize with EOS
after every document -> pack into fixed-length blocks (run_clm's group_texts).

Design choices:
- Offline first: when the Hub is unreachable or HF_HUB_OFFLINE=1, a local copy is required
  (`--dataset_path` or $TINY_DECODER_DATA) and its absence is an error that says how to fix it;
  nothing waits on the network for more than a few seconds.
- Packing runs on batches of `pack_batch_size` documents, each dropping its last partial block,
  in one process; streaming uses the same function on the same batches, so both modes give the
  same blocks.
- The hash split depends only on a document's text: same side on any machine, in any order.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict, load_dataset

from ..io.sources import hub_is_reachable

DATA_ENV = "TINY_DECODER_DATA"
TEXT_SUFFIXES = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
VALIDATION_NAMES = ("validation", "valid", "val", "dev")


class DataError(ValueError):
    """Bad or missing data, with a message that says what to do."""


@dataclass
class DataArguments:
    dataset_name: str = field(default="roneneldan/TinyStories", metadata={"help": "Hub dataset, used when the Hub is reachable."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": f"Local file or folder (.txt/.jsonl/.parquet; train*/validation* names split it). Default: "
            f"${DATA_ENV}. An empty string ('') means no local copy: use --dataset_name from the Hub."
        },
    )
    text_column: str = field(default="text", metadata={"help": "Column that holds the documents."})
    streaming: bool = field(default=False, metadata={"help": "Stream (IterableDataset) instead of downloading/caching."})
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Percent of documents held out (by hash) when there is no validation split."}
    )
    block_size: int = field(default=256, metadata={"help": "Tokens per training block."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    text_separator: str = field(default="\n\n", metadata={"help": "Document separator in .txt files (e.g. '<|endoftext|>')."})
    encoding_errors: str = field(default="strict", metadata={"help": "'strict': stop at bad UTF-8; 'replace': use U+FFFD."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training documents."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many validation documents."})
    pack_batch_size: int = field(default=1000, metadata={"help": "Documents per packing batch."})

    @property
    def local_path(self) -> str | None:
        """The local copy to read: --dataset_path, else $TINY_DECODER_DATA, else None (use the Hub).

        An explicit empty --dataset_path asks for the Hub even when $TINY_DECODER_DATA is set.
        """
        if self.dataset_path == "":
            return None
        return self.dataset_path or os.environ.get(DATA_ENV) or None

    def __post_init__(self):
        if self.encoding_errors not in ("strict", "replace"):
            raise DataError(f"encoding_errors={self.encoding_errors!r}: choose 'strict' or 'replace'.")
        if not 0 <= self.validation_split_percentage < 100:
            raise DataError(f"validation_split_percentage={self.validation_split_percentage} must be in [0, 100).")
        if self.block_size < 2:
            raise DataError(f"block_size={self.block_size} must be at least 2.")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise DataError(f"--{name} {getattr(self, name)} must be >= 1 (leave it out to use every document).")
        if self.pack_batch_size < 1:
            raise DataError(f"--pack_batch_size {self.pack_batch_size} must be >= 1.")


# ---------------------------------------------------------------- sources


def load_raw_dataset(args: DataArguments) -> DatasetDict | IterableDatasetDict:
    """Documents as a dict of splits ('train', maybe 'validation'), before any cleaning."""
    if args.local_path:
        return load_local(args.local_path, args)
    if not hub_is_reachable():
        raise DataError(
            f"The Hugging Face Hub cannot be reached (or HF_HUB_OFFLINE=1), so {args.dataset_name!r} cannot be "
            f"downloaded. Give a local copy: --dataset_path DIR (a folder with train.jsonl and validation.jsonl, "
            f"or .txt/.parquet files) or set {DATA_ENV}=DIR. On the development machines that is "
            f"../shared/data/tinystories."
        )
    return load_dataset(args.dataset_name, args.dataset_config_name, streaming=args.streaming)


def find_local_files(path: str) -> tuple[str, dict[str, list[str]]]:
    """(format, {split: files}) for a file or a folder; train*/validation* names pick the split."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"dataset_path {str(p)!r} does not exist; point --dataset_path (or ${DATA_ENV}) at a file or folder.")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
    if not files:
        raise DataError(f"No .txt, .jsonl, .json or .parquet files in {str(p)!r}.")
    kinds = {TEXT_SUFFIXES.get(f.suffix) for f in files}
    if None in kinds or len(kinds) > 1:
        raise DataError(
            f"{str(p)!r} mixes or holds unsupported file types {sorted(f.suffix for f in files)}; use one of {sorted(TEXT_SUFFIXES)}."
        )
    splits: dict[str, list[str]] = {}
    for f in files:
        split = "validation" if f.stem.lower().startswith(VALIDATION_NAMES) else "train"
        splits.setdefault(split, []).append(str(f))
    if "train" not in splits:
        raise DataError(f"{str(p)!r} has validation files but no training files (name them train*.{files[0].suffix[1:]}).")
    return kinds.pop(), splits


def check_utf8(path: str) -> int | None:
    """Byte offset of the first invalid UTF-8 sequence in a file, or None when it is valid."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                return offset + err.start - len(decoder.getstate()[0])
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return offset - len(decoder.getstate()[0])
    return None


def check_json_file(path: str, errors: str = "strict") -> None:
    """Refuse, by file and line, a JSON Lines file that `datasets` would fail on with a long traceback.

    A .json file may instead hold one JSON document (a list of records); that is accepted whole.
    """
    text = Path(path).read_bytes().decode("utf-8", errors="replace" if errors == "replace" else "strict")
    if not text.strip():
        raise DataError(f"{path} is empty: it holds no documents. Fill it (one JSON object per line) or remove it.")
    if path.endswith(".json"):
        try:
            json.loads(text)
            return
        except ValueError:
            pass  # then it must be JSON Lines
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise DataError(
                f"{path}, line {lineno}: not valid JSON ({err.msg} at column {err.colno}); "
                f"fix or delete that line (JSON Lines: one object per line)."
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}, line {lineno}: a {type(record).__name__}, not a JSON object like "
                f'{{"text": "..."}}; fix or delete that line.'
            )


def _read_text(path: str, errors: str) -> str:
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: invalid UTF-8 at byte offset {err.start}; fix the file or pass --encoding_errors replace."
        ) from None


def _txt_documents(files: list[str], separator: str, errors: str, stamp=None):
    for path in files:
        for doc in _read_text(path, errors).split(separator):
            yield {"text": doc}


def _jsonl_documents(files: list[str], column: str, errors: str, stamp=None):
    for path in files:
        for line in _read_text(path, errors).splitlines():
            if line.strip():
                yield {column: json.loads(line).get(column)}


def load_local(path: str, args: DataArguments):
    fmt, splits = find_local_files(path)
    stamp = lambda files: [(f, os.path.getmtime(f), os.path.getsize(f)) for f in files]  # noqa: E731  cache key
    from_gen = IterableDataset.from_generator if args.streaming else Dataset.from_generator
    result = {}
    for split, files in splits.items():
        # Checked up front: inside a datasets generator the error would come back wrapped and unclear.
        bad = (
            None
            if fmt == "parquet" or args.streaming
            else next(((f, o) for f in files if (o := check_utf8(f)) is not None), None)
        )
        if bad and args.encoding_errors == "strict":
            raise DataError(f"{bad[0]}: invalid UTF-8 at byte offset {bad[1]}; fix the file or pass --encoding_errors replace.")
        if fmt == "json":
            for f in files:
                check_json_file(f, args.encoding_errors)
        elif fmt == "text" and not any(os.path.getsize(f) for f in files):
            raise DataError(f"{', '.join(files)}: empty, no documents. Fill the file(s) or point --dataset_path elsewhere.")
        if fmt == "text":
            result[split] = from_gen(
                _txt_documents,
                gen_kwargs=dict(files=files, separator=args.text_separator, errors=args.encoding_errors, stamp=stamp(files)),
            )
        elif bad:  # json with bad bytes: decode them ourselves, replaced
            result[split] = from_gen(
                _jsonl_documents, gen_kwargs=dict(files=files, column=args.text_column, errors="replace", stamp=stamp(files))
            )
        else:
            result[split] = load_dataset(fmt, data_files=files, split="train", streaming=args.streaming)
    return (IterableDatasetDict if args.streaming else DatasetDict)(result)


# ---------------------------------------------------------------- cleaning and split


def in_validation(text: str, fraction: float) -> bool:
    """Deterministic: a document's side depends only on its text."""
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


def _is_document(batch, column):
    return [isinstance(t, str) and bool(t.strip()) for t in batch[column]]


def clean_and_split(raw, args: DataArguments):
    """Keep the text column, drop empty documents, ensure train and validation splits.

    Returns (splits, dropped) with dropped = {split: empty documents removed} (None when streaming).
    """
    col = args.text_column
    train = raw["train"]
    columns = train.column_names if train.column_names is not None else list(next(iter(train)).keys())
    if col not in columns:
        raise DataError(f"text_column={col!r} is not in the dataset; its columns are {columns}. Pass --text_column NAME.")
    valid_name = next((n for n in VALIDATION_NAMES if n in raw), None)
    parts = {"train": train, "validation": raw[valid_name] if valid_name else None}
    for name, ds in parts.items():
        if ds is not None:
            extra = [c for c in (ds.column_names or []) if c != col]
            parts[name] = ds.remove_columns(extra) if extra else ds
    dropped = {}
    for name, ds in list(parts.items()):
        if ds is None:
            continue
        kept = ds.filter(_is_document, batched=True, fn_kwargs={"column": col})
        dropped[name] = None if args.streaming else len(ds) - len(kept)
        parts[name] = kept
    if parts["validation"] is None:
        fraction = args.validation_split_percentage / 100
        whole = parts["train"]
        parts["train"] = whole.filter(lambda t: not in_validation(t, fraction), input_columns=col)
        parts["validation"] = whole.filter(lambda t: in_validation(t, fraction), input_columns=col)
    for name, limit in (("train", args.max_train_samples), ("validation", args.max_eval_samples)):
        if limit is not None:
            ds = parts[name]
            parts[name] = ds.take(limit) if args.streaming else ds.select(range(min(limit, len(ds))))
    if not args.streaming and len(parts["train"]) == 0:
        raise DataError(
            f"No training documents are left after dropping {dropped.get('train', 0)} empty ones; check "
            f"--dataset_path / --text_column ({col!r})."
        )
    return parts, dropped


# ---------------------------------------------------------------- tokens and blocks


def tokenize_function(batch, tokenizer, column):
    ids = tokenizer(batch[column], add_special_tokens=False, verbose=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return {
        "input_ids": [x + [eos] for x in ids],
        "num_tokens": [len(x) + 1 for x in ids],
        "num_chars": [len(t) for t in batch[column]],
    }


def group_texts(batch, block_size):
    """Concatenate a batch of documents and cut it into blocks; the last partial block is dropped."""
    stream = [t for ids in batch["input_ids"] for t in ids]
    n = len(stream) // block_size * block_size
    return {"input_ids": [stream[i : i + block_size] for i in range(0, n, block_size)]}


def tokenize_and_pack(ds, tokenizer, args: DataArguments):
    """(tokenized documents, packed blocks) for one split."""
    kwargs = {} if args.streaming else {"num_proc": args.preprocessing_num_workers, "desc": "tokenizing"}
    tokenized = ds.map(
        tokenize_function,
        batched=True,
        batch_size=args.pack_batch_size,
        remove_columns=[args.text_column],
        fn_kwargs={"tokenizer": tokenizer, "column": args.text_column},
        **kwargs,
    )
    kwargs = {} if args.streaming else {"desc": f"packing into blocks of {args.block_size}"}
    blocks = tokenized.map(
        group_texts,
        batched=True,
        batch_size=args.pack_batch_size,
        remove_columns=["input_ids", "num_tokens", "num_chars"],
        fn_kwargs={"block_size": args.block_size},
        **kwargs,
    )
    return tokenized, blocks


@dataclass
class SplitReport:
    documents: int
    dropped_empty: int
    tokens: int
    blocks: int
    chars: int

    @property
    def tokens_per_document(self) -> float:
        return self.tokens / max(self.documents, 1)

    @property
    def chars_per_token(self) -> float:
        return self.chars / max(self.tokens - self.documents, 1)  # EOS tokens carry no characters


def build_lm_datasets(args: DataArguments, tokenizer, raw=None):
    """Everything above in one call: returns ({'train', 'validation'} blocks, {split: SplitReport} or {})."""
    raw = load_raw_dataset(args) if raw is None else raw
    parts, dropped = clean_and_split(raw, args)
    blocks, reports = {}, {}
    for name, ds in parts.items():
        if not args.streaming and len(ds) == 0:  # e.g. validation_split_percentage=0
            blocks[name] = Dataset.from_dict({"input_ids": []})
            reports[name] = SplitReport(0, dropped.get(name) or 0, 0, 0, 0)
            continue
        tokenized, blocks[name] = tokenize_and_pack(ds, tokenizer, args)
        if not args.streaming:
            reports[name] = SplitReport(
                len(ds),
                dropped.get(name) or 0,
                int(sum(tokenized["num_tokens"])),
                len(blocks[name]),
                int(sum(tokenized["num_chars"])),
            )
    if not args.streaming and len(blocks["train"]) == 0:
        raise DataError(
            f"The training split has {reports['train'].tokens} tokens, fewer than one block of "
            f"block_size={args.block_size}; lower --block_size or add data."
        )
    return blocks, reports


def format_report(reports: dict) -> str:
    lines = [
        "| split | documents | dropped empty | tokens | blocks | tokens/doc | chars/token |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in reports.items():
        lines.append(
            f"| {name} | {r.documents:,} | {r.dropped_empty:,} | {r.tokens:,} | {r.blocks:,} | "
            f"{r.tokens_per_document:.1f} | {r.chars_per_token:.2f} |"
        )
    return "\n".join(lines)
