"""Absolute positions meet the token embeddings on one scale: sinusoidal positions at the embeddings' RMS (old
config files keep amplitude 1), a learned table initialised at a tenth of it (make experiment's fair rows)."""

import json

import torch

from conftest import small_config
from tiny_decoder import TinyDecoderConfig, TinyDecoderForCausalLM
from tiny_decoder.model.modeling_tiny_decoder import POSITION_INIT_FRACTION
from tiny_decoder.model.positions import sinusoidal_embedding


def first_block_input(model, ids):
    seen = []
    handle = model.model.layers[0].register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True
    )
    with torch.no_grad():
        model(ids)
    handle.remove()
    return seen[0]


def test_sinusoidal_positions_are_added_at_the_token_embeddings_scale():
    config = small_config(position_embedding="sinusoidal", hidden_size=32)
    assert abs(config.sinusoidal_scale - config.initializer_range * 2**0.5) < 1e-12
    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(config).eval()
    ids = torch.randint(3, 67, (2, 9))
    positions = sinusoidal_embedding(torch.arange(9)[None], 32, torch.float32)
    expected = model.model.embed_tokens(ids) + config.sinusoidal_scale * positions
    torch.testing.assert_close(first_block_input(model, ids), expected)
    rms = (config.sinusoidal_scale * positions).pow(2).mean().sqrt()
    assert abs(rms.item() - config.initializer_range) < 0.002  # the same RMS as the token embeddings at init


def test_a_config_file_from_before_the_scale_keeps_amplitude_one(tmp_path):
    config = small_config(position_embedding="sinusoidal")
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["sinusoidal_scale"] == config.sinusoidal_scale  # new files carry it
    del saved["sinusoidal_scale"]  # what an older file looks like (it has transformers_version)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert TinyDecoderConfig.from_pretrained(tmp_path).sinusoidal_scale == 1.0


def test_the_learned_position_table_starts_small():
    torch.manual_seed(0)
    config = small_config(position_embedding="learned", hidden_size=64, max_position_embeddings=512)
    model = TinyDecoderForCausalLM(config)
    pos_std = model.model.embed_positions.weight.std().item()
    tok_std = model.model.embed_tokens.weight.std().item()
    assert abs(pos_std - POSITION_INIT_FRACTION * config.initializer_range) < 0.0005
    assert abs(tok_std - config.initializer_range) < 0.003
