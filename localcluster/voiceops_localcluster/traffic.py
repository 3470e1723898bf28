"""Steady speech traffic through a Service from two kinds of real client, every request kept.

* ``plain``: a new TCP connection per request, no retries (aiohttp with
  ``force_close``), as a curl loop or a simple integration does;
* ``openai``: the official ``openai`` Python client with its defaults (a keep-alive
  connection pool, two retries with back-off), naming the model id and the default
  voice that the service itself advertises (``/v1/models``, ``/v1/audio/voices``).

Each request is recorded with its start, latency, status, the engine and voice that
answered (response headers) and the error, so a test or benchmark can say what a
user saw while the cluster failed. ``openai`` comes with the development
requirements (tests, benchmarks, the demo).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from voiceops_contract import pod as pod_contract

CLIENT_KINDS = ("plain", "openai")
OPENAI_MODEL_IDS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
TEXT = "The fallback tier keeps answering while the GPU tier heals."


@dataclass(frozen=True)
class RequestRecord:
    client: str  # plain | openai
    started: float  # time.monotonic()
    seconds: float
    status: int  # HTTP status of the final answer; 0 = no answer (connection failed)
    engine: str = ""  # X-Voiceops-Engine
    voice: str = ""  # X-Voiceops-Voice
    error: str = ""
    model_version: str = ""  # X-Voiceops-Model-Version

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def ended(self) -> float:
        return self.started + self.seconds


@dataclass
class Traffic:
    """Clients of both kinds sending speech back to back until ``stop()``."""

    base_url: Callable[[], str]  # the Service's address, looked up per request
    plain_clients: int = 1
    openai_clients: int = 1
    # A plain client starts a request at most this often (0: back to back), so a
    # failing endpoint costs a request rate's worth of failures, not a spin loop's.
    plain_interval_seconds: float = 0.0
    openai_interval_seconds: float = 0.0  # the same for an openai client
    text: str = TEXT
    timeout_seconds: float = 30.0
    model: str = "tts-1"
    voice: str | None = None
    records: list[RequestRecord] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLIENT_KINDS, 0))
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _sent: int = 0

    def next_input(self) -> str:
        """The text of the next request: numbered, so the pods' audio cache never answers it."""
        self._sent += 1
        return f"{self.text} Request {self._sent}."

    async def discover(self) -> tuple[str, str]:
        """The model id and default voice the service advertises (what a user would use)."""
        base = self.base_url()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/v1/models") as resp:
                models = [m["id"] for m in (await resp.json())["data"]]
            async with session.get(f"{base}/v1/audio/voices") as resp:
                voice = (await resp.json())["default"]
        # The service's own model id (its GPU tier's engine) rather than an OpenAI alias.
        own = [m for m in models if m not in OPENAI_MODEL_IDS]
        self.model, self.voice = (own or models)[0], voice
        return self.model, voice

    def start(self) -> None:
        self._tasks = [
            *(asyncio.create_task(self._plain()) for _ in range(self.plain_clients)),
            *(asyncio.create_task(self._openai()) for _ in range(self.openai_clients)),
        ]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def of(
        self, client: str, since: float = 0.0, until: float = float("inf")
    ) -> list[RequestRecord]:
        return [r for r in self.records if r.client == client and since <= r.started < until]

    def failures(self, client: str | None = None) -> list[RequestRecord]:
        return [r for r in self.records if not r.ok and client in (None, r.client)]

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "input": self.next_input(),
            "response_format": "wav",
        }
        if self.voice:
            body["voice"] = self.voice
        return body

    async def _plain(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_seconds)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True), timeout=timeout
        ) as session:
            while not self._stop.is_set():
                started = time.monotonic()
                self.in_flight["plain"] += 1
                try:
                    url = self.base_url() + pod_contract.PATH_SPEECH
                    async with session.post(url, json=self._body()) as resp:
                        await resp.read()
                        record = _record("plain", started, resp.status, resp.headers)
                except (aiohttp.ClientError, TimeoutError, OSError) as error:
                    record = RequestRecord(
                        "plain", started, time.monotonic() - started, 0, error=repr(error)
                    )
                finally:
                    self.in_flight["plain"] -= 1
                self.records.append(record)
                await self._pause(started, self.plain_interval_seconds)

    async def _openai(self) -> None:
        import openai  # a development requirement: only this client needs it

        client = openai.AsyncOpenAI(
            base_url=self.base_url() + "/v1", api_key="unused", timeout=self.timeout_seconds
        )
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                self.in_flight["openai"] += 1
                try:
                    raw = await client.audio.speech.with_raw_response.create(
                        model=self.model,
                        voice=self.voice or "alloy",
                        input=self.next_input(),
                        response_format="wav",
                    )
                    record = _record("openai", started, raw.status_code, raw.headers)
                except openai.APIStatusError as error:
                    record = _record(
                        "openai", started, error.status_code, error.response.headers, str(error)
                    )
                except openai.APIError as error:
                    record = RequestRecord(
                        "openai", started, time.monotonic() - started, 0, error=repr(error)
                    )
                finally:
                    self.in_flight["openai"] -= 1
                self.records.append(record)
                await self._pause(started, self.openai_interval_seconds)
        finally:
            await client.close()

    async def _pause(self, started: float, interval: float) -> None:
        """Wait until ``interval`` after ``started``, or until stopped."""
        pause = started + interval - time.monotonic()
        if pause > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), pause)


def _record(
    client: str, started: float, status: int, headers: Any, error: str = ""
) -> RequestRecord:
    return RequestRecord(
        client,
        started,
        time.monotonic() - started,
        status,
        engine=headers.get(pod_contract.HEADER_ENGINE, ""),
        voice=headers.get(pod_contract.HEADER_VOICE, ""),
        error=error,
        model_version=headers.get(pod_contract.HEADER_MODEL_VERSION, ""),
    )
