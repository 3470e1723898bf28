"""HiFi-GAN generator (Kong et al. 2020), the VITS decoder: latent frames -> waveform.

Transposed convolutions upsample by ``prod(upsample_rates)`` (the hop length);
after each, a multi-receptive-field fusion averages several residual blocks of
different kernel sizes and dilations.

Batching: several items share one forward pass packed end to end along time
(see ``VitsModel.infer``), separated by gaps of at least
:meth:`HifiGanGenerator.context_frames` frames. That only matches one-by-one
synthesis if every convolution sees zeros between items, exactly as zero
padding gives a single item. So the gaps of every convolution input are zeroed
in place at its own resolution (only the gaps are written, far cheaper than
multiplying whole tensors by a mask).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from voiceops_service.engines.vits.layers import same_padding

LRELU_SLOPE = 0.1


# Spans to keep at zero: (row, start, end) at the current resolution (None: no gaps).
Gaps = list[tuple[int, int, int]] | None


def _masked(x: torch.Tensor, gaps: Gaps) -> torch.Tensor:
    """Zero the gaps between packed items in place; ``x`` must be a fresh activation."""
    if gaps is not None:
        for row, start, end in gaps:
            x[row, :, start:end] = 0
    return x


def _scaled(gaps: Gaps, factor: int) -> Gaps:
    return None if gaps is None else [(r, start * factor, end * factor) for r, start, end in gaps]


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

    def forward(self, x: torch.Tensor, mask: Gaps = None) -> torch.Tensor:
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

    def forward(self, x: torch.Tensor, mask: Gaps = None) -> torch.Tensor:
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

    def context_frames(self) -> int:
        """Zero frames packed items need between them so no convolution reads a neighbour.

        A convolution with padding ``p`` at ``scale`` samples per frame reads
        ``ceil(p / scale)`` frames past an item's edge; a transposed one with
        kernel ``k`` and stride ``s`` reads at most ``ceil(k / s)`` input frames.
        """
        frames = self.conv_pre.padding[0]
        scale = 1
        for i, up in enumerate(self.ups):
            frames = max(frames, math.ceil(up.kernel_size[0] / up.stride[0]))
            scale *= up.stride[0]
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            for conv in (m for block in blocks for m in block.modules()):
                if isinstance(conv, nn.Conv1d):
                    frames = max(frames, math.ceil(conv.padding[0] / scale))
        return max(frames, math.ceil(self.conv_post.padding[0] / scale))

    def forward(
        self,
        x: torch.Tensor,
        gaps: Gaps = None,
        g: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` [b, c, frames] (already masked) -> audio [b, 1, frames * hop].

        ``gaps`` (frame spans between packed items, each at least
        :meth:`context_frames` long, and after a row's last item) are kept at
        zero at every resolution.
        """
        x = self.conv_pre(x)
        if self.cond is not None and g is not None:
            x = x + self.cond(g)
        for i, up in enumerate(self.ups):
            x = up(_masked(F.leaky_relu(x, LRELU_SLOPE), gaps))
            gaps = _scaled(gaps, self.upsample_rates[i])
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            fused = blocks[0](x, gaps)
            for block in blocks[1:]:
                fused = fused + block(x, gaps)
            x = fused / self.num_kernels
        x = self.conv_post(_masked(F.leaky_relu(x), gaps))
        return torch.tanh(x)
