"""Look inside a model: where its parameters are, what shape every tensor has, where each head attends.

- `parameter_table(model)`: parameters per module and per kind (embeddings, attention, MLP, norms,
  head), totals with and without the tied head, bytes per dtype, training FLOPs per token (the
  definition the training report uses, `training.report.flops_per_token`).
- `trace_shapes(model, input_ids)`: every submodule's input and output shapes for one forward, as an
  indented tree whose sizes are named (batch, seq, hidden, heads x head_dim, ...).
- `attention_maps(model, tokenizer, text, out_dir)`: the eager kernel's attention weights as a PNG grid
  (layers x heads), per-head statistics, and one self-contained HTML page to click through the heads.
"""

import html
import json
import math
from collections import defaultdict
from pathlib import Path

import torch

from .throughput import flops_per_token

KINDS = ("embeddings", "attention", "mlp", "norms", "head", "other")


def parameter_kind(name: str) -> str:
    if "embed" in name:
        return "embeddings"
    if "self_attn" in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    if "norm" in name:
        return "norms"
    if name.startswith(("lm_head", "score", "classifier", "qa_outputs")):
        return "head"
    return "other"


def parameter_table(model, seq_len: int | None = None) -> dict:
    """Counts by kind and by top-level module; a parameter shared by two names (a tied head) counts once."""
    seen, by_kind, by_module, by_dtype = set(), defaultdict(int), defaultdict(int), defaultdict(int)
    tied = 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied += p.numel()
            continue
        seen.add(id(p))
        by_kind[parameter_kind(name)] += p.numel()
        by_module[".".join(name.split(".")[:3]) if ".layers." in name else name.rsplit(".", 1)[0]] += p.numel()
        by_dtype[str(p.dtype).replace("torch.", "")] += p.numel() * p.element_size()
    total = sum(by_kind.values())
    cfg = model.config
    seq_len = seq_len or getattr(cfg, "max_position_embeddings", 0)
    return {
        "total": total,
        "total_counting_tied_head_twice": total + tied,
        "tied": tied,
        "by_kind": {k: by_kind[k] for k in KINDS if by_kind[k]},
        "by_module": dict(by_module),
        "bytes_by_dtype": dict(by_dtype),
        "train_flops_per_token": flops_per_token(total, cfg, seq_len),
        "seq_len": seq_len,
    }


def format_parameter_table(table: dict) -> str:
    lines = ["| part | parameters | share |", "|---|---|---|"]
    for kind, n in table["by_kind"].items():
        lines.append(f"| {kind} | {n:,} | {n / table['total']:.1%} |")
    lines.append(f"| **total** (tied head once) | **{table['total']:,}** | |")
    if table["tied"]:
        lines.append(f"| total counting the tied head again | {table['total_counting_tied_head_twice']:,} | |")
    for dtype, b in table["bytes_by_dtype"].items():
        lines.append(f"| bytes in {dtype} | {b:,} ({b / 2**20:.2f} MiB) | |")
    lines.append(
        f"| training FLOPs per token (6N + attention, seq {table['seq_len']}) | {table['train_flops_per_token']:,.0f} | |"
    )
    return "\n".join(lines)


def _dim_names(model, batch: int, seq: int) -> dict:
    """Size -> name for the sizes a reader should recognise (sizes of 1 stay numbers: they are broadcast dims)."""
    cfg = model.config
    named = [
        (batch, "batch"),
        (seq, "seq"),
        (cfg.hidden_size, "hidden"),
        (getattr(cfg, "vocab_size", None), "vocab"),
        (getattr(cfg, "intermediate_size", None), "intermediate"),
        (getattr(cfg, "head_dim", None), "head_dim"),
        (cfg.num_attention_heads, "heads"),
        (cfg.num_key_value_heads, "kv_heads"),
        (cfg.num_attention_heads * cfg.head_dim, "heads*head_dim"),
        (cfg.num_key_value_heads * cfg.head_dim, "kv_heads*head_dim"),
    ]
    names = {}
    for value, name in named:
        if value and value > 1 and value not in names:
            names[value] = name
    return names


def _shape(x, names) -> str:
    if isinstance(x, torch.Tensor):
        return "(" + ", ".join(f"{names[s]}={s}" if s in names else str(s) for s in x.shape) + ")"
    if isinstance(x, (tuple, list)):
        parts = [_shape(v, names) for v in x if isinstance(v, (torch.Tensor, tuple, list))]
        return "[" + ", ".join(p for p in parts if p) + "]" if parts else ""
    if hasattr(x, "to_tuple"):  # ModelOutput
        return _shape(x.to_tuple(), names)
    return ""


@torch.no_grad()
def trace_shapes(model, input_ids: torch.Tensor) -> str:
    """Every submodule called in one forward, indented by depth: `name (Class): input -> output`."""
    names = _dim_names(model, *input_ids.shape)
    rows, handles = [], []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod, args, kwargs, out, name=name):
            inputs = list(args) + [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
            rows.append((name, type(mod).__name__, _shape(inputs, names), _shape(out, names)))

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        model(input_ids=input_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    rows.sort(key=lambda r: order[r[0]])  # hooks fire inner-first; print outer-first, in module order
    lines = [f"{type(model).__name__}: input_ids {_shape(input_ids, names)}"]
    for name, cls, inp, out in rows:
        depth = name.count(".") + 1
        lines.append(f"{'  ' * depth}{name} ({cls}): {inp} -> {out}")
    return "\n".join(lines)


def _check_index(values, limit, what):
    for v in values:
        if not 0 <= v < limit:
            raise ValueError(f"{what} index {v} is out of range: the model has {limit} {what}s (0..{limit - 1}).")


@torch.no_grad()
def attention_weights(model, input_ids: torch.Tensor) -> torch.Tensor:
    """(layers, heads, T, T) weights for one sequence, from the eager kernel."""
    impl = model.config._attn_implementation
    if impl not in ("eager", "sdpa"):
        raise ValueError(
            f"attention maps need the eager kernel's weights; attn_implementation={impl!r} has none. "
            "Load the model with attn_implementation='eager' (or 'sdpa')."
        )
    out = model(input_ids=input_ids, output_attentions=True, use_cache=False)
    return torch.stack([a[0] for a in out.attentions]).float()


def head_statistics(weights: torch.Tensor, tokens: list[str]) -> list[dict]:
    """Per head: mean entropy of its query rows (nats; low = focused) and its strongest (query, key) pair off the first token."""
    stats = []
    layers, heads, t, _ = weights.shape
    for layer in range(layers):
        for head in range(heads):
            w = weights[layer, head]
            entropy = -(w * w.clamp_min(1e-12).log()).sum(-1).mean().item()
            masked = w.clone()
            masked[:, 0] = 0  # most heads park on the first token; show where else they look
            masked[0, 0] = -1
            q, k = divmod(int(masked.argmax()), t)
            stats.append(
                {
                    "layer": layer,
                    "head": head,
                    "entropy": entropy,
                    "max_entropy": math.log(t),
                    "strongest": {
                        "query": q,
                        "key": k,
                        "weight": w[q, k].item(),
                        "query_token": tokens[q],
                        "key_token": tokens[k],
                    },
                }
            )
    return stats


def attention_maps(model, tokenizer, text: str, out_dir, layers: list[int] | None = None, heads: list[int] | None = None) -> dict:
    """Write attention.png (layers x heads grid), attention.html (self-contained), attention_stats.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = model.config
    layers = list(range(cfg.num_hidden_layers)) if layers is None else list(layers)
    heads = list(range(cfg.num_attention_heads)) if heads is None else list(heads)
    _check_index(layers, cfg.num_hidden_layers, "layer")
    _check_index(heads, cfg.num_attention_heads, "head")
    ids = tokenizer(text, return_tensors="pt")["input_ids"][:, : getattr(cfg, "max_position_embeddings", 10**9)]
    tokens = [tokenizer.decode([i]) for i in ids[0].tolist()]
    weights = attention_weights(model, ids.to(next(model.parameters()).device))[layers][:, heads].cpu()
    stats = head_statistics(weights, tokens)
    for s in stats:
        s["layer"], s["head"] = layers[s["layer"]], heads[s["head"]]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(layers), len(heads), figsize=(2.2 * len(heads) + 1, 2.2 * len(layers) + 1), squeeze=False)
    labels = [t.replace("\n", "\\n") for t in tokens]
    for i, layer in enumerate(layers):
        for j, head in enumerate(heads):
            ax = axes[i][j]
            ax.imshow(weights[i, j].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {layer} head {head}", fontsize=8)
            small = len(tokens) <= 24
            ax.set_xticks(range(len(tokens)) if small else [])
            ax.set_yticks(range(len(tokens)) if small else [])
            if small:
                ax.set_xticklabels(labels, rotation=90, fontsize=5)
                ax.set_yticklabels(labels, fontsize=5)
    fig.suptitle("attention weights (rows: queries, columns: keys)", fontsize=10)
    fig.tight_layout()
    png = out / "attention.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    page = out / "attention.html"
    page.write_text(_html_page(tokens, weights, layers, heads, stats), encoding="utf-8")
    (out / "attention_stats.json").write_text(json.dumps(stats, indent=2))
    return {"png": str(png), "html": str(page), "stats": stats, "tokens": tokens, "weights": weights}


def _html_page(tokens, weights, layers, heads, stats) -> str:
    data = json.dumps(
        {
            "tokens": tokens,
            "layers": layers,
            "heads": heads,
            "stats": stats,
            "weights": [[[[round(v, 4) for v in row] for row in h] for h in layer] for layer in weights.tolist()],
        }
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>attention maps</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }} table {{ border-collapse: collapse; }}
td {{ width: 1.4em; height: 1.4em; padding: 0; }} th {{ font-weight: normal; font-size: 11px; white-space: pre; }}
th.col {{ writing-mode: vertical-rl; }} #info {{ margin: .5em 0; }}
</style></head><body>
<h1>Attention maps</h1>
<p>{html.escape(str(len(tokens)))} tokens. Pick a layer and a head; a cell's shade is the weight a query (row) gives a key (column).</p>
<label>layer <select id="layer"></select></label> <label>head <select id="head"></select></label>
<div id="info"></div><table id="grid"></table>
<script id="data" type="application/json">{html.escape(data, quote=False)}</script>
<script>
const D = JSON.parse(document.getElementById("data").textContent);
const L = document.getElementById("layer"), H = document.getElementById("head");
D.layers.forEach((l, i) => L.add(new Option(l, i))); D.heads.forEach((h, i) => H.add(new Option(h, i)));
function esc(s) {{ return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/\\n/g, "\\\\n"); }}
function draw() {{
  const li = +L.value, hi = +H.value, w = D.weights[li][hi], t = D.tokens;
  const s = D.stats[li * D.heads.length + hi];
  document.getElementById("info").textContent = "entropy " + s.entropy.toFixed(3) + " of at most " +
    s.max_entropy.toFixed(3) + " nats; strongest pair off the first token: " + JSON.stringify(s.strongest.query_token) +
    " -> " + JSON.stringify(s.strongest.key_token) + " (" + s.strongest.weight.toFixed(3) + ")";
  let rows = "<tr><th></th>" + t.map(x => "<th class='col'>" + esc(x) + "</th>").join("") + "</tr>";
  w.forEach((row, q) => {{
    rows += "<tr><th>" + esc(t[q]) + "</th>" + row.map((v, k) =>
      "<td title='" + v.toFixed(3) + "' style='background: rgba(30, 60, 200, " + v + ")'></td>").join("") + "</tr>";
  }});
  document.getElementById("grid").innerHTML = rows;
}}
L.onchange = H.onchange = draw; draw();
</script></body></html>
"""
