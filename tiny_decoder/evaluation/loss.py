"""Two numbers the scripts report for any causal LM: validation loss on token blocks, and
generation speed. Plain loops, no accelerator, so they measure the same way everywhere."""

import time

import torch


@torch.no_grad()
def blocks_loss(model, blocks, batch_size: int = 64, max_batches: int | None = None) -> float:
    """Mean next-token loss over `blocks` (a dataset with `input_ids` of equal length), as training's eval reports it."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for b, start in enumerate(range(0, len(blocks), batch_size)):
        if max_batches is not None and b >= max_batches:
            break
        ids = torch.tensor(blocks[start:start + batch_size]["input_ids"], device=device)
        total += model(input_ids=ids, labels=ids, use_cache=False).loss.item() * ids.shape[0]
        n += ids.shape[0]
    model.train(was_training)
    if n == 0:
        raise ValueError("No validation blocks to measure the loss on; give more validation data or a smaller block_size.")
    return total / n


@torch.no_grad()
def generation_speed(model, prompt_ids: list[int], new_tokens: int = 128, repeats: int = 5) -> float:
    """Greedy tokens/s at batch 1 with the KV cache (best of `repeats` after one warm-up)."""
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)
    new_tokens = min(new_tokens, getattr(model.config, "max_position_embeddings", 10**9) - len(prompt_ids))
    kw = dict(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
              pad_token_id=model.config.pad_token_id, attention_mask=torch.ones_like(ids))
    model.generate(ids, **kw)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        model.generate(ids, **kw)
        best = min(best, time.perf_counter() - t)
    return new_tokens / best
