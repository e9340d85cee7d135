"""Where the model meets code written for transformers' own models: the rotary embedding's output shape and
values, and a tensor-parallel plan that names only layers the config builds - each against Llama's."""

import fnmatch

import pytest
import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaModel, LlamaRotaryEmbedding

from conftest import small_config
from tiny_decoder import TinyDecoderForCausalLM
from tiny_decoder.model.positions import RotaryEmbedding


@pytest.mark.parametrize(
    "rope", [{"rope_type": "default", "rope_theta": 10000.0}, {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}]
)
def test_rotary_embedding_returns_what_llamas_returns(rope):
    ours = small_config(hidden_size=32, num_attention_heads=4, rope_parameters=rope)
    llama = LlamaConfig(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rope_parameters=rope
    )
    x = torch.zeros(3, 7, 32)
    position_ids = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [5, 6, 7, 8, 9, 10, 11], [0, 0, 1, 2, 3, 4, 5]])
    cos, sin = RotaryEmbedding(ours)(x, position_ids)
    ref_cos, ref_sin = LlamaRotaryEmbedding(llama)(x, position_ids)
    assert cos.shape == ref_cos.shape == (3, 7, 8)  # (batch, T, head_dim): code that slices [:, :T] gets positions
    torch.testing.assert_close(cos, ref_cos)
    torch.testing.assert_close(sin, ref_sin)
    torch.testing.assert_close(cos[:, :4], ref_cos[:, :4])


def plan_hits(plan, modules):
    return {p: [n for n in modules if fnmatch.fnmatch(n, p.replace("*", "[0-9]*"))] for p in plan}


@pytest.mark.parametrize("act", ["swiglu", "gelu", "relu"])
def test_tensor_parallel_plan_names_only_layers_the_config_builds(act):
    model = TinyDecoderForCausalLM(small_config(hidden_act=act))
    modules = dict(model.model.named_modules())
    plan = model.config.base_model_tp_plan
    for pattern, hits in plan_hits(plan, modules).items():
        assert len(hits) == model.config.num_hidden_layers and all(isinstance(modules[n], nn.Linear) for n in hits), pattern
    linears = {n.split(".", 2)[-1] for n, m in modules.items() if isinstance(m, nn.Linear)}
    assert {p.split(".", 2)[-1] for p in plan} == linears  # every projection sharded, nothing that is not there
    llama = LlamaModel(
        LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=67
        )
    )
    llama_hits = plan_hits(LlamaConfig.base_model_tp_plan, dict(llama.named_modules()))
    assert all(len(h) == 2 for h in llama_hits.values())  # Llama's own plan holds the same rule
    if act == "swiglu":
        assert plan == LlamaConfig.base_model_tp_plan  # layer for layer a Llama: the same plan
    else:
        assert "layers.*.mlp.gate_proj" not in plan and "gate_proj" not in str(model.config.to_dict())
