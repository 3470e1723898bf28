"""Duration predictors: the stochastic one of the VITS paper (§2.2.2) and the plain one.

The stochastic predictor is a normalising flow over per-phoneme durations,
conditioned on the text encoder's hidden states. At inference it runs its flows
in reverse from Gaussian noise (scaled by ``noise_w``) to log-durations. The
first coupling flow after the affine one only ever served the training-time
variational dequantisation and is skipped in reverse, as in the paper's model.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from voiceops_service.engines.vits.layers import ChannelLayerNorm, Flip, same_padding
from voiceops_service.engines.vits.spline import inverse_rational_quadratic


class DilatedDepthSeparableConv(nn.Module):
    """Residual stack of depthwise dilated convs (dilation k**i) and 1x1 convs, GELU."""

    def __init__(self, channels: int, kernel_size: int, n_layers: int) -> None:
        super().__init__()
        self.convs_sep = nn.ModuleList()
        self.convs_1x1 = nn.ModuleList()
        self.norms_1 = nn.ModuleList()
        self.norms_2 = nn.ModuleList()
        for i in range(n_layers):
            dilation = kernel_size**i
            self.convs_sep.append(
                nn.Conv1d(
                    channels,
                    channels,
                    kernel_size,
                    groups=channels,
                    dilation=dilation,
                    padding=same_padding(kernel_size, dilation),
                )
            )
            self.convs_1x1.append(nn.Conv1d(channels, channels, 1))
            self.norms_1.append(ChannelLayerNorm(channels))
            self.norms_2.append(ChannelLayerNorm(channels))

    def forward(
        self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None
    ) -> torch.Tensor:
        if g is not None:
            x = x + g
        for sep, pointwise, norm_1, norm_2 in zip(
            self.convs_sep, self.convs_1x1, self.norms_1, self.norms_2, strict=True
        ):
            y = F.gelu(norm_1(sep(x * x_mask)))
            y = F.gelu(norm_2(pointwise(y)))
            x = x + y
        return x * x_mask


class ElementwiseAffine(nn.Module):
    """x -> m + exp(logs) * x per channel; reverse undoes it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(channels, 1))
        self.logs = nn.Parameter(torch.zeros(channels, 1))

    def reverse(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        return (x - self.m) * torch.exp(-self.logs) * x_mask


class ConvFlow(nn.Module):
    """Coupling flow: one half conditions a rational-quadratic spline on the other."""

    def __init__(
        self,
        in_channels: int,
        filter_channels: int,
        kernel_size: int,
        n_layers: int,
        num_bins: int,
        tail_bound: float,
    ) -> None:
        super().__init__()
        self.half_channels = in_channels // 2
        self.filter_channels = filter_channels
        self.num_bins = num_bins
        self.tail_bound = tail_bound
        self.pre = nn.Conv1d(self.half_channels, filter_channels, 1)
        self.convs = DilatedDepthSeparableConv(filter_channels, kernel_size, n_layers)
        self.proj = nn.Conv1d(filter_channels, self.half_channels * (num_bins * 3 - 1), 1)

    def reverse(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x0, x1 = torch.split(x, [self.half_channels, self.half_channels], dim=1)
        h = self.convs(self.pre(x0), x_mask, g=g)
        h = self.proj(h) * x_mask
        batch, channels, length = x0.shape
        h = h.reshape(batch, channels, -1, length).permute(0, 1, 3, 2)  # [b, c, t, 3K-1]
        bins = self.num_bins
        scale = math.sqrt(self.filter_channels)
        x1 = inverse_rational_quadratic(
            x1,
            h[..., :bins] / scale,
            h[..., bins : 2 * bins] / scale,
            h[..., 2 * bins :],
            self.tail_bound,
        )
        return torch.cat([x0, x1], dim=1) * x_mask


class TrainingOnlyFlow(nn.Module):
    """Placeholder for the flow used only in training; keeps module indices aligned."""


class StochasticDurationPredictor(nn.Module):
    """Log-durations from text hidden states by reversing a spline flow from noise."""

    def __init__(
        self,
        in_channels: int,
        filter_channels: int,
        kernel_size: int,
        n_flows: int,
        num_bins: int,
        tail_bound: float,
        dds_layers: int = 3,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.pre = nn.Conv1d(in_channels, filter_channels, 1)
        self.convs = DilatedDepthSeparableConv(filter_channels, kernel_size, dds_layers)
        self.proj = nn.Conv1d(filter_channels, filter_channels, 1)
        flows: list[nn.Module] = [ElementwiseAffine(2)]
        for index in range(n_flows):
            if index == 0:
                flows.append(TrainingOnlyFlow())
            else:
                flows.append(
                    ConvFlow(2, filter_channels, kernel_size, dds_layers, num_bins, tail_bound)
                )
            flows.append(Flip())
        self.flows = nn.ModuleList(flows)
        self.cond = nn.Conv1d(gin_channels, filter_channels, 1) if gin_channels else None

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        noise_w: torch.Tensor,
        g: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``noise_w`` is ``[b, 1, 1]``; returns log-durations ``[b, 1, t]``."""
        x = self.pre(x)
        if self.cond is not None and g is not None:
            x = x + self.cond(g)
        x = self.proj(self.convs(x, x_mask)) * x_mask
        batch, _, length = x.shape
        z = torch.randn(batch, 2, length, device=x.device, dtype=x.dtype, generator=generator)
        z = z * noise_w
        for flow in reversed(self.flows):
            if isinstance(flow, Flip):
                z = flow(z)
            elif isinstance(flow, ConvFlow):
                z = flow.reverse(z, x_mask, g=x)
            elif isinstance(flow, ElementwiseAffine):
                z = flow.reverse(z, x_mask)
        return z[:, :1]


class DurationPredictor(nn.Module):
    """The deterministic predictor (voices trained without the stochastic one)."""

    def __init__(
        self, in_channels: int, filter_channels: int, kernel_size: int, gin_channels: int = 0
    ) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size, padding=padding)
        self.norm_1 = ChannelLayerNorm(filter_channels)
        self.conv_2 = nn.Conv1d(filter_channels, filter_channels, kernel_size, padding=padding)
        self.norm_2 = ChannelLayerNorm(filter_channels)
        self.proj = nn.Conv1d(filter_channels, 1, 1)
        self.cond = nn.Conv1d(gin_channels, in_channels, 1) if gin_channels else None

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        noise_w: torch.Tensor,
        g: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        del noise_w, generator  # deterministic: no noise to scale
        if self.cond is not None and g is not None:
            x = x + self.cond(g)
        x = self.norm_1(torch.relu(self.conv_1(x * x_mask)))
        x = self.norm_2(torch.relu(self.conv_2(x * x_mask)))
        return self.proj(x * x_mask) * x_mask
