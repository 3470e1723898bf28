"""Probes never wait for an engine call: every call runs off the event loop.

In-process, an engine call held at a gate the test controls (it runs in a
worker thread, so the loop answers /healthz, /readyz and /metrics meanwhile);
and a real espeak server, whose call the fault endpoint slows
(``engine_delay_seconds``), answering its probes during that call. Every wait
polls with a deadline; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import httpx
import pytest
from testsupport.service_process import FAULT_TOKEN, ServiceProcess, speech, start_service, wait_for
from voiceops_contract import pod
from voiceops_service import app as app_module
from voiceops_service.app import close_service, create_app, load_service
from voiceops_service.engines.base import Pcm16, SynthesisRequest
from voiceops_service.engines.espeak import EspeakEngine
from voiceops_service.settings import ServiceSettings

GATE_DEADLINE_SECONDS = 10.0
AUTH = {"Authorization": f"Bearer {FAULT_TOKEN}"}
DELAY_SECONDS = 3.0  # the injected delay: long enough for a few probes


class GatedEspeak(EspeakEngine):
    """Test double: real espeak whose PCM16 calls wait at a gate the test opens.

    Notes each call's thread. Warm-up passes (the gate starts open).
    """

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.call_waiting = threading.Event()
        self.threads: list[int] = []

    def synthesize_batch_pcm16(self, requests: Sequence[SynthesisRequest]) -> list[Pcm16]:
        self.threads.append(threading.get_ident())
        self.call_waiting.set()
        if not self.gate.wait(GATE_DEADLINE_SECONDS):
            raise TimeoutError("the test never opened the gate")
        return super().synthesize_batch_pcm16(requests)


async def until(condition: Callable[[], bool], deadline_seconds: float = 10.0) -> None:
    """Poll ``condition`` without blocking the event loop; fail after the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {deadline_seconds}s")
        await asyncio.sleep(0.005)


async def test_probes_and_metrics_are_answered_while_an_engine_call_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = GatedEspeak()
    monkeypatch.setattr(app_module, "create_engine", lambda name, settings: engine)
    # No audio cache: the repeated request below must reach the engine.
    app = create_app(ServiceSettings(engine="espeak", audio_cache_max_bytes=0))
    state = app.state.service
    await load_service(state)
    assert state.speech is not None, state.load_error
    loop_thread = threading.get_ident()
    body = {"model": "tts-1", "input": "Held at the gate."}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            # One call first, alone and ungated: a short espeak call that has been seen
            # once is what an event-loop shortcut would be tempted to run inline.
            assert (await client.post(pod.PATH_SPEECH, json=body)).status_code == 200
            engine.gate.clear()  # from here on, every engine call waits for the test
            engine.call_waiting.clear()
            spoken = asyncio.create_task(client.post(pod.PATH_SPEECH, json=body))
            await until(engine.call_waiting.is_set)
            live = await client.get(pod.PATH_LIVE)
            ready = await client.get(pod.PATH_READY)
            scraped = await client.get(pod.PATH_METRICS)
            assert not spoken.done()  # answered while the engine call was still running
            assert (live.status_code, live.json()["status"]) == (200, "ok")
            assert ready.status_code == 200, ready.text
            assert ready.json()["admission"]["running"] == 1
            assert scraped.status_code == 200
            assert "voiceops_requests_in_flight 1.0" in scraped.text
            engine.gate.set()
            response = await spoken
    finally:
        engine.gate.set()
        await close_service(state)
    assert response.status_code == 200, response.text
    assert response.content[:4] == b"RIFF"
    assert engine.threads  # the request's call reached the engine
    assert loop_thread not in engine.threads  # ... in a worker thread, never on the loop


# --- a real server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def delayable_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """An espeak server with the fault endpoint; liveness tolerates the injected delay."""
    service = start_service(
        tmp_path_factory.mktemp("probes"),
        {
            "VOICEOPS_ENGINE": "espeak",
            "VOICEOPS_FAULT_INJECTION": "true",
            "VOICEOPS_FAULT_TOKEN": FAULT_TOKEN,
            "VOICEOPS_LIVENESS_STALL_SECONDS": "60",  # readiness: half of it
        },
    )
    yield service
    service.stop()


@pytest.mark.slow
def test_a_real_server_answers_probes_during_a_delayed_engine_call(
    delayable_service: ServiceProcess,
) -> None:
    service = delayable_service
    set_delay = httpx.post(
        f"{service.url}{pod.PATH_FAULTS}",
        json={"engine_delay_seconds": DELAY_SECONDS},
        headers=AUTH,
        timeout=5,
    )
    assert set_delay.status_code == 200, set_delay.text
    results: list[httpx.Response] = []

    def call() -> None:
        with service.client(timeout=60) as client:
            results.append(speech(client, input="Take your time."))

    caller = threading.Thread(target=call, daemon=True)
    caller.start()

    def probes_answered_during_the_call() -> bool:
        live = httpx.get(f"{service.url}{pod.PATH_LIVE}", timeout=5)
        ready = httpx.get(f"{service.url}{pod.PATH_READY}", timeout=5)
        return (
            live.status_code == 200
            and live.json()["status"] == "ok"
            and live.json()["engine_call_seconds"] > 0  # the delayed call is running
            and ready.status_code == 200
            and ready.json()["admission"]["running"] == 1
        )

    try:
        wait_for(probes_answered_during_the_call, DELAY_SECONDS + 15)
    finally:
        httpx.delete(f"{service.url}{pod.PATH_FAULTS}", headers=AUTH, timeout=5)
        caller.join(timeout=60)
    assert not caller.is_alive()
    assert results[0].status_code == 200, results[0].text
