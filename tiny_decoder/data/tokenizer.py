"""Byte-level BPE tokenizers: train one on a corpus, or load any Hugging Face tokenizer.

Byte-level (GPT-2 style) means every UTF-8 string encodes without an unknown token and decodes
back to exactly itself. Training reads the corpus as an iterator of batches, so a streamed or
very large dataset never has to sit in memory whole.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

# Ids 0, 1, 2 match TinyDecoderConfig's default pad/bos/eos ids.
SPECIAL_TOKENS = {"pad_token": "<|pad|>", "bos_token": "<|bos|>", "eos_token": "<|endoftext|>"}


@dataclass
class TokenizerArguments:
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "An existing tokenizer (Hub name or folder). Unset: train a byte-level BPE."}
    )
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size of a newly trained BPE."})
    min_frequency: int = field(default=2, metadata={"help": "A pair must occur this often to be merged."})
    tokenizer_max_documents: int | None = field(
        default=None, metadata={"help": "Train the BPE on at most this many documents (default: all)."}
    )


def text_batches(
    dataset, text_column: str = "text", batch_size: int = 1000, max_documents: int | None = None
) -> Iterator[list[str]]:
    """Yield lists of texts from a Dataset or IterableDataset without materialising it."""
    seen = 0
    for batch in dataset.iter(batch_size=batch_size):
        texts = [t for t in batch[text_column] if isinstance(t, str)]
        if max_documents is not None:
            texts = texts[: max_documents - seen]
        seen += len(texts)
        if texts:
            yield texts
        if max_documents is not None and seen >= max_documents:
            return


def train_bpe_tokenizer(
    batches: Iterable[list[str]],
    vocab_size: int = 4096,
    model_max_length: int = 256,
    min_frequency: int = 2,
    special_tokens: dict[str, str] | None = None,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE from an iterator of text batches; returns an HF fast tokenizer."""
    special_tokens = dict(special_tokens or SPECIAL_TOKENS)
    n_special = len(special_tokens)
    if vocab_size < 256 + n_special:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least {256 + n_special} (256 bytes + special tokens)."
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(batches, trainer=trainer)
    if tok.get_vocab_size() <= 256 + n_special:
        raise ValueError("The tokenizer learned no merges: the training text is empty or too small.")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        **special_tokens,
    )


def load_tokenizer(name_or_path: str, model_max_length: int | None = None) -> PreTrainedTokenizerBase:
    """Any HF tokenizer (folder or Hub name), with an EOS and a pad token guaranteed."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as err:
        raise OSError(
            f"Could not load a tokenizer from {name_or_path!r}: give a folder written by save_pretrained "
            f"(with tokenizer.json) or a Hub name while online. ({err})"
        ) from None
    if tokenizer.eos_token is None:
        raise ValueError(f"Tokenizer {name_or_path!r} has no EOS token; documents could not be separated when packing.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2's convention
    if model_max_length is not None:
        tokenizer.model_max_length = model_max_length
    return tokenizer


def get_tokenizer(args: TokenizerArguments, train_dataset=None, text_column: str = "text", model_max_length: int = 256):
    """The tokenizer a run asks for: load `tokenizer_name`, or train a BPE on `train_dataset`."""
    if args.tokenizer_name:
        return load_tokenizer(args.tokenizer_name, model_max_length)
    if train_dataset is None:
        raise ValueError("No tokenizer_name given and no dataset to train a tokenizer on.")
    batches = text_batches(train_dataset, text_column, max_documents=args.tokenizer_max_documents)
    return train_bpe_tokenizer(batches, args.vocab_size, model_max_length, args.min_frequency)
