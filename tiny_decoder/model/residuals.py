"""How a sublayer's output joins the residual stream.

"add": x + y, the standard residual. "orthogonal_parallel": y is split against the stream x into its
parallel part p = (<x, y> / <x, x>) x and its orthogonal part o = y - p, and the stream becomes
x + alpha * o + beta * p, with alpha and beta learned per channel (one pair per sublayer). It is
computed as x + alpha * y + (beta - alpha) * p, which at the initial alpha = beta = 1 is x + y
bit for bit. The dot products run in float32 at least, with eps in the denominator for a zero stream.
"""

import torch
from torch import nn

from .norms import at_least_float32


class AddResidual(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


class OrthogonalParallelResidual(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(dim))  # scales the part of y orthogonal to x
        self.beta = nn.Parameter(torch.ones(dim))  # scales the part of y along x
        self.eps = eps

    def parallel(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """p = (<x, y> / <x, x>) x per token (over the channel dimension)."""
        x32, y32 = at_least_float32(x), at_least_float32(y)
        coef = (x32 * y32).sum(-1, keepdim=True) / ((x32 * x32).sum(-1, keepdim=True) + self.eps)
        return (coef * x32).to(y.dtype)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + self.alpha * y + (self.beta - self.alpha) * self.parallel(x, y)


def build_residual(config) -> nn.Module:
    return OrthogonalParallelResidual(config.hidden_size) if config.residual == "orthogonal_parallel" else AddResidual()
