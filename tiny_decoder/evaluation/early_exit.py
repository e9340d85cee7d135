"""How early exit trades quality for speed: teacher-forced cached decoding per exit threshold.

Lives outside model/ so it is not copied into every saved model folder."""

import math
import time

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate_early_exit(model, sequences: list[torch.Tensor], thresholds, prompt_tokens: int = 1) -> list[dict]:
    """Per threshold: teacher-forced cached decoding of each sequence token by token with early exit.
    Returns the loss on the decoded positions, the mean exit layer (0-based; the last layer when none)
    and decode tokens per second."""
    from transformers import DynamicCache

    model.eval()
    saved, last = model.config.early_exit_threshold, model.config.num_hidden_layers - 1
    rows = []
    try:
        for threshold in thresholds:
            model.set_early_exit(threshold)
            nll, count, layers, seconds = 0.0, 0, [], 0.0
            for ids in sequences:
                ids = ids.view(1, -1)
                cache = DynamicCache(config=model.config)
                logits = model(ids[:, :prompt_tokens], cache=cache, use_cache=True).logits[:, -1]
                start = time.perf_counter()
                for t in range(prompt_tokens, ids.shape[1]):
                    nll += float(F.cross_entropy(logits.float(), ids[:, t]))
                    count += 1
                    out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
                    logits = out.logits[:, -1]
                    layers.append(last if out.exit_layer is None else out.exit_layer)
                seconds += time.perf_counter() - start
            rows.append(
                {
                    "threshold": threshold,
                    "loss": nll / count,
                    "perplexity": math.exp(nll / count),
                    "mean_exit_layer": sum(layers) / len(layers),
                    "tokens_per_s": len(layers) / seconds,
                }
            )
    finally:
        model.set_early_exit(saved)
    return rows
