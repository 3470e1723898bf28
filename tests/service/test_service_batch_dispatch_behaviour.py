"""When the dynamic batcher sends a batch, how big it is, and who gets what back.

Fast: an engine double (no torch) that records each forward pass and can hold
one until the test lets it go, the real OOM guard and the real metrics. Waits are
bounded steps of the event loop, never wall-clock sleeps; where time matters it
is read from the batcher's own timestamps (its queue-time histogram).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import types
from collections.abc import AsyncIterator, Callable, Sequence

import numpy as np
import pytest
from voiceops_service.batching import (
    MEMORY_SAFETY_FRACTION,
    BatcherClosedError,
    DynamicBatcher,
    MemoryHeadroom,
    batch_cap,
    create_batcher,
    monitor_headroom,
    torch_headroom,
)
from voiceops_service.engines.base import Audio, Engine, MemoryHint, SynthesisRequest, VoiceInfo
from voiceops_service.gpu import GpuReading, GpuSnapshot
from voiceops_service.metrics import ServiceMetrics
from voiceops_service.resilience import OomGuard, OomPolicy
from voiceops_service.settings import ServiceSettings

LONG_DELAY = 30.0  # never waited for in a passing test: batches below fill up or are cancelled
MIB = 2**20
GIB = 2**30


class PassEngine(Engine):
    """Answers each request with samples equal to its text's length; records every pass.

    ``hold()`` makes the next passes wait until ``release()`` (bounded: 10 s).
    """

    name = "pass-recorder"
    version = "test"

    def __init__(self, device: str = "cpu", hint: MemoryHint | None = None) -> None:
        self._device = device
        self.hint = hint
        self.passes: list[list[str]] = []
        self.bad_texts: set[str] = set()
        self._gate = threading.Event()
        self._gate.set()
        self.in_pass = threading.Event()

    @property
    def sample_rate(self) -> int:
        return 16000

    @property
    def device(self) -> str:
        return self._device

    @property
    def supports_batching(self) -> bool:
        return True

    def load(self) -> None:
        return None

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(name="v", language="en", sample_rate=16000)]

    def synthesize(self, request: SynthesisRequest) -> Audio:
        return self.synthesize_batch([request])[0]

    def synthesize_batch(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        self.passes.append([r.text for r in requests])
        self.in_pass.set()
        self._gate.wait(timeout=10)
        if any(r.text in self.bad_texts for r in requests):
            raise ValueError(f"cannot speak {sorted(self.bad_texts)}")
        return [np.full(len(r.text), float(len(r.text)), dtype=np.float32) for r in requests]

    def memory_hint(self) -> MemoryHint | None:
        return self.hint

    def hold(self) -> None:
        self.in_pass.clear()
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()


def guard(metrics: ServiceMetrics | None = None) -> OomGuard:
    return OomGuard(
        OomPolicy(max_retries=0, backoff_initial_seconds=0.0, backoff_max_seconds=0.0),
        metrics=metrics,
    )


async def until(condition: Callable[[], bool], steps: int = 2000) -> None:
    """Let other tasks run until ``condition`` holds (bounded steps, no wall-clock sleeps)."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def until_in_pass(engine: PassEngine) -> None:
    """Wait (bounded) until the worker thread is inside a forward pass."""
    assert await asyncio.to_thread(engine.in_pass.wait, 10), "no forward pass started"


def request(text: str) -> SynthesisRequest:
    return SynthesisRequest(text=text)


def sample(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics()


@pytest.fixture
async def batchers() -> AsyncIterator[list[DynamicBatcher]]:
    started: list[DynamicBatcher] = []
    yield started
    for batcher in started:
        await batcher.stop()


async def started(
    batchers: list[DynamicBatcher],
    engine: PassEngine,
    *,
    max_size: int = 4,
    max_delay_seconds: float = LONG_DELAY,
    **kwargs: object,
) -> DynamicBatcher:
    batcher = DynamicBatcher(
        engine,
        guard(kwargs.get("metrics")),  # type: ignore[arg-type]
        max_size=max_size,
        max_delay_seconds=max_delay_seconds,
        **kwargs,  # type: ignore[arg-type]
    )
    await batcher.start()
    batchers.append(batcher)
    return batcher


def submit_all(batcher: DynamicBatcher, *texts: str) -> list[asyncio.Task[Audio]]:
    return [asyncio.create_task(batcher.submit(request(t))) for t in texts]


# --- when a batch goes ----------------------------------------------------------------------


async def test_a_full_batch_is_dispatched_before_its_delay(
    batchers: list[DynamicBatcher], metrics: ServiceMetrics
) -> None:
    delay = 2.0  # short, but far longer than handing four requests to a worker takes
    engine = PassEngine()
    batcher = await started(batchers, engine, max_delay_seconds=delay, metrics=metrics)
    audio = await asyncio.gather(*submit_all(batcher, "a", "bb", "ccc", "dddd"))
    assert [float(a[0]) for a in audio] == [1.0, 2.0, 3.0, 4.0]
    assert engine.passes == [["a", "bb", "ccc", "dddd"]]
    # The batcher's own record of how long each request waited for its pass.
    assert sample(metrics, "voiceops_batch_queue_seconds_count") == 4
    assert sample(metrics, "voiceops_batch_queue_seconds_bucket", le="1.0") == 4  # < delay / 2
    assert sample(metrics, "voiceops_batch_size_count") == 1
    assert sample(metrics, "voiceops_batch_size_sum") == 4


async def test_requests_arriving_within_the_delay_share_one_pass(
    batchers: list[DynamicBatcher],
) -> None:
    engine = PassEngine()
    batcher = await started(batchers, engine)
    first = submit_all(batcher, "first")
    await until(lambda: batcher.queued == 1)
    for _ in range(50):  # the collector is waiting for company, not sending "first" alone
        await asyncio.sleep(0)
    assert engine.passes == []
    rest = submit_all(batcher, "second", "third", "fourth")
    await asyncio.gather(*first, *rest)
    assert engine.passes == [["first", "second", "third", "fourth"]]


async def test_a_lone_request_goes_alone_once_its_delay_has_passed(
    batchers: list[DynamicBatcher], metrics: ServiceMetrics
) -> None:
    delay = 0.05
    engine = PassEngine()
    batcher = await started(batchers, engine, max_delay_seconds=delay, metrics=metrics)
    (audio,) = await asyncio.gather(*submit_all(batcher, "alone"))
    assert audio.tolist() == [5.0] * 5
    assert engine.passes == [["alone"]]
    waited = sample(metrics, "voiceops_batch_queue_seconds_sum")
    assert waited >= delay * 0.9  # held for company for (about) its delay, by its own clock


async def test_with_no_delay_each_arrival_goes_at_once(batchers: list[DynamicBatcher]) -> None:
    engine = PassEngine()
    batcher = await started(batchers, engine, max_delay_seconds=0.0)
    await batcher.submit(request("one"))
    await batcher.submit(request("two"))
    assert engine.passes == [["one"], ["two"]]


async def test_more_than_a_batch_is_split_and_arrivals_during_a_pass_form_the_next(
    batchers: list[DynamicBatcher],
) -> None:
    engine = PassEngine()
    batcher = await started(batchers, engine, max_size=2)
    engine.hold()
    first = submit_all(batcher, "a", "b", "c")
    await until_in_pass(engine)
    later = submit_all(batcher, "d")
    await until(lambda: batcher.queued == 2)
    engine.release()
    await asyncio.gather(*first, *later)
    assert engine.passes == [["a", "b"], ["c", "d"]]
    assert batcher.passes == 2


# --- memory-aware batch size ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("hint", "headroom", "cap"),
    [
        (None, MemoryHeadroom(1 * GIB, 80 * GIB), 8),  # no hint: max_size
        (MemoryHint(0, 100 * MIB), None, 8),  # no reading: max_size
        (MemoryHint(0, 0), MemoryHeadroom(1 * GIB, 80 * GIB), 8),  # free per item
        (MemoryHint(0, 100 * MIB), MemoryHeadroom(80 * GIB, 80 * GIB), 8),  # plenty
        # 5 % of 10 GiB kept back: 1024 - 512 = 512 MiB usable, 5 items of 100 MiB
        (MemoryHint(0, 100 * MIB), MemoryHeadroom(1 * GIB, 10 * GIB), 5),
        (MemoryHint(0, 100 * MIB), MemoryHeadroom(612 * MIB, 10 * GIB), 1),  # exactly one
        (MemoryHint(0, 100 * MIB), MemoryHeadroom(0, 10 * GIB), 1),  # never below one
        (MemoryHint(0, 1), MemoryHeadroom(103, 20), 8),  # one byte an item: 102 fit
        (MemoryHint(0, 1), MemoryHeadroom(4, 20), 3),  # one byte an item, 3 bytes usable
    ],
)
def test_batch_cap(hint: MemoryHint | None, headroom: MemoryHeadroom | None, cap: int) -> None:
    assert MEMORY_SAFETY_FRACTION == 0.05
    assert batch_cap(8, hint, headroom) == cap


async def test_short_memory_makes_smaller_passes(batchers: list[DynamicBatcher]) -> None:
    engine = PassEngine(hint=MemoryHint(0, 100 * MIB))
    probe = lambda: MemoryHeadroom(1 * GIB, 10 * GIB)  # noqa: E731 - room for 5
    batcher = await started(batchers, engine, max_size=8, memory_probe=probe)
    await asyncio.gather(*submit_all(batcher, *"abcdefghij"))
    assert [len(p) for p in engine.passes] == [5, 5]
    assert batcher.last_cap == 5


async def test_a_failing_memory_probe_batches_without_a_memory_cap(
    batchers: list[DynamicBatcher],
) -> None:
    def broken() -> MemoryHeadroom:
        raise RuntimeError("NVML went away")

    engine = PassEngine(hint=MemoryHint(0, 100 * MIB))
    batcher = await started(batchers, engine, max_size=3, memory_probe=broken)
    await asyncio.gather(*submit_all(batcher, "a", "b", "c"))
    assert engine.passes == [["a", "b", "c"]]
    assert batcher.current_cap() == 3


def fake_torch(
    monkeypatch: pytest.MonkeyPatch,
    *,
    available: bool,
    free: int,
    total: int,
    reserved: int = 0,
    allocated: int = 0,
) -> None:
    cuda = types.SimpleNamespace(
        is_available=lambda: available,
        mem_get_info=lambda: (free, total),
        memory_reserved=lambda: reserved,
        memory_allocated=lambda: allocated,
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))


def test_torch_headroom_counts_torch_s_idle_cache_as_free(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torch(
        monkeypatch, available=True, free=2 * GIB, total=80 * GIB, reserved=3 * GIB, allocated=GIB
    )
    assert torch_headroom() == MemoryHeadroom(free_bytes=4 * GIB, total_bytes=80 * GIB)
    fake_torch(monkeypatch, available=False, free=2 * GIB, total=80 * GIB)
    assert torch_headroom() is None
    monkeypatch.delitem(sys.modules, "torch")
    assert torch_headroom() is None


async def test_a_cuda_engine_is_capped_by_torch_s_free_memory(
    batchers: list[DynamicBatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_torch(monkeypatch, available=True, free=1 * GIB, total=10 * GIB)
    engine = PassEngine(device="cuda:0", hint=MemoryHint(0, 100 * MIB))
    batcher = await started(batchers, engine, max_size=8)
    assert batcher.current_cap() == 5
    cpu = await started(batchers, PassEngine(hint=MemoryHint(0, 100 * MIB)), max_size=8)
    assert cpu.current_cap() == 8  # no probe on a CPU engine


class FakeMonitor:
    def __init__(self, snapshot: GpuSnapshot) -> None:
        self.latest = snapshot


def test_the_gpu_monitor_s_reading_is_the_headroom(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = GpuSnapshot(
        gpus=(GpuReading("0", used_bytes=6 * GIB, total_bytes=10 * GIB),),
        torch_reserved_bytes=3 * GIB,
        torch_allocated_bytes=1 * GIB,
    )
    # NVML counts torch's idle cache (reserved - allocated) as used: it is free to torch.
    probe = monitor_headroom(FakeMonitor(nvml))  # type: ignore[arg-type]
    assert probe() == MemoryHeadroom(free_bytes=6 * GIB, total_bytes=10 * GIB)
    simulated = GpuSnapshot(
        gpus=(GpuReading("0", used_bytes=6 * GIB, total_bytes=10 * GIB, simulated=True),),
        torch_reserved_bytes=3 * GIB,
    )
    probe = monitor_headroom(FakeMonitor(simulated))  # type: ignore[arg-type]
    assert probe() == MemoryHeadroom(free_bytes=4 * GIB, total_bytes=10 * GIB)
    overfull = GpuSnapshot(gpus=(GpuReading("0", used_bytes=11 * GIB, total_bytes=10 * GIB),))
    probe = monitor_headroom(FakeMonitor(overfull))  # type: ignore[arg-type]
    assert probe() == MemoryHeadroom(free_bytes=0, total_bytes=10 * GIB)
    fake_torch(monkeypatch, available=True, free=2 * GIB, total=8 * GIB)
    probe = monitor_headroom(FakeMonitor(GpuSnapshot()))  # type: ignore[arg-type]
    assert probe() == MemoryHeadroom(free_bytes=2 * GIB, total_bytes=8 * GIB)  # no NVML: torch


# --- each caller gets its own answer --------------------------------------------------------


async def test_one_bad_request_fails_alone(batchers: list[DynamicBatcher]) -> None:
    engine = PassEngine()
    engine.bad_texts.add("bad")
    batcher = await started(batchers, engine)
    tasks = submit_all(batcher, "ok", "bad", "fine", "good")
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], ValueError)
    assert [float(r[0]) for i, r in enumerate(results) if i != 1] == [2.0, 4.0, 4.0]


async def test_a_caller_cancelled_while_queued_is_dropped_from_the_batch(
    batchers: list[DynamicBatcher], metrics: ServiceMetrics
) -> None:
    engine = PassEngine()
    batcher = await started(batchers, engine, metrics=metrics)
    (gone,) = submit_all(batcher, "gone")
    await until(lambda: batcher.queued == 1)
    gone.cancel()
    await until(lambda: batcher.queued == 0)
    assert sample(metrics, "voiceops_queue_depth") == 0
    await asyncio.gather(*submit_all(batcher, "w", "x", "y", "z"))
    assert engine.passes == [["w", "x", "y", "z"]]
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_a_caller_cancelled_during_the_pass_does_not_hurt_its_neighbours(
    batchers: list[DynamicBatcher],
) -> None:
    engine = PassEngine()
    batcher = await started(batchers, engine, max_size=2)
    engine.hold()
    leaving, staying = submit_all(batcher, "leaving", "staying")
    await until_in_pass(engine)
    assert batcher.oldest_call_seconds() >= 0.0
    leaving.cancel()
    engine.release()
    assert (await staying).tolist() == [7.0] * 7
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert engine.passes == [["leaving", "staying"]]


async def test_an_engine_call_in_progress_is_timed_by_the_batcher_s_clock(
    batchers: list[DynamicBatcher],
) -> None:
    now = [100.0]
    engine = PassEngine()
    batcher = await started(batchers, engine, max_size=1, clock=lambda: now[0])
    assert batcher.oldest_call_seconds() == 0.0
    engine.hold()
    (task,) = submit_all(batcher, "slow")
    await until_in_pass(engine)
    now[0] = 103.5
    assert batcher.oldest_call_seconds() == 3.5
    engine.release()
    await task
    await until(lambda: batcher.oldest_call_seconds() == 0.0)


# --- lifecycle ------------------------------------------------------------------------------


async def test_stopping_fails_the_queued_and_refuses_the_next(
    metrics: ServiceMetrics,
) -> None:
    engine = PassEngine()
    batcher = DynamicBatcher(
        engine, guard(), max_size=4, max_delay_seconds=LONG_DELAY, metrics=metrics
    )
    with pytest.raises(BatcherClosedError) as refused:
        await batcher.submit(request("early"))
    assert str(refused.value) == "batcher is not running"
    await batcher.start()
    await batcher.start()  # idempotent
    assert batcher.running
    queued = submit_all(batcher, "a", "b")
    await until(lambda: batcher.queued == 2)
    await batcher.stop()
    assert not batcher.running
    for task in queued:
        with pytest.raises(BatcherClosedError) as stopped:
            await task
        assert str(stopped.value) == "batcher stopped"
    assert batcher.queued == 0
    assert sample(metrics, "voiceops_queue_depth") == 0
    with pytest.raises(BatcherClosedError):
        await batcher.submit(request("late"))
    assert engine.passes == []


async def test_stopping_during_a_pass_answers_its_callers(batchers: list[DynamicBatcher]) -> None:
    engine = PassEngine()
    batcher = await started(batchers, engine, max_size=1)
    engine.hold()
    (task,) = submit_all(batcher, "mid-pass")
    await until_in_pass(engine)
    await batcher.close()
    engine.release()
    with pytest.raises(BatcherClosedError) as stopped:
        await task
    assert str(stopped.value) == "batcher stopped during the forward pass"


@pytest.mark.parametrize(
    ("max_size", "delay", "message"),
    [(0, 0.01, "max_size must be >= 1, got 0"), (1, -0.5, "max_delay_seconds must be >= 0")],
)
def test_nonsense_limits_are_refused(max_size: int, delay: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DynamicBatcher(PassEngine(), guard(), max_size=max_size, max_delay_seconds=delay)


def test_create_batcher_reads_the_settings(metrics: ServiceMetrics) -> None:
    settings = ServiceSettings(batch_max_size=6, batch_max_delay_ms=25)
    batcher = create_batcher(engine=PassEngine(), guard=guard(), settings=settings, metrics=metrics)
    assert (batcher.max_size, batcher.max_delay_seconds) == (6, 0.025)
    monitor = FakeMonitor(GpuSnapshot(gpus=(GpuReading("0", 0, 10 * GIB),)))
    hinted = PassEngine(hint=MemoryHint(0, 4 * GIB))
    capped = create_batcher(engine=hinted, guard=guard(), settings=settings, gpu=monitor)  # type: ignore[arg-type]
    assert capped.current_cap() == 2  # 10 GiB free less 5 %: two 4 GiB items


async def test_a_new_batcher_caps_at_its_size_and_stops_cleanly_unstarted() -> None:
    batcher = DynamicBatcher(PassEngine(), guard(), max_size=4, max_delay_seconds=0.0)
    assert batcher.last_cap == 4
    await batcher.stop()  # never started: nothing to stop, no error
    assert not batcher.running


async def test_passes_run_one_at_a_time_in_the_batcher_s_own_thread(
    batchers: list[DynamicBatcher],
) -> None:
    threads: list[str] = []

    class ThreadNoting(PassEngine):
        def synthesize_batch(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
            threads.append(threading.current_thread().name)
            return super().synthesize_batch(requests)

    batcher = await started(batchers, ThreadNoting(), max_size=1)
    for text in ("a", "b"):
        await batcher.submit(request(text))
    assert len(threads) == 2
    assert all(name.startswith("batcher_") for name in threads)
    assert any(t.get_name() == "batch-collector" for t in asyncio.all_tasks())


class BrokenGuard(OomGuard):
    """A guard that fails as a whole (a bug path: the real one answers per item)."""

    def run_batch(self, fn, batch, *, from_audio=None):  # type: ignore[no-untyped-def, override]
        raise RuntimeError("guard bug")


async def test_a_failure_outside_the_guard_fails_every_caller_of_the_batch(
    batchers: list[DynamicBatcher], caplog: pytest.LogCaptureFixture
) -> None:
    batcher = DynamicBatcher(
        PassEngine(), BrokenGuard(OomPolicy()), max_size=2, max_delay_seconds=LONG_DELAY
    )
    await batcher.start()
    batchers.append(batcher)
    results = await asyncio.gather(*submit_all(batcher, "a", "b"), return_exceptions=True)
    assert [str(r) for r in results] == ["guard bug", "guard bug"]
    assert "batch of 2 failed outside the OOM guard" in caplog.messages


async def test_memory_caps_and_probe_failures_are_logged_once_each(
    batchers: list[DynamicBatcher], caplog: pytest.LogCaptureFixture
) -> None:
    free = [1 * GIB]
    probe = lambda: MemoryHeadroom(free[0], 10 * GIB)  # noqa: E731
    caplog.set_level("INFO", logger="voiceops_service.batching")
    hinted = PassEngine(hint=MemoryHint(0, 100 * MIB))
    batcher = await started(batchers, hinted, max_size=8, memory_probe=probe)
    assert [batcher.current_cap() for _ in range(2)] == [5, 5]
    free[0] = 10 * GIB
    assert batcher.current_cap() == 8  # back to max_size: nothing to say
    free[0] = 812 * MIB
    assert batcher.current_cap() == 3
    assert caplog.messages == [
        "memory-aware batch cap 5 (max 8)",
        "memory-aware batch cap 3 (max 8)",
    ]

    def broken() -> MemoryHeadroom:
        raise RuntimeError("NVML went away")

    caplog.clear()
    failing = await started(batchers, PassEngine(), max_size=2, memory_probe=broken)
    assert failing.current_cap() == 2
    assert caplog.messages == ["memory probe failed; batching without a memory cap"]


async def test_a_created_batcher_serves_through_its_guard_and_reports_to_its_metrics(
    metrics: ServiceMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ServiceSettings(batch_max_size=2, batch_max_delay_ms=0)
    batcher = create_batcher(engine=PassEngine(), guard=guard(), settings=settings, metrics=metrics)
    await batcher.start()
    try:
        assert (await batcher.submit(request("abc"))).tolist() == [3.0] * 3
    finally:
        await batcher.stop()
    assert sample(metrics, "voiceops_batch_size_count") == 1
    # No GPU monitor: a CUDA engine is capped by what torch says is free.
    fake_torch(monkeypatch, available=True, free=1 * GIB, total=10 * GIB)
    cuda = PassEngine(device="cuda:0", hint=MemoryHint(0, 100 * MIB))
    settings = ServiceSettings(batch_max_size=8)
    assert create_batcher(engine=cuda, guard=guard(), settings=settings).current_cap() == 5


def test_the_queue_time_histogram_is_described_with_fine_buckets(metrics: ServiceMetrics) -> None:
    DynamicBatcher(PassEngine(), guard(), max_size=1, max_delay_seconds=0.0, metrics=metrics)
    (family,) = [m for m in metrics.registry.collect() if m.name == "voiceops_batch_queue_seconds"]
    assert family.documentation == (
        "Time a request waits in the batch queue before its forward pass starts."
    )
    bounds = [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")]
    assert bounds[:3] == ["0.001", "0.0025", "0.005"]
