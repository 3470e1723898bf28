"""Tiers and phases, each named once: the spec, the status, the builders and the policy share them.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Literal, get_args

# The tier a pod belongs to: its voiceops.io/tier label and the suffix of its children's names.
Tier = Literal["gpu", "fallback"]
# Where the front Service sends traffic (status.activeTier): one tier, or both while recovering.
ActiveTier = Literal["gpu", "fallback", "both"]
# How the service is doing (status.phase); the failover policy moves it.
Phase = Literal["Pending", "Serving", "Degraded", "FailedOver", "Recovering"]

TIERS: tuple[Tier, ...] = get_args(Tier)
ACTIVE_TIERS: tuple[ActiveTier, ...] = get_args(ActiveTier)
PHASES: tuple[Phase, ...] = get_args(Phase)
