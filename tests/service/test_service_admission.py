"""Admission: concurrency limit, bounded FIFO queue, Retry-After from the drain rate."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from voiceops_service.admission import Admission, DrainRate, OverloadedError
from voiceops_service.metrics import ServiceMetrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def until(condition: Callable[[], bool], steps: int = 1000) -> None:
    """Let other tasks run until ``condition`` holds (bounded, no wall-clock sleeps)."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def test_drain_rate_ignores_idle_gaps() -> None:
    clock = FakeClock()
    drain = DrainRate(smoothing=1.0, clock=clock)
    assert drain.per_second is None
    drain.busy()
    clock.now = 0.5
    drain.completed()
    assert drain.per_second == pytest.approx(2.0)
    clock.now = 100.0  # idle for a long time, then busy again
    drain.busy()
    clock.now = 100.25
    drain.completed()
    assert drain.per_second == pytest.approx(4.0)


async def test_queue_then_refuse_with_retry_after_from_drain_rate() -> None:
    metrics = ServiceMetrics()
    clock = FakeClock()
    admission = Admission(1, 2, metrics, DrainRate(smoothing=1.0, clock=clock))
    admission.drain.busy()
    clock.now = 2.0
    admission.drain.completed()  # measured: 0.5 completions/s
    release = asyncio.Event()
    entered: list[int] = []

    async def hold(i: int) -> None:
        async with admission.slot():
            entered.append(i)
            await release.wait()

    tasks = [asyncio.create_task(hold(i)) for i in range(3)]
    await until(lambda: admission.waiting == 2)
    assert admission.saturated
    assert metrics.registry.get_sample_value("voiceops_queue_depth") == 2
    assert metrics.registry.get_sample_value("voiceops_requests_in_flight") == 3
    with pytest.raises(OverloadedError) as refused:
        async with admission.slot():
            pass
    assert refused.value.retry_after_seconds == 6  # 3 ahead at 0.5/s
    release.set()
    await asyncio.gather(*tasks)
    assert entered == [0, 1, 2]  # FIFO
    assert metrics.registry.get_sample_value("voiceops_requests_in_flight") == 0
    assert metrics.registry.get_sample_value("voiceops_queue_depth") == 0


async def test_cancelled_waiter_leaves_the_queue() -> None:
    metrics = ServiceMetrics()
    admission = Admission(1, 5, metrics)
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.slot():
            await release.wait()

    holder = asyncio.create_task(hold())
    waiter = asyncio.create_task(hold())
    await until(lambda: admission.waiting == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert admission.waiting == 0
    assert metrics.registry.get_sample_value("voiceops_queue_depth") == 0
    release.set()
    await holder
    assert admission.running == 0


def test_the_drain_rate_is_smoothed_over_completions() -> None:
    clock = FakeClock()
    drain = DrainRate(clock=clock)  # default smoothing: 0.2 of the newest interval
    drain.busy()
    clock.now = 2.0
    drain.completed()  # first interval: 2 s
    assert drain.per_second == pytest.approx(0.5)
    clock.now = 3.0
    drain.completed()  # next interval: 1 s, measured from the last completion
    assert drain.per_second == pytest.approx(1 / (0.2 * 1.0 + 0.8 * 2.0))


def test_each_interval_runs_from_the_previous_completion() -> None:
    clock = FakeClock()
    drain = DrainRate(smoothing=1.0, clock=clock)
    drain.busy()
    clock.now = 1.0
    drain.completed()
    clock.now = 3.0
    drain.completed()
    assert drain.per_second == pytest.approx(0.5)


def test_a_completion_without_a_busy_spell_counts_as_instant() -> None:
    clock = FakeClock()
    clock.now = 5.0
    drain = DrainRate(smoothing=1.0, clock=clock)
    drain.completed()
    assert drain.per_second == pytest.approx(1e4)
