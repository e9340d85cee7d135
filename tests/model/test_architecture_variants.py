"""Architecture switches beyond the core: sliding-window attention and orthogonal-parallel
residuals, each against a reference, through save/load and generate()."""

import pytest
import torch
from transformers import DynamicCache

from conftest import small_config
from tiny_decoder import TinyDecoderConfig, TinyDecoderForCausalLM
from tiny_decoder.model.residuals import OrthogonalParallelResidual


def build(impl="eager", seed=0, **overrides):
    torch.manual_seed(seed)
    return TinyDecoderForCausalLM._from_config(small_config(**overrides), attn_implementation=impl).eval()


def banded_reference(model, ids, window):
    """Full forward in float64 with the eager kernel and an explicit banded mask (0 <= i - j < window)."""
    ref = TinyDecoderForCausalLM._from_config(model.config, attn_implementation="eager").double().eval()
    ref.load_state_dict(model.state_dict())
    t = ids.shape[1]
    i, j = torch.arange(t)[:, None], torch.arange(t)[None]
    allowed = (j <= i) & (i - j < window)
    mask = torch.zeros(t, t, dtype=torch.float64).masked_fill(~allowed, float("-inf"))[None, None]
    ref.config.sliding_window = None  # the band comes from the explicit 4-D mask alone
    with torch.no_grad():
        return ref(ids, attention_mask=mask.expand(ids.shape[0], 1, t, t), use_cache=False).logits


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("pe", ["rope", "alibi", "learned"])
def test_sliding_window_matches_a_banded_float64_reference(impl, pe):
    model = build(impl, position_embedding=pe, sliding_window=4)
    ids = torch.randint(3, 67, (2, 11))
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits
    torch.testing.assert_close(logits.double(), banded_reference(model, ids, 4), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_a_window_as_long_as_the_sequence_is_full_attention_exactly(impl):
    full = build(impl)
    windowed = build(impl, sliding_window=12)
    windowed.load_state_dict(full.state_dict())
    ids = torch.randint(3, 67, (2, 12))
    with torch.no_grad():
        assert torch.equal(full(ids).logits, windowed(ids).logits)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("pe", ["rope", "alibi"])
def test_cached_generation_with_a_window_equals_uncached(impl, pe):
    model = build(impl, position_embedding=pe, sliding_window=5)
    prompt = torch.randint(3, 67, (2, 4))
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        cached = model.generate(prompt, attention_mask=torch.ones_like(prompt), use_cache=True, **kw)
        uncached = model.generate(prompt, attention_mask=torch.ones_like(prompt), use_cache=False, **kw)
        assert torch.equal(cached, uncached)
        # token by token through the cache: every step's logits equal the full forward's, and the cache holds the window
        cache = DynamicCache(config=model.config)
        full = model(cached, use_cache=False).logits
        for t in range(cached.shape[1]):
            step = model(cached[:, t : t + 1], cache=cache, use_cache=True).logits
            torch.testing.assert_close(step[:, 0], full[:, t], atol=1e-5, rtol=1e-4)
        assert cache.layers[0].keys.shape[-2] <= 5


def test_changing_a_future_token_never_changes_an_earlier_output():
    model = build("sdpa", sliding_window=3)
    ids = torch.randint(3, 67, (1, 10))
    other = ids.clone()
    other[0, 7] = (ids[0, 7] + 1) % 67
    with torch.no_grad():
        a, b = model(ids).logits, model(other).logits
    assert torch.equal(a[:, :7], b[:, :7]) and not torch.equal(a[:, 7:], b[:, 7:])


def test_bad_window_is_refused():
    with pytest.raises(ValueError, match="sliding_window=0 must be a positive integer"):
        TinyDecoderConfig(sliding_window=0)


def test_orthogonal_parallel_at_init_is_the_plain_residual_bit_for_bit():
    x, y = torch.randn(2, 5, 32), torch.randn(2, 5, 32)
    r = OrthogonalParallelResidual(32)
    assert torch.equal(r(x, y), x + y)
    plain, ortho = build(), build(residual="orthogonal_parallel")
    missing = ortho.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.endswith((".alpha", ".beta")) for k in missing)
    ids = torch.randint(3, 67, (2, 9))
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, ortho(ids).logits)


def test_orthogonal_and_parallel_parts_are_what_they_say():
    x, y = torch.randn(4, 16, dtype=torch.float64), torch.randn(4, 16, dtype=torch.float64)
    r = OrthogonalParallelResidual(16, eps=0.0).double()  # eps only guards a zero stream
    p = r.parallel(x, y)
    o = y - p
    torch.testing.assert_close((o * x).sum(-1), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    ratio = p / x  # p lies along x: the same multiple of x in every channel
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))
    with torch.no_grad():
        r.alpha.fill_(0.5)
        r.beta.fill_(2.0)
    torch.testing.assert_close(r(x, y), x + 0.5 * o + 2.0 * p)
    zero = torch.zeros(4, 16, dtype=torch.float64)
    assert torch.isfinite(OrthogonalParallelResidual(16).double()(zero, y)).all()  # a zero stream: eps, no NaN


def test_orthogonal_parallel_trains_saves_and_loads(tmp_path):
    model = build(residual="orthogonal_parallel").train()
    ids = torch.randint(3, 67, (2, 9))
    model(ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.endswith((".alpha", ".beta"))]
    assert len(grads) == 2 * 2 * model.config.num_hidden_layers and all(g is not None and g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(".alpha"):
                p.mul_(0.7)
    model.save_pretrained(tmp_path)
    again = TinyDecoderForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert again.config.residual == "orthogonal_parallel"
    with torch.no_grad():
        assert torch.equal(model.eval()(ids).logits, again(ids).logits)


def test_activation_norms_are_the_rms_of_each_blocks_output():
    from tiny_decoder.training.report import ActivationNorms

    model = build(residual="orthogonal_parallel").train()
    norms = ActivationNorms(model)
    ids = torch.randint(3, 67, (2, 9))
    outputs = []
    handles = [b.register_forward_hook(lambda m, a, o: outputs.append(o.detach())) for b in model.model.layers]
    model(ids)
    model.eval()(ids)  # evaluation forwards are not counted
    model.train()(ids)
    for h in handles:
        h.remove()
    got = norms.pop()
    layers = len(model.model.layers)
    for i in range(layers):  # two training forwards: the mean of their RMS
        expected = (outputs[i].pow(2).mean().sqrt() + outputs[2 * layers + i].pow(2).mean().sqrt()) / 2
        assert got[f"act_rms_{i}"] == pytest.approx(expected.item(), rel=1e-6)
    values = [got[f"act_rms_{i}"] for i in range(layers)]
    assert got["act_rms_spread"] == pytest.approx(max(values) / min(values))
    assert norms.pop() == {}  # a new window starts empty


def test_train_script_logs_activation_norms_for_a_variant(workdir, tmp_path):
    from conftest import cli_args, metrics, run

    out = tmp_path / "ortho"
    run(
        cli_args(
            workdir,
            out,
            max_steps=3,
            log_activation_norms="true",
            config_overrides="residual=orthogonal_parallel,sliding_window=8",
        )
    )
    rows = [r for r in metrics(out) if "loss" in r]
    assert all({"act_rms_0", "act_rms_1", "act_rms_spread"} <= r.keys() for r in rows)
    again = TinyDecoderForCausalLM.from_pretrained(out)
    assert (again.config.residual, again.config.sliding_window) == ("orthogonal_parallel", 8)


def naive_linear_attention(q, k, v):
    """out_i = sum_{j <= past + i} phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j), one query at a time, float64."""
    from tiny_decoder.model.linear_attention import feature_map

    q, k, v = (x.double() for x in (q, k, v))
    t, s = q.shape[-2], k.shape[-2]
    out = torch.zeros(q.shape[:-1] + (v.shape[-1],), dtype=torch.float64)
    for i in range(t):
        last = s - t + i
        w = feature_map(q[..., i : i + 1, :]) @ feature_map(k[..., : last + 1, :]).transpose(-2, -1)  # (B, H, 1, j)
        out[..., i, :] = ((w @ v[..., : last + 1, :]) / w.sum(-1, keepdim=True)).squeeze(-2)
    return out.transpose(1, 2)


def test_linear_attention_matches_the_naive_formula_with_and_without_past():
    from tiny_decoder.model.linear_attention import causal_linear_attention

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    torch.testing.assert_close(causal_linear_attention(q, k, v).double(), naive_linear_attention(q, k, v), atol=1e-5, rtol=1e-4)
    # the last 3 queries against all 7 keys: what a cached decode step computes
    torch.testing.assert_close(
        causal_linear_attention(q[..., 4:, :], k, v).double(), naive_linear_attention(q[..., 4:, :], k, v), atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize("pe", ["rope", "learned", "none"])
def test_linear_attention_model_is_causal_and_cached_generation_is_exact(pe):
    model = build(attention_type="linear", position_embedding=pe)
    ids = torch.randint(3, 67, (2, 10))
    other = ids.clone()
    other[:, 6] = (ids[:, 6] + 1) % 67
    with torch.no_grad():
        a, b = model(ids).logits, model(other).logits
        assert torch.equal(a[:, :6], b[:, :6]) and not torch.equal(a[:, 6:], b[:, 6:])
        kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)
        mask = torch.ones_like(ids[:, :4])
        cached = model.generate(ids[:, :4], attention_mask=mask, use_cache=True, **kw)
        assert torch.equal(cached, model.generate(ids[:, :4], attention_mask=mask, use_cache=False, **kw))
        full = model(cached, use_cache=False).logits
        cache = DynamicCache(config=model.config)
        for t in range(cached.shape[1]):
            torch.testing.assert_close(model(cached[:, t : t + 1], cache=cache).logits[:, 0], full[:, t], atol=1e-5, rtol=1e-4)


def test_linear_attention_refuses_what_it_cannot_do_exactly():
    from transformers import StaticCache

    model = build(attention_type="linear")
    ids = torch.randint(3, 67, (2, 6))
    with pytest.raises(ValueError, match="does not take padding"):
        model(ids, attention_mask=torch.tensor([[0, 1, 1, 1, 1, 1], [1] * 6]))
    with pytest.raises(ValueError, match="static cache holds empty slots"):
        model(ids, cache=StaticCache(config=model.config, max_cache_len=16))
    for bad in (dict(sliding_window=4), dict(position_embedding="alibi")):
        with pytest.raises(ValueError, match="attention_type='linear' has no score matrix"):
            small_config(attention_type="linear", **bad)
    with pytest.raises(ValueError, match="attention_type='quadratic' is not supported"):
        small_config(attention_type="quadratic")


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_linear_attention_chunks_do_not_change_the_result(chunk):
    from tiny_decoder.model.linear_attention import causal_linear_attention

    torch.manual_seed(1)
    q, k, v = torch.randn(1, 2, 10, 4), torch.randn(1, 2, 13, 4), torch.randn(1, 2, 13, 4)
    torch.testing.assert_close(
        causal_linear_attention(q, k, v, chunk_size=chunk).double(), naive_linear_attention(q, k, v), atol=1e-5, rtol=1e-4
    )


# ---------------------------------------------------------------------------- dynamic depth (early exit)


def decode_logits(model, ids, prompt=3):
    """Teacher-forced cached decoding: the prompt in one forward, then one token at a time."""
    cache = DynamicCache(config=model.config)
    out = [model(ids[:, :prompt], cache=cache).logits[:, -1]]
    layers = []
    for t in range(prompt, ids.shape[1] - 1):
        step = model(ids[:, t : t + 1], cache=cache)
        out.append(step.logits[:, -1])
        layers.append(model.config.num_hidden_layers - 1 if step.exit_layer is None else step.exit_layer)  # None: all layers
    return torch.stack(out, 1), layers, cache


@pytest.mark.parametrize("threshold", [None, 1.0])
def test_a_threshold_that_never_exits_is_the_full_model_exactly(threshold):
    full = build(num_hidden_layers=3)
    gated = build(num_hidden_layers=3, early_exit_threshold=threshold)
    ids = torch.randint(3, 67, (1, 12))
    with torch.no_grad():
        a, _, _ = decode_logits(full, ids)
        b, layers, _ = decode_logits(gated, ids)
        kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert torch.equal(full.generate(ids[:, :3], **kw), gated.generate(ids[:, :3], **kw))
    assert torch.equal(a, b) and set(layers) == {2}


@pytest.mark.parametrize("pe", ["rope", "learned"])
def test_tokens_that_always_exit_early_see_exactly_the_shallow_model(pe):
    """Threshold 0 from layer 1 on: every decoded token leaves after block 1, so its logits are those of the
    first two blocks (+ final norm and head) run on the whole sequence; the deeper cache still gets every position."""
    deep = build(num_hidden_layers=4, position_embedding=pe, early_exit_threshold=0.0, early_exit_min_layer=1)
    shallow = build(num_hidden_layers=2, position_embedding=pe)
    shallow.load_state_dict(deep.state_dict(), strict=False)
    ids = torch.randint(3, 67, (1, 12))
    with torch.no_grad():
        got, layers, cache = decode_logits(deep, ids)
        reference = shallow(ids, use_cache=False).logits[:, 2:-1]
    assert set(layers) == {1}
    torch.testing.assert_close(got[:, 1:], reference[:, 1:], atol=1e-5, rtol=1e-4)  # the prompt's last token ran all 4
    assert all(layer.keys.shape[-2] == ids.shape[1] - 1 for layer in cache.layers)  # CALM: no hole in any layer


def test_a_token_exits_at_the_first_layer_whose_exit_is_confident():
    model = build(num_hidden_layers=4)
    ids = torch.randint(3, 67, (1, 6))
    with torch.no_grad():  # each block's exit confidence for the first decoded token, no early exit
        cache = DynamicCache(config=model.config)
        model(ids[:, :5], cache=cache)
        hs = []
        handles = [b.register_forward_hook(lambda m, a, o: hs.append(o)) for b in model.model.layers]
        model(ids[:, 5:], cache=cache)
        for h in handles:
            h.remove()
        conf = [torch.softmax(model.lm_head(model.model.norm(h)), -1).max().item() for h in hs[:-1]]
        for threshold in sorted(conf):
            threshold -= 1e-7  # just below one of them: the first layer above it is where the token leaves
            model.set_early_exit(threshold)
            cache = DynamicCache(config=model.config)
            model(ids[:, :5], cache=cache)
            out = model(ids[:, 5:], cache=cache)
            assert out.exit_layer == next(i for i, c in enumerate(conf) if c > threshold)
        model.set_early_exit(max(conf) + 1e-4)  # above all: the last layer
        assert model(ids[:, 5:], cache=cache).exit_layer == 3


def test_exit_loss_adds_the_mean_intermediate_cross_entropy():
    model = build(num_hidden_layers=3, early_exit_loss_weight=0.5).train()
    ids = torch.randint(3, 67, (2, 9))
    loss = model(ids, labels=ids).loss
    hs = []
    handles = [b.register_forward_hook(lambda m, a, o: hs.append(o)) for b in model.model.layers]
    plain = model.eval()(ids, labels=ids).loss  # eval: no exit loss
    for h in handles:
        h.remove()
    ce = lambda h: torch.nn.functional.cross_entropy(
        model.lm_head(model.model.norm(h))[:, :-1].reshape(-1, 67), ids[:, 1:].reshape(-1)
    )  # noqa: E731
    torch.testing.assert_close(loss, plain + 0.5 * (ce(hs[0]) + ce(hs[1])) / 2)


def test_layer_dropout_skips_blocks_in_training_only():
    model = build(num_hidden_layers=3, layer_dropout=0.999999)
    ids = torch.randint(3, 67, (1, 6))
    model.config.early_exit_loss_weight = 0.5  # with every intermediate block skipped there is no exit to score
    assert torch.isfinite(model.train()(ids, labels=ids).loss)
    model.config.early_exit_loss_weight = 0.0
    first_only = build(num_hidden_layers=1)
    first_only.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(model.train()(ids).logits, first_only(ids).logits)  # blocks 1, 2 skipped
        assert not torch.equal(model.eval()(ids).logits, first_only(ids).logits)
    for bad, message in (
        (dict(early_exit_threshold=1.5), "must be a probability"),
        (dict(early_exit_min_layer=2), "must be a layer index"),
        (dict(layer_dropout=1.0), "layer_dropout=1.0 must be in"),
    ):
        with pytest.raises(ValueError, match=message):
            small_config(**bad)


def test_evaluate_early_exit_reports_loss_depth_and_speed():
    from tiny_decoder.evaluation.early_exit import evaluate_early_exit

    model = build(num_hidden_layers=3)
    seqs = [torch.randint(3, 67, (10,)) for _ in range(2)]
    rows = evaluate_early_exit(model, seqs, [1.0, 0.0], prompt_tokens=2)
    with torch.no_grad():
        full = sum(torch.nn.functional.cross_entropy(model(s[None]).logits[0, 1:-1], s[2:], reduction="sum") for s in seqs)
    assert rows[0]["loss"] == pytest.approx(float(full) / 16, rel=1e-4) and rows[0]["mean_exit_layer"] == 2
    assert rows[1]["mean_exit_layer"] == 0 and rows[1]["tokens_per_s"] > 0
    assert model.config.early_exit_threshold is None  # put back


def test_config_overrides_reach_the_new_fields_and_none_stays_a_string_where_strings_go(tiny_tokenizer):
    from tiny_decoder.training import ModelArguments, build_config

    config = build_config(
        ModelArguments(
            preset="nano",
            config_overrides="position_embedding=none,sliding_window=none,attention_type=linear,early_exit_threshold=0.9",
        ),
        tiny_tokenizer,
        16,
    )
    assert (config.position_embedding, config.sliding_window, config.attention_type, config.early_exit_threshold) == (
        "none",
        None,
        "linear",
        0.9,
    )
