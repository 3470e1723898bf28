"""The chunk worker: runs in every service process, takes chunks through the consumer group.

A worker first retakes a chunk whose holder has been silent past the visibility
timeout (XAUTOCLAIM: its pod died), else reads a new one (XREADGROUP). While it
makes a chunk it keeps resetting the chunk's idle time, so a slow engine call is
not mistaken for a dead pod. The chunk goes through the same admission and engines
as ``POST /v1/audio/speech``; its audio is committed at once, then the entry is
acknowledged and deleted. A chunk that fails transiently (overload, deadline, OOM)
stays pending and is retaken after the timeout, by any pod; after
``jobs_max_attempts`` deliveries, or an error retrying cannot fix (text the engine
refuses, a voice this tier cannot speak), the job fails naming the chunk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import numpy as np
from redis.exceptions import RedisError

from voiceops_service.admission import OverloadedError
from voiceops_service.engines.base import EngineError, SynthesisRequest, to_pcm16
from voiceops_service.errors import ApiError
from voiceops_service.jobs.models import ChunkMaker
from voiceops_service.jobs.store import ChunkTask, ChunkWork, JobStore
from voiceops_service.resilience import resample
from voiceops_service.speech import resolve_voice
from voiceops_service.state import ServiceState
from voiceops_service.synthesis import SpeechService

log = logging.getLogger(__name__)
IDLE_POLL_SECONDS = 0.2  # engine loading, queue full or draining: look again this often
MAX_BACKOFF_SECONDS = 5.0
MAX_BLOCK_MS = 1000  # a new chunk is read at once; a silent holder is noticed this often


def consumer_name(pod_name: str, number: int) -> str:
    """Unique per worker: the pod (or host), the process and the worker's number."""
    return f"{pod_name or socket.gethostname()}-{os.getpid()}-{number}"


class ChunkWorker:
    def __init__(self, store: JobStore, state: ServiceState, consumer: str) -> None:
        self.store = store
        self.state = state
        self.consumer = consumer
        settings = state.settings
        self.visibility_ms = int(settings.jobs_visibility_timeout_seconds * 1000)
        self.block_ms = max(1, min(MAX_BLOCK_MS, self.visibility_ms // 2))

    async def run(self) -> None:
        """Take and make chunks until cancelled; Redis trouble is logged and retried."""
        backoff = 0.1
        group_ready = False
        while True:
            try:
                if not group_ready:
                    await self.store.ensure_group()
                    group_ready = True
                speech = self.state.speech
                if speech is None or self.state.admission.saturated or self.state.routing.draining:
                    await asyncio.sleep(IDLE_POLL_SECONDS)
                    continue
                task = await self.store.take_abandoned(self.consumer, self.visibility_ms)
                if task is None:
                    task = await self.store.take_new(self.consumer, self.block_ms)
                if task is not None:
                    await self.make(task, speech)
                backoff = 0.1
            except RedisError as error:
                if "NOGROUP" in str(error):  # Redis lost its data: make the group again
                    group_ready = False
                log.warning(
                    "job worker %s: Redis: %s (retry in %.1fs)", self.consumer, error, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def make(self, task: ChunkTask, speech: SpeechService) -> None:
        tries = await self.store.count_try(task)
        work = await self.store.work(task) if tries else None
        if work is None:  # job gone, finished, cancelled, or this chunk already made
            await self.store.release(task)
            return
        settings = self.state.settings
        if tries > settings.jobs_max_attempts:
            await self._fail(task, f"chunk {task.index} failed {tries - 1} times; giving up")
            return
        holding = asyncio.create_task(self._keep_holding(task), name="job-chunk-hold")
        try:
            pcm = await self._synthesize(work, speech)
        except (ApiError, EngineError) as error:
            message = error.message if isinstance(error, ApiError) else str(error)
            await self._fail(task, f"chunk {task.index}: {message}")
            return
        except Exception as error:  # overload, deadline, OOM: worth another try
            # Retaken after the visibility timeout, here or in another pod.
            log.warning("job %s chunk %d: %r (try %d)", task.job_id, task.index, error, tries)
            return
        finally:
            holding.cancel()
        engine, voice = self._speaker(speech, work)
        rate = speech.engine.sample_rate
        if rate != work.sample_rate:  # tiers with different rates: the job keeps its first
            audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
            pcm = to_pcm16(resample(audio, rate, work.sample_rate))
        maker = ChunkMaker(
            index=task.index,
            engine=engine,
            voice=voice,
            tier=settings.tier,
            pod=settings.pod_name or socket.gethostname(),
            samples=len(pcm) // 2,
        )
        await self.store.commit(task, pcm, maker)
        await self.store.release(task)

    async def _synthesize(self, work: ChunkWork, speech: SpeechService) -> bytes:
        voice = resolve_voice(work.voice, speech.voices)
        request = SynthesisRequest(text=work.text, voice=voice, speed=work.speed)
        while True:
            try:
                async with asyncio.timeout(self.state.settings.request_timeout_seconds):
                    async with self.state.admission.slot():
                        return await speech.synthesize_pcm16(request)
            except OverloadedError as error:  # interactive speech first; keep holding
                await asyncio.sleep(error.retry_after_seconds)

    def _speaker(self, speech: SpeechService, work: ChunkWork) -> tuple[str, str]:
        """The engine and voice that spoke (the in-process fallback's while degraded)."""
        state = self.state
        if state.guard is not None and state.guard.degraded and state.fallback is not None:
            return state.fallback.name, state.fallback.default_voice
        return speech.engine.name, resolve_voice(work.voice, speech.voices)

    async def _keep_holding(self, task: ChunkTask) -> None:
        period = max(self.visibility_ms / 3000, 0.05)
        while True:
            await asyncio.sleep(period)
            try:
                await self.store.hold(self.consumer, task)
            except RedisError as error:
                log.warning(
                    "job %s chunk %d: cannot renew hold: %s", task.job_id, task.index, error
                )

    async def _fail(self, task: ChunkTask, message: str) -> None:
        log.warning("job %s failed: %s", task.job_id, message)
        await self.store.fail(task.job_id, message, task.index)
        await self.store.release(task)
