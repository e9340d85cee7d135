"""Perplexity of any causal LM on texts: ours or any transformers model, batched, with a sliding window.

Each text is scored on its own: every token after the first is predicted once, from the tokens
before it. A text longer than the context is cut into windows of `max_length` tokens starting every
`stride` tokens (the scheme of transformers' perplexity guide): a window scores only the tokens no
earlier window scored, so each gets up to `max_length - stride` tokens of extra context. A window's
first token has no context inside it and is not scored, so stride = max_length (disjoint chunks)
skips one token per chunk and any smaller stride scores every token. Without a stride a text longer
than the context is an error, not a silent truncation.
"""

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass
class PerplexityResult:
    loss: float  # mean negative log-likelihood per scored token (nats)
    perplexity: float  # exp(loss): corpus perplexity, token-weighted
    tokens: int  # scored tokens
    texts: int
    seconds: float
    tokens_per_s: float
    perplexities: list  # per text, as evaluate's perplexity metric reports them

    def to_dict(self) -> dict:
        return asdict(self)


def context_length(model, tokenizer=None) -> int:
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    if tokenizer is not None and 0 < getattr(tokenizer, "model_max_length", 0) < 10**8:
        return tokenizer.model_max_length
    raise ValueError("Cannot tell the model's context length from its config; pass max_length.")


def windows(ids: list[int], max_length: int, stride: int | None) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per window; labels are -100 on the context an earlier window already scored."""
    if len(ids) <= max_length:
        return [(ids, ids)]
    if stride is None:
        raise ValueError(
            f"A text has {len(ids)} tokens, more than the context of {max_length}; pass a stride (e.g. "
            f"--stride {max_length // 2}) to score it in sliding windows, or shorten the texts."
        )
    if not 0 < stride <= max_length:
        raise ValueError(f"stride={stride} must be in [1, max_length={max_length}].")
    out, scored_until = [], 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        window = ids[begin:end]
        new = end - max(scored_until, begin + 1)  # tokens this window scores (a window's first token has no context)
        out.append((window, [-100] * (len(window) - new) + window[len(window) - new :]))
        scored_until = end
        if end == len(ids):
            break
    return out


@torch.no_grad()
def perplexity(
    model,
    tokenizer,
    texts: list[str],
    batch_size: int = 8,
    max_length: int | None = None,
    stride: int | None = None,
    add_special_tokens: bool = True,
    progress: bool = False,
) -> PerplexityResult:
    """Token-weighted perplexity over `texts`, plus each text's own perplexity."""
    from tqdm.auto import tqdm

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("No text to score: the dataset or file is empty (or only blank lines).")
    max_length = max_length or context_length(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    jobs = []  # (text index, input ids, labels)
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
        jobs += [(i, w, lab) for w, lab in windows(ids, max_length, stride)]
    jobs.sort(key=lambda j: len(j[1]))  # similar lengths together: less padding
    nll = [0.0] * len(texts)
    count = [0] * len(texts)
    model.eval()
    device = next(model.parameters()).device
    start = time.perf_counter()
    for b in tqdm(range(0, len(jobs), batch_size), desc="perplexity", disable=not progress):
        batch = jobs[b : b + batch_size]
        width = max(len(w) for _, w, _ in batch)
        ids = torch.tensor([w + [pad_id] * (width - len(w)) for _, w, _ in batch], device=device)
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, _, lab in batch], device=device)
        mask = torch.tensor([[1] * len(w) + [0] * (width - len(w)) for _, w, _ in batch], device=device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        targets = labels[:, 1:]
        losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100, reduction="none")
        for row, (i, _, _) in enumerate(batch):
            nll[i] += losses[row].sum().item()
            count[i] += (targets[row] != -100).sum().item()
    seconds = time.perf_counter() - start
    tokens = sum(count)
    if tokens == 0:
        raise ValueError("Every text is a single token: nothing to predict. Give longer texts.")
    loss = sum(nll) / tokens
    return PerplexityResult(
        loss=loss,
        perplexity=math.exp(loss),
        tokens=tokens,
        texts=len(texts),
        seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else float("inf"),
        perplexities=[math.exp(n / c) if c else float("nan") for n, c in zip(nll, count)],
    )
