"""Position information, one small piece per scheme, chosen by `config.position_embedding`.

- "rope": rotary embeddings applied to q and k inside attention (Su et al. 2021); the
  frequencies come from `config.rope_parameters` exactly as in transformers' own models
  ("default", "linear", "dynamic", "yarn", "llama3", "longrope", through `ROPE_INIT_FUNCTIONS`),
  optionally on only the first `partial_rotary_factor` of each head's channels.
- "alibi": a per-head linear distance penalty added to attention scores (Press et al. 2022).
- "sinusoidal": fixed sin/cos vectors added to token embeddings (Vaswani et al. 2017).
- "learned": a trained embedding table added to token embeddings (GPT-2).
- "none": no explicit positions; the causal mask alone leaks order (NoPE).

Each scheme is a module with one method, `inputs(inputs_embeds, position_ids, cache, past, mask)`, that returns
what the model needs from it as `PositionInputs`: a vector added to the token embeddings, rotary (cos, sin) for
q and k, or extra arguments of the attention kernel (ALiBi's bias). The model builds the one its config names
(`build_positions`) under the attribute name its weights are saved with, and never branches on the scheme.
"""

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update


@dataclass
class PositionInputs:
    embedding: torch.Tensor | None = None  # (B, T, hidden), added to the token embeddings
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None  # cos, sin (B, T, rotary_dim), applied to q and k
    attention_kwargs: dict = field(default_factory=dict)  # for the attention kernel: {"position_bias": ...}

    def add_to(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        return inputs_embeds if self.embedding is None else inputs_embeds + self.embedding


class RotaryEmbedding(nn.Module):
    """position_ids (B, T) -> cos, sin (B, T, rotary_dim), shared by every layer (transformers' rotary contract;
    `apply_rope` adds the head axis inside attention, as Llama's `apply_rotary_pos_emb` does).

    `inv_freq` is a non-persistent buffer (not in the checkpoint): `_init_weights` recomputes it
    from the config, so `from_pretrained` and `.to()` always agree with `rope_parameters`.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        if self.rope_type != "default" and self.rope_type not in ROPE_INIT_FUNCTIONS:
            raise ValueError(
                f"rope_parameters['rope_type']={self.rope_type!r} is not known; choose one of "
                f"{['default', *ROPE_INIT_FUNCTIONS]}."
            )
        self.max_seq_len_cached = self.original_max_seq_len = config.max_position_embeddings
        inv_freq, self.attention_scaling = self.compute_inv_freq(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    def compute_inv_freq(self, config, device=None):
        if self.rope_type == "default":
            return self.compute_default_rope_parameters(config, device)
        return ROPE_INIT_FUNCTIONS[self.rope_type](config, device)

    @staticmethod
    def compute_default_rope_parameters(config, device=None, seq_len=None, **kwargs):
        """theta^(-2i/d) for i < d/2, d = the rotated channels of a head; no attention scaling."""
        params = config.rope_parameters
        dim = int(config.head_dim * params.get("partial_rotary_factor", 1.0))
        inv_freq = 1.0 / params["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim)
        return inv_freq, 1.0

    @torch.no_grad()
    @dynamic_rope_update  # "dynamic" / "longrope" grow their frequencies past the trained length
    def forward(self, x, position_ids):
        """-> cos, sin of shape (B, T, rotary_dim)."""
        freqs = position_ids[:, :, None].float() * self.inv_freq  # (B, T, rotary_dim / 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        if self.attention_scaling != 1.0:  # yarn / longrope scale the logits through q and k
            cos, sin = cos * self.attention_scaling, sin * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)

    def inputs(self, inputs_embeds, position_ids, **_) -> PositionInputs:
        return PositionInputs(rotary=self(inputs_embeds, position_ids))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + r/2) of the first r channels of x (B, H, T, d); cos, sin: (B, T, r), broadcast over heads."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, r)
    r = cos.shape[-1]
    if r == x.shape[-1]:
        return x * cos + _rotate_half(x) * sin
    rot, rest = x[..., :r], x[..., r:]  # partial rotary: the remaining channels carry no position
    return torch.cat((rot * cos + _rotate_half(rot) * sin, rest), dim=-1)


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


def alibi_bias(slopes: torch.Tensor, q_positions: torch.Tensor, kv_positions: torch.Tensor) -> torch.Tensor:
    """(1, H, T, S) bias -slope * (i - j) for query slots i and key slots j of the cache.

    Slot distance equals position distance for every unmasked pair, also with left padding
    (pads sit before every real token and are masked), so no key positions need caching.
    """
    distance = (q_positions[:, None] - kv_positions[None, :]).clamp(min=0).float()  # future keys are masked anyway
    return (-slopes.float()[:, None, None] * distance)[None]


class ALiBi(nn.Module):
    """ALiBi in one place: the slopes (from the head count, or the config's own after pruning), the kernels
    that can take an additive bias, and the (1, H, T, S) bias over the key slots the kernel will see."""

    KERNELS = ("eager", "sdpa")  # kernels that take an additive float bias (through `position_bias`)

    def __init__(self, config):
        super().__init__()
        self.config = config

    def check_kernel(self):
        impl = self.config._attn_implementation
        if impl not in self.KERNELS:
            raise ValueError(
                f"position_embedding='alibi' adds a bias to the attention scores, which attn_implementation="
                f"{impl!r} cannot take; use one of {list(self.KERNELS)}."
            )

    def forward(self, inputs_embeds, cache, past, mask):
        """The bias for the T new tokens after `past` cached ones; the whole static cache when there is one,
        and from kv_offset on in a sliding-window cache (it holds the last keys only)."""
        cfg, t, device = self.config, inputs_embeds.shape[1], inputs_embeds.device
        if cache is not None:
            kv_len, kv_offset = cache.get_mask_sizes(t, 0)
        else:
            kv_len, kv_offset = (mask.shape[-1] if mask is not None else t), 0
        slopes = (
            alibi_slopes(cfg.num_attention_heads, device)
            if cfg.alibi_slopes is None
            else torch.tensor(cfg.alibi_slopes, device=device)
        )
        q_pos = torch.arange(t, device=device) + past
        return alibi_bias(slopes, q_pos, torch.arange(kv_len, device=device) + kv_offset).to(inputs_embeds.dtype)

    def inputs(self, inputs_embeds, position_ids, cache=None, past=0, mask=None) -> PositionInputs:
        self.check_kernel()
        return PositionInputs(attention_kwargs={"position_bias": self(inputs_embeds, cache, past, mask)})


def sinusoidal_embedding(position_ids: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) positions -> (B, T, dim): sin on even channels, cos on odd ones."""
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=position_ids.device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = position_ids[:, :, None].float() * inv_freq  # (B, T, dim/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).to(dtype)


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos vectors at `sinusoidal_scale` (see the config), added to the token embeddings."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def inputs(self, inputs_embeds, position_ids, **_) -> PositionInputs:
        cfg = self.config
        return PositionInputs(
            embedding=cfg.sinusoidal_scale * sinusoidal_embedding(position_ids, cfg.hidden_size, inputs_embeds.dtype)
        )


class LearnedPositions(nn.Embedding):
    """A trained table of `max_position_embeddings` vectors (GPT-2's wpe), added to the token embeddings."""

    is_position_table = True  # a small init, see _init_weights

    def __init__(self, config):
        super().__init__(config.max_position_embeddings, config.hidden_size)

    def inputs(self, inputs_embeds, position_ids, **_) -> PositionInputs:
        if not torch.compiler.is_compiling() and int(position_ids.max()) >= self.num_embeddings:
            raise ValueError(
                f"position {int(position_ids.max())} is beyond max_position_embeddings={self.num_embeddings} of the "
                f"learned position table; shorten the input."
            )
        return PositionInputs(embedding=self(position_ids))


class NoPositions(nn.Module):
    """NoPE: nothing to add; the causal mask alone tells order."""

    def __init__(self, config):
        super().__init__()

    def inputs(self, inputs_embeds, position_ids, **_) -> PositionInputs:
        return PositionInputs()


# config.position_embedding -> (the model's attribute, as in saved weights and transformers' models; the module)
POSITION_MODULES = {
    "rope": ("rotary_emb", RotaryEmbedding),
    "alibi": ("alibi", ALiBi),
    "learned": ("embed_positions", LearnedPositions),
    "sinusoidal": ("sinusoidal_positions", SinusoidalPositions),
    "none": ("no_positions", NoPositions),
}
