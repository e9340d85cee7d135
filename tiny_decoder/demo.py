"""What the demo page (app.py) shows, as plain Python: no gradio here, so it is tested without a server and the
package never needs the `[demo]` extra.

- The page serves what its owner offered: `ModelCache` loads only the models named at start (resolved once), unless
  the owner runs it with `allow_any=True` for local, trusted use. A visitor's other value gets one message that never
  depends on what exists on the server's disk. Loaded models sit in a small LRU keyed by the resolved identity.
- Work is bounded (`Limits`): prompt length in characters before tokenizing, prompt + new tokens within the model's
  context, new tokens under a server cap; every value is checked and named in the message.
- Text comes from `generate()`, the public way, with a streamer: the same seed gives the same text as a direct
  `generate()` call, for any causal LM (linear attention included). Its raw logits (`output_logits`) give each
  new token's probability, the distribution's entropy and the top-5 alternatives. Updates are batched in time
  (`every`), so the page's redraws do not slow the generation they show.
- The attention viewer reuses inspect_model's weights and per-head entropies (evaluation/introspection.py).
"""

import html
import json
import math
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

NOT_OFFERED = "That model is not offered on this page: pick one from the list."


@dataclass
class Limits:
    """What one request may ask of the server (app.py's flags set them)."""

    max_new_tokens: int = 512  # the server's cap; a model's context may lower it further
    max_prompt_chars: int = 4000  # checked before tokenizing: a long paste never reaches the tokenizer

    def ranges(self) -> dict:
        return {
            "max_new_tokens": (1, self.max_new_tokens),
            "temperature": (0.0, 5.0),
            "top_k": (0, 1000),
            "top_p": (0.0, 1.0),
            "seed": (0, 2**32 - 1),
        }


def check_request(prompt, max_new_tokens, temperature, top_k, top_p, seed, limits: Limits | None = None) -> None:
    """Page input, checked before any work; each message says which value and what is allowed."""
    limits = limits or Limits()
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("The prompt is empty: type the start of a story (e.g. 'Once upon a time').")
    if len(prompt) > limits.max_prompt_chars:
        raise ValueError(
            f"The prompt is {len(prompt):,} characters; this page takes at most {limits.max_prompt_chars:,}: shorten it."
        )
    values = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
    for name, value in values.items():
        low, high = limits.ranges()[name]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f"{name} = {value!r} is out of range: use a number from {low} to {high}.")
    if top_p == 0:
        raise ValueError("top_p = 0 keeps no token: use a value in (0, 1] (1 turns it off).")


def fit_to_context(loaded: "LoadedModel", prompt_ids: list, max_new_tokens: int) -> tuple[int, str]:
    """(new tokens that fit, a note for the page or ''). A prompt that leaves no room is refused; asking for more
    new tokens than the context holds is cut to what fits and said."""
    context = loaded.context
    if context is None:
        return int(max_new_tokens), ""
    if len(prompt_ids) >= context:
        raise ValueError(
            f"The prompt is {len(prompt_ids)} tokens; this model reads at most {context} (its context), with room for "
            f"at least one new token: shorten it."
        )
    room = context - len(prompt_ids)
    if max_new_tokens <= room:
        return int(max_new_tokens), ""
    return (
        room,
        f"max new tokens cut from {int(max_new_tokens)} to {room}: the prompt is {len(prompt_ids)} tokens of the model's {context}-token context",
    )


# ----------------------------------------------------------------------------------------------- models
@dataclass
class LoadedModel:
    name: str
    model: object
    tokenizer: object
    params: int
    eval_loss: float | None  # from the model card, when it states one

    @property
    def context(self) -> int | None:
        """How many positions the model was built for (prompt + new tokens), when its config says."""
        return getattr(self.model.config, "max_position_embeddings", None)


def card_eval_loss(name: str) -> float | None:
    """The validation loss the model card's metadata states (model-index), or None."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(str(Path(name) / "README.md") if Path(name).is_dir() else name)
    except Exception:  # no card, unreadable metadata, offline: the page shows "not stated"
        return None
    for result in card.data.eval_results or []:
        if result.metric_type == "loss":
            return float(result.metric_value)
    return None


def model_identity(name: str) -> str:
    """What a name means: a local folder's resolved path (so `runs/tiny/./` and `runs/tiny` are one model), else
    the Hub id as given."""
    name = (name or "").strip()
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def offers_chat(name: str) -> bool:
    """Whether a local model folder's tokenizer carries a chat template (read from its files, nothing loaded).
    Hub ids are not looked up: False."""
    folder = Path(name).expanduser()
    if (folder / "chat_template.jinja").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return False


def load_model(name: str) -> LoadedModel:
    """A saved folder or Hub id, in eval mode with the eager-capable SDPA kernel (attention weights work)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .io.sources import check_model_source

    name = (name or "").strip()
    if not name:
        raise ValueError("No model given: type a saved folder (e.g. runs/tiny) or a Hub id.")
    try:
        check_model_source(name, flag="model")
    except ValueError as e:
        raise ValueError(str(e).replace("--model ", "Model ")) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="sdpa").eval()
    except (OSError, ValueError) as e:
        raise ValueError(f"Model {name!r} could not be loaded: {e}") from None
    params = sum(p.numel() for p in model.parameters())
    return LoadedModel(name, model, tokenizer, params, card_eval_loss(name))


class ModelCache:
    """The models a page may load, each loaded once and kept in a small LRU; thread-safe (the page serves several
    requests).

    `offered`: the names the owner gave, resolved once here. Only those load, unless `allow_any` (local, trusted
    use: any folder or Hub id a visitor types). Entries are keyed by the resolved identity, so spellings of one
    folder share one copy; at most `max_models` stay loaded (the least recently used goes first)."""

    def __init__(self, offered=(), allow_any: bool = False, max_models: int = 2, loader=load_model):
        if max_models < 1:
            raise ValueError(f"max_models={max_models} must be >= 1.")
        self.offered = {name.strip(): model_identity(name) for name in offered}
        self.allow_any, self.max_models, self.loader = allow_any, max_models, loader
        self.models: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def identity(self, name) -> str:
        """The identity a visitor's value names, or the one neutral refusal."""
        name = name.strip() if isinstance(name, str) else ""
        if name in self.offered:
            return self.offered[name]
        if self.allow_any:
            return model_identity(name)
        raise ValueError(NOT_OFFERED)

    def get(self, name) -> LoadedModel:
        key = self.identity(name)
        with self.lock:
            if key in self.models:
                self.models.move_to_end(key)
                return self.models[key]
            loaded = self.loader(name.strip() if isinstance(name, str) else "")  # "": the loader's "no model given"
            self.models[key] = loaded
            while len(self.models) > self.max_models:
                self.models.popitem(last=False)
            return loaded


# ------------------------------------------------------------------------------------------- generation
@dataclass
class TokenInfo:
    text: str
    prob: float  # the model's probability of this token (softmax of the raw logits)
    entropy: float  # of that distribution, nats
    top: list = field(default_factory=list)  # [(token text, probability)] x 5, most likely first


@dataclass
class Generation:
    prompt_ids: list
    new_ids: list
    text: str  # the new text
    tokens: list  # TokenInfo per new token
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return len(self.new_ids) / self.seconds if self.seconds > 0 else 0.0


def generation_kwargs(max_new_tokens, temperature, top_k, top_p) -> dict:
    """generate() settings: temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off."""
    if temperature == 0:
        return dict(max_new_tokens=int(max_new_tokens), do_sample=False, top_k=None, top_p=None, temperature=None)
    return dict(
        max_new_tokens=int(max_new_tokens),
        do_sample=True,
        temperature=float(temperature),
        top_k=int(top_k) if top_k else None,
        top_p=float(top_p) if top_p < 1 else None,
    )


def token_infos(tokenizer, new_ids: list, logits: list, k: int = 5) -> list:
    """Per new token: its probability under the model's raw logits at that step, the entropy, the top-k."""
    infos = []
    for token, step_logits in zip(new_ids, logits):
        probs = torch.softmax(step_logits.float(), dim=-1)
        top_p, top_i = probs.topk(k)
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum().item()
        top = [(tokenizer.decode([i]), p) for i, p in zip(top_i.tolist(), top_p.tolist())]
        infos.append(TokenInfo(tokenizer.decode([token]), probs[token].item(), entropy, top))
    return infos


def stream_generation(
    loaded: LoadedModel, prompt_ids: list, settings: dict, seed: int, stop: threading.Event | None = None, every: float = 0.0
):
    """Yields the new text as it grows (str), then the finished Generation. generate() runs in a thread and
    hands tokens over through a streamer; setting `stop` ends it at the next token. With `every` > 0 the text is
    yielded at most once per `every` seconds (with all tokens made since): a page redraw per token competes with
    the generation for the CPU, and halved its speed."""
    tokenizer = loaded.tokenizer
    stop = stop or threading.Event()
    tokens, result, thread = generate_in_thread(loaded, prompt_ids, settings, seed, stop)
    made, shown, last = [], 0, -math.inf  # the first token shows at once
    try:
        while (token := tokens.get()) is not None:
            made.append(token)
            if every > 0 and time.perf_counter() - last < every:
                continue
            shown, last = len(made), time.perf_counter()
            yield tokenizer.decode(made, skip_special_tokens=True)
        if shown < len(made):  # the tokens made since the last update
            yield tokenizer.decode(made, skip_special_tokens=True)
    finally:
        stop.set()  # ends generate() at its next token when the page went away; harmless once it is done
        thread.join()
    if "error" in result:
        raise result["error"]
    out = result["out"]
    new_ids = out.sequences[0, len(prompt_ids) :].tolist()
    logits = [step[0] for step in out.logits]
    yield Generation(
        list(prompt_ids),
        new_ids,
        tokenizer.decode(new_ids, skip_special_tokens=True),
        token_infos(tokenizer, new_ids, logits),
        result["seconds"],
    )


def generate_in_thread(loaded: LoadedModel, prompt_ids: list, settings: dict, seed: int, stop: threading.Event):
    """Start generate() in a thread: (a queue of new token ids ending with None, the result dict - "out" and
    "seconds", or "error" - filled when it ends, the thread). Setting `stop` ends it at its next token."""
    from transformers import StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    model, tokenizer = loaded.model, loaded.tokenizer
    tokens: queue.Queue = queue.Queue()

    class Streamer(BaseStreamer):
        def __init__(self):
            self.prompt_seen = False

        def put(self, value):
            if not self.prompt_seen:  # generate() first passes the prompt
                self.prompt_seen = True
                return
            tokens.put(int(value.reshape(-1)[0]))

        def end(self):
            tokens.put(None)

    class Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    result: dict = {}
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)

    def work():
        try:
            torch.manual_seed(seed)  # what a user does before generate(): the same seed, the same text
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    streamer=Streamer(),
                    stopping_criteria=StoppingCriteriaList([Stop()]),
                    output_logits=True,
                    return_dict_in_generate=True,
                    pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
                    **settings,
                )
            result["seconds"] = time.perf_counter() - t0
            result["out"] = out
        except BaseException as e:  # handed to the page's thread
            result["error"] = e
            tokens.put(None)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return tokens, result, thread


def story_prompt_ids(tokenizer, prompt: str) -> list:
    """A story starts after an EOS, as in training (the objective's prompt rule)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []) + ids


def chat_prompt_ids(tokenizer, history: list, message: str) -> list:
    """The conversation so far plus the new user message, rendered by the tokenizer's own chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("This model has no chat template, so it cannot chat: pick an SFT model (make sft writes runs/tiny-sft).")
    messages = [{"role": m["role"], "content": m["content"]} for m in history if m.get("role") in ("user", "assistant", "system")]
    messages.append({"role": "user", "content": message})
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


# ------------------------------------------------------------------------------------------------ views
def colour(prob: float) -> str:
    """Red (unsure) through yellow to green (sure): the background of a token."""
    hue = int(120 * max(0.0, min(1.0, prob)))
    return f"hsl({hue}, 75%, 80%)"


def tokens_html(infos: list) -> str:
    """The new text as coloured spans; hovering a token shows its probability and the top-5 alternatives."""
    spans = []
    for i, t in enumerate(infos):
        alternatives = "\n".join(f"{text!r}: {p:.3f}" for text, p in t.top)
        title = f"#{i} {t.text!r} p={t.prob:.3f}, entropy {t.entropy:.2f} nats\n{alternatives}"
        spans.append(
            f'<span class="tok" data-index="{i}" data-prob="{t.prob:.4f}" title="{html.escape(title)}" '
            f'style="background:{colour(t.prob)};white-space:pre-wrap">{html.escape(t.text)}</span>'
        )
    legend = (
        '<div style="font-size:12px;margin-top:6px">colour = the model\'s probability of the token it wrote: '
        f'<span style="background:{colour(0.05)}">unsure</span> <span style="background:{colour(0.5)}">half</span> '
        f'<span style="background:{colour(0.95)}">sure</span>; hover a token for the top-5</div>'
    )
    return f'<div class="tokens" style="line-height:1.8">{"".join(spans)}</div>{legend}'


def alternatives_rows(infos: list, index: int) -> list:
    """[[rank, token, probability]] for token `index`: the table beside the coloured text."""
    if not infos:
        return []
    t = infos[max(0, min(int(index), len(infos) - 1))]
    return [[r + 1, repr(text), round(p, 4)] for r, (text, p) in enumerate(t.top)]


def attention_view(loaded: LoadedModel, ids: list, layer: int, head: int):
    """(figure of one head's weights over the tokens, figure of every head's mean entropy) for prompt + text."""
    from matplotlib.figure import Figure  # not pyplot: its registry would keep every figure a page asked for

    from .evaluation.introspection import attention_weights, head_statistics

    cfg = loaded.model.config
    if getattr(cfg, "attention_type", "softmax") == "linear":
        raise ValueError("This model uses linear attention, which forms no attention weights to show.")
    if not 0 <= layer < cfg.num_hidden_layers or not 0 <= head < cfg.num_attention_heads:
        raise ValueError(
            f"layer {layer}, head {head} is out of range: the model has layers 0..{cfg.num_hidden_layers - 1} and "
            f"heads 0..{cfg.num_attention_heads - 1}."
        )
    ids = ids[-256:]
    device = next(loaded.model.parameters()).device
    weights = attention_weights(loaded.model, torch.tensor([ids], device=device)).cpu()
    labels = [loaded.tokenizer.decode([i]).replace("\n", "\\n") for i in ids]
    stats = head_statistics(weights, labels)
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    ax.imshow(weights[layer, head].numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.set_title(f"layer {layer}, head {head}: rows are queries, columns keys")
    if len(labels) <= 40:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
    fig.tight_layout()
    grid = torch.tensor([s["entropy"] for s in stats]).view(cfg.num_hidden_layers, cfg.num_attention_heads)
    fig2 = Figure(figsize=(1.2 * cfg.num_attention_heads + 2, 0.9 * cfg.num_hidden_layers + 1.5))
    ax2 = fig2.subplots()
    ax2.imshow(grid.numpy(), cmap="magma_r", vmin=0, vmax=stats[0]["max_entropy"])  # light = focused
    top = stats[0]["max_entropy"]
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid[i, j].item()
            ax2.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v > 0.5 * top else "black")
    ax2.set_xticks(range(grid.shape[1]))
    ax2.set_yticks(range(grid.shape[0]))
    ax2.set_xlabel("head")
    ax2.set_ylabel("layer")
    ax2.set_title(f"entropy per head, nats\n(low = focused, uniform = {stats[0]['max_entropy']:.2f})", fontsize=9)
    fig2.tight_layout()
    return fig, fig2


def describe(loaded: LoadedModel, generation: Generation | None = None, note: str = "") -> str:
    """One line on a model: parameters, the card's validation loss, the last generation's speed, and a note (what
    a limit changed)."""
    loss = f"{loaded.eval_loss:.3f}" if loaded.eval_loss is not None else "not stated in its card"
    line = f"**{loaded.name}**: {loaded.params / 1e6:.2f} M parameters, validation loss {loss}"
    if generation is not None:
        line += f"; {len(generation.new_ids)} tokens at {generation.tokens_per_s:,.0f} tokens/s"
    return line + (f" ({note})" if note else "")
