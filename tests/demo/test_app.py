"""app.py served for real on 127.0.0.1 and driven through gradio_client: seeded text equals generate()'s, text
streams in several updates, visitors reach only the offered models, work is bounded, errors come back as messages
(no traceback in the server's log) and the server keeps serving."""

import importlib.util
import socket
import subprocess
import sys

import pytest
from test_demo import reference_tokens

from conftest import ROOT

gr = pytest.importorskip("gradio", reason="the demo needs the [demo] extra: pip install -e '.[demo]'")
client_module = pytest.importorskip("gradio_client")


def load_app():
    spec = importlib.util.spec_from_file_location("tiny_decoder_app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # gradio looks up the module of app.py's component classes
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LIMITS = dict(max_new_tokens=64, max_prompt_chars=300)


@pytest.fixture(scope="module")
def server(story_model, chat_model):
    from tiny_decoder.demo import Limits

    app = load_app()
    demo = app.build_demo([str(story_model), str(chat_model)], limits=Limits(**LIMITS), stream_interval=0)
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = client_module.Client(f"http://127.0.0.1:{port}/", verbose=False)
        yield client, demo
    finally:
        demo.close()


def test_seeded_generation_equals_generate(server, story_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    client, _ = server
    story, coloured, table, info, _index = client.predict(
        str(story_model), "Lily saw", 8, 0.9, 20, 0.9, 5, api_name="/write"
    )  # 3 prompt tokens + 8 fit the test model's 16-token context
    tokenizer = AutoTokenizer.from_pretrained(story_model)
    model = AutoModelForCausalLM.from_pretrained(story_model).eval()
    prompt_ids = [tokenizer.eos_token_id] + tokenizer("Lily saw", add_special_tokens=False)["input_ids"]
    new = reference_tokens(model, tokenizer, prompt_ids, 5, 8)
    assert story == "Lily saw" + tokenizer.decode(new, skip_special_tokens=True) and "cut" not in info
    assert coloured.count('class="tok"') == len(new)
    assert len(table["data"]) == 5 and "tokens/s" in info


def test_text_streams_in_many_updates(server, story_model):
    client, _ = server
    job = client.submit(str(story_model), "Tom", 12, 0, 0, 1.0, 0, api_name="/write")
    job.result(timeout=120)
    stories = [out[0] for out in job.outputs()]
    assert len(stories) >= 6  # one update per token with stream_interval 0 (the queue may merge a few)
    assert all(a == b[: len(a)] for a, b in zip(stories, stories[1:]))  # each extends the one before


def test_new_tokens_are_cut_to_the_context_and_said(server, story_model):
    client, _ = server
    story, coloured, _table, info, _index = client.predict(str(story_model), "Tom", 64, 0, 0, 1.0, 0, api_name="/write")
    context = 16  # the test model's block size
    assert "max new tokens cut from 64 to" in info and coloured.count('class="tok"') <= context - 2


@pytest.mark.parametrize(
    "args, message",
    [
        (("STORY", "", 16, 0.9, 20, 0.9, 0), "The prompt is empty"),
        (("STORY", "x" * 301, 16, 0.9, 20, 0.9, 0), "The prompt is 301 characters; this page takes at most 300"),
        (("STORY", "Hi " * 40, 4, 0.9, 20, 0.9, 0), "The prompt is .* tokens; this model reads at most 16"),
        (("STORY", "Hi", 65, 0.9, 20, 0.9, 0), r"max new tokens = 65 is out of range: use a number from 1 to 64"),
        (("STORY", "Hi", 16, -3, 20, 0.9, 0), r"temperature \(0 = greedy\) = -3 is out of range"),
        (("STORY", "Hi", 16, "abc", 20, 0.9, 0), r"temperature \(0 = greedy\) = 'abc' is not a number"),
        (("STORY", "Hi", "many", 0.9, 20, 0.9, 0), "max new tokens = 'many' is not a number"),
        (("STORY", "Hi", 16, 0.9, 20, 0.9, -1), "seed = -1 is out of range"),
        (("STORY", "Hi", 16, 0.9, 20, 0.9, "x"), "seed = 'x' is not a number"),
        (("./runs/does-not-exist", "Hi", 16, 0.9, 20, 0.9, 0), "not offered on this page"),
        (("someone/offline-model", "Hi", 16, 0.9, 20, 0.9, 0), "not offered on this page"),
        (("STORY/.", "Hi", 16, 0.9, 20, 0.9, 0), "not offered on this page"),
        (("SECRET", "Hi", 16, 0.9, 20, 0.9, 0), "not offered on this page"),
        (("/etc", "Hi", 16, 0.9, 20, 0.9, 0), "not offered on this page"),
    ],
)
def test_errors_are_messages_without_tracebacks_and_the_server_survives(server, story_model, tmp_path, capfd, args, message):
    from tiny_decoder.demo import NOT_OFFERED

    client, _ = server
    secret = tmp_path / "secret"  # a model folder on the server that nobody offered
    secret.mkdir()
    (secret / "config.json").write_text("{}")
    names = {"STORY": str(story_model), "STORY/.": f"{story_model}/.", "SECRET": str(secret)}
    args = (names.get(args[0], args[0]), *args[1:])
    with pytest.raises(client_module.exceptions.AppError, match=message) as err:
        client.predict(*args, api_name="/write")
    if "offered" in message:
        assert str(err.value) == NOT_OFFERED  # the same words whatever is on disk
    story, *_ = client.predict(str(story_model), "Hi", 4, 0, 0, 1.0, 0, api_name="/write")
    assert story.startswith("Hi")
    logged = capfd.readouterr()
    assert "Traceback" not in logged.out + logged.err


def test_chat_picks_a_model_with_a_template_and_says_problems_in_its_status(server, story_model, chat_model):
    client, demo = server
    chat_box = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "chat_model"][0]
    assert chat_box.value == str(chat_model)  # the offered model that can chat, though listed second
    history, kept, status = client.predict(str(story_model), "Hello", 8, 0, 0, 1.0, 0, api_name="/chat")
    assert "no chat template" in status and kept == "Hello" and history == []  # said; nothing else changed
    history, cleared, status = client.predict(str(chat_model), "Hello", 4, 0, 0, 1.0, 0, api_name="/chat")
    assert cleared == "" and [m["role"] for m in history] == ["user", "assistant"] and "tokens/s" in status
    # the session's conversation is part of the next prompt: with it, the 16-token test model has no room left
    history, kept, status = client.predict(str(chat_model), "And then?", 4, 0, 0, 1.0, 0, api_name="/chat")
    assert "this model reads at most 16" in status and len(history) == 2 and kept == "And then?"
    _, kept, status = client.predict("someone/else", "Hello", 8, 0, 0, 1.0, 0, api_name="/chat")
    assert "not offered on this page" in status and kept == "Hello"


def test_compare_runs_both_models(server, story_model, chat_model):
    client, _ = server
    text_a, info_a, text_b, info_b = client.predict(
        str(story_model), str(chat_model), "Once", 8, 0, 0, 1.0, 0, api_name="/compare"
    )
    assert text_a.startswith("Once") and text_b.startswith("Once")
    assert "M parameters" in info_a and "tokens/s" in info_b
    with pytest.raises(client_module.exceptions.AppError, match="not offered on this page"):
        client.predict(str(story_model), "/etc", "Once", 8, 0, 0, 1.0, 0, api_name="/compare")


def test_attention_endpoint_draws_and_names_a_bad_layer(server, story_model):
    client, _ = server
    head_plot, entropy_plot = client.predict(str(story_model), "Once upon a time", 1, 0, api_name="/attention")
    assert head_plot and entropy_plot  # two figures came back
    with pytest.raises(client_module.exceptions.AppError, match="layer 9, head 0 is out of range"):
        client.predict(str(story_model), "Once upon a time", 9, 0, api_name="/attention")
    with pytest.raises(client_module.exceptions.AppError, match="not offered on this page"):
        client.predict("/etc", "Once upon a time", 0, 0, api_name="/attention")


def test_any_model_mode_loads_a_typed_folder(story_model, chat_model):
    app = load_app()
    demo = app.build_demo([str(story_model)], allow_any_model=True, stream_interval=0)
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = client_module.Client(f"http://127.0.0.1:{port}/", verbose=False)
        text_a, _, text_b, info_b = client.predict(
            str(story_model), f"{chat_model}/.", "Once", 4, 0, 0, 1.0, 0, api_name="/compare"
        )
        assert text_b.startswith("Once") and "M parameters" in info_b
        with pytest.raises(client_module.exceptions.AppError, match="does not exist"):
            client.predict("./runs/does-not-exist", "Hi", 4, 0, 0, 1.0, 0, api_name="/write")
    finally:
        demo.close()


def test_server_flags_set_the_queue_and_the_limits(story_model):
    app = load_app()
    (args,) = app.parse_args(
        (app.DemoArguments,),
        ["--model", str(story_model), "--concurrency", "2", "--max_queue", "3", "--max_new_tokens", "32",
         "--server_name", "127.0.0.1", "--server_port", str(free_port())],
    )  # fmt: skip
    demo = app.serve(args, prevent_thread_lock=True, quiet=True)
    try:
        assert demo._queue.max_size == 3 and demo._queue.default_concurrency_limit == 2
        slider = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "max_new_tokens"][0]
        assert slider.maximum == 32
        assert not (ROOT / "app.pyi").exists()  # building the page writes nothing beside app.py (gradio does for subclasses)
    finally:
        demo.close()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "runs/tiny", "--concurrency", "0"], "--concurrency 0 must be >= 1"),
        (["--model", "runs/tiny", "--stream_interval", "-1"], "--stream_interval -1.0 must be"),
        (["--model", "runs/tiny", "--max_new_tokens", "0"], "--max_new_tokens 0 must be >= 1"),
    ],
)
def test_bad_flag_values_are_named(argv, message):
    app = load_app()
    with pytest.raises(ValueError, match=message):
        app.parse_args((app.DemoArguments,), argv)


def test_an_unknown_flag_is_one_line():
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "--bogus", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--bogus" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
