import pytest

from tiny_decoder import TinyDecoderConfig
from tiny_decoder.model.configuration_tiny_decoder import HIDDEN_ACTS, NORMS, POSITION_EMBEDDINGS


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"position_embedding": "xpos"}, "position_embedding"),
        ({"norm": "batchnorm"}, "norm"),
        ({"norm_position": "middle"}, "norm_position"),
        ({"hidden_act": "tanh"}, "hidden_act"),
        ({"hidden_size": 30, "num_attention_heads": 4}, "hidden_size"),
        ({"num_attention_heads": 6, "num_key_value_heads": 4, "hidden_size": 48}, "num_attention_heads"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"hidden_size": -32}, "hidden_size"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"num_attention_heads": 0}, "num_attention_heads"),
        ({"num_key_value_heads": 0}, "num_key_value_heads"),
        ({"intermediate_size": 0}, "intermediate_size"),
        ({"max_position_embeddings": 0}, "max_position_embeddings"),
        ({"attention_dropout": 1.5}, "attention_dropout"),
        ({"residual_dropout": -0.1}, "residual_dropout"),
        ({"rope_theta": 0}, "rope_theta"),
        ({"initializer_range": -1.0}, "initializer_range"),
        ({"vocab_size": 10, "eos_token_id": 10}, "eos_token_id"),
        ({"hidden_size": 36, "num_attention_heads": 4, "num_key_value_heads": 4}, "rope"),  # head_dim 9 is odd
    ],
)
def test_invalid_values_raise_named_value_error(overrides, field):
    with pytest.raises(ValueError) as err:
        TinyDecoderConfig(**overrides)
    message = str(err.value)
    assert field in message
    # The message names the offending value too.
    value = next(iter(overrides.values())) if field not in ("rope",) else "rope"
    assert str(value) in message


def test_unknown_string_lists_allowed_choices():
    with pytest.raises(ValueError) as err:
        TinyDecoderConfig(norm="groupnorm")
    for choice in NORMS:
        assert choice in str(err.value)


@pytest.mark.parametrize("pe", POSITION_EMBEDDINGS)
@pytest.mark.parametrize("act", HIDDEN_ACTS)
def test_valid_configs_round_trip_through_dict(pe, act):
    cfg = TinyDecoderConfig(position_embedding=pe, hidden_act=act, num_key_value_heads=2)
    again = TinyDecoderConfig.from_dict(cfg.to_dict())
    assert again.position_embedding == pe and again.hidden_act == act and again.num_key_value_heads == 2
    assert again.intermediate_size == cfg.intermediate_size


def test_defaults_generation_relies_on():
    cfg = TinyDecoderConfig(vocab_size=8)
    assert cfg.use_cache is True
    assert cfg.num_key_value_heads == cfg.num_attention_heads
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert 0 <= getattr(cfg, name) < cfg.vocab_size


def test_every_config_field_is_documented_in_the_class_docstring():
    """transformers' `Args:` convention: each argument of __init__ has an entry (name, type, default) in the
    docstring, so `help(TinyDecoderConfig)` answers what a field does."""
    import inspect
    import re

    from tiny_decoder import TinyDecoderConfig

    documented = set(re.findall(r"^        (\w+) \(`", TinyDecoderConfig.__doc__, flags=re.M))
    fields = {name for name in inspect.signature(TinyDecoderConfig.__init__).parameters if name not in ("self", "kwargs")}
    assert fields - documented == set(), f"undocumented: {sorted(fields - documented)}"
    assert documented - fields == set(), f"documented but no such field: {sorted(documented - fields)}"
