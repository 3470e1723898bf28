"""CUDA out-of-memory recovery around every engine call.

PUBLIC API (the API layer and the batcher call engines only through this)::

    guard = OomGuard(OomPolicy.from_settings(settings), metrics=metrics, faults=faults,
                     fallback=espeak_engine_or_None, target_sample_rate=engine.sample_rate)

    # sync, from an engine worker thread; one result per request, in order:
    results: list[Audio | BaseException] = guard.run_batch(engine.synthesize_batch, requests)
    audio: Audio = guard.run_one(engine.synthesize_batch, request)  # raises the item's error
    audio = await guard.run(engine.synthesize_batch, request)     # run_one in a thread
    pcm: bytes = guard.run_one(engine.synthesize_batch_pcm16, request, from_audio=to_pcm16)
    guard.degraded                                                 # bool, see below

``from_audio`` turns the fallback engine's audio into what ``fn`` returns.

What a call goes through:

0. Injected slowness (``engine_delay_seconds``): the calling worker sleeps that
   long, once per call. Every engine call, direct (``EngineRunner``) or batched
   (the batcher's worker), passes here, so a fault slows every engine alike, and
   the sleeping call counts as running for liveness on either path.
1. Degraded with a fallback engine: served by the fallback (resampled to the
   primary's rate), the primary is not touched.
2. Otherwise the primary ``fn(batch)``. Injected faults (``oom_next_calls``)
   raise a real ``torch.OutOfMemoryError`` here, so recovery runs for real.
3. On OOM (``torch.OutOfMemoryError`` or CUDA's OOM ``RuntimeError`` variants):
   count it (``voiceops_cuda_oom_total``), ``torch.cuda.empty_cache()``, back
   off, and retry a batch as two halves (recursively); a single request is
   retried with exponential backoff (tenacity) up to ``max_retries`` times,
   then served by the fallback engine if there is one, else its result is an
   :class:`OutOfMemoryExhaustedError`.
4. Any other error in a batch is isolated by bisecting, so one failing request
   fails alone and its neighbours still get audio.

Degraded mode: ``degrade_threshold`` OOMs within ``degrade_window_seconds``
mark the pod degraded (``voiceops_degraded`` 1, ``/readyz`` reason
``degraded``). It ends after ``recover_clean_calls`` consecutive clean primary
calls or ``recover_quiet_seconds`` without an OOM (with a fallback engine the
primary is idle while degraded, so the quiet period is what ends it).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from voiceops_service.engines.base import Audio, Engine, SynthesisRequest

if TYPE_CHECKING:
    from voiceops_service.faults import FaultState
    from voiceops_service.metrics import ServiceMetrics
    from voiceops_service.settings import ServiceSettings

log = logging.getLogger(__name__)

R = TypeVar("R")  # what an engine call returns per request: Audio or PCM16 bytes
BatchFn = Callable[[Sequence[SynthesisRequest]], list[R]]
_OOM_MESSAGES = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


def _as_is(audio: Audio) -> Audio:
    return audio


class OutOfMemoryExhaustedError(RuntimeError):
    """A request still ran out of accelerator memory after every retry."""


def is_out_of_memory(error: BaseException) -> bool:
    torch = sys.modules.get("torch")  # never import torch just to check (espeak pods)
    if torch is not None and isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in _OOM_MESSAGES)


def free_accelerator_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def injected_out_of_memory() -> BaseException:
    import torch  # a real torch.OutOfMemoryError, the exact type CUDA raises

    return torch.OutOfMemoryError("CUDA out of memory (injected by /admin/faults)")


def resample(audio: Audio, source_rate: int, target_rate: int) -> Audio:
    """Linear-interpolation resampling (fallback audio into the primary's rate)."""
    if source_rate == target_rate or audio.size == 0:
        return audio
    duration = audio.size / source_rate
    target_times = np.arange(round(duration * target_rate)) / target_rate
    source_times = np.arange(audio.size) / source_rate
    return np.interp(target_times, source_times, audio).astype(np.float32)


@dataclass(frozen=True)
class OomPolicy:
    max_retries: int = 3
    backoff_initial_seconds: float = 0.05
    backoff_max_seconds: float = 1.0
    degrade_threshold: int = 3
    degrade_window_seconds: float = 60.0
    recover_clean_calls: int = 20
    recover_quiet_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> OomPolicy:
        return cls(
            max_retries=settings.oom_max_retries,
            backoff_initial_seconds=settings.oom_backoff_initial_seconds,
            backoff_max_seconds=settings.oom_backoff_max_seconds,
            degrade_threshold=settings.oom_degrade_threshold,
            degrade_window_seconds=settings.oom_degrade_window_seconds,
            recover_clean_calls=settings.oom_recover_clean_calls,
            recover_quiet_seconds=settings.oom_recover_quiet_seconds,
        )


class OomGuard:
    def __init__(
        self,
        policy: OomPolicy,
        *,
        metrics: ServiceMetrics | None = None,
        faults: FaultState | None = None,
        fallback: Engine | None = None,
        target_sample_rate: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.policy = policy
        self.fallback = fallback
        self._metrics = metrics
        self._faults = faults
        self._target_rate = target_sample_rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._oom_times: deque[float] = deque()
        self._last_oom = float("-inf")
        self._clean_calls = 0
        self._degraded = False
        self.oom_count = 0
        if metrics is not None:
            metrics.degraded.set_function(lambda: 1.0 if self.degraded else 0.0)

    # --- state -----------------------------------------------------------------------------
    @property
    def degraded(self) -> bool:
        with self._lock:
            self._maybe_recover()
            return self._degraded

    def _maybe_recover(self) -> None:
        """Caller holds the lock."""
        if not self._degraded:
            return
        quiet = self._clock() - self._last_oom >= self.policy.recover_quiet_seconds
        if quiet or self._clean_calls >= self.policy.recover_clean_calls:
            self._degraded = False
            self._oom_times.clear()
            log.warning("leaving degraded mode (%s)", "quiet period" if quiet else "clean calls")

    def _record_oom(self, error: BaseException) -> None:
        with self._lock:
            now = self._clock()
            self.oom_count += 1
            self._last_oom = now
            self._clean_calls = 0
            self._oom_times.append(now)
            while self._oom_times and now - self._oom_times[0] > self.policy.degrade_window_seconds:
                self._oom_times.popleft()
            if not self._degraded and len(self._oom_times) >= self.policy.degrade_threshold:
                self._degraded = True
                log.warning(
                    "degraded: %d OOMs within %.0fs (fallback: %s)",
                    len(self._oom_times),
                    self.policy.degrade_window_seconds,
                    self.fallback.name if self.fallback else "none",
                )
        if self._metrics is not None:
            self._metrics.cuda_oom_total.inc()
        log.warning("CUDA out of memory in engine call: %s", error)
        free_accelerator_cache()

    def _record_clean(self) -> None:
        with self._lock:
            self._clean_calls += 1
            self._maybe_recover()

    def _serve_from_fallback(self) -> bool:
        return self.fallback is not None and self.degraded

    # --- calls -----------------------------------------------------------------------------
    def run_batch(
        self,
        fn: BatchFn[R],
        batch: Sequence[SynthesisRequest],
        *,
        from_audio: Callable[[Audio], R] = _as_is,
    ) -> list[R | BaseException]:
        """One result per request (audio, or the exception for that request alone)."""
        items = list(batch)
        results: list[R | BaseException | None] = [None] * len(items)
        self._inject_delay()
        if self._serve_from_fallback():
            return [self._fallback_item(item, from_audio) for item in items]
        self._run_group(fn, items, list(range(len(items))), results, from_audio)
        return [r if r is not None else RuntimeError("engine returned no result") for r in results]

    def run_one(
        self,
        fn: BatchFn[R],
        request: SynthesisRequest,
        *,
        from_audio: Callable[[Audio], R] = _as_is,
    ) -> R:
        result = self.run_batch(fn, [request], from_audio=from_audio)[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def run(self, fn: BatchFn[Audio], request: SynthesisRequest) -> Audio:
        return await asyncio.to_thread(self.run_one, fn, request)

    def _inject_delay(self) -> None:
        """The injected ``engine_delay_seconds``: this worker really is busy meanwhile."""
        delay = self._faults.engine_delay_seconds() if self._faults is not None else 0.0
        if delay > 0:
            self._sleep(delay)

    def _call_primary(self, fn: BatchFn[R], items: list[SynthesisRequest]) -> list[R]:
        if self._faults is not None and self._faults.consume_oom():
            raise injected_out_of_memory()
        out = fn(items)
        if len(out) != len(items):
            raise RuntimeError(f"engine returned {len(out)} results for {len(items)} requests")
        return out

    def _run_group(
        self,
        fn: BatchFn[R],
        items: list[SynthesisRequest],
        indices: list[int],
        results: list[R | BaseException | None],
        from_audio: Callable[[Audio], R],
    ) -> None:
        if len(items) == 1:
            results[indices[0]] = self._run_single(fn, items[0], from_audio)
            return
        try:
            out = self._call_primary(fn, items)
        except Exception as error:
            if is_out_of_memory(error):
                self._record_oom(error)
                self._sleep(self.policy.backoff_initial_seconds)
            # OOM: retry smaller. Anything else: bisect so only the culprit fails.
            middle = len(items) // 2
            self._run_group(fn, items[:middle], indices[:middle], results, from_audio)
            self._run_group(fn, items[middle:], indices[middle:], results, from_audio)
            return
        self._record_clean()
        for index, audio in zip(indices, out, strict=True):
            results[index] = audio

    def _run_single(
        self, fn: BatchFn[R], item: SynthesisRequest, from_audio: Callable[[Audio], R]
    ) -> R | BaseException:
        def give_up_for_fallback(_state: RetryCallState) -> bool:
            return self._serve_from_fallback()

        def note_oom(state: RetryCallState) -> None:
            if state.outcome is not None and (error := state.outcome.exception()) is not None:
                self._record_oom(error)

        retrying = Retrying(
            retry=retry_if_exception(is_out_of_memory),
            stop=stop_after_attempt(self.policy.max_retries + 1) | give_up_for_fallback,
            wait=wait_exponential(
                multiplier=self.policy.backoff_initial_seconds,
                min=self.policy.backoff_initial_seconds,
                max=self.policy.backoff_max_seconds,
            ),
            after=note_oom,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            audio = retrying(self._call_primary, fn, [item])[0]
        except Exception as error:
            if not is_out_of_memory(error):
                return error
            if self.fallback is not None:
                return self._fallback_item(item, from_audio)
            return OutOfMemoryExhaustedError(
                f"out of accelerator memory after {self.policy.max_retries} retries"
            )
        self._record_clean()
        return audio

    def _fallback_item(
        self, item: SynthesisRequest, from_audio: Callable[[Audio], R]
    ) -> R | BaseException:
        assert self.fallback is not None
        try:
            audio = self.fallback.synthesize(replace(item, voice=None, speaker_id=None))
        except Exception as error:
            return error
        if self._metrics is not None:
            self._metrics.fallback_calls_total.inc()
        rate = self._target_rate or self.fallback.sample_rate
        return from_audio(resample(audio, self.fallback.sample_rate, rate))
