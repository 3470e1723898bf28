"""kopf wiring of the self-healing loop: its daemon and the pod watch that wakes it.

Registered into a given registry by :func:`register` (no import-time side
effects), next to the spec handlers, when SELF_HEALING is on (cli.build_registry).
Its runtime (clients, metrics and their /metrics server) is part of the operator
context the spec handlers' startup hook builds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from voiceops_operator import names
from voiceops_operator.context import context_of
from voiceops_operator.healing import HealingLoop, HealingRuntime, pods_from_index, run_loop
from voiceops_operator.spec import GROUP, PLURAL, VERSION


class _QuietWakeUps(logging.Filter):
    """Drop kopf's per-event "Handler 'healing-pod-wake' succeeded." (one per pod change)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno <= logging.INFO and "'healing-pod-wake' succeeded" in record.getMessage()
        )


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the healing daemon and the pod-event wake-up to ``registry`` (the pod index it
    reads is registered with the spec handlers: the model updates read it too)."""
    objects_log = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _QuietWakeUps) for f in objects_log.filters):
        objects_log.addFilter(_QuietWakeUps())

    @kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        id="healing",
        cancellation_backoff=1.0,
        cancellation_timeout=5.0,
    )
    async def healing_daemon(
        stopped: kopf.DaemonStopped,
        name: str,
        namespace: str,
        body: kopf.Body,
        memo: kopf.Memo,
        voiceops_pods: kopf.Index[tuple[str, str], dict[str, Any]],
        **_: Any,
    ) -> None:
        runtime = context_of(memo).healing
        if runtime is None:  # pragma: no cover - registered only with SELF_HEALING on
            return
        key = (namespace, name)
        wake = runtime.wakers.setdefault(key, asyncio.Event())

        pods = pods_from_index(voiceops_pods, namespace, name)
        try:
            await run_loop(HealingLoop(runtime, namespace, name, pods), body, stopped, wake)
        finally:
            runtime.wakers.pop(key, None)
            runtime.metrics.forget(namespace, name)

    @kopf.on.event(
        "",
        "v1",
        "pods",
        registry=registry,
        id="healing-pod-wake",
        labels={names.LABEL_MANAGED_BY: names.MANAGED_BY},
    )
    async def wake_on_pod_event(
        labels: Mapping[str, str], namespace: str, memo: kopf.Memo, **_: Any
    ) -> None:
        runtime: HealingRuntime | None = context_of(memo).healing
        instance = labels.get(names.LABEL_INSTANCE)
        if runtime is None or not instance:
            return
        wake = runtime.wakers.get((namespace, instance))
        if wake is not None:
            wake.set()
