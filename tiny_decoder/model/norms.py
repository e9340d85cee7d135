"""Normalisation layers, chosen by `config.norm`.

Written out rather than taken from torch so a reader sees the arithmetic; statistics are
computed in float32 so bf16/fp16 training stays stable. RMSNorm runs torch's fused kernel of
the same formula (one op instead of six, which is most of its cost at generation's one token
per step); `rms_norm_reference` is the formula, and the tests hold the two together.
"""

import torch
import torch.nn.functional as F
from torch import nn


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> float32 for the statistics; float32 and float64 stay as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = at_least_float32(x)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


class RMSNorm(nn.Module):
    """x / rms(x) * weight (Zhang & Sennrich 2019): no mean, no bias."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)  # = rms_norm_reference, fused
        return rms_norm_reference(x, self.weight, self.eps)


class LayerNorm(nn.Module):
    """(x - mean) / std * weight + bias (Ba et al. 2016); bias optional as in nanoGPT."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = at_least_float32(x)
        mean = x32.mean(-1, keepdim=True)
        var = (x32 - mean).pow(2).mean(-1, keepdim=True)
        y = ((x32 - mean) * torch.rsqrt(var + self.eps)).to(x.dtype) * self.weight
        return y + self.bias if self.bias is not None else y


NORM_CLASSES = {"rmsnorm": RMSNorm, "layernorm": LayerNorm}


def build_norm(config) -> nn.Module:
    return NORM_CLASSES[config.norm](config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)


def build_qk_norm(config) -> nn.Module:
    """Qwen3's query/key norm: RMSNorm over the head dimension (one weight shared by the heads), or nothing."""
    return RMSNorm(config.head_dim, eps=config.norm_eps) if config.qk_norm else nn.Identity()
