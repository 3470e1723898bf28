"""The job API on a real espeak service and a real redis-server: create, read, audio, cancel."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from testsupport.redis_jobs import (
    assert_made_of_its_chunks,
    create_job,
    holders,
    long_text,
    redis_server,  # noqa: F401 (fixture)
    set_engine_delay,
    start_jobs_service,
    wait_job,
)
from testsupport.service_process import ServiceProcess, assert_envelope, wait_for
from voiceops_localcluster.redis_server import RedisServer

pytestmark = pytest.mark.slow
INPUT_LIMIT = 6000


@pytest.fixture(scope="module")
def jobs_service(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,  # noqa: F811
) -> Iterator[ServiceProcess]:
    service = start_jobs_service(
        tmp_path_factory.mktemp("jobs"),
        redis_server,
        VOICEOPS_JOBS_MAX_INPUT_CHARS=str(INPUT_LIMIT),
        VOICEOPS_JOBS_WORKERS="2",
    )
    yield service
    service.stop()


@pytest.fixture
def client(jobs_service: ServiceProcess) -> Iterator[httpx.Client]:
    set_engine_delay(jobs_service, 0)
    with jobs_service.client(timeout=30.0) as client:
        yield client
    set_engine_delay(jobs_service, 0)


def wav_samples(wav: bytes) -> bytes:
    assert (wav[:4], wav[8:12], wav[36:40]) == (b"RIFF", b"WAVE", b"data")
    assert struct.unpack("<I", wav[40:44])[0] == len(wav) - 44
    return wav[44:]


def test_a_job_completes_with_the_audio_of_an_undisturbed_speech_request(
    client: httpx.Client,
) -> None:
    text = long_text(5)
    job = create_job(client, text)
    assert job["state"] in ("queued", "running", "succeeded")
    assert job["input_chars"] == len(text)
    total = job["chunks"]["total"]  # type: ignore[index]
    assert total >= 4
    done = wait_job(client, str(job["id"]))
    assert done["chunks"] == {"total": total, "done": total}
    assert done["engines"] == {"espeak": total}
    assert [m["index"] for m in done["made_by"]] == list(range(total))  # type: ignore[union-attr]
    audio = client.get(f"/v1/audio/jobs/{job['id']}/audio")
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/wav"
    samples = wav_samples(audio.content)
    assert_made_of_its_chunks(samples, done, client, text)
    assert done["audio_seconds"] == pytest.approx(len(samples) / 2 / done["sample_rate"], abs=1e-3)


def test_pcm_jobs_answer_raw_samples(client: httpx.Client) -> None:
    text = "Raw samples, please. Nothing else."
    job = create_job(client, text, response_format="pcm")
    done = wait_job(client, str(job["id"]))
    audio = client.get(f"/v1/audio/jobs/{job['id']}/audio")
    assert audio.headers["content-type"] == "audio/pcm"
    assert_made_of_its_chunks(audio.content, done, client, text)


def test_bad_input_gets_an_error_naming_the_field(client: httpx.Client) -> None:
    too_long = client.post("/v1/audio/jobs", json={"input": "a" * (INPUT_LIMIT + 1)})
    error = assert_envelope(too_long, 400, "input")
    assert error["code"] == "string_too_long"
    assert str(INPUT_LIMIT) in str(error["message"])
    voice = client.post("/v1/audio/jobs", json={"input": "hello", "voice": "klingon"})
    assert assert_envelope(voice, 400, "voice")["code"] == "voice_not_found"
    flac = client.post("/v1/audio/jobs", json={"input": "hello", "response_format": "flac"})
    assert assert_envelope(flac, 400, "response_format")["code"] == "unsupported_format"
    empty = client.post("/v1/audio/jobs", json={"input": " \n "})
    assert assert_envelope(empty, 400, "input")["code"] == "empty_input"
    model = client.post("/v1/audio/jobs", json={"input": "hi", "model": "nope"})
    assert assert_envelope(model, 404, "model")["code"] == "model_not_found"
    speed = client.post("/v1/audio/jobs", json={"input": "hi", "speed": 9})
    assert_envelope(speed, 400, "speed")
    bad_key = client.post(
        "/v1/audio/jobs", json={"input": "hi"}, headers={"Idempotency-Key": "has space"}
    )
    assert_envelope(bad_key, 400, "Idempotency-Key")


def test_an_unknown_job_is_404_on_every_route(client: httpx.Client) -> None:
    for response in (
        client.get("/v1/audio/jobs/job_nope"),
        client.get("/v1/audio/jobs/job_nope/audio"),
        client.delete("/v1/audio/jobs/job_nope"),
    ):
        assert assert_envelope(response, 404, "job_id")["code"] == "job_not_found"


def test_the_same_idempotency_key_returns_the_same_job(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "chapter-7-take-1"}
    body = {"input": "Once is enough. Twice is the same."}
    first = client.post("/v1/audio/jobs", json=body, headers=headers)
    again = client.post("/v1/audio/jobs", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = client.post("/v1/audio/jobs", json={"input": "Something else."}, headers=headers)
    assert assert_envelope(other, 409, "Idempotency-Key")["code"] == "idempotency_key_reused"
    fresh = client.post("/v1/audio/jobs", json=body, headers={"Idempotency-Key": "another"})
    assert fresh.json()["id"] != first.json()["id"]


def test_cancelling_stops_the_job(
    jobs_service: ServiceProcess,
    client: httpx.Client,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    set_engine_delay(jobs_service, 0.3)
    job = create_job(client, long_text(12))
    job_id = str(job["id"])
    wait_for(lambda: client.get(f"/v1/audio/jobs/{job_id}").json()["chunks"]["done"] >= 1, 20)
    cancelled = client.delete(f"/v1/audio/jobs/{job_id}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    done_then = cancelled.json()["chunks"]["done"]
    set_engine_delay(jobs_service, 0)
    # Chunks made while it was cancelled are not committed: no count grows afterwards.
    # Every chunk of it settled: none held, none left to read.
    wait_for(
        lambda: not any(holders(redis_server).values()) and not stream_length(redis_server), 20
    )
    after = client.get(f"/v1/audio/jobs/{job_id}").json()
    assert after["state"] == "cancelled"
    assert after["chunks"]["done"] <= done_then + 2  # at most the two workers' calls in flight
    assert after["chunks"]["done"] < after["chunks"]["total"]
    audio = client.get(f"/v1/audio/jobs/{job_id}/audio")
    assert assert_envelope(audio, 409, "job_id")["code"] == "job_cancelled"
    again = client.delete(f"/v1/audio/jobs/{job_id}")
    assert again.status_code == 200  # cancelling twice is the same cancel


def stream_length(server: RedisServer) -> int:
    store = redis.Redis.from_url(server.url)
    try:
        return int(store.xlen("voiceops:jobs:chunks"))
    finally:
        store.close()


def test_a_finished_job_cannot_be_cancelled(client: httpx.Client) -> None:
    job = create_job(client, "Short and done.")
    wait_job(client, str(job["id"]))
    response = client.delete(f"/v1/audio/jobs/{job['id']}")
    assert assert_envelope(response, 409, "job_id")["code"] == "job_finished"


def test_audio_streams_while_the_job_runs(
    jobs_service: ServiceProcess, client: httpx.Client
) -> None:
    set_engine_delay(jobs_service, 0.2)
    text = long_text(6)
    job = create_job(client, text, response_format="pcm")
    with client.stream("GET", f"/v1/audio/jobs/{job['id']}/audio") as response:
        assert response.status_code == 200
        assert response.headers["x-voiceops-job-state"] in ("queued", "running")
        assert "content-length" not in response.headers
        streamed = b"".join(response.iter_bytes())
    set_engine_delay(jobs_service, 0)
    done = client.get(f"/v1/audio/jobs/{job['id']}").json()
    assert done["state"] == "succeeded"
    assert streamed == client.get(f"/v1/audio/jobs/{job['id']}/audio").content
    assert_made_of_its_chunks(streamed, done, client, text)


def test_audio_so_far_without_following(jobs_service: ServiceProcess, client: httpx.Client) -> None:
    set_engine_delay(jobs_service, 0.5)
    job = create_job(client, long_text(8), response_format="pcm")
    job_id = str(job["id"])

    def first_made() -> bool:
        return any(
            m["index"] == 0 for m in client.get(f"/v1/audio/jobs/{job_id}").json()["made_by"]
        )

    wait_for(first_made, 20)
    so_far = client.get(f"/v1/audio/jobs/{job_id}/audio", params={"follow": "false"})
    assert so_far.status_code == 200
    assert len(so_far.content) > 0
    client.delete(f"/v1/audio/jobs/{job_id}")


def test_many_concurrent_jobs_all_complete(
    client: httpx.Client, jobs_service: ServiceProcess
) -> None:
    texts = [f"Job number {n}. " + long_text(2) for n in range(8)]

    def run(text: str) -> bool:
        with jobs_service.client(timeout=60.0) as own:
            job = create_job(own, text, response_format="pcm")
            done = wait_job(own, str(job["id"]))
            assert_made_of_its_chunks(
                own.get(f"/v1/audio/jobs/{job['id']}/audio").content, done, own, text
            )
            return True

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(run, texts))


def test_the_list_is_paged_newest_first(client: httpx.Client) -> None:
    ids = [str(create_job(client, f"Listed job {n}.")["id"]) for n in range(3)]
    page = client.get("/v1/audio/jobs", params={"limit": 2}).json()
    assert page["object"] == "list"
    assert [job["id"] for job in page["data"]] == ids[::-1][:2]
    assert (page["has_more"], page["next_offset"]) == (True, 2)
    rest = client.get("/v1/audio/jobs", params={"limit": 1, "offset": 2}).json()
    assert rest["data"][0]["id"] == ids[0]
    assert_envelope(client.get("/v1/audio/jobs", params={"limit": 0}), 400, "query.limit")


def test_every_key_of_a_job_expires(client: httpx.Client, redis_server: RedisServer) -> None:  # noqa: F811
    job = create_job(client, "This will expire. In a day.")
    wait_job(client, str(job["id"]))
    store = redis.Redis.from_url(redis_server.url)
    try:
        keys = list(store.scan_iter(f"voiceops:jobs:job:{job['id']}*"))
        assert {key.decode().rsplit(":", 1)[-1] for key in keys} >= {"text", "audio", "made"}
        for key in keys:
            assert 0 < store.ttl(key) <= 86_400, key
    finally:
        store.close()


def test_the_job_api_is_in_the_openapi_schema(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/audio/jobs"]) == {"get", "post"}
    assert set(paths["/v1/audio/jobs/{job_id}"]) == {"get", "delete"}
    assert "get" in paths["/v1/audio/jobs/{job_id}/audio"]
