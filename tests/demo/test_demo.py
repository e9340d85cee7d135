"""The demo's logic as plain Python (tiny_decoder/demo.py): no gradio, no server."""

import threading

import pytest
import torch

from tiny_decoder.demo import (
    NOT_OFFERED,
    Generation,
    Limits,
    ModelCache,
    alternatives_rows,
    attention_view,
    chat_prompt_ids,
    check_request,
    describe,
    fit_to_context,
    generation_kwargs,
    load_model,
    story_prompt_ids,
    stream_generation,
    tokens_html,
)


def finished(loaded, prompt, seed=3, **settings):
    settings = generation_kwargs(**{"max_new_tokens": 12, "temperature": 0.9, "top_k": 20, "top_p": 0.9, **settings})
    items = list(stream_generation(loaded, story_prompt_ids(loaded.tokenizer, prompt), settings, seed))
    assert isinstance(items[-1], Generation) and all(isinstance(i, str) for i in items[:-1])
    return items[:-1], items[-1]


def reference_tokens(model, tokenizer, prompt_ids, seed, max_new_tokens):
    """What a user gets from generate() with the page's default filters (temperature 0.9, top-k 20, top-p 0.9)."""
    ids = torch.tensor([prompt_ids])
    torch.manual_seed(seed)
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.9, top_k=20, top_p=0.9,
        max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return out[0, ids.shape[1] :].tolist()


def test_seeded_text_equals_generate_and_streams_token_by_token(story_model):
    loaded = load_model(str(story_model))
    partial, gen = finished(loaded, "Once upon a time", seed=11)
    reference = reference_tokens(loaded.model, loaded.tokenizer, gen.prompt_ids, 11, 12)
    assert gen.new_ids == reference
    assert len(partial) == len(gen.new_ids)  # one update per token
    assert partial[-1] == gen.text == loaded.tokenizer.decode(reference, skip_special_tokens=True)
    assert gen.tokens_per_s > 0


def test_token_probabilities_equal_a_direct_forward_pass(story_model):
    loaded = load_model(str(story_model))
    _, gen = finished(loaded, "Tom had a red ball", temperature=1.0, top_k=0, top_p=1.0)
    full = torch.tensor([gen.prompt_ids + gen.new_ids])
    with torch.no_grad():
        probs = torch.softmax(loaded.model(full).logits[0].double(), -1)
    n = len(gen.prompt_ids)
    for i, (token, info) in enumerate(zip(gen.new_ids, gen.tokens)):
        p = probs[n - 1 + i]  # the distribution the token was drawn from
        assert info.prob == pytest.approx(p[token].item(), abs=1e-5)
        assert info.entropy == pytest.approx(-(p * p.log()).sum().item(), abs=1e-4)
        top = p.topk(5)
        assert [q for _, q in info.top] == pytest.approx(top.values.tolist(), abs=1e-5)
        assert [t for t, _ in info.top] == [loaded.tokenizer.decode([j]) for j in top.indices.tolist()]
        assert all(a[1] >= b[1] for a, b in zip(info.top, info.top[1:]))  # most likely first
    rows = alternatives_rows(gen.tokens, 2)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5] and rows[0][2] >= rows[-1][2]
    assert alternatives_rows(gen.tokens, 10**6) == alternatives_rows(gen.tokens, len(gen.tokens) - 1)  # clamped
    page = tokens_html(gen.tokens)
    assert page.count('class="tok"') == len(gen.tokens) and "hsl(" in page


def test_greedy_is_greedy_and_a_stop_ends_generation(story_model):
    loaded = load_model(str(story_model))
    _, gen = finished(loaded, "The cat", temperature=0, max_new_tokens=8)
    assert all(info.top[0][1] == pytest.approx(info.prob) for info in gen.tokens)  # each token is the argmax
    stop = threading.Event()
    stream = stream_generation(loaded, gen.prompt_ids, generation_kwargs(200, 0, 0, 1.0), 0, stop)
    assert isinstance(next(stream), str)
    stop.set()
    final = [item for item in stream][-1]
    assert len(final.new_ids) < 200


def test_chat_renders_the_template(chat_model, story_model):
    loaded = load_model(str(chat_model))
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    ids = chat_prompt_ids(loaded.tokenizer, history, "Tell me a story")
    expected = loaded.tokenizer.apply_chat_template(
        history + [{"role": "user", "content": "Tell me a story"}], add_generation_prompt=True, tokenize=False
    )
    assert loaded.tokenizer.decode(ids) == expected and expected.endswith("<|assistant|>\n")
    with pytest.raises(ValueError, match="no chat template"):
        chat_prompt_ids(load_model(str(story_model)).tokenizer, [], "Hi")


def test_attention_view_and_description(story_model):
    loaded = load_model(str(story_model))
    ids = story_prompt_ids(loaded.tokenizer, "Lily saw a big dog")
    head_fig, entropy_fig = attention_view(loaded, ids, 1, 0)
    image = head_fig.axes[0].images[0].get_array()
    assert image.shape == (len(ids), len(ids)) and float(image.sum()) == pytest.approx(len(ids), rel=1e-4)  # rows sum to 1
    cfg = loaded.model.config
    assert entropy_fig.axes[0].images[0].get_array().shape == (cfg.num_hidden_layers, cfg.num_attention_heads)
    with pytest.raises(ValueError, match="out of range"):
        attention_view(loaded, ids, cfg.num_hidden_layers, 0)
    assert loaded.eval_loss is not None  # the trained folder's card states it
    assert f"validation loss {loaded.eval_loss:.3f}" in describe(loaded)


@pytest.mark.parametrize(
    "values, message",
    [
        (("", 10, 1.0, 5, 0.9, 0), "prompt is empty"),
        (("Hi", 0, 1.0, 5, 0.9, 0), "max_new_tokens = 0 is out of range"),
        (("Hi", 10, -1.0, 5, 0.9, 0), "temperature = -1.0 is out of range"),
        (("Hi", 10, 1.0, 5, 0.0, 0), "top_p = 0 keeps no token"),
        (("Hi", 10, 1.0, 5, 0.9, float("nan")), "seed = nan is out of range"),
        (("Hi", 10, 1.0, None, 0.9, 0), "top_k = None is out of range"),
    ],
)
def test_bad_page_input_is_named(values, message):
    with pytest.raises(ValueError, match=message):
        check_request(*values)


def test_unknown_models_are_named(tmp_path):
    with pytest.raises(ValueError, match="Model './runs/nope' does not exist"):
        load_model("./runs/nope")
    with pytest.raises(ValueError, match="cannot be reached"):
        load_model("someone/not-here")  # HF_HUB_OFFLINE=1 in tests
    with pytest.raises(ValueError, match="No model given"):
        load_model("  ")


def test_the_cache_loads_only_what_was_offered_under_one_neutral_message(story_model, tmp_path, monkeypatch):
    monkeypatch.chdir(story_model.parent)
    calls = []
    cache = ModelCache([story_model.name, "someone/hub-model"], loader=lambda name: calls.append(name) or name.upper())
    assert cache.get(story_model.name) is cache.get(f" {story_model.name} ") and calls == [story_model.name]
    assert cache.get("someone/hub-model") == "SOMEONE/HUB-MODEL"
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "config.json").write_text("{}")
    refusals = set()
    for typed in [
        f"{story_model.name}/.",  # the offered folder, spelled otherwise
        f"{story_model.name}/../{story_model.name}",
        str(story_model),  # its absolute path
        str(secret),  # a model folder nobody offered
        str(tmp_path),  # a folder without config.json
        "/etc",
        "/nonexistent/x",
        "~/.ssh",
        "gpt2",
        "someone/other",
        "",
        None,
        3,
    ]:
        with pytest.raises(ValueError) as err:
            cache.get(typed)
        refusals.add(str(err.value))
    assert refusals == {NOT_OFFERED}  # one message, whatever exists on disk
    assert len(calls) == 2  # nothing else was loaded


def test_any_model_mode_keys_by_identity_and_forgets_the_least_recent(story_model, chat_model, monkeypatch):
    monkeypatch.chdir(story_model.parent)
    calls = []
    cache = ModelCache([], allow_any=True, max_models=2, loader=lambda name: calls.append(name) or object())
    first = cache.get(story_model.name)
    for spelling in [f"{story_model.name}/.", f"./{story_model.name}/./././", str(story_model), f"{story_model.name}/"]:
        assert cache.get(spelling) is first  # one copy per folder, however it is spelled
    cache.get(str(chat_model))
    cache.get("someone/a")  # a third model: the least recently used (the story model) goes
    assert len(cache.models) == 2 and str(story_model.resolve()) not in cache.models
    assert cache.get(str(story_model)) is not first and len(calls) == 4
    with pytest.raises(ValueError, match="No model given"):
        ModelCache([], allow_any=True).get(None)
    with pytest.raises(ValueError, match="max_models=0"):
        ModelCache([], max_models=0)


def test_limits_bound_the_prompt_and_the_new_tokens(story_model):
    limits = Limits(max_new_tokens=64, max_prompt_chars=100)
    with pytest.raises(ValueError, match="The prompt is 101 characters; this page takes at most 100"):
        check_request("x" * 101, 10, 1.0, 5, 0.9, 0, limits)
    with pytest.raises(ValueError, match="max_new_tokens = 65 is out of range: use a number from 1 to 64"):
        check_request("Hi", 65, 1.0, 5, 0.9, 0, limits)
    for bad in ("12", True, [3]):
        with pytest.raises(ValueError, match="max_new_tokens = .* is out of range"):
            check_request("Hi", bad, 1.0, 5, 0.9, 0, limits)
    loaded = load_model(str(story_model))
    context = loaded.model.config.max_position_embeddings
    assert fit_to_context(loaded, [1] * 10, 5) == (5, "")
    n, note = fit_to_context(loaded, [1] * 10, 1000)
    assert n == context - 10 and f"cut from 1000 to {context - 10}" in note
    with pytest.raises(ValueError, match=f"The prompt is {context} tokens; this model reads at most {context}"):
        fit_to_context(loaded, [1] * context, 1)
    ids = story_prompt_ids(loaded.tokenizer, "Tom")
    n, _ = fit_to_context(loaded, ids, 1000)  # what the page then generates fills the context, no more
    gen = list(stream_generation(loaded, ids, generation_kwargs(n, 0, 0, 1.0), 0))[-1]
    assert len(ids) + len(gen.new_ids) == context


def test_streaming_batches_updates_in_time_and_keeps_the_text(story_model):
    loaded = load_model(str(story_model))
    ids = story_prompt_ids(loaded.tokenizer, "Once")
    settings = generation_kwargs(24, 0, 0, 1.0)
    every_token = list(stream_generation(loaded, ids, settings, 0))
    batched = list(stream_generation(loaded, ids, settings, 0, every=60.0))
    assert len(every_token) - 1 == len(every_token[-1].new_ids)
    assert len(batched) == 3  # the first token at once, the rest in one update, then the Generation
    assert batched[-2] == every_token[-2] == batched[-1].text and batched[-1].new_ids == every_token[-1].new_ids
