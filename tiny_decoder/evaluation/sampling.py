"""Sampling text from a causal LM with one set of defaults, for every sample the package shows: the
stories at the end of training, the answers `evaluate_sft.py` scores, the samples in evaluation cards.
A tiny-decoder model samples through the decode engine (tiny_decoder/engine.py: one static cache, sampling on the
device); any other causal LM (and linear attention, which the engine refuses) through generate()."""

import torch

# Nucleus sampling as the model card's snippet and most TinyStories examples use it.
SAMPLING = {"do_sample": True, "top_k": 50, "top_p": 0.95}


@torch.no_grad()
def sample_texts(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int,
    seed: int = 0,
    include_prompt: bool = True,
    batch_size: int = 50,
) -> list[str]:
    """One sampled continuation per prompt (token ids), left-padded into batches of `batch_size`; the seed is
    set once, so the texts depend on (seed, prompts) alone. `include_prompt=False` returns only the new text
    (a chat model's answer). Special tokens (the EOS a story starts after, padding) are not in the text."""
    if not prompts:
        return []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    engine = _engine(model)
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        if engine is not None:
            room = getattr(model.config, "max_position_embeddings", 10**9) - max(map(len, chunk))
            new = engine.generate(
                chunk,
                min(max_new_tokens, max(room, 1)),
                temperature=1.0,
                top_k=SAMPLING["top_k"],
                top_p=SAMPLING["top_p"],
                seed=seed + i,
                eos_token_id=tokenizer.eos_token_id,
            )
            out += [tokenizer.decode((p if include_prompt else []) + n, skip_special_tokens=True) for p, n in zip(chunk, new)]
            continue
        width = max(map(len, chunk))
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        gen = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **SAMPLING,
        )
        out += [tokenizer.decode(g if include_prompt else g[width:], skip_special_tokens=True) for g in gen]
    model.train(was_training)
    return out


def _engine(model):
    from ..engine import Engine
    from ..model import TinyDecoderForCausalLM

    if isinstance(model, TinyDecoderForCausalLM) and getattr(model.config, "attention_type", "softmax") != "linear":
        return Engine(model)
    return None
