"""Inverse of a monotonic rational-quadratic spline with linear tails.

From "Neural Spline Flows" (Durkan et al. 2019, §3.1 and appendix A.3): K bins
on [-B, B] whose widths, heights and inner-knot derivatives come from
unconstrained network outputs; the identity outside the interval (so the
boundary derivatives are 1). Inference only needs the inverse direction, which
solves one quadratic per element. Written branch-free (``torch.where``) so the
whole batch runs as a handful of tensor ops on CPU and GPU alike.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
SEARCH_EPS = 1e-6  # keeps an input equal to the top knot inside the last bin


def _knots(unnormalized: torch.Tensor, low: float, high: float, min_size: float) -> torch.Tensor:
    """Knot positions (K+1 of them, first = low, last = high) from K bin logits."""
    bins = unnormalized.size(-1)
    sizes = min_size + (1 - min_size * bins) * torch.softmax(unnormalized, dim=-1)
    knots = F.pad(torch.cumsum(sizes, dim=-1), (1, 0), value=0.0)
    knots = (high - low) * knots + low
    # Pin the ends exactly (cumsum rounding must not move the interval).
    return torch.cat(
        [
            torch.full_like(knots[..., :1], low),
            knots[..., 1:-1],
            torch.full_like(knots[..., :1], high),
        ],
        dim=-1,
    )


def inverse_rational_quadratic(
    inputs: torch.Tensor,
    unnormalized_widths: torch.Tensor,
    unnormalized_heights: torch.Tensor,
    unnormalized_derivatives: torch.Tensor,
    tail_bound: float,
) -> torch.Tensor:
    """y -> x for the spline; ``inputs`` [...], the parameters [..., K] / [..., K-1]."""
    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    y = inputs.clamp(-tail_bound, tail_bound)

    # Boundary derivatives of 1 make the spline meet the identity tails smoothly.
    boundary = math.log(math.exp(1 - MIN_DERIVATIVE) - 1)
    padded = F.pad(unnormalized_derivatives, (1, 1), value=boundary)
    derivatives = MIN_DERIVATIVE + F.softplus(padded)

    x_knots = _knots(unnormalized_widths, -tail_bound, tail_bound, MIN_BIN_WIDTH)
    y_knots = _knots(unnormalized_heights, -tail_bound, tail_bound, MIN_BIN_HEIGHT)
    widths = x_knots[..., 1:] - x_knots[..., :-1]
    heights = y_knots[..., 1:] - y_knots[..., :-1]

    search = y_knots.clone()
    search[..., -1] += SEARCH_EPS
    bin_index = (y.unsqueeze(-1) >= search).sum(dim=-1, keepdim=True) - 1
    bin_index = bin_index.clamp(0, widths.size(-1) - 1)

    def pick(values: torch.Tensor) -> torch.Tensor:
        return values.gather(-1, bin_index).squeeze(-1)

    x_low, y_low = pick(x_knots), pick(y_knots)
    width, height = pick(widths), pick(heights)
    slope = height / width
    d_low, d_high = pick(derivatives), pick(derivatives[..., 1:])

    # Solve a*xi^2 + b*xi + c = 0 for the bin-relative position xi in [0, 1].
    offset = y - y_low
    curvature = d_low + d_high - 2 * slope
    a = offset * curvature + height * (slope - d_low)
    b = height * d_low - offset * curvature
    c = -slope * offset
    discriminant = (b * b - 4 * a * c).clamp_min(0)
    xi = (2 * c) / (-b - torch.sqrt(discriminant))
    outputs = xi * width + x_low
    return torch.where(inside, outputs, inputs)
