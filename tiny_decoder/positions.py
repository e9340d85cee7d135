"""Position information, one small function per scheme, chosen by `config.position_embedding`.

- "rope": rotary embeddings applied to q and k inside attention (Su et al. 2021).
- "alibi": a per-head linear distance penalty added to attention scores (Press et al. 2022).
- "sinusoidal": fixed sin/cos vectors added to token embeddings (Vaswani et al. 2017).
- "learned": a trained embedding table added to token embeddings (GPT-2).
- "none": no explicit positions; the causal mask alone leaks order (NoPE).

Nothing here is a buffer: tables are recomputed from `position_ids` in each forward (a few
hundred flops), so there is no non-persistent state to lose on `from_pretrained` or `to()`.
"""

import math

import torch


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """(B, T) positions -> cos, sin of shape (B, 1, T, head_dim), broadcast over heads."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim)
    freqs = position_ids[:, :, None].float() * inv_freq  # (B, T, head_dim/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, head_dim)
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + d/2) of x (B, H, T, d) by the position angle."""
    return x * cos + _rotate_half(x) * sin


def alibi_slopes(num_heads: int, device=None) -> torch.Tensor:
    """Geometric slopes 2^(-8/n), 2^(-16/n), ...; the paper's interleaving for non-powers of two."""

    def powers_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = powers_of_two(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = powers_of_two(closest) + powers_of_two(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, device=device, dtype=torch.float32)


def alibi_bias(num_heads: int, q_len: int, kv_len: int, device, dtype, slopes=None) -> torch.Tensor:
    """(1, H, q_len, kv_len) bias -slope * (i - j). Queries are the last q_len of kv_len slots.
    `slopes` (one per head) replaces the standard ones, e.g. for the heads left after pruning.

    Slot distance equals position distance for every unmasked pair, also with left padding
    (pads sit before every real token and are masked), so no key positions need caching.
    """
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)
    k_pos = torch.arange(kv_len, device=device)
    distance = (q_pos[:, None] - k_pos[None, :]).clamp(min=0).float()  # future keys are masked anyway
    slopes = alibi_slopes(num_heads, device) if slopes is None else torch.tensor(slopes, device=device, dtype=torch.float32)
    return (-slopes[:, None, None] * distance).to(dtype)[None]


def sinusoidal_embedding(position_ids: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) positions -> (B, T, dim): sin on even channels, cos on odd ones."""
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=position_ids.device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = position_ids[:, :, None].float() * inv_freq  # (B, T, dim/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).to(dtype)
