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


@pytest.fixture
def make_config():
    return small_config
