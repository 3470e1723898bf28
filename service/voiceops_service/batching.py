"""Dynamic batching: requests arriving close together share one engine forward pass.

``DynamicBatcher.submit(request)`` queues a request; a collector task takes
the oldest one, waits up to ``max_delay`` (from that request's arrival) for
more, and sends up to ``cap`` of them to ``OomGuard.run_batch`` in a worker
thread, one forward pass at a time (requests that arrive meanwhile form the
next batch). ``cap`` is ``max_size`` lowered by a memory-aware limit when the
accelerator's free memory cannot hold that many items (``Engine.memory_hint``).

Per-item results: the guard returns audio or an exception per request (it
bisects a failing batch and halves one that ran out of memory), and each
caller gets only its own. A caller that is cancelled while queued is dropped
from the next batch; one cancelled during a forward pass just never reads its
result: neither cancels the batch or its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import Histogram

from voiceops_service.engines.base import Audio, Engine, MemoryHint, SynthesisRequest

if TYPE_CHECKING:
    from voiceops_service.gpu import GpuMonitor
    from voiceops_service.metrics import ServiceMetrics
    from voiceops_service.resilience import OomGuard
    from voiceops_service.settings import ServiceSettings

log = logging.getLogger(__name__)

QUEUE_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Free memory kept out of every batch-size decision: allocator fragmentation and
# other processes on the card.
MEMORY_SAFETY_FRACTION = 0.05


class BatcherClosedError(RuntimeError):
    """The batcher is not running (not started yet, or shut down)."""


@dataclass(frozen=True)
class MemoryHeadroom:
    free_bytes: int
    total_bytes: int


MemoryProbe = Callable[[], MemoryHeadroom | None]


def batch_cap(max_size: int, hint: MemoryHint | None, headroom: MemoryHeadroom | None) -> int:
    """How many items fit: ``max_size``, lowered when free memory is short (never below 1)."""
    if hint is None or headroom is None or hint.bytes_per_item <= 0:
        return max_size
    usable = headroom.free_bytes - int(headroom.total_bytes * MEMORY_SAFETY_FRACTION)
    fits = usable // hint.bytes_per_item
    return max(1, min(max_size, int(fits)))


def torch_headroom() -> MemoryHeadroom | None:
    """Free CUDA memory as torch can use it: the driver's free plus torch's idle cache."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    idle_cache = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    return MemoryHeadroom(free_bytes=int(free + idle_cache), total_bytes=int(total))


def monitor_headroom(gpu: GpuMonitor) -> MemoryProbe:
    """Headroom from the service's GPU monitor (NVML, or the fault-injected reading)."""

    def probe() -> MemoryHeadroom | None:
        snapshot = gpu.latest
        if not snapshot.gpus:
            return torch_headroom()
        reading = snapshot.gpus[0]
        free = reading.total_bytes - reading.used_bytes
        if not reading.simulated:  # NVML counts torch's idle cache as used
            free += snapshot.torch_reserved_bytes - snapshot.torch_allocated_bytes
        return MemoryHeadroom(free_bytes=max(free, 0), total_bytes=reading.total_bytes)

    return probe


@dataclass(eq=False)
class _Pending:
    request: SynthesisRequest
    future: asyncio.Future[Audio]
    arrived: float
    abandoned: bool = field(default=False)


class DynamicBatcher:
    def __init__(
        self,
        engine: Engine,
        guard: OomGuard,
        *,
        max_size: int,
        max_delay_seconds: float,
        metrics: ServiceMetrics | None = None,
        memory_probe: MemoryProbe | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if max_delay_seconds < 0:
            raise ValueError(f"max_delay_seconds must be >= 0, got {max_delay_seconds}")
        self.engine = engine
        self.guard = guard
        self.max_size = max_size
        self.max_delay_seconds = max_delay_seconds
        self._metrics = metrics
        self._queue_seconds = _queue_histogram(metrics)
        if memory_probe is None and engine.device.startswith("cuda"):
            memory_probe = torch_headroom
        self._memory_probe = memory_probe
        self._clock = clock
        self._pending: deque[_Pending] = deque()
        self._arrived: asyncio.Event | None = None
        self._collector: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._busy_since: float | None = None
        self._busy_lock = threading.Lock()
        self.passes = 0  # forward passes started (for tests and logs)
        self.last_cap = max_size

    # --- lifecycle ---------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Requests waiting for a batch (cancelled ones until the collector drops them)."""
        return len(self._pending)

    @property
    def running(self) -> bool:
        return self._collector is not None and not self._collector.done()

    async def start(self) -> None:
        if self.running:
            return
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher")
        self._collector = asyncio.create_task(self._collect(), name="batch-collector")

    async def stop(self) -> None:
        """Stop collecting; queued callers get BatcherClosedError, a running pass finishes."""
        collector, self._collector = self._collector, None
        if collector is not None:
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
        while self._pending:
            item = self._pending.popleft()
            self._left_queue(item)
            if not item.future.done():
                item.future.set_exception(BatcherClosedError("batcher stopped"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    close = stop  # the app's lifespan calls close()

    def oldest_call_seconds(self) -> float:
        """How long the current forward pass has run (0 when idle), for liveness.

        The pass includes the guard's injected ``engine_delay_seconds``, as a direct call does.
        """
        with self._busy_lock:
            return 0.0 if self._busy_since is None else self._clock() - self._busy_since

    # --- callers -------------------------------------------------------------------------
    async def submit(self, request: SynthesisRequest) -> Audio:
        """This request's audio (or its own error); cancelling the caller drops only it."""
        if not self.running or self._arrived is None:
            raise BatcherClosedError("batcher is not running")
        item = _Pending(request, asyncio.get_running_loop().create_future(), self._clock())
        self._pending.append(item)
        if self._metrics is not None:
            self._metrics.queue_depth.inc()
        self._arrived.set()
        try:
            return await asyncio.shield(item.future)
        except asyncio.CancelledError:
            item.abandoned = True  # still queued: dropped; running: result ignored
            if self._arrived is not None:
                self._arrived.set()  # let the collector drop it now
            raise

    # --- the collector -------------------------------------------------------------------
    def current_cap(self) -> int:
        headroom = None
        if self._memory_probe is not None:
            try:
                headroom = self._memory_probe()
            except Exception:  # telemetry trouble must not stop serving: no memory cap
                log.exception("memory probe failed; batching without a memory cap")
        cap = batch_cap(self.max_size, self.engine.memory_hint(), headroom)
        if cap < self.max_size and cap != self.last_cap:
            log.info("memory-aware batch cap %d (max %d)", cap, self.max_size)
        self.last_cap = cap
        return cap

    async def _collect(self) -> None:
        assert self._arrived is not None
        while True:
            self._drop_abandoned()
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            cap = self.current_cap()
            deadline = self._pending[0].arrived + self.max_delay_seconds
            while len(self._pending) < cap:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await self._arrived.wait()
                except TimeoutError:
                    break
                self._drop_abandoned()
            batch = self._take(cap)
            if batch:
                await self._run(batch)

    def _drop_abandoned(self) -> None:
        """Forget callers that gave up while queued (they must not hold batch slots)."""
        if any(item.abandoned for item in self._pending):
            for item in [item for item in self._pending if item.abandoned]:
                self._pending.remove(item)
                self._left_queue(item)

    def _take(self, cap: int) -> list[_Pending]:
        batch: list[_Pending] = []
        now = self._clock()
        while self._pending and len(batch) < cap:
            item = self._pending.popleft()
            self._left_queue(item)
            if item.abandoned:
                continue
            batch.append(item)
            if self._queue_seconds is not None:
                self._queue_seconds.observe(now - item.arrived)
        return batch

    def _left_queue(self, _item: _Pending) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.dec()

    async def _run(self, batch: list[_Pending]) -> None:
        assert self._executor is not None
        self.passes += 1
        if self._metrics is not None:
            self._metrics.batch_size.observe(len(batch))
        requests = [item.request for item in batch]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._forward, requests)
        except asyncio.CancelledError:  # stop() during a pass: nobody may hang on it
            results = [BatcherClosedError("batcher stopped during the forward pass")] * len(batch)
            self._deliver(batch, results)
            raise
        except Exception as error:  # the guard returns per-item errors; this is a bug path
            log.exception("batch of %d failed outside the OOM guard", len(batch))
            results = [error] * len(batch)
        self._deliver(batch, results)

    @staticmethod
    def _deliver(batch: list[_Pending], results: list[Audio | BaseException]) -> None:
        # A cancelled caller's future is still ours (shield): set it anyway; shield
        # marks an exception there as retrieved, so nothing is logged as lost.
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    def _forward(self, requests: list[SynthesisRequest]) -> list[Audio | BaseException]:
        with self._busy_lock:
            self._busy_since = self._clock()
        try:
            return self.guard.run_batch(self.engine.synthesize_batch, requests)
        finally:
            with self._busy_lock:
                self._busy_since = None


def _queue_histogram(metrics: ServiceMetrics | None) -> Histogram | None:
    """Time requests wait for their batch (service-local; not in the operator contract)."""
    if metrics is None:
        return None
    return Histogram(
        "voiceops_batch_queue_seconds",
        "Time a request waits in the batch queue before its forward pass starts.",
        buckets=QUEUE_SECONDS_BUCKETS,
        registry=metrics.registry,
    )


def create_batcher(
    *,
    engine: Engine,
    guard: OomGuard,
    settings: ServiceSettings,
    metrics: ServiceMetrics | None = None,
    gpu: GpuMonitor | None = None,
) -> DynamicBatcher:
    """The app's hook (``app._create_batcher``): a batcher configured from settings."""
    probe = monitor_headroom(gpu) if gpu is not None else None
    return DynamicBatcher(
        engine,
        guard,
        max_size=settings.batch_max_size,
        max_delay_seconds=settings.batch_max_delay_ms / 1000.0,
        metrics=metrics,
        memory_probe=probe,
    )
