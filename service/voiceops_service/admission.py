"""Admission control: a concurrency limit, a bounded FIFO queue, and 429s with a real Retry-After.

``Retry-After`` is how long the queue ahead of the caller takes to drain at the
measured rate: an EWMA of the time between completions, counted only while the
service was busy (idle gaps say nothing about capacity).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voiceops_service.metrics import ServiceMetrics

RETRY_AFTER_MIN_SECONDS = 1
RETRY_AFTER_MAX_SECONDS = 60


class OverloadedError(Exception):
    """The queue is full; come back after ``retry_after_seconds``."""

    def __init__(self, retry_after_seconds: int, queued: int) -> None:
        super().__init__(f"server overloaded: {queued} requests queued")
        self.retry_after_seconds = retry_after_seconds


class DrainRate:
    """Completions per second while busy, smoothed (EWMA over inter-completion intervals)."""

    def __init__(self, smoothing: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        self._alpha = smoothing
        self._clock = clock
        self._interval: float | None = None
        self._last_completion: float | None = None
        self._busy_since: float | None = None

    def busy(self) -> None:
        """The service went from idle to busy."""
        self._busy_since = self._clock()

    def completed(self) -> None:
        now = self._clock()
        starts = [t for t in (self._last_completion, self._busy_since) if t is not None]
        start = max(starts) if starts else now
        interval = max(now - start, 1e-4)
        self._interval = (
            interval
            if self._interval is None
            else self._alpha * interval + (1 - self._alpha) * self._interval
        )
        self._last_completion = now

    @property
    def per_second(self) -> float | None:
        return None if self._interval is None else 1.0 / self._interval


class Admission:
    def __init__(
        self,
        max_concurrency: int,
        max_queue: int,
        metrics: ServiceMetrics,
        drain: DrainRate | None = None,
    ) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._metrics = metrics
        self._slots = asyncio.Semaphore(max_concurrency)
        self.running = 0
        self.waiting = 0
        self.drain = drain or DrainRate()

    @property
    def saturated(self) -> bool:
        """The next request would be refused."""
        return self.running >= self.max_concurrency and self.waiting >= self.max_queue

    def retry_after_seconds(self) -> int:
        rate = self.drain.per_second
        if rate is None:
            return RETRY_AFTER_MIN_SECONDS
        ahead = self.waiting + 1
        return min(max(math.ceil(ahead / rate), RETRY_AFTER_MIN_SECONDS), RETRY_AFTER_MAX_SECONDS)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of ``max_concurrency`` slots; queue FIFO, or raise OverloadedError."""
        must_wait = self._slots.locked() or self.waiting > 0
        if must_wait and self.waiting >= self.max_queue:
            self._metrics.rejected_requests_total.inc()
            raise OverloadedError(self.retry_after_seconds(), self.waiting)
        if self.running == 0 and self.waiting == 0:
            self.drain.busy()
        self._metrics.requests_in_flight.inc()
        try:
            if must_wait:
                self.waiting += 1
                self._metrics.queue_depth.inc()
                try:
                    await self._slots.acquire()  # cancelled here: dropped from the queue
                finally:
                    self.waiting -= 1
                    self._metrics.queue_depth.dec()
            else:
                await self._slots.acquire()
            self.running += 1
            try:
                yield
            finally:
                self.running -= 1
                self._slots.release()
                self.drain.completed()
        finally:
            self._metrics.requests_in_flight.dec()
