"""DynamicBatcher in-process with the real vits engine, the real OOM guard and real metrics.

``RecordingEngine`` is a test double that wraps the real engine: it records the
size of every forward pass and can act memory-limited (raising a real
``torch.OutOfMemoryError``) or advertise a memory hint, so the batcher's
decisions are observable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence

import numpy as np
import pytest
import torch
from voiceops_service.batching import (
    BatcherClosedError,
    DynamicBatcher,
    MemoryHeadroom,
    batch_cap,
    create_batcher,
)
from voiceops_service.engines.base import (
    Audio,
    Engine,
    MemoryHint,
    SynthesisRequest,
    UnknownVoiceError,
    VoiceInfo,
)
from voiceops_service.engines.vits import VitsEngine, VitsOptions
from voiceops_service.faults import FaultState, FaultUpdate
from voiceops_service.metrics import ServiceMetrics
from voiceops_service.resilience import OomGuard, OomPolicy
from voiceops_service.settings import ServiceSettings

pytestmark = pytest.mark.slow
QUIET = {"noise_scale": 0.0, "noise_w": 0.0}
TEXTS = ("Yes.", "Good morning to you.", "A longer sentence, with a pause in it.", "Thank you.")
LONG_DELAY = 5.0  # batches below fill to max_size long before this


class RecordingEngine(Engine):
    """Delegates to the real engine; records pass sizes; optional OOM limit and memory hint."""

    name = "recording-vits"
    version = "test"

    def __init__(
        self, inner: VitsEngine, oom_above: int | None = None, hint: MemoryHint | None = None
    ) -> None:
        self.inner = inner
        self.oom_above = oom_above
        self.hint = hint
        self.calls: list[int] = []

    @property
    def sample_rate(self) -> int:
        return self.inner.sample_rate

    @property
    def device(self) -> str:
        return self.inner.device

    @property
    def supports_batching(self) -> bool:
        return True

    def load(self) -> None:
        return None

    def voices(self) -> list[VoiceInfo]:
        return self.inner.voices()

    def synthesize(self, request: SynthesisRequest) -> Audio:
        return self.synthesize_batch([request])[0]

    def synthesize_batch(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        self.calls.append(len(requests))
        if self.oom_above is not None and len(requests) > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory (RecordingEngine limit)")
        return self.inner.synthesize_batch(requests)

    def memory_hint(self) -> MemoryHint | None:
        return self.hint


@pytest.fixture(scope="module")
def vits() -> Iterator[VitsEngine]:
    engine = VitsEngine(VitsOptions(device="cpu"))
    engine.load()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def expected(vits: VitsEngine) -> dict[str, Audio]:
    """Each text synthesised alone (no batcher): what every caller must get back."""
    return {text: vits.synthesize(SynthesisRequest(text=text, options=QUIET)) for text in TEXTS}


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics()


def make_guard(metrics: ServiceMetrics, faults: FaultState | None = None) -> OomGuard:
    policy = OomPolicy(max_retries=2, backoff_initial_seconds=0.0, backoff_max_seconds=0.0)
    return OomGuard(policy, metrics=metrics, faults=faults)


@pytest.fixture
async def batcher_factory(
    metrics: ServiceMetrics,
) -> AsyncIterator[list[DynamicBatcher]]:
    started: list[DynamicBatcher] = []
    yield started
    for batcher in started:
        await batcher.stop()


async def started_batcher(
    registry: list[DynamicBatcher], engine: Engine, guard: OomGuard, **kwargs: object
) -> DynamicBatcher:
    options: dict[str, object] = {"max_size": 4, "max_delay_seconds": LONG_DELAY, **kwargs}
    batcher = DynamicBatcher(engine, guard, **options)  # type: ignore[arg-type]
    await batcher.start()
    registry.append(batcher)
    return batcher


def request(text: str, **kwargs: object) -> SynthesisRequest:
    return SynthesisRequest(text=text, options=QUIET, **kwargs)  # type: ignore[arg-type]


def assert_same_audio(got: Audio, want: Audio) -> None:
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-3


def sample_value(metrics: ServiceMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


async def wait_until(condition: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def test_concurrent_callers_each_get_their_own_audio(
    vits: VitsEngine,
    expected: dict[str, Audio],
    metrics: ServiceMetrics,
    batcher_factory: list[DynamicBatcher],
) -> None:
    engine = RecordingEngine(vits)
    batcher = await started_batcher(batcher_factory, engine, make_guard(metrics), metrics=metrics)
    results = await asyncio.gather(*(batcher.submit(request(text)) for text in TEXTS))
    assert engine.calls == [4]  # one forward pass for all four
    for text, audio in zip(TEXTS, results, strict=True):
        assert_same_audio(audio, expected[text])
    assert sample_value(metrics, "voiceops_batch_size_count") == 1
    assert sample_value(metrics, "voiceops_batch_size_sum") == 4
    assert sample_value(metrics, "voiceops_queue_depth") == 0
    assert sample_value(metrics, "voiceops_batch_queue_seconds_count") == 4


async def test_requests_past_the_delay_are_not_held(
    vits: VitsEngine, metrics: ServiceMetrics, batcher_factory: list[DynamicBatcher]
) -> None:
    engine = RecordingEngine(vits)
    batcher = await started_batcher(
        batcher_factory, engine, make_guard(metrics), max_size=8, max_delay_seconds=0.0
    )
    audio = await batcher.submit(request("Yes."))
    assert audio.size > 0
    assert engine.calls == [1]


async def test_injected_oom_is_recovered_with_smaller_batches(
    vits: VitsEngine,
    expected: dict[str, Audio],
    metrics: ServiceMetrics,
    batcher_factory: list[DynamicBatcher],
) -> None:
    faults = FaultState()
    faults.merge(FaultUpdate(oom_next_calls=1))  # the next engine call raises a real OOM
    engine = RecordingEngine(vits)
    batcher = await started_batcher(batcher_factory, engine, make_guard(metrics, faults))
    results = await asyncio.gather(*(batcher.submit(request(text)) for text in TEXTS))
    assert engine.calls == [2, 2]  # the batch of 4 ran out of memory, its halves did not
    for text, audio in zip(TEXTS, results, strict=True):
        assert_same_audio(audio, expected[text])
    assert sample_value(metrics, "voiceops_cuda_oom_total") == 1


async def test_engine_oom_halves_until_it_fits(
    vits: VitsEngine,
    expected: dict[str, Audio],
    metrics: ServiceMetrics,
    batcher_factory: list[DynamicBatcher],
) -> None:
    engine = RecordingEngine(vits, oom_above=1)  # only single items fit
    batcher = await started_batcher(batcher_factory, engine, make_guard(metrics))
    results = await asyncio.gather(*(batcher.submit(request(text)) for text in TEXTS))
    assert engine.calls == [4, 2, 1, 1, 2, 1, 1]
    for text, audio in zip(TEXTS, results, strict=True):
        assert_same_audio(audio, expected[text])
    assert sample_value(metrics, "voiceops_cuda_oom_total") == 3


async def test_one_bad_request_fails_alone(
    vits: VitsEngine,
    expected: dict[str, Audio],
    metrics: ServiceMetrics,
    batcher_factory: list[DynamicBatcher],
) -> None:
    batcher = await started_batcher(batcher_factory, RecordingEngine(vits), make_guard(metrics))
    good = [batcher.submit(request(text)) for text in TEXTS[:3]]
    bad = batcher.submit(request("Hello.", voice="nobody"))
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert isinstance(results[3], UnknownVoiceError)
    for text, audio in zip(TEXTS[:3], results[:3], strict=True):
        assert_same_audio(audio, expected[text])  # type: ignore[arg-type]


async def test_caller_cancelled_while_queued_is_dropped(
    vits: VitsEngine,
    expected: dict[str, Audio],
    metrics: ServiceMetrics,
    batcher_factory: list[DynamicBatcher],
) -> None:
    engine = RecordingEngine(vits)
    batcher = await started_batcher(
        batcher_factory, engine, make_guard(metrics), max_size=3, metrics=metrics
    )
    first = asyncio.create_task(batcher.submit(request(TEXTS[0])))
    doomed = asyncio.create_task(batcher.submit(request(TEXTS[1])))
    await wait_until(lambda: sample_value(metrics, "voiceops_queue_depth") == 2)
    doomed.cancel()  # the batch is not full yet (3 needed): the collector is still waiting
    await wait_until(lambda: sample_value(metrics, "voiceops_queue_depth") == 1)
    rest = [asyncio.create_task(batcher.submit(request(text))) for text in TEXTS[2:]]
    assert_same_audio(await first, expected[TEXTS[0]])
    for task, text in zip(rest, TEXTS[2:], strict=True):
        assert_same_audio(await task, expected[text])
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert engine.calls == [3]  # the cancelled caller took no slot
    assert sample_value(metrics, "voiceops_queue_depth") == 0


async def test_caller_cancelled_during_the_pass_does_not_hurt_neighbours(
    vits: VitsEngine,
    expected: dict[str, Audio],
    metrics: ServiceMetrics,
    batcher_factory: list[DynamicBatcher],
) -> None:
    engine = RecordingEngine(vits)
    batcher = await started_batcher(batcher_factory, engine, make_guard(metrics), max_size=3)
    tasks = [asyncio.create_task(batcher.submit(request(text))) for text in TEXTS[:3]]
    await wait_until(lambda: batcher.oldest_call_seconds() > 0)  # the pass is running
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert_same_audio(done[0], expected[TEXTS[0]])  # type: ignore[arg-type]
    assert_same_audio(done[2], expected[TEXTS[2]])  # type: ignore[arg-type]
    assert engine.calls == [3]
    # The batcher keeps serving afterwards.
    assert_same_audio(await batcher.submit(request(TEXTS[3])), expected[TEXTS[3]])


async def test_memory_headroom_caps_the_batch(
    vits: VitsEngine,
    expected: dict[str, Audio],
    metrics: ServiceMetrics,
    batcher_factory: list[DynamicBatcher],
) -> None:
    mib = 1 << 20
    engine = RecordingEngine(
        vits, hint=MemoryHint(static_bytes=100 * mib, bytes_per_item=100 * mib)
    )
    # 1 GiB card with 300 MiB free: minus the 5 % safety margin (51 MiB), two items fit.
    headroom = MemoryHeadroom(free_bytes=300 * mib, total_bytes=1024 * mib)
    batcher = await started_batcher(
        batcher_factory, engine, make_guard(metrics), memory_probe=lambda: headroom
    )
    results = await asyncio.gather(*(batcher.submit(request(text)) for text in TEXTS))
    assert engine.calls == [2, 2]
    assert batcher.last_cap == 2
    for text, audio in zip(TEXTS, results, strict=True):
        assert_same_audio(audio, expected[text])


@pytest.mark.parametrize(
    ("free_mib", "expected_cap"),
    [(None, 8), (10_000, 8), (450, 4), (100, 1), (0, 1)],
)
def test_batch_cap(free_mib: int | None, expected_cap: int) -> None:
    mib = 1 << 20
    hint = MemoryHint(static_bytes=0, bytes_per_item=100 * mib)
    headroom = None if free_mib is None else MemoryHeadroom(free_mib * mib, 1000 * mib)
    assert batch_cap(8, hint, headroom) == expected_cap
    assert batch_cap(8, None, headroom) == 8  # engines without a hint are not capped


async def test_lifecycle(
    vits: VitsEngine, metrics: ServiceMetrics, batcher_factory: list[DynamicBatcher]
) -> None:
    batcher = DynamicBatcher(
        RecordingEngine(vits), make_guard(metrics), max_size=2, max_delay_seconds=LONG_DELAY
    )
    with pytest.raises(BatcherClosedError):
        await batcher.submit(request("Hi."))
    await batcher.start()
    waiting = asyncio.create_task(batcher.submit(request("Hi.")))
    await wait_until(lambda: batcher.queued == 1)
    await batcher.stop()
    with pytest.raises(BatcherClosedError):
        await waiting
    with pytest.raises(ValueError, match="max_size must be >= 1"):
        DynamicBatcher(RecordingEngine(vits), make_guard(metrics), max_size=0, max_delay_seconds=0)


def test_create_batcher_reads_settings(vits: VitsEngine, metrics: ServiceMetrics) -> None:
    settings = ServiceSettings(batch_max_size=6, batch_max_delay_ms=25)
    batcher = create_batcher(
        engine=vits, guard=make_guard(metrics), settings=settings, metrics=metrics
    )
    assert (batcher.max_size, batcher.max_delay_seconds) == (6, 0.025)
