"""transformers all the way down: attention interface, masks, static cache + compile, export,
RoPE parameters, output capture, deprecation and bad input."""

import warnings

import pytest
import torch

from conftest import POSITION_EMBEDDINGS, small_config
from tiny_decoder import TinyDecoderConfig, TinyDecoderForCausalLM, TinyDecoderModel


def lm(impl="sdpa", seed=0, **overrides):
    torch.manual_seed(seed)
    return TinyDecoderForCausalLM._from_config(small_config(**overrides), attn_implementation=impl).eval()


# ---------------------------------------------------------------- the attention interface


def test_custom_registered_kernel_is_used_and_matches_sdpa():
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import sdpa_mask

    calls = []

    def counting_sdpa(module, *args, **kwargs):
        calls.append(module.layer_idx)
        return sdpa_attention_forward(module, *args, **kwargs)

    AttentionInterface.register("counting_sdpa", counting_sdpa)
    AttentionMaskInterface.register("counting_sdpa", sdpa_mask)
    model = lm("sdpa")
    ids = torch.randint(3, 67, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    want = model(ids, attention_mask=mask).logits
    model.set_attn_implementation("counting_sdpa")
    got = model(ids, attention_mask=mask).logits
    assert calls == [0, 1]  # each layer went through the registered kernel
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real])


def test_set_attn_implementation_switches_at_run_time():
    model = lm("sdpa")
    ids = torch.randint(3, 67, (1, 8))
    sdpa = model(ids).logits
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    out = model(ids, output_attentions=True)
    torch.testing.assert_close(out.logits, sdpa, atol=1e-5, rtol=1e-4)
    assert len(out.attentions) == 2


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("pe", POSITION_EMBEDDINGS)
def test_packed_batch_equals_padded_batch(impl, pe):
    """Padding-free: sequences side by side in one row, position_ids restarting, no attention_mask."""
    model = lm(impl, position_embedding=pe)
    lengths = [5, 3, 6]
    seqs = [torch.randint(3, 67, (n,)) for n in lengths]
    padded = torch.zeros(len(seqs), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(padded)
    for i, s in enumerate(seqs):
        padded[i, : len(s)], mask[i, : len(s)] = s, 1
    want = model(padded, attention_mask=mask).logits
    packed = torch.cat(seqs)[None]
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    got = model(packed, position_ids=positions).logits[0]  # use_cache stays on, as in a default call
    torch.testing.assert_close(got, torch.cat([want[i, :n] for i, n in enumerate(lengths)]), atol=1e-5, rtol=1e-4)


def test_alibi_is_refused_by_a_kernel_that_cannot_add_a_bias():
    model = lm("sdpa", position_embedding="alibi")
    model.config._attn_implementation = "flex_attention"  # as set_attn_implementation would
    with pytest.raises(ValueError, match="alibi.*cannot take"):
        model(torch.randint(3, 67, (1, 5)))


def test_attention_weights_are_refused_by_a_kernel_without_them():
    model = lm("sdpa")
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="output_attentions=True needs attention weights"):
        model(torch.randint(3, 67, (1, 5)), output_attentions=True)


@pytest.mark.skipif(not hasattr(torch.nn.attention, "flex_attention"), reason="torch without flex_attention")
def test_flex_attention_matches_sdpa():
    model = lm("sdpa")
    ids = torch.randint(3, 67, (2, 16))
    want = model(ids).logits
    try:
        model.set_attn_implementation("flex_attention")
        with torch.no_grad():  # flex has no CPU backward
            got = model(ids).logits
    except Exception as e:  # flex needs a compiler backend for this device
        pytest.skip(f"flex_attention does not run here: {type(e).__name__}: {str(e)[:120]}")
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- static cache, compile, export


@pytest.mark.parametrize("pe", ["rope", "alibi", "learned"])
def test_static_cache_generation_equals_dynamic(pe):
    model = lm("sdpa", position_embedding=pe)
    ids = torch.randint(3, 67, (2, 6))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding too
    common = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    dynamic = model.generate(ids, **common)
    static = model.generate(ids, cache_implementation="static", **common)
    assert torch.equal(static, dynamic)


def test_decode_step_compiles_fullgraph_without_recompiling_for_a_shorter_prompt():
    from transformers import StaticCache

    torch._dynamo.reset()
    model = lm("sdpa")
    eager_model = lm("sdpa")
    step = torch.compile(model.forward, fullgraph=True, backend="eager")  # graph capture only: breaks raise

    def run(prompt_len):
        cache = StaticCache(config=model.config, max_cache_len=24)
        ids = torch.randint(3, 67, (1, prompt_len))
        model(ids, cache=cache)  # prefill, not compiled (as generate() does it)
        ref = eager_model(ids, use_cache=False).logits
        tok = torch.full((1, 1), int(ids[0, -1]))  # a fresh (1, 1) tensor, as generate() feeds
        for _ in range(3):
            out = step(tok, cache=cache, use_cache=True)
            ids = torch.cat([ids, tok], dim=1)
            ref = eager_model(ids, use_cache=False).logits
            torch.testing.assert_close(out.logits[:, -1], ref[:, -1], atol=1e-5, rtol=1e-4)
            tok = out.logits[:, -1:].argmax(-1)

    run(10)
    with torch._dynamo.config.patch(error_on_recompile=True):
        run(4)  # a shorter prompt after a longer one reuses the graph


def test_torch_export_of_base_model_with_dynamic_sequence_length():
    model = TinyDecoderModel._from_config(small_config(), attn_implementation="sdpa").eval()
    ids = torch.randint(3, 67, (2, 10))
    seq = torch.export.Dim("seq", min=2, max=64)
    program = torch.export.export(
        model, (), {"input_ids": ids, "use_cache": False}, dynamic_shapes={"input_ids": {1: seq}, "use_cache": None}, strict=False
    )
    for t in (10, 17):
        x = torch.randint(3, 67, (2, t))
        got = program.module()(input_ids=x, use_cache=False).last_hidden_state
        torch.testing.assert_close(got, model(x, use_cache=False).last_hidden_state, atol=1e-5, rtol=1e-4)


def test_torch_export_of_lm_with_static_cache_prefill_and_decode():
    from transformers.integrations.executorch import TorchExportableModuleForDecoderOnlyLM

    model = lm("sdpa")
    model.generation_config.cache_implementation = "static"
    exportable = TorchExportableModuleForDecoderOnlyLM(model, batch_size=1, max_cache_len=32)
    program = exportable.export(input_ids=torch.tensor([[5]]), cache_position=torch.tensor([0]), strict=False)
    ids = torch.randint(3, 67, (1, 6))
    step = program.module()
    for i in range(ids.shape[1]):  # one token at a time through the exported program's own cache
        logits = step(input_ids=ids[:, i : i + 1], cache_position=torch.tensor([i]))
    torch.testing.assert_close(logits[:, -1], model(ids, use_cache=False).logits[:, -1], atol=1e-5, rtol=1e-4)


def test_torch_export_of_lm_with_dynamic_cache():
    from transformers.integrations.executorch import export_with_dynamic_cache

    model = lm("sdpa")
    ids = torch.randint(3, 67, (1, 7))
    program = export_with_dynamic_cache(model, ids, torch.ones_like(ids))
    from transformers import DynamicCache

    got = program.module()(
        input_ids=ids, attention_mask=torch.ones_like(ids), cache=DynamicCache(config=model.config), use_cache=True
    )
    torch.testing.assert_close(got.logits, model(ids, use_cache=False).logits, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- RoPE parameters


def test_old_config_with_rope_theta_loads_into_rope_parameters(tmp_path):
    import json

    cfg = small_config().to_dict()
    cfg.pop("rope_parameters")
    cfg["rope_theta"] = 500.0  # a config.json written before rope_parameters existed
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = TinyDecoderConfig.from_pretrained(tmp_path)
    assert loaded.rope_parameters == {"rope_type": "default", "rope_theta": 500.0}
    assert loaded.rope_theta == 500.0 and "rope_theta" not in loaded.to_dict()


def test_linear_scaling_by_two_sees_position_2p_as_the_default_model_sees_p():
    """Linear (position interpolation): angle(p) = p / factor * theta^(-2i/d), so factor 2 stretches
    the trained context over twice as many positions."""
    default = lm("eager")
    scaled = lm("eager", rope_parameters={"rope_type": "linear", "factor": 2.0})
    scaled.load_state_dict(default.state_dict())
    ids = torch.randint(3, 67, (1, 12))
    p, mask = torch.arange(12)[None], torch.ones(1, 12, dtype=torch.long)  # a mask: steps of 2 are not packing
    torch.testing.assert_close(
        scaled(ids, attention_mask=mask, position_ids=2 * p).logits,
        default(ids, attention_mask=mask, position_ids=p).logits,
        atol=1e-5,
        rtol=1e-4,
    )
    assert not torch.allclose(scaled(ids).logits, default(ids).logits)


@pytest.mark.parametrize(
    "params",
    [
        {"rope_type": "dynamic", "factor": 2.0},
        {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32},
        {
            "rope_type": "llama3",
            "factor": 4.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
    ],
)
def test_rope_types_from_transformers_run_and_reload(params, tmp_path):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    model = lm("sdpa", rope_parameters=dict(params))
    expected, _ = ROPE_INIT_FUNCTIONS[params["rope_type"]](model.config, None)
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, expected)
    ids = torch.randint(3, 67, (1, 40))
    model.save_pretrained(tmp_path)
    again = TinyDecoderForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert again.config.rope_parameters["rope_type"] == params["rope_type"]
    torch.testing.assert_close(again(ids).logits, model(ids).logits)


def test_partial_rotary_leaves_the_other_channels_unrotated():
    from tiny_decoder.model.positions import RotaryEmbedding, apply_rope

    cfg = small_config(
        hidden_size=64, num_attention_heads=4, rope_parameters={"rope_type": "default", "partial_rotary_factor": 0.5}
    )
    rope = RotaryEmbedding(cfg)
    x = torch.randn(1, 4, 6, 16)
    cos, sin = rope(x, torch.arange(6)[None])
    assert cos.shape == (1, 6, 8)  # (batch, T, rotary dim), as transformers' rotary embeddings
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y[..., 8:], x[..., 8:])
    full = RotaryEmbedding(small_config(hidden_size=32, num_attention_heads=4))  # head_dim 8, same frequencies?
    assert not torch.allclose(y[..., :8], x[..., :8])
    assert full.inv_freq.shape == rope.inv_freq.shape
    lm("sdpa", hidden_size=64, rope_parameters={"rope_type": "default", "partial_rotary_factor": 0.5})(
        torch.randint(3, 67, (1, 5))
    )


# ---------------------------------------------------------------- output capture


def test_hidden_states_and_attentions_are_captured_by_hooks_and_can_be_selected():
    model = lm("eager", num_hidden_layers=3)
    ids = torch.randint(3, 67, (2, 7))
    every = model(ids, output_hidden_states=True, output_attentions=True)
    assert len(every.hidden_states) == 4 and len(every.attentions) == 3
    torch.testing.assert_close(every.hidden_states[-1], model.model(ids).last_hidden_state)
    torch.testing.assert_close(every.hidden_states[0], model.model.embed_tokens(ids))
    picked = model(ids, output_hidden_states=[1, -2])
    assert picked.hidden_states[0] is None and picked.hidden_states[3] is None
    torch.testing.assert_close(picked.hidden_states[1], every.hidden_states[1])
    torch.testing.assert_close(picked.hidden_states[2], every.hidden_states[2])
    assert model(ids).hidden_states is None


def test_attention_weights_from_an_sdpa_model_come_from_the_eager_kernel():
    model = lm("sdpa")
    out = model(torch.randint(3, 67, (1, 6)), output_attentions=True)
    w = out.attentions[0]
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
    assert torch.all(w.triu(1) == 0)


# ---------------------------------------------------------------- deprecation and bad input


def test_past_key_values_still_works_but_warns():
    from transformers import DynamicCache

    model = lm("sdpa")
    ids = torch.randint(3, 67, (1, 6))
    cache = DynamicCache(config=model.config)
    with pytest.warns(FutureWarning, match="past_key_values.*cache"):
        out = model(ids[:, :5], past_key_values=cache)
    assert out.cache is cache and cache.get_seq_length() == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = model(ids[:, 5:], cache=cache)
    torch.testing.assert_close(step.logits[:, -1], model(ids, use_cache=False).logits[:, -1], atol=1e-5, rtol=1e-4)


def test_bad_input_gets_clear_errors():
    model = lm("sdpa")
    ids = torch.randint(3, 67, (1, 5))
    with pytest.raises(TypeError, match="cache must be a transformers Cache"):
        model(ids, cache=((torch.zeros(1), torch.zeros(1)),))
    with pytest.raises(ValueError, match="attention_mask covers 3 positions"):
        model(ids, attention_mask=torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="rope_type.*'bogus'.*choose one of"):
        small_config(rope_parameters={"rope_type": "bogus"})
    with pytest.raises(ValueError, match="nope"):
        TinyDecoderForCausalLM._from_config(small_config(), attn_implementation="nope")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_fast_path_equals_the_written_out_formula_in_float64(dtype):
    from tiny_decoder.model.norms import RMSNorm

    torch.manual_seed(0)
    norm = RMSNorm(48, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (torch.randn(3, 5, 48) * 4).to(dtype)
    x64 = x.double()
    want = norm.weight.double() * x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-5)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=3e-2, rtol=2e-2)
    torch.testing.assert_close(norm(x).double(), want, **tol)
    x.requires_grad_(True)
    norm(x).sum().backward()  # the fused kernel has a backward too
    assert x.grad is not None and torch.isfinite(x.grad).all()
