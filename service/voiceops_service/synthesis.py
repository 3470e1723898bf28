"""From a speech chunk to audio: the one call path between the API and the engine.

``SpeechService.synthesize_chunk`` sends a :class:`SynthesisRequest` either to
the batcher (when the engine batches) or to the :class:`EngineRunner`, which
runs ``OomGuard.run_one`` in a worker thread. Both paths go through the OOM
guard, so recovery, OOM counting, the degraded fallback and the injected
engine-call faults (``engine_delay_seconds``, ``oom_next_calls``) are the same.

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
    from voiceops_service.faults import FaultState
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
        self._holders = 0  # callers holding or waiting for a worker (event loop only)

    @property
    def idle(self) -> bool:
        """No engine call runs or waits, abandoned ones included (they still hold the engine)."""
        return self._holders == 0 and not self._active

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

    def run_inline(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn`` on the caller's thread (the event loop), tracked like a worker call."""
        return self._tracked(functools.partial(fn, *args))

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        self._holders += 1
        try:
            if self._gate.locked():
                self._metrics.queue_depth.inc()
                try:
                    await self._gate.acquire()
                finally:
                    self._metrics.queue_depth.dec()
            else:
                await self._gate.acquire()
        except BaseException:
            self._holders -= 1
            raise
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(
                self._executor, self._tracked, functools.partial(fn, *args)
            )
        except BaseException:
            self._holders -= 1
            self._gate.release()
            raise
        future.add_done_callback(self._release_and_consume)
        return await asyncio.shield(future)

    def _release_and_consume(self, future: asyncio.Future[object]) -> None:
        self._holders -= 1
        self._gate.release()
        if not future.cancelled():
            future.exception()  # an abandoned call's error is not "never retrieved"

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class InlineCalls:
    """Decides when an engine call runs on the event loop instead of in a worker thread.

    Handing a call to a worker and back costs two thread wake-ups: 0.5-0.9 ms a
    request at p50 on the 2-vCPU VM bench/service_espeak.py runs on (a server
    with this off, in the same run), 4-7 % of a 12-20 ms espeak call and about
    half of the service's HTTP overhead. While nothing else is in flight the
    loop has nothing to do during the call, so it may as well make it. Only when
    all of these hold:

    * the engine's calls are short CPU work (``Engine.short_cpu_calls``: espeak);
    * this request is the only one admitted, none is queued, no other request
      (a probe, a ``/metrics`` scrape) is in flight, and no engine call runs in a
      worker (one abandoned by a client that left still holds the engine);
    * no injected fault touches engine calls (delays and OOM retries sleep);
    * the call should take at most ``max_block_seconds``, estimated from recent
      calls, so probes, ``/metrics`` and new requests wait at most that long.

    Under concurrency the requests see each other at admission and every call
    goes to the worker as before: queueing, 429s and deadlines are unchanged.
    """

    SMOOTHING = 0.2
    MAX_SPEEDS = 64  # speeds with a learned rate; a new one past this evicts the oldest

    def __init__(
        self,
        engine: Engine,
        runner: EngineRunner,
        alone: Callable[[], bool],
        max_block_seconds: float,
        faults: FaultState | None = None,
    ) -> None:
        self._enabled = engine.short_cpu_calls and max_block_seconds > 0
        self._runner = runner
        self._alone = alone
        self._max_block = max_block_seconds
        self._faults = faults
        self._lock = threading.Lock()  # observe() runs in worker threads too
        # Seconds per input character, learned per speed: an engine's time does not
        # follow 1/speed (espeak clamps its rate to 80-450 wpm and is 3x slower at
        # 450 than at 440), so a rate learned at one speed says nothing of another.
        self._seconds_per_char: dict[float, float] = {}

    def estimate_seconds(self, request: SynthesisRequest) -> float | None:
        """Expected duration of one call (None until a call at its speed was measured)."""
        rate = self._seconds_per_char.get(request.speed)
        return None if rate is None else rate * len(request.text)

    def observe(self, request: SynthesisRequest, seconds: float) -> None:
        if not self._enabled or not request.text:
            return
        rate = seconds / len(request.text)
        with self._lock:
            previous = self._seconds_per_char.pop(request.speed, None)
            if previous is not None:
                rate = self.SMOOTHING * rate + (1 - self.SMOOTHING) * previous
            elif len(self._seconds_per_char) >= self.MAX_SPEEDS:
                del self._seconds_per_char[next(iter(self._seconds_per_char))]
            self._seconds_per_char[request.speed] = rate  # re-inserted: most recent last

    def allows(self, request: SynthesisRequest) -> bool:
        if not self._enabled or not self._runner.idle or not self._alone():
            return False
        if self._faults is not None and self._faults.affects_engine_calls():
            return False
        estimate = self.estimate_seconds(request)
        return estimate is not None and estimate <= self._max_block


class SpeechService:
    """Synthesises one text chunk through the batcher or the guarded direct call."""

    def __init__(
        self,
        engine: Engine,
        guard: OomGuard,
        runner: EngineRunner,
        batcher: Batcher | None = None,
        metrics: ServiceMetrics | None = None,
        inline: InlineCalls | None = None,
        *,
        voices: VoiceBook,
    ) -> None:
        self.engine = engine
        self.voices = voices  # the model ids and voices requests may name
        self.guard = guard
        self.runner = runner
        self.batcher = batcher
        self.inline = inline
        self._metrics = metrics

    async def synthesize_chunk(self, request: SynthesisRequest) -> Audio:
        if self.batcher is not None:
            return await self.batcher.submit(request)  # the batcher observes batch sizes
        return await self._call(self._audio_one, request)

    async def synthesize_pcm16(self, request: SynthesisRequest) -> Pcm16:
        """The chunk as little-endian 16-bit PCM.

        Unbatched, the engine's own PCM16 call runs where the audio is made (espeak
        makes PCM16 natively; others convert in the worker thread while the samples
        are still in that core's cache, half the cost of converting on the loop).
        """
        if self.batcher is not None:
            return to_pcm16(await self.batcher.submit(request))
        return await self._call(self._pcm16_one, request)

    async def _call(self, fn: Callable[[SynthesisRequest], T], request: SynthesisRequest) -> T:
        metrics = self._metrics
        if metrics is not None:
            metrics.batch_size.observe(1)  # unbatched: one request per engine call
        inline = self.inline
        if inline is not None and inline.allows(request):
            # One turn of the loop first: requests parsed in the same read reach
            # admission, and then this one is no longer alone.
            await asyncio.sleep(0)
            if inline.allows(request):
                if metrics is not None:
                    metrics.engine_calls_total.labels(where="inline").inc()
                return self.runner.run_inline(fn, request)
        if metrics is not None:
            metrics.engine_calls_total.labels(where="worker").inc()
        return await self.runner.run(fn, request)

    def _timed(self, request: SynthesisRequest, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        result = call()
        if self.inline is not None:
            self.inline.observe(request, time.perf_counter() - started)
        return result

    def _audio_one(self, request: SynthesisRequest) -> Audio:
        return self._timed(
            request, lambda: self.guard.run_one(self.engine.synthesize_batch, request)
        )

    def _pcm16_one(self, request: SynthesisRequest) -> Pcm16:
        return self._timed(
            request,
            lambda: self.guard.run_one(
                self.engine.synthesize_batch_pcm16, request, from_audio=to_pcm16
            ),
        )
