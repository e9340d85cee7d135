"""The tiny-decoder demo page: write with a trained model and see what it was sure of and where it looked.

    make demo                                              # serves runs/tiny (and runs/tiny-sft) on http://127.0.0.1:7860
    python app.py --model runs/tiny runs/tiny-student runs/tiny-sft
    python app.py --model user/tiny-stories --server_port 8000

Visitors reach only what the owner offered: the models given with --model (a Space's models.txt, or the
TINY_DECODER_MODELS variable, comma-separated), nothing they type; `--allow_any_model true` lets a trusted local user
type any folder or Hub id (never on a shared page). Work is bounded: prompt characters, prompt + new tokens within
the model's context, a server cap on new tokens, one generation at a time with a bounded queue (--concurrency,
--max_queue). The address comes from --server_name, else GRADIO_SERVER_NAME (a Space sets 0.0.0.0), else 127.0.0.1.

Tabs: Write (streamed story, tokens coloured by probability, top-5 alternatives), Attention (one head's weights,
every head's entropy), Chat (its own model list, a model with a chat template first), Compare (two models, same
prompt and seed). Bad input is a message in the page and no traceback in the log; the server keeps running. The
logic lives in tiny_decoder/demo.py (tested without a server).
"""

import math
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from tiny_decoder.cli import parse_args, run_command
from tiny_decoder.demo import (
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
    offers_chat,
    story_prompt_ids,
    stream_generation,
    tokens_html,
)


def default_models() -> list[str]:
    """TINY_DECODER_MODELS (comma-separated), else models.txt beside this file (a Space's), else runs/tiny."""
    listed = Path(__file__).with_name("models.txt")
    names = os.environ.get("TINY_DECODER_MODELS") or (listed.read_text().replace("\n", ",") if listed.exists() else "runs/tiny")
    return [m.strip() for m in names.split(",") if m.strip()]


@dataclass
class DemoArguments:
    model: list[str] = field(
        default_factory=default_models,
        metadata={"help": "Saved folders or Hub ids the page offers (space-separated); visitors can load only these."},
    )
    allow_any_model: bool = field(
        default=False,
        metadata={
            "help": "Let visitors type any folder or Hub id (and see why one fails to load). For local, trusted use "
            "only: on a shared page it lets anyone load any model folder on this machine."
        },
    )
    max_loaded_models: int = field(default=2, metadata={"help": "Models kept in memory at once (least recently used goes)."})
    max_new_tokens: int = field(
        default=512, metadata={"help": "Most new tokens one request may ask for (the context may allow fewer)."}
    )
    max_prompt_chars: int = field(default=4000, metadata={"help": "Longest prompt or chat message accepted, in characters."})
    concurrency: int = field(default=1, metadata={"help": "Generations run at once; more requests wait in the queue."})
    max_queue: int = field(default=16, metadata={"help": "Requests that may wait; more are turned away with a message."})
    stream_interval: float = field(default=0.2, metadata={"help": "Seconds between streamed text updates (0: every token)."})
    server_name: str | None = field(
        default=None,
        metadata={"help": "Address to serve on; default $GRADIO_SERVER_NAME, else 127.0.0.1 (0.0.0.0: the network)."},
    )
    server_port: int | None = field(
        default=None, metadata={"help": "Port; default $GRADIO_SERVER_PORT, else 7860 or the next free."}
    )
    share: bool = field(default=False, metadata={"help": "A public gradio.live link (needs internet)."})

    def __post_init__(self):
        if not self.model:
            raise ValueError("--model is empty: give a saved folder (e.g. runs/tiny, from `make train`) or a Hub id.")
        if self.server_port is not None and not 0 <= self.server_port < 65536:
            raise ValueError(f"--server_port {self.server_port} is not a port: use 0-65535 (0: any free one).")
        for name in ("max_loaded_models", "max_new_tokens", "max_prompt_chars", "concurrency", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} {getattr(self, name)} must be >= 1.")
        if not (math.isfinite(self.stream_interval) and 0 <= self.stream_interval <= 5):
            raise ValueError(f"--stream_interval {self.stream_interval} must be a number of seconds from 0 to 5.")


def page_error(e: Exception):
    """A message in the page (gradio shows it; the server goes on). Bad input is no server fault: no traceback."""
    return gr.Error(str(e), duration=None, print_exception=False)


def checked_number(label, value, low, high):
    """A page number as the function gets it, or a message naming the field: gradio's own check would compare a
    string with a number and end in a generic error with a traceback in the log."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise page_error(ValueError(f"{label} = {value!r} is not a number: use one from {low} to {high}."))
    if not low <= value <= high:
        raise page_error(ValueError(f"{label} = {value!r} is out of range: use a number from {low} to {high}."))
    return value


def Slider(*args, **kwargs) -> gr.Slider:
    """gr.Slider whose values are checked by `checked_number` (an instance attribute, not a subclass: gradio writes a
    .pyi stub beside the source of every component subclass)."""
    slider = gr.Slider(*args, **kwargs)
    slider.preprocess = lambda payload: checked_number(slider.label, payload, slider.minimum, slider.maximum)
    return slider


def Integer(*args, **kwargs) -> gr.Number:
    number = gr.Number(*args, **kwargs)
    number.preprocess = lambda payload: int(checked_number(number.label, payload, number.minimum, number.maximum))
    return number


def ModelBox(*args, **kwargs) -> gr.Dropdown:
    box = gr.Dropdown(*args, **kwargs)
    box.preprocess = lambda payload: payload  # the cache decides, with one message that lists nothing on disk
    return box


def sampling_controls(limits: Limits, prefix: str = "") -> list:
    """One row of the sampling settings (max new tokens, temperature, top-k, top-p, seed); `prefix` keeps element ids
    apart between tabs."""
    with gr.Row():
        return [
            Slider(
                1,
                limits.max_new_tokens,
                value=min(200, limits.max_new_tokens),
                step=1,
                label="max new tokens",
                elem_id=f"{prefix}max_new_tokens",
            ),
            Slider(0, 2, value=0.8, step=0.05, label="temperature (0 = greedy)", elem_id=f"{prefix}temperature"),
            Slider(0, 200, value=50, step=1, label="top-k (0 = off)", elem_id=f"{prefix}top_k"),
            Slider(0.05, 1, value=0.95, step=0.01, label="top-p (1 = off)", elem_id=f"{prefix}top_p"),
            Integer(value=0, precision=0, minimum=0, maximum=2**32 - 1, label="seed", elem_id=f"{prefix}seed"),
        ]


class Handlers:
    """What the page's events run: every request checked against `limits`, every model through `cache`."""

    def __init__(self, cache: ModelCache, limits: Limits, stream_interval: float):
        self.cache, self.limits, self.stream_interval = cache, limits, stream_interval

    def loaded(self, name):
        try:
            return self.cache.get(name)
        except ValueError as e:
            raise page_error(e) from None

    def prepare(self, name, prompt_ids_of, prompt, max_new_tokens, temperature, top_k, top_p, seed):
        """Check, load, render the prompt and fit it to the context: (model, ids, generate() settings, note).
        Every failure is a ValueError with the page's message."""
        check_request(prompt, max_new_tokens, temperature, top_k, top_p, seed, self.limits)
        model = self.cache.get(name)
        ids = prompt_ids_of(model, prompt)
        max_new_tokens, note = fit_to_context(model, ids, max_new_tokens)
        return model, ids, generation_kwargs(max_new_tokens, temperature, top_k, top_p), note

    def prepared(self, *args):
        try:
            return self.prepare(*args)
        except ValueError as e:
            raise page_error(e) from None

    def write(self, name, prompt, max_new_tokens, temperature, top_k, top_p, seed):
        story = lambda m, p: story_prompt_ids(m.tokenizer, p)  # noqa: E731
        model, ids, settings, note = self.prepared(name, story, prompt, max_new_tokens, temperature, top_k, top_p, seed)
        for item in stream_generation(model, ids, settings, int(seed), threading.Event(), every=self.stream_interval):
            if isinstance(item, Generation):
                yield (
                    prompt + item.text,
                    tokens_html(item.tokens),
                    alternatives_rows(item.tokens, 0),
                    {"model": name, "generation": item},
                    describe(model, item, note),
                    gr.Slider(maximum=max(len(item.tokens) - 1, 1), value=0),
                )
            else:
                yield prompt + item, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()

    def pick(self, last, index):
        return alternatives_rows(last["generation"].tokens if last else [], index)

    def attention(self, name, last, prompt, layer, head):
        model = self.loaded(name)
        try:
            if last is not None and last["model"] == name:  # the story this model wrote last
                ids = last["generation"].prompt_ids + last["generation"].new_ids
            elif isinstance(prompt, str) and prompt.strip():
                check_request(prompt, 1, 0, 0, 1, 0, self.limits)
                ids = story_prompt_ids(model.tokenizer, prompt)
            else:
                raise ValueError("Nothing to look at: write a story first, or type a prompt in the Write tab.")
            return attention_view(model, ids, int(layer), int(head))
        except ValueError as e:
            raise page_error(e) from None

    def chat(self, name, message, history, max_new_tokens, temperature, top_k, top_p, seed):
        """(conversation shown, conversation kept, message box, status). The conversation lives in the session's
        state (plain {role, content} texts), not in what a client sends. A problem is said in the status line and
        leaves the conversation and the message as they were: no component ends in an error state."""
        history = list(history or [])
        with_template = lambda m, p: chat_prompt_ids(m.tokenizer, history, p)  # noqa: E731
        try:
            model, ids, settings, note = self.prepare(
                name, with_template, message, max_new_tokens, temperature, top_k, top_p, seed
            )
        except ValueError as e:
            yield history, history, message, f"**Not sent:** {e}"
            return
        turn = history + [{"role": "user", "content": message}]
        for item in stream_generation(model, ids, settings, int(seed), threading.Event(), every=self.stream_interval):
            if isinstance(item, Generation):
                done = turn + [{"role": "assistant", "content": item.text}]
                yield done, done, "", describe(model, item, note)
            else:
                yield turn + [{"role": "assistant", "content": item}], gr.skip(), "", gr.skip()

    def compare(self, name_a, name_b, prompt, max_new_tokens, temperature, top_k, top_p, seed):
        outputs = []
        for name in (name_a, name_b):
            story = lambda m, p: story_prompt_ids(m.tokenizer, p)  # noqa: E731
            model, ids, settings, note = self.prepared(name, story, prompt, max_new_tokens, temperature, top_k, top_p, seed)
            generation = list(stream_generation(model, ids, settings, int(seed), every=math.inf))[-1]
            outputs += [prompt + generation.text, describe(model, generation, note)]
        return outputs


def build_demo(
    models: list[str],
    cache: ModelCache | None = None,
    limits: Limits | None = None,
    allow_any_model: bool = False,
    max_loaded_models: int = 2,
    stream_interval: float = 0.2,
) -> gr.Blocks:
    limits = limits or Limits()
    cache = cache or ModelCache(models, allow_any=allow_any_model, max_models=max_loaded_models)
    handlers = Handlers(cache, limits, stream_interval)
    with gr.Blocks(title="tiny-decoder") as demo:
        gr.Markdown(
            "# tiny-decoder\nA small decoder-only transformer trained on TinyStories. Write with it, see which tokens it "
            "was sure of and what it almost wrote instead, and where each attention head looked."
        )
        label = "model (a saved folder or Hub id)" if allow_any_model else "model"
        model_box = ModelBox(models, value=models[0], allow_custom_value=allow_any_model, label=label, elem_id="model")
        with gr.Tab("Write", id="write"):
            prompt, generation = write_tab(handlers, model_box, limits)
        with gr.Tab("Attention", id="attention"):
            attention_tab(handlers, model_box, generation, prompt)
        with gr.Tab("Chat", id="chat"):
            chat_tab(handlers, models, label, allow_any_model, limits)
        with gr.Tab("Compare", id="compare"):
            compare_tab(handlers, models, allow_any_model, limits)
    return demo


def write_tab(handlers: Handlers, model_box, limits: Limits):
    """The Write tab: (its prompt box, the state holding the last story), which the Attention tab reads."""
    prompt = gr.Textbox(value="Once upon a time", label="prompt", lines=2, max_length=limits.max_prompt_chars, elem_id="prompt")
    controls = sampling_controls(limits)
    with gr.Row():
        go = gr.Button("Write", variant="primary", elem_id="write_button")
        stop = gr.Button("Stop", elem_id="stop_button")
    story = gr.Textbox(label="story (streams as the model writes)", lines=8, elem_id="story")
    info = gr.Markdown(elem_id="info")
    coloured = gr.HTML(label="the model's certainty", elem_id="coloured")
    with gr.Row():
        index = gr.Slider(0, 1, value=0, step=1, label="token # (its top-5 alternatives)", elem_id="token_index")
        table = gr.Dataframe(headers=["rank", "token", "probability"], label="what it almost wrote", elem_id="alternatives")
    generation = gr.State(None)  # {"model": name, "generation": Generation} of the last story
    event = go.click(
        handlers.write, [model_box, prompt, *controls], [story, coloured, table, generation, info, index], api_name="write"
    )
    stop.click(None, cancels=[event])
    index.change(handlers.pick, [generation, index], table, api_name=False)
    return prompt, generation


def attention_tab(handlers: Handlers, model_box, generation, prompt):
    gr.Markdown("Attention weights over the last story (or the prompt): pick a layer and a head.")
    with gr.Row():
        layer = Integer(value=0, precision=0, minimum=0, maximum=1000, label="layer", elem_id="layer")
        head = Integer(value=0, precision=0, minimum=0, maximum=1000, label="head", elem_id="head")
        show = gr.Button("Show attention", elem_id="attention_button")
    with gr.Row():
        head_plot = gr.Plot(label="one head", elem_id="head_plot")
        entropy_plot = gr.Plot(label="every head's entropy", elem_id="entropy_plot")
    show.click(handlers.attention, [model_box, generation, prompt, layer, head], [head_plot, entropy_plot], api_name="attention")


def chat_tab(handlers: Handlers, models: list[str], label: str, allow_any_model: bool, limits: Limits):
    chat_models = [m for m in models if offers_chat(m)]
    gr.Markdown(
        "For models fine-tuned to chat (`make sft`): the message goes through the tokenizer's chat template."
        + (
            ""
            if chat_models
            else " None of the offered models has a chat template: `make sft` writes "
            "runs/tiny-sft, and `make demo` offers it once it exists."
        )  # fmt: skip
    )
    chat_box = ModelBox(
        models, value=(chat_models or models)[0], allow_custom_value=allow_any_model, label=f"chat {label}", elem_id="chat_model"
    )
    chatbot = gr.Chatbot(label="conversation", elem_id="chatbot")
    message = gr.Textbox(label="message", max_length=limits.max_prompt_chars, elem_id="message")
    chat_status = gr.Markdown(elem_id="chat_status")
    chat_controls = sampling_controls(limits, "chat_")
    conversation = gr.State([])  # [{role, content}] of this visitor's session
    message.submit(
        handlers.chat,
        [chat_box, message, conversation, *chat_controls],
        [chatbot, conversation, message, chat_status],
        api_name="chat",
    )
    gr.Button("New conversation", elem_id="chat_clear").click(
        lambda: ([], [], ""), None, [chatbot, conversation, chat_status], api_name=False
    )


def compare_tab(handlers: Handlers, models: list[str], allow_any_model: bool, limits: Limits):
    gr.Markdown("Two models, the same prompt and seed: e.g. a teacher and its pruned, distilled student.")
    with gr.Row():
        model_a = ModelBox(models, value=models[0], allow_custom_value=allow_any_model, label="model A", elem_id="model_a")
        model_b = ModelBox(models, value=models[-1], allow_custom_value=allow_any_model, label="model B", elem_id="model_b")
    compare_prompt = gr.Textbox(
        value="Once upon a time", label="prompt", max_length=limits.max_prompt_chars, elem_id="compare_prompt"
    )
    compare_controls = sampling_controls(limits, "compare_")
    compare_go = gr.Button("Compare", variant="primary", elem_id="compare_button")
    with gr.Row():
        with gr.Column():
            text_a, info_a = gr.Textbox(label="A", lines=8), gr.Markdown()
        with gr.Column():
            text_b, info_b = gr.Textbox(label="B", lines=8), gr.Markdown()
    compare_go.click(
        handlers.compare,
        [model_a, model_b, compare_prompt, *compare_controls],
        [text_a, info_a, text_b, info_b],
        api_name="compare",
    )


def serve(args: DemoArguments, **launch) -> gr.Blocks:
    """Build the page from the arguments and start it (blocking unless `prevent_thread_lock=True` is passed)."""
    limits = Limits(max_new_tokens=args.max_new_tokens, max_prompt_chars=args.max_prompt_chars)
    demo = build_demo(args.model, None, limits, args.allow_any_model, args.max_loaded_models, args.stream_interval)
    if args.allow_any_model:
        print("warning: --allow_any_model true: visitors can load any model folder or Hub id; do not share this page.")
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.max_queue)
    # server_name/port None: gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (a Space's), else 127.0.0.1:7860.
    demo.launch(server_name=args.server_name, server_port=args.server_port or None, share=args.share, **launch)
    return demo


def main(argv=None):
    (args,) = parse_args((DemoArguments,), sys.argv[1:] if argv is None else argv)
    serve(args)


if __name__ == "__main__":
    run_command(main)
