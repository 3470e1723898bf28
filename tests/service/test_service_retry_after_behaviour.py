"""What a refused client receives: 429 with a Retry-After from the measured drain rate, capped.

The app is the real one (``create_app``: its admission and its speech route),
driven over ASGI; requests held inside admission slots keep it saturated, and the
drain rate runs on a clock the test sets, so every figure is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from voiceops_contract import pod
from voiceops_service.admission import (
    RETRY_AFTER_MAX_SECONDS,
    RETRY_AFTER_MIN_SECONDS,
    Admission,
    DrainRate,
    OverloadedError,
)
from voiceops_service.app import create_app
from voiceops_service.metrics import ServiceMetrics
from voiceops_service.settings import ServiceSettings

SPEECH_BODY = {"model": "tts-1", "input": "Hello.", "voice": "alloy"}


class SetClock:
    """A clock that reads what the test last set."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def measured_drain(seconds_per_completion: float) -> DrainRate:
    """A drain rate that has seen one completion ``seconds_per_completion`` into a busy spell."""
    clock = SetClock()
    drain = DrainRate(smoothing=1.0, clock=clock)
    drain.busy()
    clock.now = seconds_per_completion
    drain.completed()
    return drain


async def until(condition: Callable[[], bool], steps: int = 1000) -> None:
    """Let other tasks run until ``condition`` holds (bounded, no wall-clock sleeps)."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


@dataclass
class Saturated:
    admission: Admission
    metrics: ServiceMetrics
    client: httpx.AsyncClient


@asynccontextmanager
async def saturated_service(
    *, max_concurrency: int, max_queue: int, drain: DrainRate | None
) -> AsyncIterator[Saturated]:
    """The app with every slot taken and its queue full; released on exit."""
    app: FastAPI = create_app(
        ServiceSettings(engine="espeak", max_concurrency=max_concurrency, max_queue=max_queue)
    )
    admission: Admission = app.state.service.admission
    if drain is not None:
        admission.drain = drain
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.slot():
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(max_concurrency + max_queue)]
    await until(lambda: admission.saturated)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://tts") as client:
            yield Saturated(admission, app.state.service.metrics, client)
    finally:
        release.set()
        await asyncio.gather(*holders)


async def refused(service: Saturated) -> httpx.Response:
    response = await service.client.post(pod.PATH_SPEECH, json=SPEECH_BODY)
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("server_overloaded", "rate_limit_error")
    return response


@pytest.mark.parametrize(
    ("max_queue", "seconds_per_completion", "retry_after"),
    [
        (2, 2.0, "6"),  # the caller would be 3rd in line, one leaves every 2 s
        (3, 0.5, "2"),  # 4 ahead at 2/s
        (2, 0.5, "2"),  # 3 ahead at 2/s is 1.5 s: rounded up, never early
        (0, 0.1, "1"),  # faster than a second: the floor
    ],
)
async def test_a_refused_client_is_told_when_the_queue_will_have_drained(
    max_queue: int, seconds_per_completion: float, retry_after: str
) -> None:
    drain = measured_drain(seconds_per_completion)
    async with saturated_service(max_concurrency=1, max_queue=max_queue, drain=drain) as service:
        response = await refused(service)
    assert response.headers["retry-after"] == retry_after
    assert f"retry after {retry_after}s" in response.json()["error"]["message"]


async def test_retry_after_is_capped_at_a_minute_however_slow_the_drain() -> None:
    drain = measured_drain(seconds_per_completion=100.0)  # 3 ahead: 300 s uncapped
    async with saturated_service(max_concurrency=1, max_queue=2, drain=drain) as service:
        response = await refused(service)
    assert response.headers["retry-after"] == str(RETRY_AFTER_MAX_SECONDS) == "60"


async def test_before_any_completion_a_refused_client_retries_after_the_minimum() -> None:
    async with saturated_service(max_concurrency=1, max_queue=1, drain=DrainRate()) as service:
        response = await refused(service)
    assert response.headers["retry-after"] == str(RETRY_AFTER_MIN_SECONDS) == "1"


async def test_the_admission_refuses_with_the_same_figure_the_client_gets() -> None:
    drain = measured_drain(seconds_per_completion=2.0)
    async with saturated_service(max_concurrency=2, max_queue=2, drain=drain) as service:
        with pytest.raises(OverloadedError) as raised:
            async with service.admission.slot():
                pass
        response = await refused(service)
    assert str(raised.value) == "server overloaded: 2 requests queued"
    assert response.headers["retry-after"] == str(raised.value.retry_after_seconds) == "6"


async def test_each_refusal_is_counted() -> None:
    metrics = ServiceMetrics()
    admission = Admission(1, 0, metrics)
    async with admission.slot():
        for _ in range(2):
            with pytest.raises(OverloadedError):
                async with admission.slot():
                    pass
    assert metrics.registry.get_sample_value("voiceops_rejected_requests_total") == 2


async def test_a_saturated_route_refuses_before_reading_the_body_and_counts_it() -> None:
    async with saturated_service(max_concurrency=1, max_queue=0, drain=None) as service:
        await refused(service)
        unread = await service.client.post(
            pod.PATH_SPEECH, content=b"not even JSON", headers={"Content-Type": "text/plain"}
        )
    assert unread.status_code == 429, unread.text  # not 415: refused before any parsing
    assert unread.json()["error"]["code"] == "server_overloaded"
    assert unread.headers["retry-after"] == str(RETRY_AFTER_MIN_SECONDS)
    registry = service.metrics.registry
    assert registry.get_sample_value("voiceops_rejected_requests_total") == 2
    labels = {"route": pod.PATH_SPEECH, "code": "429"}
    assert registry.get_sample_value("voiceops_requests_total", labels) == 2
