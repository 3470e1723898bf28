"""The operator's pod index, fed by a real watch, for driving the healing loop without kopf.

In the operator, kopf keeps an index of the VoiceServices' pods by (namespace,
VoiceService) from its pod watch (``healing_handlers``), and each loop reads its
entry through ``healing.pods_from_index``. :class:`WatchedPods` is that index over
the same label selector, kept by a LIST then WATCH of the real API server, so the
loop tests read pods the way production does: as the watch last saw them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from voiceops_localcluster.node_agent import Informer, KubeClient
from voiceops_operator import healing, names


class WatchedPods(Mapping[tuple[str, str], list[dict[str, Any]]]):
    """Pods managed by voiceops, by (namespace, VoiceService), as a watch last saw them."""

    def __init__(self, api: KubeClient) -> None:
        selector = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY},{names.LABEL_INSTANCE}"
        self._informer = Informer(api, "/api/v1/pods", lambda *_: None, {"labelSelector": selector})
        self._task: asyncio.Task[None] | None = None

    async def start(self, within: float = 30.0) -> None:
        self._task = asyncio.create_task(self._informer.run(), name="watched-pods")
        await asyncio.wait_for(self._informer.synced.wait(), within)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def source(self, namespace: str, name: str) -> healing.PodSource:
        """What the operator's daemon hands its loop: this VoiceService's entry."""
        return healing.pods_from_index(self, namespace, name)

    def _index(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        index: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for (namespace, _), pod in sorted(self._informer.items.items()):
            instance = pod["metadata"]["labels"][names.LABEL_INSTANCE]
            index.setdefault((namespace, instance), []).append(pod)
        return index

    def __getitem__(self, key: tuple[str, str]) -> list[dict[str, Any]]:
        return self._index()[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._index())

    def __len__(self) -> int:
        return len(self._index())
