"""From a speech chunk to audio: the one call path between the API and the engine.

``SpeechService.synthesize_chunk`` sends a :class:`SynthesisRequest` either to
the batcher (when the engine batches) or to the :class:`EngineRunner`, which
runs ``OomGuard.run_one`` in a worker thread. No engine call runs on the event
loop, so probes and ``/metrics`` are answered while one is running. Both paths
go through the OOM guard, so recovery, OOM counting, the degraded fallback and
the injected engine-call faults (``engine_delay_seconds``, ``oom_next_calls``)
are the same.

BATCHER HOOK (``voiceops_service.batching``, written separately): when
``engine.supports_batching`` the app imports that module and calls
``create_batcher(engine=..., guard=..., settings=..., metrics=...)`` (or the
class ``Batcher`` with the same keywords). The object must satisfy
:class:`Batcher`: ``async submit(request) -> Audio`` (raise the request's own
error; cancelling one caller must not cancel the batch) and optionally
``async start()`` / ``async close()``. It calls
``guard.run_batch(engine.synthesize_batch, batch)`` from its worker thread
and keeps ``metrics.queue_depth`` with ``inc()``/``dec()`` only (the gauge is
shared), observing ``metrics.batch_size`` per forward pass.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from voiceops_service.engines.base import Audio, Engine, Pcm16, SynthesisRequest, to_pcm16

if TYPE_CHECKING:
    from voiceops_service.metrics import ServiceMetrics
    from voiceops_service.resilience import OomGuard
    from voiceops_service.speech import VoiceBook

T = TypeVar("T")


@runtime_checkable
class Batcher(Protocol):
    async def submit(self, request: SynthesisRequest) -> Audio: ...

    def oldest_call_seconds(self) -> float: ...


class EngineRunner:
    """Runs blocking engine work in worker threads, at most ``parallelism`` at a time.

    A caller cancelled while waiting for a worker is dropped; one cancelled
    while its call runs gets nothing back (a forward pass cannot be
    interrupted), and the worker slot frees when the call really ends.

    Injected engine-call faults apply in the OOM guard, which the batcher's
    calls pass through too.
    """

    def __init__(
        self,
        parallelism: int,
        metrics: ServiceMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gate = asyncio.Semaphore(parallelism)
        self._executor = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="engine")
        self._metrics = metrics
        self._clock = clock
        self._active: dict[int, float] = {}  # call id -> start time, for liveness
        self._active_lock = threading.Lock()
        self._next_id = 0

    def oldest_call_seconds(self) -> float:
        """How long the longest-running engine call has been running (0 when idle)."""
        with self._active_lock:
            if not self._active:
                return 0.0
            return self._clock() - min(self._active.values())

    def _tracked(self, fn: Callable[[], T]) -> T:
        with self._active_lock:
            call_id = self._next_id
            self._next_id += 1
            self._active[call_id] = self._clock()
        try:
            return fn()
        finally:
            with self._active_lock:
                del self._active[call_id]

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self._gate.locked():
            self._metrics.queue_depth.inc()
            try:
                await self._gate.acquire()
            finally:
                self._metrics.queue_depth.dec()
        else:
            await self._gate.acquire()
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(
                self._executor, self._tracked, functools.partial(fn, *args)
            )
        except BaseException:
            self._gate.release()
            raise
        future.add_done_callback(self._release_and_consume)
        return await asyncio.shield(future)

    def _release_and_consume(self, future: asyncio.Future[object]) -> None:
        self._gate.release()
        if not future.cancelled():
            future.exception()  # an abandoned call's error is not "never retrieved"

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class SpeechService:
    """Synthesises one text chunk through the batcher or the guarded direct call."""

    def __init__(
        self,
        engine: Engine,
        guard: OomGuard,
        runner: EngineRunner,
        batcher: Batcher | None = None,
        metrics: ServiceMetrics | None = None,
        *,
        voices: VoiceBook,
    ) -> None:
        self.engine = engine
        self.voices = voices  # the model ids and voices requests may name
        self.guard = guard
        self.runner = runner
        self.batcher = batcher
        self._metrics = metrics

    async def synthesize_chunk(self, request: SynthesisRequest) -> Audio:
        if self.batcher is not None:
            return await self.batcher.submit(request)  # the batcher observes batch sizes
        return await self._run_unbatched(self._audio_one, request)

    async def synthesize_pcm16(self, request: SynthesisRequest) -> Pcm16:
        """The chunk as little-endian 16-bit PCM.

        Unbatched, the engine's own PCM16 call runs where the audio is made (espeak
        makes PCM16 natively; others convert in the worker thread while the samples
        are still in that core's cache, cheaper than converting on the loop).
        """
        if self.batcher is not None:
            return to_pcm16(await self.batcher.submit(request))
        return await self._run_unbatched(self._pcm16_one, request)

    async def _run_unbatched(
        self, fn: Callable[[SynthesisRequest], T], request: SynthesisRequest
    ) -> T:
        if self._metrics is not None:
            self._metrics.batch_size.observe(1)  # unbatched: one request per engine call
        return await self.runner.run(fn, request)

    def _audio_one(self, request: SynthesisRequest) -> Audio:
        return self.guard.run_one(self.engine.synthesize_batch, request)

    def _pcm16_one(self, request: SynthesisRequest) -> Pcm16:
        return self.guard.run_one(self.engine.synthesize_batch_pcm16, request, from_audio=to_pcm16)
