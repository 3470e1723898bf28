"""The VITS synthesiser assembled for inference (Kim et al. 2021, "Conditional Variational
Autoencoder with Adversarial Learning for End-to-End Text-to-Speech").

Text encoder -> duration predictor -> length regulation -> prior sample ->
reversed flow -> HiFi-GAN decoder. The text side works on a padded batch with
per-item lengths, speeds and noise scales. The flow and decoder, nearly all of
the compute, take the batch packed end to end along time with zero gaps
between items instead: no frame is spent on padding, whatever the mix of
lengths, and each item's audio equals what it would get alone (the flow masks
its gaps; ``HifiGanGenerator`` zeroes them at every resolution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from voiceops_service.engines.vits.decoder import HifiGanGenerator
from voiceops_service.engines.vits.duration import DurationPredictor, StochasticDurationPredictor
from voiceops_service.engines.vits.flow import ResidualCouplingBlock
from voiceops_service.engines.vits.layers import sequence_mask
from voiceops_service.engines.vits.text_encoder import TextEncoder


@dataclass(frozen=True)
class VitsHyperParams:
    """Architecture numbers; ``onnx_weights`` infers them from a voice file's tensors."""

    n_vocab: int
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    window_size: int = 4
    shared_rel_heads: int = 1
    duration_predictor: Literal["stochastic", "deterministic"] = "stochastic"
    dp_filter_channels: int = 192
    dp_kernel_size: int = 3
    dp_layers: int = 3
    dp_flows: int = 4
    dp_num_bins: int = 10
    dp_tail_bound: float = 5.0
    flow_count: int = 4
    flow_kernel_size: int = 5
    flow_dilation_rate: int = 1
    flow_layers: int = 4
    resblock_type: Literal["1", "2"] = "2"
    resblock_kernel_sizes: tuple[int, ...] = (3, 5, 7)
    resblock_dilations: tuple[tuple[int, ...], ...] = field(default=((1, 2), (2, 6), (3, 12)))
    upsample_rates: tuple[int, ...] = (8, 8, 4)
    upsample_initial_channel: int = 256
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8)
    post_bias: bool = False
    n_speakers: int = 1
    gin_channels: int = 0

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)


@dataclass(frozen=True)
class SynthesisScales:
    """Per-item knobs, each ``[batch]``: noise (prior), length (1/speed), noise_w (durations)."""

    noise: torch.Tensor
    length: torch.Tensor
    noise_w: torch.Tensor


class VitsModel(nn.Module):
    def __init__(self, hp: VitsHyperParams) -> None:
        super().__init__()
        self.hp = hp
        self.enc_p = TextEncoder(
            hp.n_vocab,
            hp.inter_channels,
            hp.hidden_channels,
            hp.filter_channels,
            hp.n_heads,
            hp.n_layers,
            hp.kernel_size,
            hp.window_size,
            hp.shared_rel_heads,
        )
        self.dp: StochasticDurationPredictor | DurationPredictor
        if hp.duration_predictor == "stochastic":
            self.dp = StochasticDurationPredictor(
                hp.hidden_channels,
                hp.dp_filter_channels,
                hp.dp_kernel_size,
                hp.dp_flows,
                hp.dp_num_bins,
                hp.dp_tail_bound,
                hp.dp_layers,
                hp.gin_channels,
            )
        else:
            self.dp = DurationPredictor(
                hp.hidden_channels, hp.dp_filter_channels, hp.dp_kernel_size, hp.gin_channels
            )
        self.flow = ResidualCouplingBlock(
            hp.inter_channels,
            hp.hidden_channels,
            hp.flow_kernel_size,
            hp.flow_dilation_rate,
            hp.flow_layers,
            hp.flow_count,
            hp.gin_channels,
        )
        self.dec = HifiGanGenerator(
            hp.inter_channels,
            hp.resblock_type,
            hp.resblock_kernel_sizes,
            hp.resblock_dilations,
            hp.upsample_rates,
            hp.upsample_initial_channel,
            hp.upsample_kernel_sizes,
            hp.post_bias,
            hp.gin_channels,
        )
        self.emb_g = nn.Embedding(hp.n_speakers, hp.gin_channels) if hp.gin_channels else None
        self.synthesis_dtype = torch.float32

    def use_half_precision_synthesis(self) -> None:
        """Flow and decoder (nearly all the compute) in fp16; text and durations stay fp32.

        Durations are ceil()-ed, so fp16 rounding there could add or drop whole
        frames; the flow and decoder only shift sample values slightly.
        """
        self.flow.half()
        self.dec.half()
        self.synthesis_dtype = torch.float16

    def infer(
        self,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        scales: SynthesisScales,
        speaker_ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``ids`` [b, t] padded, ``lengths`` [b] -> (audio [b, samples], samples per item)."""
        x, mean_p, log_std_p, x_mask = self.enc_p(ids, lengths)
        g = None
        if self.emb_g is not None:
            if speaker_ids is None:
                speaker_ids = torch.zeros_like(lengths)
            g = self.emb_g(speaker_ids).unsqueeze(-1)  # [b, gin, 1]

        log_w = self.dp(x, x_mask, scales.noise_w.view(-1, 1, 1), g=g, generator=generator)
        durations = torch.ceil(torch.exp(log_w) * x_mask * scales.length.view(-1, 1, 1))
        frame_lengths = torch.clamp_min(durations.sum(dim=(1, 2)), 1).long()
        frames = int(frame_lengths.max())

        # Length regulation: frame j belongs to the token whose cumulative
        # duration interval [end_{i-1}, end_i) contains j.
        ends = torch.cumsum(durations[:, 0, :], dim=-1)
        positions = torch.arange(frames, device=ids.device, dtype=ends.dtype)
        positions = positions.unsqueeze(0).expand(ids.size(0), -1).contiguous()
        token = torch.searchsorted(ends, positions, right=True)
        covered = (token < ids.size(1)).unsqueeze(1).to(mean_p.dtype)
        token = token.clamp_max(ids.size(1) - 1).unsqueeze(1).expand(-1, mean_p.size(1), -1)
        mean = mean_p.gather(2, token) * covered
        log_std = log_std_p.gather(2, token) * covered

        noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        z_p = mean + noise * torch.exp(log_std) * scales.noise.view(-1, 1, 1)

        dtype = self.synthesis_dtype
        if g is not None:
            g = g.to(dtype)
        hop = self.hp.hop_length
        if ids.size(0) == 1:
            y_mask = sequence_mask(frame_lengths, frames).unsqueeze(1).to(dtype)
            z = self.flow.reverse(z_p.to(dtype), y_mask, g=g)
            audio = self.dec(z * y_mask, g=g)
            return audio[:, 0].float(), frame_lengths * hop
        packing = PackedFrames.plan([int(n) for n in frame_lengths.tolist()], self.context_frames)
        z_p, y_mask, g = packing.pack(z_p.to(dtype), g)
        z = self.flow.reverse(z_p, y_mask, g=g)
        audio = self.dec(z * y_mask, gaps=packing.gaps, g=g)
        return packing.unpack(audio[:, 0].float(), hop), frame_lengths * hop

    @property
    def context_frames(self) -> int:
        """Gap between packed items: what the decoder needs, and the flow's conv reach."""
        flow_reach = max(
            (m.padding[0] for m in self.flow.modules() if isinstance(m, nn.Conv1d)), default=0
        )
        return max(self.dec.context_frames(), flow_reach)


@dataclass(frozen=True)
class PackedFrames:
    """Items packed into rows no longer than the longest item, ``gap`` zero frames apart.

    Equal lengths give one item per row (a plain batch); a mix of lengths puts
    several short items end to end in one row, so almost no frame is padding.
    Rows stay short on purpose: on CPU one long row decodes slower than the
    same frames as several rows (cache), measured in bench/vits_cpu.py's runs.
    """

    rows: int
    width: int
    places: list[tuple[int, int]]  # per item: (row, start frame)
    lengths: list[int]
    gap: int

    @classmethod
    def plan(cls, lengths: list[int], gap: int) -> PackedFrames:
        """First fit, longest first: each item goes into the first row it fits."""
        width = max(lengths)
        ends: list[int] = []  # per row: where its next item may start
        places: list[tuple[int, int]] = [(0, 0)] * len(lengths)
        for item in sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True):
            length = lengths[item]
            row = next((r for r, end in enumerate(ends) if end + length <= width), None)
            if row is None:
                ends.append(0)
                row = len(ends) - 1
            places[item] = (row, ends[row])
            ends[row] += length + gap
        return cls(len(ends), width, places, lengths, gap)

    @property
    def gaps(self) -> list[tuple[int, int, int]]:
        """(row, start, end) frame spans between and after the items of each row."""
        by_row: dict[int, list[tuple[int, int]]] = {}
        for (row, start), length in zip(self.places, self.lengths, strict=True):
            by_row.setdefault(row, []).append((start, start + length))
        spans = []
        for row, items in by_row.items():
            items.sort()
            nexts = [start for start, _ in items[1:]] + [self.width]
            spans += [(row, end, nxt) for (_, end), nxt in zip(items, nexts, strict=True)]
        return [span for span in spans if span[1] < span[2]]

    def pack(
        self, padded: torch.Tensor, g: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``padded`` [b, c, frames] -> ([rows, c, width], mask [rows, 1, width], per-frame g)."""
        packed = padded.new_zeros(self.rows, padded.size(1), self.width)
        mask = padded.new_zeros(self.rows, 1, self.width)
        per_frame = None if g is None else g.new_zeros(self.rows, g.size(1), self.width)
        for item, ((row, start), length) in enumerate(zip(self.places, self.lengths, strict=True)):
            packed[row, :, start : start + length] = padded[item, :, :length]
            mask[row, :, start : start + length] = 1
            if per_frame is not None and g is not None:  # each item keeps its own speaker
                per_frame[row, :, start : start + length] = g[item]
        return packed, mask, per_frame

    def unpack(self, audio: torch.Tensor, hop: int) -> torch.Tensor:
        """Packed audio [rows, width * hop] -> [b, longest * hop], zero past each item's end."""
        out = audio.new_zeros(len(self.lengths), self.width * hop)
        for item, ((row, start), length) in enumerate(zip(self.places, self.lengths, strict=True)):
            out[item, : length * hop] = audio[row, start * hop : (start + length) * hop]
        return out
