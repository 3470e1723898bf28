"""Small building blocks shared by the VITS sub-networks.

Shapes follow the usual 1-D convolution layout: ``[batch, channels, time]``.
Masks are ``[batch, 1, time]`` floats (1 = real frame, 0 = padding).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def sequence_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """``[batch, max_length]`` booleans, True for positions before each length."""
    size = int(lengths.max()) if max_length is None else max_length
    positions = torch.arange(size, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the length of an odd-kernel convolution unchanged."""
    return (kernel_size * dilation - dilation) // 2


class ChannelLayerNorm(nn.Module):
    """Layer normalisation over the channel axis of ``[batch, channels, time]``."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, -1)
        x = F.layer_norm(x, (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class Flip(nn.Module):
    """Reverses the channel order so the next coupling layer transforms the other half."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, [1])
