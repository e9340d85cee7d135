"""The speedrun recipe's architecture switches, each against a reference: QK-norm against transformers' own Qwen3
(the same weights give the same logits), squared ReLU and logit soft-capping against their formulas in float64,
zero-initialised output projections against what they promise (each block starts as the identity, and learns)."""

import pytest
import torch
import torch.nn.functional as F

from conftest import small_config
from tiny_decoder import TinyDecoderConfig, TinyDecoderForCausalLM

IDS = torch.randint(3, 67, (2, 11), generator=torch.Generator().manual_seed(0))


def model_with(seed=0, **over):
    torch.manual_seed(seed)
    return TinyDecoderForCausalLM(small_config(**over)).eval()


def as_qwen3(model):
    """transformers' Qwen3ForCausalLM holding our weights (two norms renamed, as for Llama)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    c = model.config
    config = Qwen3Config(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=c.head_dim,
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.norm_eps,
        rope_parameters=dict(c.rope_parameters),
        tie_word_embeddings=c.tie_word_embeddings,
        attention_bias=False,
        use_sliding_window=False,
    )
    qwen = Qwen3ForCausalLM(config).eval()
    renamed = {
        k.replace(".attn_norm.", ".input_layernorm.").replace(".mlp_norm.", ".post_attention_layernorm."): v
        for k, v in model.state_dict().items()
    }
    missing, unexpected = qwen.load_state_dict(renamed, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied
    return qwen


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_qk_norm_is_qwen3s_attention(kv_heads):
    model = model_with(qk_norm=True, num_key_value_heads=kv_heads)
    with torch.no_grad():  # the norms' weights away from 1, so they matter
        for layer in model.model.layers:
            layer.self_attn.q_norm.weight.uniform_(0.5, 1.5)
            layer.self_attn.k_norm.weight.uniform_(0.5, 1.5)
        qwen = as_qwen3(model)
        torch.testing.assert_close(model(IDS).logits, qwen(IDS).logits, atol=1e-5, rtol=1e-5)
        kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert torch.equal(model.generate(IDS[:, :4], **kw), qwen.generate(IDS[:, :4], **kw))
    plain = model_with(num_key_value_heads=kv_heads)
    assert "model.layers.0.self_attn.q_norm.weight" in model.state_dict()
    assert not any("q_norm" in k for k in plain.state_dict())  # off: no weights, the same checkpoint format


def test_qk_norm_bounds_the_attention_logits_whatever_the_scale_of_q_and_k():
    model = model_with(qk_norm=True, num_hidden_layers=1)
    attn = model.model.layers[0].self_attn
    x = torch.randn(1, 7, 32)
    scores = []
    with torch.no_grad():
        for scale in (10.0, 1000.0):  # (norm_eps matters only for q near zero)
            attn.q_proj.weight.mul_(scale)
            q = attn.q_norm(attn.q_proj(x).view(1, 7, -1, attn.head_dim))
            scores.append(q)
            attn.q_proj.weight.div_(scale)
    torch.testing.assert_close(scores[0], scores[1], atol=1e-4, rtol=1e-4)  # RMS-normed: scale-free
    assert scores[0].pow(2).mean(-1).sqrt().allclose(torch.ones(()), atol=1e-3)


def test_squared_relu_mlp_is_the_formula():
    model = model_with(hidden_act="relu2").double()
    mlp = model.model.layers[0].mlp
    assert not hasattr(mlp, "gate_proj") and model.config.intermediate_size == 4 * 32
    x = torch.randn(3, 5, 32, dtype=torch.float64)
    expected = F.relu(x @ mlp.up_proj.weight.T).pow(2) @ mlp.down_proj.weight.T
    torch.testing.assert_close(mlp(x), expected)


def test_soft_capping_bounds_the_logits_and_the_loss_reads_the_capped_ones():
    capped = model_with(final_logit_softcapping=2.0).double()
    plain = model_with().double()
    plain.load_state_dict(capped.state_dict())
    with torch.no_grad():
        raw, out = plain(IDS).logits, capped(IDS, labels=IDS)
    torch.testing.assert_close(out.logits, 2.0 * torch.tanh(raw / 2.0))
    assert out.logits.abs().max() < 2.0 < raw.abs().max() * 10
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, 67), IDS[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss.double(), expected, atol=1e-6, rtol=1e-6)  # transformers' loss runs in float32


def test_zero_initialised_output_projections_start_every_block_as_the_identity_and_learn():
    model = model_with(zero_init_output_projections=True, num_hidden_layers=3)
    for layer in model.model.layers:
        assert not layer.self_attn.o_proj.weight.any() and not layer.mlp.down_proj.weight.any()
        assert layer.self_attn.q_proj.weight.std() > 0.01  # the rest keeps its init
    with torch.no_grad():  # blocks add nothing: the output is the final norm of the embeddings
        h = model.model(IDS).last_hidden_state
        torch.testing.assert_close(h, model.model.norm(model.model.embed_tokens(IDS)))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):  # o_proj/down_proj get gradients at once, the layers before them from the second step
        model(IDS, labels=IDS).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(layer.self_attn.o_proj.weight.any() and layer.mlp.down_proj.weight.any() for layer in model.model.layers)
    default = model_with(num_hidden_layers=3)
    assert default.model.layers[0].self_attn.o_proj.weight.std().item() == pytest.approx(0.02 / 6**0.5, rel=0.2)


def test_qk_norm_works_with_linear_attention_and_survives_save_and_load(tmp_path):
    model = model_with(qk_norm=True, attention_type="linear", hidden_act="relu2", final_logit_softcapping=3.0)
    model.save_pretrained(tmp_path)
    again = TinyDecoderForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, again(IDS).logits) and torch.isfinite(again(IDS).logits).all()


@pytest.mark.parametrize("cap", [0, -1.0, float("inf"), float("nan"), "30", True])
def test_a_cap_that_is_no_positive_number_is_refused(cap):
    with pytest.raises(ValueError, match=r"final_logit_softcapping=.* must be a finite number > 0"):
        TinyDecoderConfig(final_logit_softcapping=cap)


def test_the_llama_export_names_the_switches_llama_cannot_express():
    from tiny_decoder.export.llama import llama_blockers

    blockers = llama_blockers(small_config(qk_norm=True, final_logit_softcapping=30.0, hidden_act="relu2"))
    assert blockers == ["hidden_act='relu2'", "qk_norm=True", "final_logit_softcapping=30.0"]
    assert llama_blockers(small_config(zero_init_output_projections=True)) == []  # an init, not an architecture
