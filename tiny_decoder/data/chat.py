"""Conversations for supervised fine-tuning: the chat template, reading chat JSONL, and labels.

Design choices:
- Roles are marked by three added special tokens (<|system|>, <|user|>, <|assistant|>), each
  followed by a newline; every turn ends with the tokenizer's EOS, so `generate()` stops at the
  end of the assistant's answer with no extra stop strings.
- The template wraps assistant content in `{% generation %}`, so transformers'
  `apply_chat_template(..., return_assistant_tokens_mask=True)` says which tokens are the
  assistant's: the loss is taken on those alone (labels -100 elsewhere), the EOS included so the
  model learns to stop.
- Input is the format TRL and the Hub's chat datasets use: {"messages": [{"role", "content"}]},
  or {"prompt", "completion"} pairs; a bad line is refused with its number.
- A conversation longer than the context is cut to it (documented truncation, counted in the
  report); one left with no assistant token is dropped, as it would teach nothing.
"""

import json
from pathlib import Path

ROLES = ("system", "user", "assistant")
ROLE_TOKENS = [f"<|{r}|>" for r in ROLES]

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{%- else -%}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)


def add_chat_template(tokenizer) -> int:
    """Give `tokenizer` the role tokens and the chat template; returns how many tokens were added
    (resize the model's embeddings to len(tokenizer) when > 0)."""
    added = tokenizer.add_special_tokens({"additional_special_tokens": ROLE_TOKENS}, replace_extra_special_tokens=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    return added


def to_messages(record: dict, where: str) -> list[dict]:
    """One JSONL record -> a checked list of messages; ValueError naming `where` (file, line) otherwise."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object with 'messages' or 'prompt' and 'completion'.")
    if "messages" in record:
        messages = record["messages"]
    elif "prompt" in record and "completion" in record:

        def turns(value, role):
            return value if isinstance(value, list) else [{"role": role, "content": value}]

        messages = turns(record["prompt"], "user") + turns(record["completion"], "assistant")
    else:
        raise ValueError(
            f"{where}: no 'messages' field and no 'prompt' + 'completion' pair (found keys "
            f"{sorted(record)}); see the chat format in README."
        )
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects.")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ValueError(
                f"{where}: message {i} has role {m.get('role') if isinstance(m, dict) else m!r}; roles are {list(ROLES)}."
            )
        if "content" in m and not isinstance(m["content"], str):
            raise ValueError(
                f"{where}: message {i} ({m['role']}) has content of type {type(m['content']).__name__} "
                f"({m['content']!r:.40}); content must be a string."
            )
        if not isinstance(m.get("content"), str) or (m["role"] == "assistant" and not m["content"].strip()):
            raise ValueError(f"{where}: message {i} ({m['role']}) has no content; every assistant turn needs text.")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"{where}: no assistant turn, so there is nothing to learn from this conversation.")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def load_conversations(path: str) -> list[list[dict]]:
    """A chat JSONL file -> conversations (lists of messages)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f'{path} does not exist; give a JSONL file of {{"messages": [...]}} lines.')
    out = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise ValueError(f"{path}, line {n}: not valid JSON ({err}).") from None
            out.append(to_messages(record, f"{path}, line {n}"))
    if not out:
        raise ValueError(f"{path} holds no conversations.")
    return out


def encode_conversation(tokenizer, messages: list[dict], max_length: int) -> dict | None:
    """input_ids, labels (-100 except assistant tokens) and attention_mask, padded to max_length;
    None when truncation to max_length leaves no assistant token."""
    # verbose=False: a conversation longer than the context is expected here (it is cut below), not worth a warning
    enc = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, tokenizer_kwargs={"verbose": False}
    )
    ids, mask = list(enc["input_ids"])[:max_length], list(enc["assistant_masks"])[:max_length]
    if not any(mask):
        return None
    pad = max_length - len(ids)
    return {
        "input_ids": ids + [tokenizer.pad_token_id] * pad,
        "labels": [t if m else -100 for t, m in zip(ids, mask)] + [-100] * pad,
        "attention_mask": [1] * len(ids) + [0] * pad,
        "truncated": len(enc["input_ids"]) > max_length,
    }
