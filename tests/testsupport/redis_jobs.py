"""Helpers for the job tests: a real redis-server, services that share it, polling a job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from voiceops_localcluster.redis_server import RedisServer, RedisServerMissingError
from voiceops_service.audio import chunk_text

from testsupport.needs import missing
from testsupport.service_process import FAULT_TOKEN, ServiceProcess, start_service, wait_for

JOB_DEADLINE_SECONDS = 60.0


def new_redis(directory: Path) -> RedisServer:
    """A started redis-server; skipped without one on a developer machine, failed under CI."""
    try:
        server = RedisServer(directory)
    except RedisServerMissingError as error:
        missing(str(error))
    server.start()
    return server


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = new_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def jobs_env(server: RedisServer, **extra: str) -> dict[str, str]:
    return {
        "VOICEOPS_ENGINE": "espeak",
        "VOICEOPS_JOBS_REDIS_URL": server.url,
        "VOICEOPS_JOBS_VISIBILITY_TIMEOUT_SECONDS": "1",
        "VOICEOPS_WEB_UI": "false",  # not needed here
        "VOICEOPS_FAULT_INJECTION": "true",
        "VOICEOPS_FAULT_TOKEN": FAULT_TOKEN,
        **extra,
    }


def start_jobs_service(tmp_path: Path, server: RedisServer, **extra: str) -> ServiceProcess:
    return start_service(tmp_path, jobs_env(server, **extra))


def set_engine_delay(service: ServiceProcess, seconds: float) -> None:
    response = httpx.post(
        f"{service.url}/admin/faults",
        json={"engine_delay_seconds": seconds},
        headers={"Authorization": f"Bearer {FAULT_TOKEN}"},
        timeout=5.0,
    )
    assert response.status_code == 200, response.text


def create_job(client: httpx.Client, text: str, **body: object) -> dict[str, object]:
    response = client.post("/v1/audio/jobs", json={"input": text, **body})
    assert response.status_code == 202, response.text
    return response.json()


def wait_job(
    client: httpx.Client,
    job_id: str,
    state: str = "succeeded",
    deadline: float = JOB_DEADLINE_SECONDS,
) -> dict[str, object]:
    def reached() -> dict[str, object] | None:
        job = client.get(f"/v1/audio/jobs/{job_id}").json()
        if job["state"] in ("failed", "cancelled") and job["state"] != state:
            raise AssertionError(f"job ended {job['state']}: {job}")
        return job if job["state"] == state else None

    return wait_for(reached, deadline, interval=0.05)  # type: ignore[return-value]


def holders(server: RedisServer, prefix: str = "voiceops:jobs:") -> dict[str, int]:
    """Consumer name -> chunks it holds, read from Redis directly (XPENDING)."""
    client = redis.Redis.from_url(server.url)
    try:
        summary = client.xpending(f"{prefix}chunks", "workers")
    finally:
        client.close()
    return {row["name"].decode(): int(row["pending"]) for row in summary.get("consumers") or []}


def speech_pcm(client: httpx.Client, text: str) -> bytes:
    """The same text through /v1/audio/speech as raw PCM (the undisturbed reference)."""
    response = client.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": text, "response_format": "pcm"}
    )
    assert response.status_code == 200, response.text
    return response.content


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A stitch in time saves nine, or so they say.",
    "Long texts become jobs that survive the loss of a pod.",
    "Every chunk is committed to Redis as soon as it is made.",
    "Workers in every pod take chunks through a consumer group.",
    "The finished audio holds every chunk exactly once, in order.",
]


def long_text(chunks: int, chunk_chars: int = 390) -> str:
    """About ``chunks`` chunks of the job splitter: sentences packed to ``chunk_chars``."""
    out: list[str] = []
    for number in range(chunks):
        piece: list[str] = []
        n = 0
        while sum(len(s) + 1 for s in piece) < chunk_chars - 60:
            piece.append(f"Part {number}. {SENTENCES[n % len(SENTENCES)]}")
            n += 1
        out.append(" ".join(piece))
    return "\n\n".join(out)


def assert_made_of_its_chunks(
    audio: bytes, job: dict[str, Any], client: httpx.Client, text: str
) -> None:
    """``audio`` is the job's chunks exactly once, in order, each the speech of its text.

    espeak-ng's output for one text varies between calls by a few hundred samples (its
    noise sources), so each chunk is compared by length (within 2 %) with a fresh
    synthesis of that chunk's text, and the whole by the chunk lengths the job recorded.
    """
    texts = chunk_text(text)
    makers = job["made_by"]
    assert [maker["index"] for maker in makers] == list(range(len(texts)))
    assert len(audio) == 2 * sum(maker["samples"] for maker in makers)
    for maker, chunk in zip(makers, texts, strict=True):
        fresh = len(speech_pcm(client, chunk)) // 2
        assert abs(maker["samples"] - fresh) <= 0.02 * fresh, (maker, fresh)
