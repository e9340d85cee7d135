"""app.py served for real on 127.0.0.1 and driven through gradio_client: seeded text equals generate()'s, text
streams in several updates, errors come back as messages and the server keeps serving."""

import importlib.util
import socket

import pytest
from test_demo import reference_tokens

from conftest import ROOT

gr = pytest.importorskip("gradio", reason="the demo needs the [demo] extra: pip install -e '.[demo]'")
client_module = pytest.importorskip("gradio_client")


def load_app():
    spec = importlib.util.spec_from_file_location("tiny_decoder_app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(story_model):
    app = load_app()
    demo = app.build_demo([str(story_model)])
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = client_module.Client(f"http://127.0.0.1:{port}/", verbose=False)
        yield client, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def test_seeded_generation_equals_generate(server, story_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    client, _ = server
    story, coloured, table, info, _index = client.predict(
        str(story_model), "Once upon a time", 16, 0.9, 20, 0.9, 5, api_name="/write"
    )
    tokenizer = AutoTokenizer.from_pretrained(story_model)
    model = AutoModelForCausalLM.from_pretrained(story_model).eval()
    prompt_ids = [tokenizer.eos_token_id] + tokenizer("Once upon a time", add_special_tokens=False)["input_ids"]
    new = reference_tokens(model, tokenizer, prompt_ids, 5, 16)
    assert story == "Once upon a time" + tokenizer.decode(new, skip_special_tokens=True)
    assert coloured.count('class="tok"') == len(new)
    assert len(table["data"]) == 5 and "tokens/s" in info


def test_text_streams_in_many_updates(server, story_model):
    client, _ = server
    job = client.submit(str(story_model), "Tom", 24, 0, 0, 1.0, 0, api_name="/write")
    job.result(timeout=120)
    stories = [out[0] for out in job.outputs()]
    assert len(stories) >= 10  # one update per token (the queue may merge a few)
    assert all(a == b[: len(a)] for a, b in zip(stories, stories[1:]))  # each extends the one before


@pytest.mark.parametrize(
    "args, message",
    [
        (("PROMPT_MODEL", "", 16, 0.9, 20, 0.9, 0), "The prompt is empty"),
        (("PROMPT_MODEL", "Hi", 16, -3, 20, 0.9, 0), "Value -3 is less than minimum value 0"),  # gradio's slider check
        (("PROMPT_MODEL", "Hi", 16, 0.9, 20, 0.9, -1), "seed = -1 is out of range"),
        (("./runs/does-not-exist", "Hi", 16, 0.9, 20, 0.9, 0), "does not exist"),
        (("someone/offline-model", "Hi", 16, 0.9, 20, 0.9, 0), "the Hub cannot be reached"),
    ],
)
def test_errors_are_messages_and_the_server_survives(server, story_model, args, message):
    client, _ = server
    args = tuple(str(story_model) if a == "PROMPT_MODEL" else a for a in args)
    with pytest.raises(client_module.exceptions.AppError, match=message):
        client.predict(*args, api_name="/write")
    story, *_ = client.predict(str(story_model), "Hi", 4, 0, 0, 1.0, 0, api_name="/write")
    assert story.startswith("Hi")


def test_chat_without_a_template_is_a_message_and_with_one_answers(server, story_model, chat_model):
    client, _ = server
    with pytest.raises(client_module.exceptions.AppError, match="no chat template"):
        client.predict(str(story_model), "Hello", [], 8, 0, 0, 1.0, 0, api_name="/chat")
    history, cleared = client.predict(str(chat_model), "Hello", [], 8, 0, 0, 1.0, 0, api_name="/chat")
    assert cleared == "" and [m["role"] for m in history] == ["user", "assistant"]


def test_compare_runs_both_models(server, story_model, chat_model):
    client, _ = server
    text_a, info_a, text_b, info_b = client.predict(
        str(story_model), str(chat_model), "Once", 8, 0, 0, 1.0, 0, api_name="/compare"
    )
    assert text_a.startswith("Once") and text_b.startswith("Once")
    assert "M parameters" in info_a and "tokens/s" in info_b


def test_attention_endpoint_draws_and_names_a_bad_layer(server, story_model):
    client, _ = server
    head_plot, entropy_plot = client.predict(str(story_model), "Once upon a time", 1, 0, api_name="/attention")
    assert head_plot and entropy_plot  # two figures came back
    with pytest.raises(client_module.exceptions.AppError, match="layer 9, head 0 is out of range"):
        client.predict(str(story_model), "Once upon a time", 9, 0, api_name="/attention")
