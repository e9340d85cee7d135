"""The decode engine gives generate()'s greedy tokens for every variant with a static cache (batches of different
lengths, per-row EOS, repetition penalty), samples only what generate()'s top-k/top-p would allow, and refuses bad
input in one line."""

import pytest
import torch
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from conftest import small_config
from tiny_decoder import TinyDecoderForCausalLM, aot_step
from tiny_decoder.aot_step import ExportFailed
from tiny_decoder.engine import Engine, decode, sample

EOS, PAD = 5, 0
PROMPTS = [[3, 9, 17, 22, 8, 40], [11, 4], [30, 31, 32]]
VARIANTS = {
    "rope_gqa": {},
    "mqa": dict(num_key_value_heads=1),
    "alibi": dict(position_embedding="alibi"),
    "learned": dict(position_embedding="learned"),
    "sinusoidal_post_norm": dict(position_embedding="sinusoidal", norm_position="post"),
    "sliding_window": dict(sliding_window=4),
    "layernorm_gelu": dict(norm="layernorm", hidden_act="gelu"),
    "qk_norm_relu2_softcap": dict(qk_norm=True, hidden_act="relu2", final_logit_softcapping=5.0),
    "biases": dict(attention_bias=True, mlp_bias=True),  # the compiled step concatenates q/k/v and gate/up with these
}


@pytest.fixture(autouse=True)
def quick_compile(request, monkeypatch, tmp_path):
    """The compiled tests trace without max_autotune (its GEMM search costs ~15 s a graph); one test keeps the
    shipped options (marked `shipped_options`). Each test has a step store of its own (as a fresh machine would)."""
    import tiny_decoder.engine as engine_module

    monkeypatch.setenv("TINY_DECODER_CACHE", str(tmp_path / "cache"))

    if "shipped_options" not in request.keywords:
        quick = {k: v for k, v in engine_module.CPU_COMPILE_OPTIONS.items() if not k.startswith("max_autotune")}
        monkeypatch.setattr(engine_module, "CPU_COMPILE_OPTIONS", quick)


def model_with(**over):
    torch.manual_seed(0)
    return TinyDecoderForCausalLM(small_config(eos_token_id=EOS, pad_token_id=PAD, **over)).eval()


def loud(**over):
    """A model whose blocks are strong enough that attention and the activation decide the tokens (in a freshly
    initialised one the embeddings do, and a step that mixed up the cache could still give the same tokens)."""
    model = model_with(**over)
    with torch.no_grad():
        for weight in model.model.layers.parameters():
            weight.mul_(20 if weight.dim() == 2 else 1)
    return model


def generate_reference(model, prompts, n, eos=EOS, **kw):
    """generate() on the left-padded batch, each row cut after its first EOS."""
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=n, eos_token_id=eos, pad_token_id=PAD, **kw)
    rows = []
    for row in out[:, width:].tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


@pytest.mark.parametrize("name", list(VARIANTS))
def test_greedy_tokens_equal_generate(name):
    model = model_with(**VARIANTS[name])
    assert Engine(model).generate(PROMPTS, 16) == generate_reference(model, PROMPTS, 16, do_sample=False)


def test_rows_stop_at_their_own_eos():
    model = model_with()
    free = Engine(model).generate(PROMPTS, 20, eos_token_id=-1)
    eos = free[1][3]  # a token the second row makes at its fourth step: as EOS, that row stops there
    out = Engine(model).generate(PROMPTS, 20, eos_token_id=eos)
    assert out == generate_reference(model, PROMPTS, 20, eos=eos, do_sample=False)
    assert len(out[1]) <= 4 and out[1][-1] == eos and max(map(len, out)) > len(out[1])  # one row stopped, alone


def test_repetition_penalty_is_generates():
    model = model_with()
    out = Engine(model).generate(PROMPTS, 16, repetition_penalty=1.5)
    assert out == generate_reference(model, PROMPTS, 16, do_sample=False, repetition_penalty=1.5)


@pytest.mark.slow
@pytest.mark.shipped_options
def test_the_compiled_step_gives_the_same_tokens():
    # The shipped CPU options: frozen weights, inductor's own GEMMs (max_autotune), the C++ wrapper; rows that stop
    # at their EOS at different steps, more steps than the stop check's interval.
    model = model_with(num_key_value_heads=1)
    free = Engine(model, compile=False).generate(PROMPTS, 20, eos_token_id=-1)
    eos = free[1][3]
    engine = Engine(model, compile=True)
    for stop in (EOS, eos):
        assert engine.generate(PROMPTS, 20, eos_token_id=stop) == generate_reference(
            model, PROMPTS, 20, eos=stop, do_sample=False
        )


@pytest.mark.slow
def test_a_compiled_engine_keeps_its_cache_an_input_and_refuses_changed_weights():
    model = model_with()
    engine = Engine(model, compile=True)
    reference = generate_reference(model, PROMPTS, 12, do_sample=False)
    assert engine.generate(PROMPTS, 12) == reference
    assert engine.generate(PROMPTS, 12) == reference  # the same step again: a frozen cache would repeat one slot
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)  # as an optimizer step or load_state_dict would, in place
    with pytest.raises(ValueError, match="weights changed since this Engine compiled"):
        engine.generate(PROMPTS, 12)
    assert Engine(model, compile=True).generate(PROMPTS, 12) == generate_reference(model, PROMPTS, 12, do_sample=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mqa", "sliding_window", "alibi", "biases"])
def test_a_compiled_engine_reuses_its_step_for_other_prompt_and_output_lengths(name):
    model = model_with(**VARIANTS[name])
    engine = Engine(model, compile=True)
    assert engine.generate(PROMPTS, 12) == generate_reference(model, PROMPTS, 12, do_sample=False)
    others = [[7, 8, 9], [12, 13, 14, 15], [20]]  # another width and max_new_tokens: the same cache bucket
    with torch.compiler.set_stance("fail_on_recompile"):
        assert engine.generate(others, 20) == generate_reference(model, others, 20, do_sample=False)


@pytest.mark.slow
def test_each_compiled_engine_serves_its_own_model_and_refuses_a_changed_one():
    # The same tensors everywhere (weights, buffers, tokens, positions, mask, cache), a different activation: with the
    # step's guards cut to tensors, only each Engine's own compiled step keeps the two apart.
    gelu, relu = loud(hidden_act="gelu"), loud(hidden_act="relu")
    first, second = Engine(gelu, compile=True), Engine(relu, compile=True)
    assert first.generate(PROMPTS, 8) == generate_reference(gelu, PROMPTS, 8, do_sample=False)
    assert second.generate(PROMPTS, 8) == generate_reference(relu, PROMPTS, 8, do_sample=False)
    assert generate_reference(gelu, PROMPTS, 8, do_sample=False) != generate_reference(relu, PROMPTS, 8, do_sample=False)
    gelu.set_early_exit(0.5)
    with pytest.raises(ValueError, match="config changed since this Engine compiled"):
        first.generate(PROMPTS, 8)


@pytest.mark.slow
def test_auto_compiles_once_the_engine_has_run_enough_steps(monkeypatch):
    import tiny_decoder.engine as engine_module

    monkeypatch.setattr(engine_module, "AUTO_COMPILE_STEPS", 20)
    model = model_with(num_key_value_heads=1)
    engine = Engine(model)  # compile="auto"
    reference = generate_reference(model, PROMPTS, 12, do_sample=False)
    assert engine.generate(PROMPTS, 12) == reference and engine._compiled is None  # 11 eager steps
    assert engine.generate(PROMPTS, 12) == reference and engine._compiled is None  # 22: enough from the next call on
    assert engine.generate(PROMPTS, 12) == reference and len(engine._aot_steps) == 1  # on CPU: the AOTInductor step
    assert engine.eager_steps == 22  # the third call ran compiled
    window = model_with(sliding_window=4)  # not exportable: auto compiles it with torch.compile
    engine = Engine(window)
    engine.eager_steps = 20
    assert engine.generate(PROMPTS, 12) == generate_reference(window, PROMPTS, 12, do_sample=False)
    assert not engine._aot_steps and engine._traced


def test_auto_falls_back_to_eager_when_compiling_fails(monkeypatch):
    import tiny_decoder.engine as engine_module

    def broken(self, device):
        def step(*args):
            raise torch._dynamo.exc.BackendCompilerFailed(step, RuntimeError("no C++ compiler"), None)

        return step

    def broken_export(*args):
        raise ExportFailed("exporting the decode step failed")

    monkeypatch.setattr(engine_module, "AUTO_COMPILE_STEPS", 0)
    monkeypatch.setattr(Engine, "_compiled_step", broken)
    monkeypatch.setattr(aot_step, "compile_package", broken_export)
    model = model_with()
    engine = Engine(model)
    with pytest.warns(UserWarning, match="compiled with torch.compile instead"):
        with pytest.warns(UserWarning, match="compiling the decode step failed"):  # then torch.compile fails too
            assert engine.generate(PROMPTS, 12) == generate_reference(model, PROMPTS, 12, do_sample=False)
    assert engine.compile is False
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed):  # asked for explicitly, a failure is an error
        Engine(model, compile=True).generate(PROMPTS, 12)
    with pytest.raises(ExportFailed):
        Engine(model, compile="aot").generate(PROMPTS, 12)


@pytest.mark.slow
def test_auto_compiles_with_torch_compile_a_model_that_does_not_export(monkeypatch):
    import tiny_decoder.engine as engine_module

    def broken_export(*args):
        raise ExportFailed("exporting the decode step failed")

    monkeypatch.setattr(engine_module, "AUTO_COMPILE_STEPS", 0)
    monkeypatch.setattr(aot_step, "compile_package", broken_export)
    model = model_with()
    engine = Engine(model)
    with pytest.warns(UserWarning, match="compiled with torch.compile instead .exporting the decode step failed"):
        assert engine.generate(PROMPTS, 12) == generate_reference(model, PROMPTS, 12, do_sample=False)
    assert engine._traced and not engine._aot_steps and engine.compile == "auto"


def test_compile_must_be_true_false_auto_or_aot():
    with pytest.raises(ValueError, match="compile='yes' must be True, False, 'auto' or 'aot'"):
        Engine(model_with(), compile="yes")


@pytest.mark.slow
def test_the_ahead_of_time_step_gives_the_same_tokens_and_refuses_changed_weights(monkeypatch):
    # AOTInductor's step (compile="aot"): rows that stop at their own EOS at different steps, across the stop check's
    # interval; another prompt and output length in the same cache bucket reuse the one exported step.
    over = dict(num_key_value_heads=1, attention_bias=True, mlp_bias=True)
    model = loud(**over)
    free = Engine(model, compile=False).generate(PROMPTS, 20, eos_token_id=-1)
    eos = free[1][3]
    engine = Engine(model, compile="aot")
    for stop in (EOS, eos):
        assert engine.generate(PROMPTS, 20, eos_token_id=stop) == generate_reference(
            model, PROMPTS, 20, eos=stop, do_sample=False
        )
    others = [[7, 8, 9], [12, 13, 14, 15], [20]]
    reference = generate_reference(model, others, 12, do_sample=False)
    assert engine.generate(others, 12) == reference
    assert len(engine._aot_steps) == 1

    # The step was kept: a later Engine (in another process it is the same) of a model with these weights loads it
    # under the default compile="auto" and decodes with it from its first call - nothing is compiled again.
    def no_compiling(*args):
        raise AssertionError("compiled again")

    monkeypatch.setattr(aot_step, "compile_package", no_compiling)
    later = Engine(loud(**over))
    assert later.generate(others, 12) == reference
    assert len(later._aot_steps) == 1 and later.eager_steps == 0
    assert Engine(loud(**over), compile="aot").generate(others, 12) == reference
    kept_none = Engine(loud(**over), keep_compiled=False)  # reads nothing from the store: eager
    assert kept_none.generate(others, 12) == reference and not kept_none._aot_steps
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)
    changed = Engine(model)  # another model to the store: eager under auto
    assert changed.generate(others, 12) == generate_reference(model, others, 12, do_sample=False)
    assert not changed._aot_steps and changed.eager_steps == 11
    with pytest.raises(ValueError, match="weights changed since this Engine compiled"):
        engine.generate(PROMPTS, 12)


def test_auto_counts_a_models_eager_steps_on_this_machine(monkeypatch):
    """Renting before buying across processes: each Engine of the same model adds its eager steps to the store's
    count, and an Engine that finds AUTO_COMPILE_STEPS counted compiles from its first call."""
    import tiny_decoder.engine as engine_module
    from tiny_decoder.io.step_store import StepStore

    monkeypatch.setattr(engine_module, "AUTO_COMPILE_STEPS", 20)
    first = Engine(model_with())
    cpu, shape = torch.device("cpu"), (len(PROMPTS), first._cache_length(6 + 12, compiled=True))  # 12 new tokens
    assert first.generate(PROMPTS, 12) == generate_reference(first.model, PROMPTS, 12, do_sample=False)
    assert StepStore().steps(first._model_id()) == 11 and not first._aot_steps
    second = Engine(model_with())  # the same weights: as a new process would make it
    assert not second._use_compiled(shape, cpu)[0]
    second.generate(PROMPTS, 12)
    assert second.eager_steps == 22 and StepStore().steps(first._model_id()) == 22
    assert Engine(model_with())._use_compiled(shape, cpu)[0]  # 22 counted: compiled from the first call
    assert not Engine(model_with(hidden_act="gelu"))._use_compiled(shape, cpu)[0]  # another model: its own count
    assert not Engine(model_with(), keep_compiled=False)._use_compiled(shape, cpu)[0]  # this Engine's count only
    window = Engine(model_with(sliding_window=4))  # not kept ahead of time: its steps are not counted either
    window.generate(PROMPTS, 12)
    assert StepStore().steps(window._model_id()) == 0 and window.eager_steps == 11


def test_a_stored_step_that_does_not_load_is_passed_over(monkeypatch):
    """A stored package that fails to load (another machine's libraries, a damaged file with a matching record)
    gives a warning and eager decoding under auto, with the same tokens."""
    from tiny_decoder.io.step_store import StepStore

    model = model_with()
    engine = Engine(model)
    shape = (len(PROMPTS), engine._cache_length(6 + 12, compiled=True))  # the longest prompt and 12 new tokens
    StepStore().save(engine._key(shape, torch.device("cpu")), lambda path: path.write_bytes(b"not a package"), {})
    with pytest.warns(UserWarning, match="stored decode step .* did not load"):
        assert engine.generate(PROMPTS, 12) == generate_reference(model, PROMPTS, 12, do_sample=False)
    assert not engine._aot_steps and engine.eager_steps == 11


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alibi", "sinusoidal_post_norm", "qk_norm_relu2_softcap"])
def test_the_ahead_of_time_step_gives_generates_tokens_for_other_variants(name):
    # The others (rope/GQA, learned, LayerNorm + GELU) were checked the same way once; these differ most in what the
    # exported step computes: a bias built from the mask, positions added to the input, post-norm, q/k norms, soft-cap.
    model = loud(**VARIANTS[name])
    assert Engine(model, compile="aot").generate(PROMPTS, 16) == generate_reference(model, PROMPTS, 16, do_sample=False)


@pytest.mark.parametrize(
    "over, reason",
    [(dict(sliding_window=4), "sliding-window layers"), (dict(early_exit_threshold=0.9), "dynamic depth")],
)
def test_the_ahead_of_time_step_refuses_what_it_cannot_export(over, reason):
    with pytest.raises(ValueError, match=f"compile='aot' cannot export .*{reason}.*use compile=True"):
        Engine(model_with(**over), compile="aot").generate(PROMPTS, 4)


def test_sampling_is_seeded_and_stays_inside_generates_top_k_top_p():
    torch.manual_seed(1)
    logits = torch.randn(4, 67) * 3
    allowed = TopPLogitsWarper(0.8)(None, TopKLogitsWarper(10)(None, logits.clone())) > float("-inf")
    seen = torch.zeros(4, 67, dtype=torch.bool)
    draws = torch.stack([sample(logits, 1.0, 10, 0.8, 1.0, seen, torch.Generator().manual_seed(s)) for s in range(300)])
    assert allowed.gather(1, draws.T).all()  # never a token generate()'s warpers would remove
    assert (draws != draws[0]).any()  # and more than one of the allowed ones
    for top_p in (None, 0.5):  # top-p alone (a full sort) stays inside too
        allowed = (TopPLogitsWarper(top_p)(None, logits.clone()) if top_p else logits) > float("-inf")
        draws = torch.stack([sample(logits, 1.0, None, top_p, 1.0, seen, torch.Generator().manual_seed(s)) for s in range(50)])
        assert allowed.gather(1, draws.T).all()
    assert torch.equal(sample(logits, 1.0, 1, None, 1.0, seen, None), logits.argmax(-1))  # top-k 1 is greedy
    model = model_with()
    a = Engine(model).generate(PROMPTS, 10, temperature=1.0, top_k=20, top_p=0.9, seed=3)
    b = Engine(model).generate(PROMPTS, 10, temperature=1.0, top_k=20, top_p=0.9, seed=3)
    c = Engine(model).generate(PROMPTS, 10, temperature=1.0, top_k=20, top_p=0.9, seed=4)
    assert a == b and a != c


def test_stream_sees_every_token_in_order():
    model = model_with()
    seen = {}
    out = Engine(model).generate(PROMPTS, 8, stream=lambda row, token: seen.setdefault(row, []).append(token))
    assert [seen[i] for i in range(len(PROMPTS))] == out


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompts=[], max_new_tokens=4), "one or more prompts"),
        (dict(prompts=[[3], []], max_new_tokens=4), "at least one token"),
        (dict(prompts=[[3]], max_new_tokens=0), "max_new_tokens=0 must be an integer >= 1"),
        (dict(prompts=[[3]], max_new_tokens=2.5), "max_new_tokens=2.5 must be an integer >= 1"),
        (dict(prompts=[[3]], max_new_tokens="4"), "max_new_tokens='4' must be an integer >= 1"),
        (dict(prompts=[[3] * 60], max_new_tokens=10), "beyond the model's context of 64"),
        (dict(prompts=[[3]], max_new_tokens=4, top_p=0.0), r"top_p=0.0 must be in \(0, 1\]"),
        (dict(prompts=[[3]], max_new_tokens=4, top_k=2.5), "top_k=2.5 must be an integer >= 1"),
        (dict(prompts=[[3]], max_new_tokens=4, temperature=-1.0), "temperature=-1.0 must be a finite number >= 0"),
        (dict(prompts=[[3]], max_new_tokens=4, temperature=float("nan")), "temperature=nan must be a finite number"),
        (dict(prompts=[[3]], max_new_tokens=4, repetition_penalty=float("inf")), "repetition_penalty=inf must be"),
        (
            dict(prompts=[[3, 67]], max_new_tokens=4),
            r"prompt 0 holds 67, not a token id of this model: ids are integers in \[0, 67\)",
        ),
        (dict(prompts=[[3], [-1]], max_new_tokens=4), "prompt 1 holds -1, not a token id"),
        (dict(prompts=[[3, 1.5]], max_new_tokens=4), "prompt 0 holds 1.5, not a token id"),
    ],
)
def test_bad_input_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Engine(model_with()).generate(**kwargs)
    with pytest.raises(ValueError, match="linear.*use model.generate"):
        Engine(model_with(attention_type="linear"))


def test_the_package_samples_through_the_engine(tiny_tokenizer):
    from tiny_decoder.evaluation.sampling import SAMPLING, sample_texts

    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(
        small_config(
            vocab_size=len(tiny_tokenizer), eos_token_id=tiny_tokenizer.eos_token_id, pad_token_id=tiny_tokenizer.pad_token_id
        )
    ).eval()
    prompts = [[tiny_tokenizer.eos_token_id, 40, 41], [tiny_tokenizer.eos_token_id, 50]]
    texts = sample_texts(model, tiny_tokenizer, prompts, 12, seed=7, include_prompt=False)
    new = Engine(model).generate(
        prompts,
        12,
        temperature=1.0,
        top_k=SAMPLING["top_k"],
        top_p=SAMPLING["top_p"],
        seed=7,
        eos_token_id=tiny_tokenizer.eos_token_id,
    )
    assert texts == [tiny_tokenizer.decode(n, skip_special_tokens=True) for n in new]
    linear = TinyDecoderForCausalLM(
        small_config(vocab_size=len(tiny_tokenizer), attention_type="linear", pad_token_id=tiny_tokenizer.pad_token_id)
    ).eval()
    same_length = [[tiny_tokenizer.eos_token_id, 40], [tiny_tokenizer.eos_token_id, 50]]  # linear attention: no padding
    assert len(sample_texts(linear, tiny_tokenizer, same_length, 5, seed=7)) == 2  # generate() where the engine cannot go


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_one_query_attention_is_the_cpu_attention_kernel(mask_kind, kv_heads):
    # What the compiled CPU step uses in place of the flash kernel: the same output and logsumexp, in float64.
    from tiny_decoder.engine import one_query_attention

    torch.manual_seed(0)
    q = torch.randn(3, 4, 1, 8, dtype=torch.float64) * 3
    k, v = (torch.randn(3, kv_heads, 10, 8, dtype=torch.float64) * 3 for _ in range(2))
    mask = None
    if mask_kind == "bool":
        mask = torch.ones(3, 1, 1, 10, dtype=torch.bool)
        mask[0, ..., :4] = False  # left padding
        mask[2, ..., 7:] = False  # slots not written yet
    elif mask_kind == "additive":
        mask = torch.randn(3, 4, 1, 10, dtype=torch.float64)  # e.g. ALiBi's bias
    out, lse = one_query_attention(q, k, v, attn_mask=mask, scale=0.3)
    rep = 4 // kv_heads
    kk, vv = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    ref = torch.nn.functional.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, scale=0.3)
    scores = (q @ kk.transpose(-1, -2)).squeeze(-2) * 0.3
    if mask is not None:
        scores = scores.masked_fill(~mask[..., 0, :], float("-inf")) if mask.dtype == torch.bool else scores + mask[..., 0, :]
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-10)
    assert torch.allclose(lse, scores.logsumexp(-1, keepdim=True), atol=1e-10)
    assert one_query_attention(q.expand(3, 4, 2, 8), k, v) is NotImplemented  # prefill shapes keep the kernel
    assert one_query_attention(q, k, v, dropout_p=0.1) is NotImplemented


def test_a_stored_step_is_named_by_everything_it_depends_on():
    """The store's name for a step changes with the weights, the config, the shape and the compiler options - and
    only with them: a twin model (same seed) gets the same name."""
    from tiny_decoder.io.step_store import digest

    def name(model, shape=(3, 64), options=None):
        return digest(aot_step.step_key(model, aot_step.model_digest(model), decode, shape, options or {}))

    model = model_with()
    assert name(model) == name(model_with())
    assert name(model) != name(model, shape=(3, 128)) and name(model) != name(model, shape=(4, 64))
    assert name(model) != name(model, options={"freezing": True})
    assert name(model) != name(model_with(hidden_act="gelu"))  # another config (and its weights)
    changed = model_with()
    with torch.no_grad():
        changed.lm_head.weight[0, 0] += 1e-6
    assert name(model) != name(changed)
    key = aot_step.step_key(model, "w", decode, (3, 64), {})
    assert {"torch", "transformers", "cpu", "device", "code", "dtype"} <= set(key) and key["device"] == "cpu"
