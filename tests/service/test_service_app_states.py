"""App states that a real server passes through too quickly to observe: loading, unusable GPU.

In-process (ASGI, no network); the HTTP behaviour is covered by test_service_http.
"""

from __future__ import annotations

import httpx
import pytest
from testsupport.service_process import assert_envelope
from voiceops_service.app import close_service, create_app, load_service
from voiceops_service.settings import ServiceSettings


def client_for(settings: ServiceSettings) -> tuple[httpx.AsyncClient, object]:
    app = create_app(settings)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")
    return client, app


async def test_while_loading_ready_says_so_and_speech_is_503() -> None:
    client, _app = client_for(ServiceSettings())  # lifespan not run: the engine never loads
    async with client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reasons"] == ["loading"]
        assert (await client.get("/healthz")).status_code == 200  # alive while loading
        response = await client.post("/v1/audio/speech", json={"model": "tts-1", "input": "hi"})
        error = assert_envelope(response, 503, None)
        assert error["code"] == "not_ready"
        assert response.headers["retry-after"] == "5"
        metrics = (await client.get("/metrics")).text
        assert 'version="loading"' in metrics


async def test_cuda_requested_for_a_cpu_engine_is_gpu_unusable() -> None:
    client, app = client_for(ServiceSettings(device="cuda"))
    await load_service(app.state.service)
    async with client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reasons"] == ["gpu_unusable"]
        assert "espeak engine runs on cpu" in ready.json()["messages"]["gpu_unusable"]
    await close_service(app.state.service)


async def test_engine_that_cannot_load_reports_load_failed_and_calls_on_fatal() -> None:
    fatal: list[str] = []
    app = create_app(ServiceSettings(voice="no-such-voice"), on_fatal=fatal.append)
    await load_service(app.state.service)
    assert fatal
    assert "no-such-voice" in fatal[0]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        ready = await client.get("/readyz")
        assert ready.json()["reasons"] == ["load_failed"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/v1/models"])
async def test_probe_routes_need_no_body_or_auth(path: str) -> None:
    client, app = client_for(ServiceSettings())
    await load_service(app.state.service)
    async with client:
        assert (await client.get(path)).status_code == 200
    await close_service(app.state.service)
