"""Shared test settings: offline Hub, few threads, small models built on the fly."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

POSITION_EMBEDDINGS = ["rope", "alibi", "sinusoidal", "learned", "none"]


def small_config(**overrides):
    from tiny_decoder import TinyDecoderConfig

    kwargs = dict(
        vocab_size=67,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    kwargs.update(overrides)
    return TinyDecoderConfig(**kwargs)


def shared_tinystories():
    """../shared/data/tinystories beside the checkout (or $TINY_DECODER_DATA), else None."""
    from pathlib import Path

    env = os.environ.get("TINY_DECODER_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "tinystories"
    return path if (path / "train.jsonl").exists() else None


def generated_documents(n=300, seed=0):
    """Story-like documents made up here, so tests never depend on files outside the repo."""
    import random

    rng = random.Random(seed)
    names = ["Lily", "Tom", "Mia", "Ben", "Zoë", "Ángel"]
    verbs = ["saw", "found", "liked", "lost", "shared", "painted"]
    things = ["a red ball", "a big tree", "the cat", "a shiny stone", "some cake", "a little boat"]
    docs = []
    for _ in range(n):
        k = rng.randint(1, 6)
        docs.append(" ".join(f"{rng.choice(names)} {rng.choice(verbs)} {rng.choice(things)}." for _ in range(k)))
    return docs


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tiny_decoder.tokenizer import train_bpe_tokenizer

    docs = generated_documents(500)
    return train_bpe_tokenizer([docs[i : i + 100] for i in range(0, 500, 100)], vocab_size=300, model_max_length=32)
