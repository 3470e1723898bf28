"""Jobs through failures, with real processes: a worker SIGKILLed holding a chunk, Redis
restarted (append-only file on), Redis unreachable."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
from testsupport.redis_jobs import (
    assert_made_of_its_chunks,
    create_job,
    holders,
    long_text,
    new_redis,
    set_engine_delay,
    start_jobs_service,
    wait_job,
)
from testsupport.service_process import assert_envelope, speech, start_service, wait_for
from voiceops_localcluster.ports import free_port

pytestmark = pytest.mark.slow


def test_a_chunk_held_by_a_killed_worker_is_made_by_another(tmp_path: Path) -> None:
    server = new_redis(tmp_path / "redis")
    doomed = start_jobs_service(tmp_path, server, VOICEOPS_POD_NAME="doomed")
    survivor = None
    try:
        # The doomed pod's engine calls hang, so it holds its chunk when it dies.
        set_engine_delay(doomed, 120)
        text = long_text(4)
        with doomed.client(timeout=30.0) as client:
            job = create_job(client, text, response_format="pcm")
        wait_for(lambda: holders(server).get(f"doomed-{doomed.process.pid}-0", 0) >= 1, 20)
        os.kill(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait(timeout=10)
        survivor = start_jobs_service(tmp_path, server, VOICEOPS_POD_NAME="survivor")
        with survivor.client(timeout=30.0) as client:
            done = wait_job(client, str(job["id"]))
            audio = client.get(f"/v1/audio/jobs/{job['id']}/audio").content
            assert {maker["pod"] for maker in done["made_by"]} == {"survivor"}
            assert done["chunks"]["done"] == done["chunks"]["total"]
            assert_made_of_its_chunks(audio, done, client, text)
        assert not any(holders(server).values())  # every chunk settled, none held
    finally:
        doomed.stop()
        if survivor is not None:
            survivor.stop()
        server.stop()


def test_a_redis_restart_loses_no_job(tmp_path: Path) -> None:
    server = new_redis(tmp_path / "redis")
    service = start_jobs_service(tmp_path, server)
    try:
        set_engine_delay(service, 0.3)
        text = long_text(5)
        with service.client(timeout=30.0) as client:
            job = create_job(client, text, response_format="pcm")
            wait_for(lambda: client.get(f"/v1/audio/jobs/{job['id']}").json()["chunks"]["done"], 20)
            server.kill()  # SIGKILL: only the append-only file survives
            unavailable = client.get(f"/v1/audio/jobs/{job['id']}")
            assert assert_envelope(unavailable, 503, None)["code"] == "jobs_unavailable"
            server.start()
            set_engine_delay(service, 0)
            done = wait_job(client, str(job["id"]))
            audio = client.get(f"/v1/audio/jobs/{job['id']}/audio").content
            assert_made_of_its_chunks(audio, done, client, text)
    finally:
        service.stop()
        server.stop()


def test_without_redis_the_job_api_is_503_and_speech_keeps_serving(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    service = start_service(
        tmp_path,
        {"VOICEOPS_ENGINE": "espeak", "VOICEOPS_JOBS_REDIS_URL": url, "VOICEOPS_WEB_UI": "false"},
    )
    try:
        with service.client(timeout=30.0) as client:
            for response in (
                client.post("/v1/audio/jobs", json={"input": "hello"}),
                client.get("/v1/audio/jobs"),
                client.get("/v1/audio/jobs/job_x"),
            ):
                error = assert_envelope(response, 503, None)
                assert error["code"] == "jobs_unavailable"
                assert url.removesuffix("/0") in str(error["message"])
                assert "/v1/audio/speech keeps serving" in str(error["message"])
            assert speech(client).status_code == 200
            assert httpx.get(f"{service.url}/readyz").status_code == 200
    finally:
        service.stop()


def test_the_password_in_the_redis_url_is_never_shown(tmp_path: Path) -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    service = start_service(
        tmp_path,
        {"VOICEOPS_ENGINE": "espeak", "VOICEOPS_JOBS_REDIS_URL": url, "VOICEOPS_WEB_UI": "false"},
    )
    try:
        with service.client(timeout=30.0) as client:
            message = client.get("/v1/audio/jobs").json()["error"]["message"]
        assert "s3cret" not in message
        assert "user:***@127.0.0.1" in message
        assert "s3cret" not in service.log()
    finally:
        service.stop()


def test_without_a_redis_url_there_is_no_job_api(tmp_path: Path) -> None:
    service = start_service(tmp_path, {"VOICEOPS_ENGINE": "espeak", "VOICEOPS_WEB_UI": "false"})
    try:
        response = httpx.post(f"{service.url}/v1/audio/jobs", json={"input": "hello"})
        assert response.status_code == 404
        assert "/v1/audio/jobs" not in httpx.get(f"{service.url}/openapi.json").json()["paths"]
    finally:
        service.stop()
