"""Graceful drain: on SIGTERM the service turns not ready, finishes what is in flight, exits.

A real ``voiceops-service`` process (espeak) with an injected engine delay, so a
request is still running when SIGTERM arrives.
"""

from __future__ import annotations

import http.client
import signal
import threading
from pathlib import Path

import httpx
from testsupport.service_process import FAULT_TOKEN, start_service, wait_for

ENV = {
    "VOICEOPS_ENGINE": "espeak",
    "VOICEOPS_FAULT_INJECTION": "true",
    "VOICEOPS_FAULT_TOKEN": FAULT_TOKEN,
    "VOICEOPS_REQUEST_TIMEOUT_SECONDS": "30",
}
SPEECH = {"model": "tts-1", "input": "Still answered after SIGTERM.", "response_format": "wav"}


def test_sigterm_drains_in_flight_requests_then_exits(tmp_path: Path) -> None:
    service = start_service(tmp_path, ENV)
    try:
        with service.client() as client:
            faults = client.post(
                "/admin/faults",
                json={"engine_delay_seconds": 2.0},
                headers={"Authorization": f"Bearer {FAULT_TOKEN}"},
            )
            assert faults.status_code == 200, faults.text
        idle = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
        idle.request("GET", "/v1/models")
        idle.getresponse().read()

        answers: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{service.url}/v1/audio/speech", json=SPEECH, timeout=30)
            )
        )
        slow.start()
        wait_for(lambda: httpx.get(f"{service.url}/readyz").json()["admission"]["running"] == 1)

        service.process.send_signal(signal.SIGTERM)
        ready = wait_for(
            lambda: (r := httpx.get(f"{service.url}/readyz")).status_code == 503 and r.json()
        )
        assert "draining" in ready["reasons"], ready  # type: ignore[index]
        # Still accepting while draining (a proxy's rules may lag), with Connection: close.
        models = httpx.get(f"{service.url}/v1/models")
        assert models.status_code == 200
        assert models.headers["connection"] == "close"
        # The idle keep-alive connection was closed by the server.
        assert idle.sock is not None
        idle.sock.settimeout(5)
        assert idle.sock.recv(1) == b""

        slow.join(timeout=30)
        assert len(answers) == 1
        assert answers[0].status_code == 200, answers[0].text
        assert answers[0].content[:4] == b"RIFF"
        assert service.process.wait(timeout=15) == 0
        assert "SIGTERM: draining 1 speech requests" in service.log()
    finally:
        service.stop()


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    service = start_service(tmp_path, ENV)
    try:
        with service.client() as client:
            client.post(
                "/admin/faults",
                json={"engine_delay_seconds": 20.0},
                headers={"Authorization": f"Bearer {FAULT_TOKEN}"},
            )
        slow = threading.Thread(
            target=lambda: httpx.post(f"{service.url}/v1/audio/speech", json=SPEECH, timeout=60),
            daemon=True,
        )
        slow.start()
        wait_for(lambda: httpx.get(f"{service.url}/readyz").json()["admission"]["running"] == 1)
        service.process.send_signal(signal.SIGTERM)
        wait_for(lambda: httpx.get(f"{service.url}/readyz").status_code == 503)
        service.process.send_signal(signal.SIGINT)
        # uvicorn's own graceful shutdown, which waits at most timeout_graceful_shutdown.
        assert service.process.wait(timeout=45) is not None
    finally:
        service.stop()
