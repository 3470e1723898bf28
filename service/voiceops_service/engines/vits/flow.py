"""The prior's normalising flow: mean-only residual coupling layers with WaveNet blocks.

VITS paper §2.1.3/§2.2: the flow maps the posterior latent to the text-conditioned
prior; at inference it runs in reverse, turning a prior sample into the latent
the decoder turns into a waveform.
"""

from __future__ import annotations

import torch
from torch import nn

from voiceops_service.engines.vits.layers import Flip, same_padding


class WaveNet(nn.Module):
    """Non-causal WaveNet: dilated convs, gated tanh*sigmoid units, residual and skip sums."""

    def __init__(
        self,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate**i
            self.in_layers.append(
                nn.Conv1d(
                    hidden_channels,
                    2 * hidden_channels,
                    kernel_size,
                    dilation=dilation,
                    padding=same_padding(kernel_size, dilation),
                )
            )
            # The last layer only feeds the skip sum, so it has no residual half.
            out = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(nn.Conv1d(hidden_channels, out, 1))
        self.cond_layer = (
            nn.Conv1d(gin_channels, 2 * hidden_channels * n_layers, 1) if gin_channels else None
        )

    def forward(
        self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden = self.hidden_channels
        cond = self.cond_layer(g) if self.cond_layer is not None and g is not None else None
        skip = torch.zeros_like(x)
        last = len(self.in_layers) - 1
        for i, (in_layer, res_skip) in enumerate(
            zip(self.in_layers, self.res_skip_layers, strict=True)
        ):
            x_in = in_layer(x)
            if cond is not None:
                x_in = x_in + cond[:, i * 2 * hidden : (i + 1) * 2 * hidden]
            acts = torch.tanh(x_in[:, :hidden]) * torch.sigmoid(x_in[:, hidden:])
            res_skip_acts = res_skip(acts)
            if i < last:
                x = (x + res_skip_acts[:, :hidden]) * x_mask
                skip = skip + res_skip_acts[:, hidden:]
            else:
                skip = skip + res_skip_acts
        return skip * x_mask


class ResidualCouplingLayer(nn.Module):
    """Affine coupling with a fixed scale (mean only): x1 -> x1 + m(x0)."""

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.half_channels = channels // 2
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = WaveNet(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels)
        self.post = nn.Conv1d(hidden_channels, self.half_channels, 1)

    def reverse(
        self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None
    ) -> torch.Tensor:
        x0, x1 = torch.split(x, [self.half_channels, self.half_channels], dim=1)
        h = self.pre(x0) * x_mask
        h = self.enc(h, x_mask, g=g)
        mean = self.post(h) * x_mask
        x1 = (x1 - mean) * x_mask
        return torch.cat([x0, x1], dim=1)


class ResidualCouplingBlock(nn.Module):
    """Coupling layers alternating with channel flips."""

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        n_flows: int,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        flows: list[nn.Module] = []
        for _ in range(n_flows):
            flows.append(
                ResidualCouplingLayer(
                    channels, hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels
                )
            )
            flows.append(Flip())
        self.flows = nn.ModuleList(flows)

    def reverse(
        self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None
    ) -> torch.Tensor:
        for flow in reversed(self.flows):
            x = flow(x) if isinstance(flow, Flip) else flow.reverse(x, x_mask, g=g)
        return x
