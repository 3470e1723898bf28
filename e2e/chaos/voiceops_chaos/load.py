"""Steady speech load through the front Service, and load spikes past capacity.

The steady load is ``voiceops_localcluster.traffic.Traffic``: raw clients (a new connection
per request, no retries) and the official ``openai`` client with its default retries,
side by side, every request recorded. ``rate`` paces both kinds (back to back, on a
2-core machine answered by espeak in milliseconds, is a CPU-eating spin, not a steady
load). A spike adds raw clients that also keep each 429's ``Retry-After``.
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
from voiceops_localcluster.traffic import RequestRecord, Traffic

from .evaluate import Answer

# Short: VITS speaks it in about 0.2 s on one CPU core, so a 2-core machine keeps up
# with a few clients and a scenario gets hundreds of requests.
DEFAULT_TEXT = "Hello from the chaos runner."


@dataclass(frozen=True)
class LoadSpec:
    clients: int = 1  # of each kind
    rate: float = 10.0  # most requests a second per client; 0: back to back
    text: str = DEFAULT_TEXT
    timeout_seconds: float = 30.0


def answer_of(record: RequestRecord) -> Answer:
    return Answer(
        client=record.client,
        started=record.started,
        seconds=record.seconds,
        status=record.status,
        engine=record.engine,
        error=record.error,
    )


@dataclass
class Load:
    base_url: Callable[[], str]
    spec: LoadSpec = field(default_factory=LoadSpec)
    traffic: Traffic | None = None
    spike_answers: list[Answer] = field(default_factory=list)

    async def start(self) -> None:
        interval = 1.0 / self.spec.rate if self.spec.rate > 0 else 0.0
        self.traffic = Traffic(
            self.base_url,
            plain_clients=self.spec.clients,
            openai_clients=self.spec.clients,
            plain_interval_seconds=interval,
            openai_interval_seconds=interval,
            text=self.spec.text,
            timeout_seconds=self.spec.timeout_seconds,
        )
        await self.traffic.discover()
        self.traffic.start()

    async def stop(self) -> None:
        if self.traffic is not None:
            await self.traffic.stop()

    def answers(self) -> list[Answer]:
        records = self.traffic.records if self.traffic is not None else []
        return sorted(
            [*(answer_of(r) for r in records), *self.spike_answers], key=lambda a: a.started
        )

    def statuses_since(self, since: float) -> frozenset[int]:
        return frozenset(a.status for a in self.answers() if a.started >= since)

    async def answered_by_both(self, within: float) -> None:
        """Until each client kind has had an answer (the load is really flowing)."""
        deadline = time.monotonic() + within
        while True:
            kinds = {a.client for a in self.answers() if a.ok}
            if {"plain", "openai"} <= kinds:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answers for both client kinds within {within:g}s")
            await asyncio.sleep(0.05)

    async def spike(self, clients: int, seconds: float) -> None:
        """``clients`` raw clients back to back for ``seconds``, recorded as ``spike``."""
        assert self.traffic is not None, "start() first"
        body: dict[str, Any] = {
            "model": self.traffic.model,
            "input": self.spec.text,
            "response_format": "wav",
        }
        if self.traffic.voice:
            body["voice"] = self.traffic.voice
        until = time.monotonic() + seconds
        timeout = aiohttp.ClientTimeout(total=self.spec.timeout_seconds)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0), timeout=timeout
        ) as session:
            await asyncio.gather(
                *(
                    self._spike_client(session, body, self.traffic.next_input, until)
                    for _ in range(clients)
                )
            )

    async def _spike_client(
        self,
        session: aiohttp.ClientSession,
        body: dict[str, Any],
        next_input: Callable[[], str],
        until: float,
    ) -> None:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                url = self.base_url() + pod_contract.PATH_SPEECH
                # A new text each time, as the steady load has: the audio cache answers none.
                payload = {**body, "input": next_input()}
                async with session.post(url, json=payload) as resp:
                    await resp.read()
                    answer = Answer(
                        "spike",
                        started,
                        time.monotonic() - started,
                        resp.status,
                        engine=resp.headers.get(pod_contract.HEADER_ENGINE, ""),
                        retry_after=resp.headers.get("Retry-After", "")
                        if resp.status == 429
                        else None,
                    )
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                answer = Answer("spike", started, time.monotonic() - started, 0, error=repr(error))
            self.spike_answers.append(answer)
            if answer.status == 429:
                # A raw client that honours Retry-After a little (not fully: it is a spike).
                with contextlib.suppress(ValueError):
                    await asyncio.sleep(min(float(answer.retry_after or 0), 0.2))
