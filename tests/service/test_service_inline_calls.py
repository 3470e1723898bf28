"""Inline engine calls: espeak calls made on the event loop while nothing else is in flight.

Covers the pieces that path rests on: the engines' native PCM16 batch call, the
OOM guard converting fallback audio with ``from_audio``, the ``InlineCalls``
decision, ``SpeechService`` routing each call to the loop or a worker (and
counting it), and a real server's counters and wav answers.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

import httpx
import numpy as np
import pytest
from service_helpers import ServiceProcess, metric_value, speech, start_service
from starlette.types import Message, Receive, Scope, Send
from voiceops_service.app import RequestMetricsMiddleware, create_app
from voiceops_service.engines.base import (
    Audio,
    Engine,
    SynthesisRequest,
    VoiceInfo,
    to_pcm16,
)
from voiceops_service.engines.espeak import EspeakEngine
from voiceops_service.faults import FaultState, FaultUpdate
from voiceops_service.metrics import ServiceMetrics
from voiceops_service.resilience import OomGuard, OomPolicy
from voiceops_service.settings import ServiceSettings
from voiceops_service.speech import voice_book
from voiceops_service.synthesis import EngineRunner, InlineCalls, SpeechService

SHORT = SynthesisRequest(text="Hello there.")  # 12 characters
SENTENCE = "The quick brown fox jumps over the lazy dog while the band plays on. "


# --- test doubles ----------------------------------------------------------------------------


class FixedAudioEngine(Engine):
    """Test double: answers every request with the same float samples; records its calls."""

    name = "fixed-audio"
    version = "test"

    def __init__(
        self, audio: Sequence[float] = (0.0,), rate: int = 16000, short_cpu: bool = False
    ) -> None:
        self.audio = np.asarray(audio, dtype=np.float32)
        self.rate = rate
        self.short_cpu = short_cpu
        self.calls: list[list[str]] = []

    @property
    def sample_rate(self) -> int:
        return self.rate

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def short_cpu_calls(self) -> bool:
        return self.short_cpu

    def load(self) -> None:
        return None

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(name="fixed", language="en", sample_rate=self.rate, engine=self.name)]

    def synthesize(self, request: SynthesisRequest) -> Audio:
        return self.audio.copy()

    def synthesize_batch(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        self.calls.append([r.text for r in requests])
        return super().synthesize_batch(requests)


class ThreadRecordingEspeak(EspeakEngine):
    """Test double: the real espeak engine, noting which thread made each call."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def synthesize_batch(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        self.threads.append(threading.get_ident())
        return super().synthesize_batch(requests)

    def synthesize_batch_pcm16(self, requests: Sequence[SynthesisRequest]) -> list[bytes]:
        self.threads.append(threading.get_ident())
        return super().synthesize_batch_pcm16(requests)


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    engine = EspeakEngine()
    engine.load()
    return engine


async def eventually(condition: Callable[[], bool], deadline_seconds: float = 5.0) -> None:
    """``wait_for`` for the event loop: poll without blocking it."""
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {deadline_seconds}s")
        await asyncio.sleep(0.005)


def run_with_runner(test: Callable[[EngineRunner, ServiceMetrics], Awaitable[None]]) -> None:
    """Run ``test`` in a fresh event loop with a one-worker runner (closed afterwards)."""

    async def main() -> None:
        metrics = ServiceMetrics()
        runner = EngineRunner(1, metrics)
        try:
            await test(runner, metrics)
        finally:
            runner.close()

    asyncio.run(main())


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2")


# --- the base class's PCM16 call and the guard's from_audio ---------------------------------


def test_base_engine_pcm16_batch_is_to_pcm16_of_its_audio_clipped() -> None:
    engine = FixedAudioEngine([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -2.0])
    batch = [SynthesisRequest(text="a"), SynthesisRequest(text="b")]
    pcm = engine.synthesize_batch_pcm16(batch)
    assert pcm == [to_pcm16(engine.audio)] * 2
    assert samples(pcm[0]).tolist() == [0, 16384, -16384, 32767, -32768, 32767, -32768]
    assert engine.calls == [["a", "b"]]  # one synthesize_batch call under the hood
    assert not engine.short_cpu_calls


def test_guard_converts_fallback_audio_with_from_audio_after_injected_ooms(
    espeak: EspeakEngine,
) -> None:
    faults = FaultState()
    faults.merge(FaultUpdate(oom_next_calls=2))
    metrics = ServiceMetrics()
    primary = FixedAudioEngine([0.25] * 10, rate=16000)
    guard = OomGuard(
        OomPolicy(max_retries=1, degrade_threshold=100),
        metrics=metrics,
        faults=faults,
        fallback=espeak,
        target_sample_rate=primary.sample_rate,
        sleep=lambda _: None,
    )
    request = SynthesisRequest(text="Hello there, this is the fallback.", voice="fixed")
    pcm = guard.run_one(primary.synthesize_batch_pcm16, request, from_audio=to_pcm16)
    assert isinstance(pcm, bytes)
    assert primary.calls == []  # both attempts OOMed before reaching the engine
    assert faults.snapshot().oom_next_calls == 0
    assert metrics.registry.get_sample_value("voiceops_fallback_calls_total") == 1.0
    assert metrics.registry.get_sample_value("voiceops_cuda_oom_total") == 2.0
    # espeak's 22050 Hz speech at the primary's 16000 Hz, as 16-bit PCM.
    direct = espeak.synthesize(SynthesisRequest(text=request.text)).size
    resampled = len(pcm) // 2
    assert len(pcm) % 2 == 0
    assert abs(resampled - direct * 16000 / 22050) <= 0.05 * resampled
    assert float(np.sqrt(np.mean((samples(pcm) / 32767.0) ** 2))) > 0.02


def test_degraded_guard_serves_pcm16_from_the_fallback_without_the_primary(
    espeak: EspeakEngine,
) -> None:
    faults = FaultState()
    faults.merge(FaultUpdate(oom_next_calls=1))
    primary = FixedAudioEngine([0.25] * 10, rate=22050)
    guard = OomGuard(
        OomPolicy(max_retries=0, degrade_threshold=1),
        faults=faults,
        fallback=espeak,
        target_sample_rate=primary.sample_rate,
        sleep=lambda _: None,
    )
    first = guard.run_one(primary.synthesize_batch_pcm16, SHORT, from_audio=to_pcm16)
    assert guard.degraded
    second = guard.run_one(primary.synthesize_batch_pcm16, SHORT, from_audio=to_pcm16)
    assert primary.calls == []
    for pcm in (first, second):
        assert isinstance(pcm, bytes)
        assert len(pcm) > 0.3 * 22050 * 2  # speech, not the primary's ten samples


# --- InlineCalls -----------------------------------------------------------------------------


def observed(inline: InlineCalls, seconds_per_char: float = 1e-4) -> InlineCalls:
    inline.observe(SynthesisRequest(text="x" * 100), seconds_per_char * 100)
    return inline


def test_inline_is_off_for_engines_without_short_cpu_calls_and_for_zero_max() -> None:
    metrics = ServiceMetrics()
    runner = EngineRunner(1, metrics)
    try:
        slow_engine = observed(InlineCalls(FixedAudioEngine(), runner, lambda: True, 1.0))
        assert not slow_engine.allows(SHORT)
        assert slow_engine.estimate_seconds(SHORT) is None  # disabled: observe learns nothing
        zero_max = observed(
            InlineCalls(FixedAudioEngine(short_cpu=True), runner, lambda: True, 0.0)
        )
        assert not zero_max.allows(SHORT)
        enabled = observed(InlineCalls(FixedAudioEngine(short_cpu=True), runner, lambda: True, 1.0))
        assert enabled.allows(SHORT)
    finally:
        runner.close()


def test_inline_needs_a_measured_call_first(espeak: EspeakEngine) -> None:
    runner = EngineRunner(1, ServiceMetrics())
    try:
        inline = InlineCalls(espeak, runner, lambda: True, 1.0)
        assert inline.estimate_seconds(SHORT) is None
        assert not inline.allows(SHORT)
        inline.observe(SynthesisRequest(text=""), 0.001)  # nothing to learn from empty text
        assert not inline.allows(SHORT)
        inline.observe(SHORT, 0.002)
        assert inline.allows(SHORT)
    finally:
        runner.close()


def test_estimate_is_learned_per_speed_scales_with_length_and_smooths(
    espeak: EspeakEngine,
) -> None:
    runner = EngineRunner(1, ServiceMetrics())
    try:
        inline = InlineCalls(espeak, runner, lambda: True, 1.0)
        inline.observe(SynthesisRequest(text="x" * 100), 0.01)  # 1e-4 s/char at speed 1.0
        assert inline.estimate_seconds(SynthesisRequest(text="y" * 100)) == pytest.approx(0.01)
        assert inline.estimate_seconds(SynthesisRequest(text="y" * 300)) == pytest.approx(0.03)
        # espeak's time does not follow 1/speed (it clamps its rate, and its top rate is
        # slower than the one below it): another speed has no estimate until measured.
        fast = SynthesisRequest(text="y" * 300, speed=4.0)
        assert inline.estimate_seconds(fast) is None
        assert not inline.allows(fast)
        inline.observe(SynthesisRequest(text="x" * 100, speed=4.0), 0.03)  # 3e-4 s/char
        assert inline.estimate_seconds(fast) == pytest.approx(0.09)
        # ... and a slow speed-4 call does not change what speed 1.0 expects
        assert inline.estimate_seconds(SynthesisRequest(text="y" * 100)) == pytest.approx(0.01)
        inline.observe(SynthesisRequest(text="x" * 100), 0.06)  # 6e-4 s/char: EWMA 0.2
        expected = 0.2 * 6e-4 + 0.8 * 1e-4
        assert inline.estimate_seconds(SynthesisRequest(text="y" * 100)) == pytest.approx(
            expected * 100
        )
    finally:
        runner.close()


def test_estimates_are_kept_for_a_bounded_number_of_speeds(espeak: EspeakEngine) -> None:
    runner = EngineRunner(1, ServiceMetrics())
    try:
        inline = InlineCalls(espeak, runner, lambda: True, 1.0)
        speeds = [0.5 + index / 100 for index in range(InlineCalls.MAX_SPEEDS + 1)]
        for speed in speeds:
            inline.observe(SynthesisRequest(text="x" * 10, speed=speed), 0.001)
        assert inline.estimate_seconds(SynthesisRequest(text="x", speed=speeds[0])) is None
        assert inline.estimate_seconds(SynthesisRequest(text="x", speed=speeds[-1])) is not None
        assert inline.estimate_seconds(SynthesisRequest(text="x", speed=speeds[1])) is not None
    finally:
        runner.close()


def test_inline_refused_when_the_estimate_exceeds_the_max(espeak: EspeakEngine) -> None:
    runner = EngineRunner(1, ServiceMetrics())
    try:
        inline = observed(InlineCalls(espeak, runner, lambda: True, 0.01), 1e-4)
        assert inline.allows(SynthesisRequest(text="x" * 95))  # 9.5 ms
        assert not inline.allows(SynthesisRequest(text="x" * 105))  # 10.5 ms
    finally:
        runner.close()


def test_inline_refused_unless_alone(espeak: EspeakEngine) -> None:
    alone = [True]
    runner = EngineRunner(1, ServiceMetrics())
    try:
        inline = observed(InlineCalls(espeak, runner, lambda: alone[0], 1.0))
        assert inline.allows(SHORT)
        alone[0] = False
        assert not inline.allows(SHORT)
        alone[0] = True
        assert inline.allows(SHORT)
    finally:
        runner.close()


def test_inline_refused_while_a_worker_call_runs_or_waits(espeak: EspeakEngine) -> None:
    async def check(runner: EngineRunner, _metrics: ServiceMetrics) -> None:
        inline = observed(InlineCalls(espeak, runner, lambda: True, 1.0))
        assert runner.idle
        assert inline.allows(SHORT)
        release = threading.Event()
        started = threading.Event()

        def blocked() -> str:
            started.set()
            if not release.wait(10):
                raise TimeoutError("never released")
            return "done"

        running = asyncio.create_task(runner.run(blocked))
        waiting = asyncio.create_task(runner.run(lambda: "second"))
        await eventually(started.is_set)
        assert not runner.idle
        assert not inline.allows(SHORT)
        # A caller that gives up (client gone) still leaves its call holding the engine.
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert not inline.allows(SHORT)
        release.set()
        assert await waiting == "second"
        await eventually(lambda: runner.idle)
        assert inline.allows(SHORT)

    run_with_runner(check)


@pytest.mark.parametrize(
    "fault",
    [FaultUpdate(engine_delay_seconds=0.01), FaultUpdate(oom_next_calls=1)],
    ids=["engine-delay", "oom-next-calls"],
)
def test_inline_refused_while_faults_touch_engine_calls(
    espeak: EspeakEngine, fault: FaultUpdate
) -> None:
    faults = FaultState()
    runner = EngineRunner(1, ServiceMetrics())
    try:
        inline = observed(InlineCalls(espeak, runner, lambda: True, 1.0, faults))
        faults.merge(FaultUpdate(hang_seconds=5))  # not an engine-call fault
        assert inline.allows(SHORT)
        faults.merge(fault)
        assert not inline.allows(SHORT)
        faults.clear()
        assert inline.allows(SHORT)
    finally:
        runner.close()


# --- SpeechService: where the call runs, and what it counts ---------------------------------


def engine_calls(metrics: ServiceMetrics, where: str) -> float:
    value = metrics.registry.get_sample_value("voiceops_engine_calls_total", {"where": where})
    return value or 0.0


def build_service(
    runner: EngineRunner, metrics: ServiceMetrics, alone: Callable[[], bool]
) -> tuple[SpeechService, ThreadRecordingEspeak, InlineCalls]:
    engine = ThreadRecordingEspeak()
    engine.load()
    guard = OomGuard(OomPolicy(), metrics=metrics, target_sample_rate=engine.sample_rate)
    inline = InlineCalls(engine, runner, alone, max_block_seconds=1.0)
    service = SpeechService(
        engine, guard, runner, None, metrics, inline, voices=voice_book(engine, ServiceSettings())
    )
    return service, engine, inline


def test_service_runs_calls_inline_after_the_first_measured_one() -> None:
    async def check(runner: EngineRunner, metrics: ServiceMetrics) -> None:
        service, engine, inline = build_service(runner, metrics, lambda: True)
        loop_thread = threading.get_ident()
        first = await service.synthesize_pcm16(SHORT)  # nothing measured yet: a worker
        assert engine.threads == [engine.threads[0]]
        assert engine.threads[0] != loop_thread
        assert (engine_calls(metrics, "worker"), engine_calls(metrics, "inline")) == (1, 0)
        assert inline.estimate_seconds(SHORT) is not None
        second = await service.synthesize_pcm16(SHORT)
        audio = await service.synthesize_chunk(SHORT)
        assert engine.threads[1:] == [loop_thread, loop_thread]
        assert (engine_calls(metrics, "worker"), engine_calls(metrics, "inline")) == (1, 2)
        assert metrics.registry.get_sample_value("voiceops_batch_size_count") == 3
        for pcm in (first, second):
            assert isinstance(pcm, bytes)
            assert len(pcm) % 2 == 0
            assert len(pcm) > 0.3 * engine.sample_rate * 2
        assert audio.dtype == np.float32
        assert audio.size > 0.3 * engine.sample_rate
        assert runner.idle  # inline calls leave no trace in the runner

    run_with_runner(check)


def test_service_uses_a_worker_when_not_alone() -> None:
    alone = [True]

    async def check(runner: EngineRunner, metrics: ServiceMetrics) -> None:
        service, engine, _inline = build_service(runner, metrics, lambda: alone[0])
        await service.synthesize_pcm16(SHORT)  # learn the rate
        alone[0] = False
        await service.synthesize_pcm16(SHORT)
        await service.synthesize_chunk(SHORT)
        loop_thread = threading.get_ident()
        assert all(thread != loop_thread for thread in engine.threads)
        assert len(engine.threads) == 3
        assert (engine_calls(metrics, "worker"), engine_calls(metrics, "inline")) == (3, 0)
        alone[0] = True
        await service.synthesize_pcm16(SHORT)
        assert engine.threads[-1] == loop_thread
        assert engine_calls(metrics, "inline") == 1

    run_with_runner(check)


def test_service_rechecks_after_yielding_once() -> None:
    alone = [True]

    async def check(runner: EngineRunner, metrics: ServiceMetrics) -> None:
        service, engine, inline = build_service(runner, metrics, lambda: alone[0])
        await service.synthesize_pcm16(SHORT)  # learn the rate
        assert inline.allows(SHORT)

        async def another_request_arrives() -> None:
            alone[0] = False

        arrival = asyncio.create_task(another_request_arrives())  # runs at the first yield
        pcm = await service.synthesize_pcm16(SHORT)
        await arrival
        assert len(pcm) > 0
        assert engine.threads[-1] != threading.get_ident()
        assert (engine_calls(metrics, "worker"), engine_calls(metrics, "inline")) == (2, 0)

    run_with_runner(check)


# --- over HTTP -------------------------------------------------------------------------------


def calls_where(service: ServiceProcess, where: str) -> float:
    return metric_value(service, "voiceops_engine_calls_total", where=where) or 0.0


@pytest.fixture(scope="module")
def worker_only_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = start_service(
        tmp_path_factory.mktemp("worker-only"),
        {"VOICEOPS_ENGINE": "espeak", "VOICEOPS_INLINE_CALL_MAX_MS": "0"},
    )
    yield service
    service.stop()


@pytest.mark.slow
def test_sequential_requests_are_served_inline(espeak_service: ServiceProcess) -> None:
    inline_before = calls_where(espeak_service, "inline")
    worker_before = calls_where(espeak_service, "worker")
    with espeak_service.client() as client:
        for index in range(6):
            response = speech(client, input=f"Request number {index} says hello.")
            assert response.status_code == 200, response.text
    inline = calls_where(espeak_service, "inline") - inline_before
    worker = calls_where(espeak_service, "worker") - worker_before
    assert inline + worker == 6  # one engine call per single-chunk request
    assert inline >= 5, (inline, worker)


@pytest.mark.slow
def test_inline_max_zero_keeps_every_call_in_a_worker(worker_only_service: ServiceProcess) -> None:
    with worker_only_service.client() as client:
        for _ in range(4):
            assert speech(client).status_code == 200
    assert metric_value(worker_only_service, "voiceops_engine_calls_total", where="inline") is None
    assert calls_where(worker_only_service, "worker") == 4


@pytest.mark.slow
def test_concurrent_burst_all_served_and_some_in_a_worker(espeak_service: ServiceProcess) -> None:
    with espeak_service.client() as client:  # one measured call first: inline is possible
        assert speech(client).status_code == 200
    inline_before = calls_where(espeak_service, "inline")
    worker_before = calls_where(espeak_service, "worker")
    count = 8
    barrier = threading.Barrier(count)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            with httpx.Client(base_url=espeak_service.url, timeout=30.0) as client:
                client.get("/healthz")  # connect before the barrier: the posts overlap
                barrier.wait(timeout=10)
                response = speech(client, input=f"{SENTENCE} Caller {index}.")
                statuses.append(response.status_code)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert statuses == [200] * count
    inline = calls_where(espeak_service, "inline") - inline_before
    worker = calls_where(espeak_service, "worker") - worker_before
    assert inline + worker == count
    assert worker >= 1, (inline, worker)


@pytest.mark.slow
@pytest.mark.parametrize("sentences", [1, 8], ids=["short", "multi-chunk"])
def test_wav_length_header_and_riff_sizes_match_the_body(
    espeak_service: ServiceProcess, sentences: int
) -> None:
    text = (SENTENCE * sentences).strip()
    assert (len(text) > 400) == (sentences > 1)
    with espeak_service.client() as client:
        response = speech(client, input=text, response_format="wav")
    assert response.status_code == 200, response.text
    body = response.content
    assert int(response.headers["content-length"]) == len(body)
    assert body[:4] == b"RIFF"
    assert body[8:16] == b"WAVEfmt "
    assert struct.unpack("<I", body[4:8])[0] == len(body) - 8
    assert body[36:40] == b"data"
    assert struct.unpack("<I", body[40:44])[0] == len(body) - 44
    seconds = (len(body) - 44) / 2 / 22050
    words = len(text.split())
    assert 1.5 <= words / seconds <= 5.0, seconds  # every chunk is in the body


# --- what "alone" means in the app: admission and the other routes ------------------------


def test_one_request_in_flight_counts_admission_and_the_other_routes() -> None:
    state = create_app(ServiceSettings(engine="espeak")).state.service
    seen: list[tuple[int, bool]] = []

    async def probe_route(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((state.other_requests_in_flight, state.one_request_in_flight()))
        if scope["path"] == "/boom":
            raise RuntimeError("route failed")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        return None

    middleware = RequestMetricsMiddleware(probe_route, state.metrics, state)

    async def main() -> None:
        assert state.one_request_in_flight()
        await middleware({"type": "http", "method": "GET", "path": "/healthz"}, receive, send)
        with pytest.raises(RuntimeError):
            await middleware({"type": "http", "method": "GET", "path": "/boom"}, receive, send)
        assert state.other_requests_in_flight == 0  # released on success and on error
        async with state.admission.slot():
            assert state.one_request_in_flight()  # the speech request deciding is alone
            async with state.admission.slot():
                assert not state.one_request_in_flight()
        assert state.one_request_in_flight()

    asyncio.run(main())
    assert seen == [(1, False), (1, False)]
