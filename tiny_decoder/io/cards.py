"""Model cards (README.md with Hub metadata) for trained tiny-decoder models.

Every number in a card comes from the run that wrote it: pass the figures in, never type them.
"""

import json

from .sources import hub_id

USE = """## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo}", trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained("{repo}", trust_remote_code=True)
inputs = tokenizer("Once upon a time", return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=100, do_sample=True, top_k=50, top_p=0.95)
print(tokenizer.decode(out[0], skip_special_tokens=True))
```

{where}With the `tiny_decoder` package installed (`import tiny_decoder`), `trust_remote_code` is not needed.

"""

TEMPLATE = """---
{metadata}
---

# {title}

A {params_m:.2f} M-parameter decoder-only transformer built with tiny-decoder (written from
scratch in PyTorch, loaded through `transformers`' `AutoModelForCausalLM`), trained on
{dataset_desc}.

{use}## Architecture

{architecture}

## Training

| | |
|---|---|
| data | {dataset_desc} |
| tokenizer | {tokenizer_desc} |
| optimizer steps | {steps:,} |
| tokens seen | {tokens:,} |
| batch | {batch_tokens:,} tokens per step |
| peak learning rate | {learning_rate} ({lr_scheduler_type}, {warmup_steps} warmup steps) |
| precision | {mixed_precision} |
| hardware | {hardware} |
| wall-clock | {minutes:.1f} min |
{method}
## Results

| split | loss (nats/token) | perplexity |
|---|---|---|
| validation | {eval_loss:.4f} | {eval_ppl:.2f} |

Command that produced this model:

```
{command}
```

## Samples

Prompt "{prompt}", top-k 50, top-p 0.95, seed {seed}:

{samples}

## Limitations

A small model trained on children's stories: it writes simple English stories and knows little
else. It repeats itself and loses the plot in long generations. Not for any real use.
"""


def render_model_card(config, info: dict) -> str:
    """info keys: repo (Hub id or the folder's path), local (repo is a path), title, dataset_name, dataset_desc, tokenizer_desc, steps, tokens, batch_tokens,
    learning_rate, lr_scheduler_type, warmup_steps, mixed_precision, hardware, minutes, eval_loss,
    eval_ppl, command, prompt, seed, samples (list of str), params; optional: method (a markdown section),
    base_model (the weights training started from), tags (extra Hub tags)."""
    architecture = _architecture(config)
    metadata = {
        "library_name": "transformers",
        "license": "mit",
        "language": ["en"],
        "pipeline_tag": "text-generation",
        "tags": ["tiny-decoder", "causal-lm", "tinystories"]
        + ([] if info.get("base_model") else ["from-scratch"])
        + list(info.get("tags", [])),
        "datasets": [info["dataset_name"]] if info.get("dataset_name") else [],
        **({"base_model": hub_id(info["base_model"])} if hub_id(info.get("base_model")) else {}),
        "model-index": [
            {
                "name": info.get("title") or info["repo"],
                "results": [
                    {
                        "task": {"type": "text-generation", "name": "Language modeling"},
                        "dataset": {
                            "type": info.get("dataset_name") or "local",
                            "name": info["dataset_desc"],
                            "split": "validation",
                        },
                        "metrics": [
                            {"type": "loss", "value": round(info["eval_loss"], 4), "name": "validation loss"},
                            {"type": "perplexity", "value": round(info["eval_ppl"], 2), "name": "validation perplexity"},
                        ],
                    }
                ],
            }
        ],
    }
    samples = "\n\n".join(f"> {s.strip()}".replace("\n", "\n> ") for s in info["samples"]) or "(none)"
    fields = {k: v for k, v in info.items() if k not in ("samples", "title", "local", "method", "base_model", "tags")}
    method = f"\n{info['method'].strip()}\n" if info.get("method") else ""
    local = info.get("local", False)
    where = (
        (
            f"`{info['repo']}` is this folder's path as training wrote it (relative to where training ran); after "
            f"`push_to_hub`, use the repository id instead.\n\n"
        )
        if local
        else ""
    )
    return TEMPLATE.format(
        use=USE.format(repo=info["repo"], where=where),
        metadata=_yaml(metadata),
        title=info.get("title") or info["repo"].rstrip("/").split("/")[-1],
        where=where,
        params_m=info["params"] / 1e6,
        architecture=architecture,
        samples=samples,
        method=method,
        **fields,
    )


PRUNED_TEMPLATE = """---
{metadata}
---

# {title}

`{source}` with whole units removed by structured pruning (tiny-decoder's `scripts/prune.py`):
{removed}. The weights that remain are the original ones, unchanged except the norm rescaling
described below; no training happened after the cut. Distil or fine-tune it to recover what
was lost (`scripts/distill.py --model_name_or_path {repo} --teacher_name_or_path {source}`).

{use}## What changed

| | before | after |
|---|---|---|
{table}

Importance: {importance}, measured on {calibration}. {notes}

## Architecture

{architecture}

Command that produced this model:

```
{command}
```
"""


def render_pruned_card(config, info: dict) -> str:
    """info keys: repo, local, title, source, removed (text), rows (list of (name, before, after)), importance,
    calibration, notes, command."""
    local = info.get("local", True)
    where = (
        (f"`{info['repo']}` is this folder's path as pruning wrote it; after `push_to_hub`, use the repository id instead.\n\n")
        if local
        else ""
    )
    metadata = {
        "library_name": "transformers",
        "license": "mit",
        "language": ["en"],
        "pipeline_tag": "text-generation",
        "tags": ["tiny-decoder", "causal-lm", "pruned", "structured-pruning"],
        **({"base_model": info["source"]} if hub_id(info["source"]) else {}),
    }
    table = "\n".join(f"| {name} | {a} | {b} |" for name, a, b in info["rows"])
    return PRUNED_TEMPLATE.format(
        metadata=_yaml(metadata),
        title=info["title"],
        source=info["source"],
        removed=info["removed"],
        repo=info["repo"],
        use=USE.format(repo=info["repo"], where=where),
        table=table,
        importance=info["importance"],
        calibration=info["calibration"],
        notes=info.get("notes", ""),
        architecture=_architecture(config),
        command=info["command"],
    )


def _architecture(config) -> str:
    arch_keys = [
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "intermediate_size",
        "max_position_embeddings",
        "position_embedding",
        "norm",
        "norm_position",
        "hidden_act",
        "tie_word_embeddings",
        "residual_dropout",
        "attention_dropout",
        "embedding_dropout",
    ]
    return "| field | value |\n|---|---|\n" + "\n".join(f"| {k} | {getattr(config, k)} |" for k in arch_keys)


def _yaml(obj, indent=0) -> str:
    """A small YAML emitter for the card header (PyYAML is not a dependency)."""
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.append(_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {json.dumps(v)}")
    else:
        for v in obj:
            if isinstance(v, dict):
                inner = _yaml(v, indent + 1).split("\n")
                lines.append(f"{pad}- {inner[0].strip()}")
                lines.extend(inner[1:])
            else:
                lines.append(f"{pad}- {json.dumps(v)}")
    return "\n".join(lines)


def evaluation_section(result, dataset: str, split: str, stride, table_md: str, samples: list[dict]) -> str:
    """The card's "## Evaluation" section from scripts/evaluate_model.py's numbers (never typed in)."""
    shown = "\n".join(f"> {s['prompt']}\n\n{s['text']}\n" for s in samples)
    return (
        f"## Evaluation\n\nPerplexity on {dataset} [{split}] by `scripts/evaluate_model.py` "
        f"({result.texts:,} texts, {result.tokens:,} tokens scored"
        f"{f', sliding window stride {stride}' if stride else ''}):\n\n"
        f"| loss (nats/token) | perplexity | mean per-text perplexity |\n|---|---|---|\n"
        f"| {result.loss:.4f} | {result.perplexity:.2f} | {sum(result.perplexities) / len(result.perplexities):.2f} |\n\n"
        f"### Parameters\n\n{table_md}\n\n### Samples (fixed prompts and seed)\n\n{shown}"
    )


def update_card_evaluation(folder, name: str, section: str, dataset: str, split: str, perplexity: float) -> None:
    """Put `section` into folder/README.md (replacing an earlier one) and a `model-index` perplexity entry in its
    metadata, the Hub's format for evaluation results; written to a temporary file, then renamed."""
    import re
    from pathlib import Path

    import yaml

    path = Path(folder) / "README.md"
    text = path.read_text() if path.exists() else ""
    meta, body = {}, text
    if text.startswith("---\n") and "\n---\n" in text[4:]:
        head, body = text[4:].split("\n---\n", 1)
        meta = yaml.safe_load(head) or {}
    meta["model-index"] = [
        {
            "name": name,
            "results": [
                {
                    "task": {"type": "text-generation", "name": "Text generation"},
                    "dataset": {"name": dataset, "type": dataset, "split": split},
                    "metrics": [{"type": "perplexity", "value": round(perplexity, 4), "name": "Perplexity"}],
                }
            ],
        }
    ]
    body = re.sub(r"\n## Evaluation\n.*?(?=\n## |\Z)", "", body, flags=re.S).rstrip("\n")
    out = f"---\n{yaml.safe_dump(meta, sort_keys=False).strip()}\n---\n{body}\n\n{section.rstrip()}\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(out)
    tmp.replace(path)
