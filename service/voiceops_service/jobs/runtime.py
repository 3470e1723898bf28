"""What the app starts and stops for jobs: the store and this process's chunk workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from voiceops_service.jobs.store import JobStore, redacted
from voiceops_service.jobs.worker import ChunkWorker, consumer_name
from voiceops_service.state import ServiceState

log = logging.getLogger(__name__)


class JobsRuntime:
    """One per app (``app.state.jobs``); the job routes read the store from it."""

    def __init__(self, state: ServiceState) -> None:
        settings = state.settings
        self.state = state
        self.store = JobStore(
            settings.jobs_redis_url.get_secret_value(),
            settings.jobs_key_prefix,
            settings.jobs_ttl_seconds,
        )
        self.workers = [
            ChunkWorker(self.store, state, consumer_name(settings.pod_name, number))
            for number in range(settings.jobs_workers)
        ]
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def where(self) -> str:
        return redacted(self.store.url)

    def start(self) -> None:
        log.info("jobs on %s with %d chunk workers", self.where, len(self.workers))
        self._tasks = [
            asyncio.create_task(worker.run(), name=f"job-worker-{worker.consumer}")
            for worker in self.workers
        ]

    async def stop(self) -> None:
        """Stop taking chunks; a chunk being made stays pending and is retaken elsewhere."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()
