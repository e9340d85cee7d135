"""The tiny-decoder demo page: write with a trained model and see what it was sure of and where it looked.

    make demo                                              # serves runs/tiny on http://127.0.0.1:7860
    python app.py --model runs/tiny runs/tiny-student runs/tiny-sft
    python app.py --model user/tiny-stories --server_port 8000

As a Hugging Face Space (this file's name is the Spaces convention; scripts/build_space.py writes the folder)
the models come from models.txt beside it or the TINY_DECODER_MODELS variable (comma-separated). Tabs: Write (streamed story, tokens
coloured by probability, top-5 alternatives), Attention (one head's weights, every head's entropy),
Chat (models with a chat template), Compare (two models, same prompt and seed). Bad input is a message in
the page; the server keeps running. The logic lives in tiny_decoder/demo.py (tested without a server).
"""

import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from tiny_decoder.cli import parse_args
from tiny_decoder.demo import (
    Generation,
    ModelCache,
    alternatives_rows,
    attention_view,
    chat_prompt_ids,
    check_request,
    describe,
    generation_kwargs,
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
        metadata={"help": "Saved folders or Hub ids offered in the page (space-separated); more can be typed there."},
    )
    server_name: str = field(default="127.0.0.1", metadata={"help": "Address to serve on (0.0.0.0 to share on a network)."})
    server_port: int = field(default=7860, metadata={"help": "Port; 0 picks a free one."})
    share: bool = field(default=False, metadata={"help": "A public gradio.live link (needs internet)."})

    def __post_init__(self):
        if not self.model:
            raise ValueError("--model is empty: give a saved folder (e.g. runs/tiny, from `make train`) or a Hub id.")
        if not 0 <= self.server_port < 65536:
            raise ValueError(f"--server_port {self.server_port} is not a port: use 0-65535 (0: any free one).")


def page_error(e: Exception):
    """A message in the page (gradio shows it; the server goes on). Bad input is no server fault: no traceback."""
    return gr.Error(str(e), duration=None, print_exception=False)


def build_demo(models: list[str], cache: ModelCache | None = None) -> gr.Blocks:
    cache = cache or ModelCache()

    def loaded(name):
        try:
            return cache.get(name)
        except ValueError as e:
            raise page_error(e) from None

    def sampling(prefix=""):
        with gr.Row():
            controls = [
                gr.Slider(1, 1024, value=200, step=1, label="max new tokens", elem_id=f"{prefix}max_new_tokens"),
                gr.Slider(0, 2, value=0.8, step=0.05, label="temperature (0 = greedy)", elem_id=f"{prefix}temperature"),
                gr.Slider(0, 200, value=50, step=1, label="top-k (0 = off)", elem_id=f"{prefix}top_k"),
                gr.Slider(0.05, 1, value=0.95, step=0.01, label="top-p (1 = off)", elem_id=f"{prefix}top_p"),
                gr.Number(value=0, precision=0, label="seed", elem_id=f"{prefix}seed"),
            ]
        return controls

    def run(name, prompt_ids_of, prompt, max_new_tokens, temperature, top_k, top_p, seed):
        """Check, load, render the prompt (errors become page messages), then stream: (model, ids), texts, Generation."""
        try:
            check_request(prompt, max_new_tokens, temperature, top_k, top_p, seed)
            model = loaded(name)
            ids = prompt_ids_of(model, prompt)
        except ValueError as e:
            raise page_error(e) from None
        settings = generation_kwargs(max_new_tokens, temperature, top_k, top_p)
        yield model, ids
        yield from stream_generation(model, ids, settings, int(seed), threading.Event())

    def write(name, prompt, max_new_tokens, temperature, top_k, top_p, seed):
        steps = run(name, lambda m, p: story_prompt_ids(m.tokenizer, p), prompt, max_new_tokens, temperature, top_k, top_p, seed)
        model, _ = next(steps)
        for item in steps:
            if isinstance(item, Generation):
                yield (
                    prompt + item.text,
                    tokens_html(item.tokens),
                    alternatives_rows(item.tokens, 0),
                    {"model": name, "generation": item},
                    describe(model, item),
                    gr.Slider(maximum=max(len(item.tokens) - 1, 1), value=0),
                )
            else:
                yield prompt + item, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()

    def pick(last, index):
        return alternatives_rows(last["generation"].tokens if last else [], index)

    def attention(name, last, prompt, layer, head):
        model = loaded(name)
        try:
            if last is not None and last["model"] == name:  # the story this model wrote last
                ids = last["generation"].prompt_ids + last["generation"].new_ids
            elif (prompt or "").strip():
                ids = story_prompt_ids(model.tokenizer, prompt)
            else:
                raise ValueError("Nothing to look at: write a story first, or type a prompt in the Write tab.")
            return attention_view(model, ids, int(layer), int(head))
        except ValueError as e:
            raise page_error(e) from None

    def chat(name, message, history, max_new_tokens, temperature, top_k, top_p, seed):
        history = list(history or [])
        steps = run(
            name,
            lambda m, p: chat_prompt_ids(m.tokenizer, history, p),
            message,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
        )
        next(steps)
        for item in steps:
            text = item.text if isinstance(item, Generation) else item
            yield history + [{"role": "user", "content": message}, {"role": "assistant", "content": text}], ""

    def compare(name_a, name_b, prompt, max_new_tokens, temperature, top_k, top_p, seed):
        outputs = []
        for name in (name_a, name_b):
            steps = run(
                name, lambda m, p: story_prompt_ids(m.tokenizer, p), prompt, max_new_tokens, temperature, top_k, top_p, seed
            )
            model, _ = next(steps)
            generation = [item for item in steps if isinstance(item, Generation)][0]
            outputs += [prompt + generation.text, describe(model, generation)]
        return outputs

    with gr.Blocks(title="tiny-decoder") as demo:
        gr.Markdown(
            "# tiny-decoder\nA small decoder-only transformer trained on TinyStories. Write with it, see which tokens it "
            "was sure of and what it almost wrote instead, and where each attention head looked."
        )
        model_box = gr.Dropdown(
            models, value=models[0], allow_custom_value=True, label="model (a saved folder or Hub id)", elem_id="model"
        )
        with gr.Tab("Write", id="write"):
            prompt = gr.Textbox(value="Once upon a time", label="prompt", lines=2, elem_id="prompt")
            controls = sampling()
            with gr.Row():
                go = gr.Button("Write", variant="primary", elem_id="write_button")
                stop = gr.Button("Stop", elem_id="stop_button")
            story = gr.Textbox(label="story (streams as the model writes)", lines=8, elem_id="story")
            info = gr.Markdown(elem_id="info")
            coloured = gr.HTML(label="the model's certainty", elem_id="coloured")
            with gr.Row():
                index = gr.Slider(0, 1, value=0, step=1, label="token # (its top-5 alternatives)", elem_id="token_index")
                table = gr.Dataframe(
                    headers=["rank", "token", "probability"], label="what it almost wrote", elem_id="alternatives"
                )
            generation = gr.State(None)  # {"model": name, "generation": Generation} of the last story
            event = go.click(
                write, [model_box, prompt, *controls], [story, coloured, table, generation, info, index], api_name="write"
            )
            stop.click(None, cancels=[event])
            index.change(pick, [generation, index], table, api_name=False)
        with gr.Tab("Attention", id="attention"):
            gr.Markdown("Attention weights over the last story (or the prompt): pick a layer and a head.")
            with gr.Row():
                layer = gr.Number(value=0, precision=0, label="layer", elem_id="layer")
                head = gr.Number(value=0, precision=0, label="head", elem_id="head")
                show = gr.Button("Show attention", elem_id="attention_button")
            with gr.Row():
                head_plot = gr.Plot(label="one head", elem_id="head_plot")
                entropy_plot = gr.Plot(label="every head's entropy", elem_id="entropy_plot")
            show.click(attention, [model_box, generation, prompt, layer, head], [head_plot, entropy_plot], api_name="attention")
        with gr.Tab("Chat", id="chat"):
            gr.Markdown("For models fine-tuned to chat (`make sft`): the message goes through the tokenizer's chat template.")
            chatbot = gr.Chatbot(label="conversation", elem_id="chatbot")
            message = gr.Textbox(label="message", elem_id="message")
            chat_controls = sampling("chat_")
            message.submit(chat, [model_box, message, chatbot, *chat_controls], [chatbot, message], api_name="chat")
        with gr.Tab("Compare", id="compare"):
            gr.Markdown("Two models, the same prompt and seed: e.g. a teacher and its pruned, distilled student.")
            with gr.Row():
                model_a = gr.Dropdown(models, value=models[0], allow_custom_value=True, label="model A", elem_id="model_a")
                model_b = gr.Dropdown(models, value=models[-1], allow_custom_value=True, label="model B", elem_id="model_b")
            compare_prompt = gr.Textbox(value="Once upon a time", label="prompt", elem_id="compare_prompt")
            compare_controls = sampling("compare_")
            compare_go = gr.Button("Compare", variant="primary", elem_id="compare_button")
            with gr.Row():
                with gr.Column():
                    text_a, info_a = gr.Textbox(label="A", lines=8), gr.Markdown()
                with gr.Column():
                    text_b, info_b = gr.Textbox(label="B", lines=8), gr.Markdown()
            compare_go.click(
                compare,
                [model_a, model_b, compare_prompt, *compare_controls],
                [text_a, info_a, text_b, info_b],
                api_name="compare",
            )
    return demo


def main(argv=None):
    (args,) = parse_args((DemoArguments,), argv)
    demo = build_demo(args.model)
    demo.queue().launch(server_name=args.server_name, server_port=args.server_port or None, share=args.share)


if __name__ == "__main__":
    main(sys.argv[1:])
