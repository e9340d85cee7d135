"""The demo's logic as plain Python (tiny_decoder/demo.py): no gradio, no server."""

import threading

import pytest
import torch

from tiny_decoder.demo import (
    Generation,
    ModelCache,
    alternatives_rows,
    attention_view,
    chat_prompt_ids,
    check_request,
    describe,
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
    calls = []
    cache = ModelCache(loader=lambda name: calls.append(name) or name.upper())
    assert cache.get("a") == cache.get("a") == "A" and calls == ["a"]
