"""HiFi-GAN generator (Kong et al. 2020), the VITS decoder: latent frames -> waveform.

Transposed convolutions upsample by ``prod(upsample_rates)`` (the hop length);
after each, a multi-receptive-field fusion averages several residual blocks of
different kernel sizes and dilations.

Batching: a padded batch only matches one-by-one synthesis if every
convolution sees zeros past each item's end, exactly as zero padding gives a
single item. So when item lengths are passed, the padded tail of every
convolution input is zeroed in place at its own resolution (only the padding
is written, so this costs far less than multiplying whole tensors by a mask).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from voiceops_service.engines.vits.layers import same_padding

LRELU_SLOPE = 0.1


Tails = list[int] | None  # per item: samples at this resolution (None: one unpadded item)


def _masked(x: torch.Tensor, lengths: Tails) -> torch.Tensor:
    """Zero each item's padding in place; ``x`` must be a fresh tensor (an activation)."""
    if lengths is not None:
        for row, length in enumerate(lengths):
            if length < x.size(2):
                x[row, :, length:] = 0
    return x


class ResBlockTwoConvs(nn.Module):
    """HiFi-GAN 'ResBlock2': one dilated conv per residual step."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(
                channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d)
            )
            for d in dilations
        )

    def forward(self, x: torch.Tensor, mask: Tails = None) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(_masked(F.leaky_relu(x, LRELU_SLOPE), mask))
        return x


class ResBlockConvPairs(nn.Module):
    """HiFi-GAN 'ResBlock1': a dilated conv then an undilated conv per residual step."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(
                channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d)
            )
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=same_padding(kernel_size))
            for _ in dilations
        )

    def forward(self, x: torch.Tensor, mask: Tails = None) -> torch.Tensor:
        for conv_1, conv_2 in zip(self.convs1, self.convs2, strict=True):
            y = conv_1(_masked(F.leaky_relu(x, LRELU_SLOPE), mask))
            y = conv_2(_masked(F.leaky_relu(y, LRELU_SLOPE), mask))
            x = x + y
        return x


class HifiGanGenerator(nn.Module):
    def __init__(
        self,
        in_channels: int,
        resblock_type: str,
        resblock_kernel_sizes: Sequence[int],
        resblock_dilations: Sequence[Sequence[int]],
        upsample_rates: Sequence[int],
        upsample_initial_channel: int,
        upsample_kernel_sizes: Sequence[int],
        post_bias: bool = False,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.upsample_rates = list(upsample_rates)
        self.num_kernels = len(resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(in_channels, upsample_initial_channel, 7, padding=3)
        block = ResBlockConvPairs if resblock_type == "1" else ResBlockTwoConvs
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        channels = upsample_initial_channel
        for rate, kernel in zip(upsample_rates, upsample_kernel_sizes, strict=True):
            self.ups.append(
                nn.ConvTranspose1d(
                    channels, channels // 2, kernel, stride=rate, padding=(kernel - rate) // 2
                )
            )
            channels //= 2
            for size, dilations in zip(resblock_kernel_sizes, resblock_dilations, strict=True):
                self.resblocks.append(block(channels, size, dilations))
        self.conv_post = nn.Conv1d(channels, 1, 7, padding=3, bias=post_bias)
        self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1) if gin_channels else None

    def forward(
        self,
        x: torch.Tensor,
        frame_lengths: torch.Tensor | None = None,
        g: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` [b, c, frames] (already masked) -> audio [b, 1, frames * hop].

        ``frame_lengths`` (per item) turns on the per-resolution masking that
        padded batches need; leave it None for a single item.
        """
        x = self.conv_pre(x)
        if self.cond is not None and g is not None:
            x = x + self.cond(g)
        lengths = None if frame_lengths is None else [int(n) for n in frame_lengths.tolist()]
        if lengths is not None and all(n == x.size(2) for n in lengths):
            lengths = None  # nothing padded: plain convolutions are already exact
        for i, up in enumerate(self.ups):
            x = up(_masked(F.leaky_relu(x, LRELU_SLOPE), lengths))
            if lengths is not None:
                lengths = [n * self.upsample_rates[i] for n in lengths]
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            fused = blocks[0](x, lengths)
            for block in blocks[1:]:
                fused = fused + block(x, lengths)
            x = fused / self.num_kernels
        x = self.conv_post(_masked(F.leaky_relu(x), lengths))
        return torch.tanh(x)
