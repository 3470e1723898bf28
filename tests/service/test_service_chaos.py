"""The real server under chaos: overload, deadlines, disconnects, OOM storms, hangs, crashes.

Faults are injected through the token-guarded ``/admin/faults`` API (off by
default; these servers enable it). Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from testsupport.service_process import (
    FAULT_TOKEN,
    ServiceProcess,
    assert_envelope,
    metric_value,
    speech,
    start_service,
    wait_for,
)

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {FAULT_TOKEN}"}
CHAOS_ENV = {
    "VOICEOPS_FAULT_INJECTION": "true",
    "VOICEOPS_FAULT_TOKEN": FAULT_TOKEN,
    "VOICEOPS_MAX_CONCURRENCY": "1",
    "VOICEOPS_MAX_QUEUE": "1",
    "VOICEOPS_REQUEST_TIMEOUT_SECONDS": "4",
    "VOICEOPS_OOM_MAX_RETRIES": "3",
    "VOICEOPS_OOM_BACKOFF_INITIAL_SECONDS": "0.01",
    "VOICEOPS_OOM_BACKOFF_MAX_SECONDS": "0.05",
    "VOICEOPS_OOM_DEGRADE_THRESHOLD": "3",
    "VOICEOPS_OOM_RECOVER_CLEAN_CALLS": "2",
    "VOICEOPS_OOM_RECOVER_QUIET_SECONDS": "600",
    "VOICEOPS_GPU_POLL_INTERVAL_SECONDS": "0.1",
    "VOICEOPS_LIVENESS_STALL_SECONDS": "1",
}


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = start_service(tmp_path_factory.mktemp("chaos"), CHAOS_ENV)
    yield service
    service.stop()


def settle(service: ServiceProcess) -> None:
    """No faults, no engine call running, nothing admitted, not degraded."""
    httpx.delete(f"{service.url}/admin/faults", headers=AUTH, timeout=5).raise_for_status()

    def quiet() -> bool:
        live = httpx.get(f"{service.url}/healthz", timeout=2).json()
        return (
            live["engine_call_seconds"] == 0.0
            and metric_value(service, "voiceops_requests_in_flight") == 0.0
        )

    wait_for(quiet, 15)


@pytest.fixture
def server(chaos: ServiceProcess) -> Iterator[ServiceProcess]:
    settle(chaos)
    yield chaos
    settle(chaos)


def set_faults(service: ServiceProcess, **faults: object) -> dict[str, object]:
    response = httpx.post(f"{service.url}/admin/faults", json=faults, headers=AUTH, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def in_background(
    service: ServiceProcess, results: list[httpx.Response], text: str
) -> threading.Thread:
    def run() -> None:
        with service.client(timeout=30) as client:
            results.append(speech(client, input=text))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def open_raw_request(service: ServiceProcess, text: str) -> socket.socket:
    """Send a speech request on a raw socket (so the test can hang up mid-request)."""
    body = json.dumps({"model": "tts-1", "input": text}).encode()
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
    sock.sendall(
        b"POST /v1/audio/speech HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def cancelled(service: ServiceProcess, stage: str) -> float:
    return metric_value(service, "voiceops_cancelled_requests_total", stage=stage) or 0.0


# --- the fault API itself --------------------------------------------------------------


def test_fault_api_needs_the_token(server: ServiceProcess) -> None:
    with server.client() as client:
        assert_envelope(client.get("/admin/faults"), 401, "Authorization")
        wrong = {"Authorization": "Bearer not-the-token"}
        response = client.post("/admin/faults", json={"crash": True}, headers=wrong)
        assert_envelope(response, 401, "Authorization")
        assert response.headers["www-authenticate"] == "Bearer"
        assert_envelope(client.delete("/admin/faults", headers=wrong), 401, "Authorization")
        wrong_header = {"X-Voiceops-Fault-Token": "not-the-token"}
        response = client.post("/admin/faults", json={"crash": True}, headers=wrong_header)
        assert_envelope(response, 401, "Authorization")
        assert client.get("/healthz").status_code == 200  # the bad crash requests did nothing
        # The token's own header: what passes the API server's pod proxy, which removes
        # Authorization (the caller's credential).
        token = AUTH["Authorization"].removeprefix("Bearer ")
        response = client.get("/admin/faults", headers={"X-Voiceops-Fault-Token": token})
        assert response.status_code == 200
        response = client.post("/admin/faults", json={"oom_next_calls": -1}, headers=AUTH)
        assert_envelope(response, 400, "oom_next_calls")
        response = client.post("/admin/faults", json={"surprise": 1}, headers=AUTH)
        assert_envelope(response, 400, "surprise")


def test_fault_api_merges_and_clears(server: ServiceProcess) -> None:
    set_faults(server, oom_next_calls=2)
    merged = set_faults(server, engine_delay_seconds=0.0)
    assert merged["oom_next_calls"] == 2
    with server.client() as client:
        assert client.get("/admin/faults", headers=AUTH).json()["oom_next_calls"] == 2
        cleared = client.delete("/admin/faults", headers=AUTH).json()
    assert cleared["oom_next_calls"] == 0


# --- overload, deadline, disconnect ----------------------------------------------------


def test_overload_sheds_with_retry_after_and_stays_ready(server: ServiceProcess) -> None:
    # One running (1.5 s) and one queued, within the 4 s deadline; the third is refused.
    set_faults(server, engine_delay_seconds=1.5)
    results: list[httpx.Response] = []
    first = in_background(server, results, "First.")
    wait_for(lambda: metric_value(server, "voiceops_requests_in_flight") == 1.0)
    second = in_background(server, results, "Second.")
    wait_for(lambda: metric_value(server, "voiceops_queue_depth") == 1.0)
    with server.client() as client:
        refused = speech(client, input="Third.")
        ready = client.get("/readyz")
    # Still ready: a full pod answers 429 with Retry-After rather than leave the Service.
    assert ready.status_code == 200
    assert ready.json()["admission"]["saturated"] is True
    error = assert_envelope(refused, 429, None)
    assert error["code"] == "server_overloaded"
    assert int(refused.headers["retry-after"]) >= 1
    first.join(timeout=10)
    second.join(timeout=10)
    assert [r.status_code for r in results] == [200, 200]
    assert metric_value(server, "voiceops_requests_total", route="/v1/audio/speech", code="429")


def test_deadline_exceeded_is_504(server: ServiceProcess) -> None:
    set_faults(server, engine_delay_seconds=5.0)
    with server.client() as client:
        response = speech(client, input="Too slow.")
    error = assert_envelope(response, 504, None)
    assert error["code"] == "deadline_exceeded"


def test_disconnect_while_queued_drops_the_work(server: ServiceProcess) -> None:
    set_faults(server, engine_delay_seconds=2.0)
    results: list[httpx.Response] = []
    before = cancelled(server, "before_answer")
    running = in_background(server, results, "Running.")
    wait_for(lambda: metric_value(server, "voiceops_requests_in_flight") == 1.0)
    sock = open_raw_request(server, "Queued and then abandoned.")
    wait_for(lambda: metric_value(server, "voiceops_queue_depth") == 1.0)
    sock.close()
    wait_for(lambda: metric_value(server, "voiceops_queue_depth") == 0.0)
    wait_for(lambda: cancelled(server, "before_answer") == before + 1)
    running.join(timeout=10)
    assert results[0].status_code == 200
    assert metric_value(server, "voiceops_requests_total", route="/v1/audio/speech", code="499")


def test_disconnect_while_running_frees_the_slot(server: ServiceProcess) -> None:
    set_faults(server, engine_delay_seconds=2.5)
    before = cancelled(server, "before_answer")
    sock = open_raw_request(server, "Abandoned mid synthesis.")
    wait_for(lambda: httpx.get(f"{server.url}/healthz").json()["engine_call_seconds"] > 0)
    sock.close()
    # The admission slot frees at once, although the engine call itself runs on.
    wait_for(lambda: metric_value(server, "voiceops_requests_in_flight") == 0.0)
    assert httpx.get(f"{server.url}/healthz").json()["engine_call_seconds"] > 0
    assert cancelled(server, "before_answer") == before + 1


def test_disconnect_while_streaming_stops_the_stream(server: ServiceProcess) -> None:
    set_faults(server, engine_delay_seconds=0.2)
    before = cancelled(server, "streaming")
    text = " ".join(f"This is sentence number {i}." for i in range(30))
    body = {"model": "tts-1", "input": text, "stream": True, "response_format": "wav"}
    with (
        server.client() as client,
        client.stream("POST", "/v1/audio/speech", json=body) as response,
    ):
        assert response.status_code == 200
        first = next(response.iter_raw())
        assert first[:4] == b"RIFF"
    # Hung up after the first sentence: the rest is never synthesised.
    wait_for(lambda: cancelled(server, "streaming") == before + 1)
    wait_for(lambda: metric_value(server, "voiceops_requests_in_flight") == 0.0)


# --- CUDA OOM ----------------------------------------------------------------------------


def test_oom_storm_is_survived_counted_and_flips_degraded(server: ServiceProcess) -> None:
    ooms_before = metric_value(server, "voiceops_cuda_oom_total")
    with server.client() as client:
        set_faults(server, oom_next_calls=2)
        recovered = speech(client, input="Recovered after two OOMs.")
        assert recovered.status_code == 200  # retried with backoff, then served
        assert metric_value(server, "voiceops_cuda_oom_total") == ooms_before + 2
        assert client.get("/readyz").status_code == 200  # two OOMs: not yet degraded

        set_faults(server, oom_next_calls=10)
        exhausted = speech(client, input="Still no memory.")
        error = assert_envelope(exhausted, 503, None)
        assert error["code"] == "out_of_memory"
        assert metric_value(server, "voiceops_cuda_oom_total") == ooms_before + 6
        assert metric_value(server, "voiceops_degraded") == 1.0
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reasons"] == ["degraded"]
        assert client.get("/healthz").status_code == 200  # degraded, not dead

        client.delete("/admin/faults", headers=AUTH)
        for _ in range(2):  # VOICEOPS_OOM_RECOVER_CLEAN_CALLS=2
            assert speech(client, input="Memory is back.").status_code == 200
        assert metric_value(server, "voiceops_degraded") == 0.0
        assert client.get("/readyz").status_code == 200


# --- telemetry, liveness -----------------------------------------------------------------


def test_simulated_gpu_memory_shows_in_metrics_and_clears(server: ServiceProcess) -> None:
    used, total = 15 * 2**30, 16 * 2**30
    set_faults(server, gpu_memory={"used_bytes": used, "total_bytes": total})
    wait_for(lambda: metric_value(server, "voiceops_gpu_memory_used_bytes", gpu="0") == used)
    assert metric_value(server, "voiceops_gpu_memory_total_bytes", gpu="0") == total
    assert httpx.get(f"{server.url}/readyz").json()["gpu"]["simulated"] is True
    settle(server)
    if not httpx.get(f"{server.url}/readyz").json()["gpu"]["nvml"]:
        wait_for(lambda: metric_value(server, "voiceops_gpu_memory_used_bytes", gpu="0") is None)


def test_simulated_gpu_memory_is_validated(server: ServiceProcess) -> None:
    response = httpx.post(
        f"{server.url}/admin/faults",
        json={"gpu_memory": {"used_bytes": 10, "total_bytes": 5}},
        headers=AUTH,
    )
    assert_envelope(response, 400, "gpu_memory")


def test_wedged_engine_fails_liveness(server: ServiceProcess) -> None:
    set_faults(server, engine_delay_seconds=3.0)
    results: list[httpx.Response] = []
    in_background(server, results, "Wedge the worker.")
    wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 503, 5)
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "wedged"


def test_hang_wedges_the_event_loop_then_recovers(server: ServiceProcess) -> None:
    set_faults(server, hang_seconds=1.5)

    def probe_times_out() -> bool:
        # What a kubelet liveness probe with a short timeout sees while the loop is blocked.
        try:
            httpx.get(f"{server.url}/healthz", timeout=0.3)
        except httpx.TimeoutException:
            return True
        return False

    wait_for(probe_times_out, 3)
    wait_for(lambda: httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200, 10)


# --- in-process fallback, crash (own servers) ------------------------------------------


@pytest.fixture(scope="module")
def with_fallback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    env = {
        **CHAOS_ENV,
        "VOICEOPS_MAX_CONCURRENCY": "2",
        "VOICEOPS_FALLBACK_ENGINE": "espeak",
        "VOICEOPS_OOM_DEGRADE_THRESHOLD": "2",
        "VOICEOPS_OOM_RECOVER_QUIET_SECONDS": "2",
    }
    service = start_service(tmp_path_factory.mktemp("fallback"), env)
    yield service
    service.stop()


def test_oom_storm_served_by_in_process_espeak_then_recovers(with_fallback: ServiceProcess) -> None:
    server = with_fallback
    set_faults(server, oom_next_calls=100)
    with server.client() as client:
        response = speech(client, input="Served by the fallback engine.")
        assert response.status_code == 200, response.text
        assert len(response.content) > 22050  # about a second of 16-bit audio at least
        assert metric_value(server, "voiceops_degraded") == 1.0
        assert metric_value(server, "voiceops_fallback_calls_total") >= 1
        assert client.get("/readyz").json()["reasons"] == ["degraded"]
        pending = client.get("/admin/faults", headers=AUTH).json()["oom_next_calls"]
        second = speech(client, input="Primary is not touched while degraded.")
        assert second.status_code == 200
        assert second.headers["x-voiceops-engine"] == "espeak"
        assert client.get("/admin/faults", headers=AUTH).json()["oom_next_calls"] == pending
        client.delete("/admin/faults", headers=AUTH)
        # Quiet period (2 s here) without OOM: back to the primary engine and ready.
        wait_for(lambda: client.get("/readyz").status_code == 200, 10)
        assert metric_value(server, "voiceops_degraded") == 0.0


def test_crash_fault_exits_non_zero(tmp_path: Path) -> None:
    service = start_service(tmp_path, CHAOS_ENV)
    try:
        set_faults(service, crash=True)
        assert service.process.wait(timeout=10) == 70
    finally:
        service.stop()
