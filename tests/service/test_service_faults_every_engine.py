"""Injected engine-call faults apply on every engine, batched or not.

The vits engine batches (its calls go through the dynamic batcher's worker);
espeak does not (its calls go through the engine runner). Both paths pass the
OOM guard, where ``engine_delay_seconds`` and ``oom_next_calls`` apply, so
the same fault must slow, wedge and OOM either pod alike, and a delayed call
must count as a running engine call for ``/healthz``. Every wait polls with a
deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import httpx
import numpy as np
import pytest
from testsupport.service_process import (
    FAULT_TOKEN,
    ServiceProcess,
    metric_value,
    speech,
    start_service,
    wait_for,
)
from voiceops_contract import pod
from voiceops_service.engines.base import Audio, SynthesisRequest
from voiceops_service.faults import FaultState, FaultUpdate
from voiceops_service.metrics import ServiceMetrics
from voiceops_service.resilience import OomGuard, OomPolicy

AUTH = {"Authorization": f"Bearer {FAULT_TOKEN}"}
DELAY_SECONDS = 3.0  # the injected delay: well past the stall threshold below
ENV = {
    "VOICEOPS_DEVICE": "cpu",
    "VOICEOPS_FAULT_INJECTION": "true",
    "VOICEOPS_FAULT_TOKEN": FAULT_TOKEN,
    "VOICEOPS_MAX_CONCURRENCY": "2",
    "VOICEOPS_LIVENESS_STALL_SECONDS": "1",
    "VOICEOPS_OOM_MAX_RETRIES": "3",
    "VOICEOPS_OOM_BACKOFF_INITIAL_SECONDS": "0",
    "VOICEOPS_OOM_BACKOFF_MAX_SECONDS": "0",
    "VOICEOPS_OOM_DEGRADE_THRESHOLD": "100",  # these tests count OOMs, not degraded mode
}


# --- the guard: the one place engine-call faults apply ----------------------------------


def zeros(batch: Sequence[SynthesisRequest]) -> list[Audio]:
    return [np.zeros(len(request.text), dtype=np.float32) for request in batch]


def test_guard_applies_the_injected_delay_once_per_call_single_or_batch() -> None:
    faults = FaultState()
    sleeps: list[float] = []
    guard = OomGuard(OomPolicy(), metrics=ServiceMetrics(), faults=faults, sleep=sleeps.append)
    faults.merge(FaultUpdate(engine_delay_seconds=2.5))
    assert guard.run_one(zeros, SynthesisRequest(text="direct")).size == 6  # the runner's call
    batch = [SynthesisRequest(text=text) for text in ("one", "two", "three")]
    assert [audio.size for audio in guard.run_batch(zeros, batch)] == [3, 3, 5]  # the batcher's
    assert sleeps == [2.5, 2.5]
    faults.clear()
    guard.run_batch(zeros, batch)
    assert sleeps == [2.5, 2.5]


# --- the real service, one pod per engine -----------------------------------------------


@pytest.fixture(scope="module", params=["espeak", "vits"])
def pod_under_test(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, bool]]:
    """A real service process and whether its engine batches (vits: the bundled joe voice)."""
    engine: str = request.param
    service = start_service(tmp_path_factory.mktemp(engine), {**ENV, "VOICEOPS_ENGINE": engine})
    yield service, engine == "vits"
    service.stop()


def settle(service: ServiceProcess) -> None:
    """No faults, no engine call running, no request in flight."""
    httpx.delete(f"{service.url}/admin/faults", headers=AUTH, timeout=5).raise_for_status()

    def quiet() -> bool:
        live = httpx.get(f"{service.url}/healthz", timeout=2)
        return (
            live.status_code == 200
            and live.json()["engine_call_seconds"] == 0.0
            and metric_value(service, "voiceops_requests_in_flight") == 0.0
        )

    wait_for(quiet, 30)


@pytest.fixture
def server(pod_under_test: tuple[ServiceProcess, bool]) -> Iterator[tuple[ServiceProcess, bool]]:
    settle(pod_under_test[0])
    yield pod_under_test
    settle(pod_under_test[0])


def set_faults(service: ServiceProcess, **faults: object) -> dict[str, object]:
    response = httpx.post(f"{service.url}/admin/faults", json=faults, headers=AUTH, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_injected_delay_is_a_running_engine_call_for_liveness(
    server: tuple[ServiceProcess, bool],
) -> None:
    service, batched = server
    set_faults(service, engine_delay_seconds=DELAY_SECONDS)
    results: list[httpx.Response] = []

    def call() -> None:
        with service.client(timeout=60) as client:
            results.append(speech(client, input="Slow down, please."))

    caller = threading.Thread(target=call, daemon=True)
    caller.start()

    def wedged() -> bool:
        live = httpx.get(f"{service.url}/healthz", timeout=2)
        return live.status_code == 503 and live.json()["status"] == "wedged"

    def stalled() -> bool:
        ready = httpx.get(f"{service.url}/readyz", timeout=2)
        return ready.status_code == 503 and "stalled" in ready.json()["reasons"]

    # Past half the liveness limit the pod leaves the Service (readiness), and past
    # VOICEOPS_LIVENESS_STALL_SECONDS (1 s) liveness fails, while the call sleeps.
    wait_for(stalled, DELAY_SECONDS + 15)
    wait_for(wedged, DELAY_SECONDS + 15)
    httpx.delete(f"{service.url}/admin/faults", headers=AUTH, timeout=5).raise_for_status()
    # Once that call ends, liveness and readiness are fine again.
    wait_for(lambda: httpx.get(f"{service.url}/healthz", timeout=2).status_code == 200, 30)
    wait_for(lambda: httpx.get(f"{service.url}/readyz", timeout=2).status_code == 200, 30)
    caller.join(timeout=30)
    assert not caller.is_alive()
    assert results[0].status_code == 200, results[0].text
    assert results[0].headers[pod.HEADER_ENGINE] == ("vits" if batched else "espeak")


@pytest.mark.slow
def test_injected_oom_is_consumed_and_counted(server: tuple[ServiceProcess, bool]) -> None:
    service, batched = server
    ooms_before = metric_value(service, "voiceops_cuda_oom_total") or 0.0
    set_faults(service, oom_next_calls=2)
    with service.client(timeout=60) as client:
        response = speech(client, input="Out of memory, twice.")
        assert response.status_code == 200, response.text  # retried, then served
        assert client.get("/admin/faults", headers=AUTH).json()["oom_next_calls"] == 0
    assert metric_value(service, "voiceops_cuda_oom_total") == ooms_before + 2
    assert response.headers[pod.HEADER_ENGINE] == ("vits" if batched else "espeak")
