"""How fast a model generates, measured the same way for every table (compare.py, prune.py, experiments)."""

import time

import torch


def best_of(fn, repeats: int) -> tuple[float, object]:
    """(fastest of `repeats` timed calls in seconds, the warm-up call's result): one warm-up first (caches,
    compilation), then the minimum, the least disturbed measurement on a shared machine."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best, result


@torch.no_grad()
def generation_speed(model, prompt_ids: list[int], new_tokens: int = 128, repeats: int = 5) -> float:
    """Greedy tokens/s at batch 1 with the KV cache (best of `repeats` after one warm-up)."""
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)
    new_tokens = min(new_tokens, getattr(model.config, "max_position_embeddings", 10**9) - len(prompt_ids))
    kw = dict(
        max_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=model.config.pad_token_id,
        attention_mask=torch.ones_like(ids),
    )
    seconds, _ = best_of(lambda: model.generate(ids, **kw), repeats)
    return new_tokens / seconds
