"""The ``vits`` engine: our torch VITS (Kim et al. 2021) running Piper voices.

Heavy (imports torch); the engine registry imports it only for ``--engine vits``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voiceops_service.engines.vits.engine import VitsEngine, VitsOptions

if TYPE_CHECKING:
    from voiceops_service.settings import ServiceSettings

__all__ = ["VitsEngine", "VitsOptions", "create_engine"]


def create_engine(settings: ServiceSettings) -> VitsEngine:
    """The registry's entry point (``engines.registry.create_engine('vits', settings)``)."""
    return VitsEngine.from_settings(settings)
