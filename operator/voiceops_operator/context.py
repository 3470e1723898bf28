"""The operator's context: what every kopf handler shares, built in one startup hook.

kopf hands each handler an untyped memo; the operator keeps exactly one thing in
it, an :class:`OperatorContext` (read it with :func:`context_of`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from voiceops_operator.healing import HealingRuntime, make_runtime
from voiceops_operator.kube import EventPoster, KubeApi
from voiceops_operator.model_updater import ModelUpdater
from voiceops_operator.opmetrics import OperatorMetrics, start_metrics_server
from voiceops_operator.reconcile import Reconciler
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.watched import ObjectIndex, WatchedObjects


@dataclass
class OperatorContext:
    """The clients, the spec reconcile and (with SELF_HEALING on) the healing loop's runtime."""

    settings: OperatorSettings
    api: KubeApi  # the spec reconcile's client
    reconciler: Reconciler  # shared by the spec handlers and the healing loops
    models: ModelUpdater  # the model update driver, shared by every VoiceService's daemon
    healing: HealingRuntime | None  # None: SELF_HEALING is off
    metrics_server: web.AppRunner | None = None

    @property
    def metrics(self) -> OperatorMetrics | None:
        return self.healing.metrics if self.healing is not None else None

    @property
    def stopping(self) -> bool:
        """Clients closed: kopf may still start a handler while the operator stops."""
        return self.api.closed

    async def close(self) -> None:
        if self.metrics_server is not None:
            await self.metrics_server.cleanup()
        if self.healing is not None:
            await self.healing.close()
        await self.models.close()
        await self.api.close()


async def build_context(
    settings: OperatorSettings, indexes: Mapping[tuple[str, str], ObjectIndex]
) -> OperatorContext:
    """Everything the handlers share; ``indexes``: kopf's, by (apiVersion, kind)."""
    api = await KubeApi.connect(settings.api_timeout_seconds)
    instance = os.environ.get("HOSTNAME") or socket.gethostname()
    events = EventPoster(api, instance)
    reads = WatchedObjects(indexes)
    reconciler = Reconciler(api, settings, events, reads)
    models = ModelUpdater(
        settings,
        api,
        reads,
        reconciler,
        events,
        aiohttp.ClientSession(),
        settings.routing_signing_key(),
    )
    if not settings.self_healing:
        return OperatorContext(settings, api, reconciler, models, healing=None)
    healing = await make_runtime(settings, reconciler=reconciler)
    server = None
    if settings.metrics_port:
        server = await start_metrics_server(healing.metrics, settings.metrics_port)
    return OperatorContext(settings, api, reconciler, models, healing, server)


def context_of(memo: Any) -> OperatorContext:
    """The context the startup hook put in kopf's memo."""
    context: OperatorContext = memo.context
    return context
