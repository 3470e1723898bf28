"""The prior text encoder: phoneme embedding, transformer with relative positions, projection.

Following the VITS paper (Kim et al. 2021, §2.2 and appendix): a stack of
self-attention + convolutional feed-forward layers whose attention adds learned
relative-position terms (Shaw et al. 2018) within a fixed window, then a 1x1
projection to the prior's mean and log standard deviation per phoneme.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from voiceops_service.engines.vits.layers import ChannelLayerNorm, sequence_mask

# Large negative score for masked keys: exp() of it is exactly 0 in fp32 and it
# still fits in fp16.
MASKED_SCORE = -1e4


def _relative_offset_index(length: int, window: int, device: torch.device) -> torch.Tensor:
    """``[t, t]`` index into a window of ``2*window+1`` offsets (``2*window+1`` = outside)."""
    rows = torch.arange(length, device=device).unsqueeze(1)
    cols = torch.arange(length, device=device).unsqueeze(0)
    offset = cols - rows + window
    inside = (offset >= 0) & (offset <= 2 * window)
    return torch.where(inside, offset, torch.full_like(offset, 2 * window + 1))


def _window_position_index(length: int, window: int, device: torch.device) -> torch.Tensor:
    """``[t, 2*window+1]`` absolute key position for each offset (``t`` = outside)."""
    rows = torch.arange(length, device=device).unsqueeze(1)
    offsets = torch.arange(-window, window + 1, device=device).unsqueeze(0)
    position = rows + offsets
    inside = (position >= 0) & (position < length)
    return torch.where(inside, position, torch.full_like(position, length))


class RelativeMultiHeadAttention(nn.Module):
    """Self-attention with windowed relative-position embeddings for keys and values."""

    def __init__(self, channels: int, n_heads: int, window_size: int, shared_heads: int) -> None:
        super().__init__()
        if channels % n_heads:
            raise ValueError(f"channels {channels} not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        span = 2 * window_size + 1
        self.emb_rel_k = nn.Parameter(torch.zeros(shared_heads, span, self.head_channels))
        self.emb_rel_v = nn.Parameter(torch.zeros(shared_heads, span, self.head_channels))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length = x.shape
        return x.view(batch, self.n_heads, self.head_channels, length).transpose(2, 3)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        query = self._heads(self.conv_q(x)) / math.sqrt(self.head_channels)
        key = self._heads(self.conv_k(x))
        value = self._heads(self.conv_v(x))

        scores = query @ key.transpose(-2, -1)
        # Scores against the 2w+1 relative key embeddings, scattered onto the band
        # |j - i| <= w of the [t, t] score matrix (zero outside the window).
        relative = query @ self.emb_rel_k.unsqueeze(0).transpose(-2, -1)
        relative = F.pad(relative, (0, 1))
        index = _relative_offset_index(length, self.window_size, x.device)
        scores = scores + relative.gather(-1, index.expand(batch, self.n_heads, length, length))
        scores = scores.masked_fill(~attn_mask, MASKED_SCORE)
        weights = torch.softmax(scores, dim=-1)

        output = weights @ value
        # The same weights read along the window, times the relative value embeddings.
        padded = F.pad(weights, (0, 1))
        window_index = _window_position_index(length, self.window_size, x.device)
        span = 2 * self.window_size + 1
        window_weights = padded.gather(-1, window_index.expand(batch, self.n_heads, length, span))
        output = output + window_weights @ self.emb_rel_v.unsqueeze(0)

        output = output.transpose(2, 3).reshape(batch, channels, length)
        return self.conv_o(output)


class ConvFeedForward(nn.Module):
    """Two 'same'-padded convolutions with a ReLU between, masked before each."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, ((self.kernel_size - 1) // 2, self.kernel_size // 2))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_1(self._pad(x * x_mask)))
        x = self.conv_2(self._pad(x * x_mask))
        return x * x_mask


class TransformerEncoder(nn.Module):
    """Post-norm transformer: attention then feed-forward, each with a residual."""

    def __init__(
        self,
        channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        window_size: int,
        shared_heads: int,
    ) -> None:
        super().__init__()
        self.attn_layers = nn.ModuleList(
            RelativeMultiHeadAttention(channels, n_heads, window_size, shared_heads)
            for _ in range(n_layers)
        )
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(
            ConvFeedForward(channels, filter_channels, kernel_size) for _ in range(n_layers)
        )
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        valid = x_mask.bool()
        attn_mask = valid.unsqueeze(2) & valid.unsqueeze(-1)  # [b, 1, t, t]
        x = x * x_mask
        for attn, norm_1, ffn, norm_2 in zip(
            self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2, strict=True
        ):
            x = norm_1(x + attn(x, attn_mask))
            x = norm_2(x + ffn(x, x_mask))
        return x * x_mask


class TextEncoder(nn.Module):
    """Phoneme ids -> hidden states and the prior's per-phoneme mean and log-std."""

    def __init__(
        self,
        n_vocab: int,
        out_channels: int,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        window_size: int,
        shared_heads: int,
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        self.emb = nn.Embedding(n_vocab, hidden_channels)
        self.encoder = TransformerEncoder(
            hidden_channels,
            filter_channels,
            n_heads,
            n_layers,
            kernel_size,
            window_size,
            shared_heads,
        )
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.emb(ids) * math.sqrt(self.hidden_channels)  # [b, t, h]
        x = x.transpose(1, 2)
        x_mask = sequence_mask(lengths, x.size(2)).unsqueeze(1).to(x.dtype)
        x = self.encoder(x * x_mask, x_mask)
        stats = self.proj(x) * x_mask
        mean, log_std = torch.split(stats, self.out_channels, dim=1)
        return x, mean, log_std, x_mask
