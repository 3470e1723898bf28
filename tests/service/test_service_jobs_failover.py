"""A job through the loss of the pod making it, with the deterministic VITS voice.

The VITS voice with its noise scales at 0 speaks a text the same way every time
(espeak-ng does not: its noise sources differ from call to call), so the resumed
job's audio is compared sample for sample with an undisturbed synthesis.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest
from testsupport.redis_jobs import (
    create_job,
    holders,
    new_redis,
    set_engine_delay,
    start_jobs_service,
    wait_job,
)
from testsupport.service_process import ServiceProcess, wait_for
from voiceops_localcluster.redis_server import RedisServer
from voiceops_service.audio import chunk_text
from voiceops_service.engines.vits.voice import bundled_voice_files

pytestmark = pytest.mark.slow
TEXT = (
    "The job began on the first pod, which made the opening sentence and then hung. "
    "It was killed while it held the next part of the text, and another pod took it over. "
    "Nothing was lost and nothing was made twice: each chunk is in the audio exactly once.\n\n"
    "A chunk's audio is committed to Redis as soon as it is made, so the work survives. "
    "Workers in every pod take chunks through one consumer group, and a chunk whose holder "
    "falls silent is taken by another after the visibility timeout.\n\n"
    "The audio is assembled in order when it is read, one chunk at a time. "
    "A reader that arrives while the job runs gets the chunks made so far, then each next "
    "one as it is committed, until the last. The job records which pod, which tier and which "
    "engine made each chunk, so a failover in the middle of a chapter shows in its status. "
    "Expired jobs leave no keys behind: every key of a job shares one time to live. "
    "The last part is short."
)


def quiet_voice(directory: Path) -> Path:
    """The bundled voice with noise scales 0 (deterministic synthesis)."""
    directory.mkdir()
    bundled = bundled_voice_files()
    (directory / "en_US-joe-medium.onnx").symlink_to(bundled.model)
    config = json.loads(bundled.config.read_text(encoding="utf-8"))
    config["inference"].update(noise_scale=0.0, noise_w=0.0)
    (directory / "en_US-joe-medium.onnx.json").write_text(json.dumps(config), encoding="utf-8")
    return directory


def vits_env(voice: Path, pod: str, tier: str) -> dict[str, str]:
    return {
        "VOICEOPS_ENGINE": "vits",
        "VOICEOPS_MODEL_PATH": str(voice),
        "VOICEOPS_DEVICE": "cpu",
        "VOICEOPS_POD_NAME": pod,
        "VOICEOPS_TIER": tier,
        "VOICEOPS_SERVICE_ENGINES": "vits,espeak",
        "VOICEOPS_SERVICE_VOICE": "en_US-joe-medium",
    }


def kill_while_holding(doomed: ServiceProcess, server: RedisServer, job_id: str) -> int:
    """Let ``doomed`` make the first chunk, hang its next engine call, SIGKILL it while it
    holds a chunk; return how many chunks it made."""
    with doomed.client() as client:

        def made() -> int:
            return int(client.get(f"/v1/audio/jobs/{job_id}").json()["chunks"]["done"])

        wait_for(made, 60)
        set_engine_delay(doomed, 600)
        wait_for(lambda: holders(server).get(f"doomed-{doomed.process.pid}-0", 0) >= 1, 60)
        made_before_death = made()
    os.kill(doomed.process.pid, signal.SIGKILL)
    doomed.process.wait(timeout=10)
    return made_before_death


def test_a_killed_pods_chunk_is_resumed_and_the_audio_is_sample_exact(tmp_path: Path) -> None:
    assert len(chunk_text(TEXT)) >= 3
    voice = quiet_voice(tmp_path / "voice")
    server = new_redis(tmp_path / "redis")
    doomed = start_jobs_service(tmp_path, server, **vits_env(voice, "doomed", "gpu"))
    survivor: ServiceProcess | None = None
    try:
        with doomed.client() as client:
            job = create_job(client, TEXT, response_format="pcm")
        made_before_death = kill_while_holding(doomed, server, str(job["id"]))
        survivor = start_jobs_service(tmp_path, server, **vits_env(voice, "survivor", "gpu"))
        with survivor.client(timeout=60.0) as client:
            done = wait_job(client, str(job["id"]), deadline=120)
            audio = client.get(f"/v1/audio/jobs/{job['id']}/audio").content
            undisturbed = b"".join(
                client.post(
                    "/v1/audio/speech",
                    json={"model": "tts-1", "input": chunk, "response_format": "pcm"},
                ).content
                for chunk in chunk_text(TEXT)
            )
        assert audio == undisturbed
        pods = [maker["pod"] for maker in done["made_by"]]
        assert pods[:made_before_death] == ["doomed"] * made_before_death
        assert set(pods[made_before_death:]) == {"survivor"}
    finally:
        doomed.stop()
        if survivor is not None:
            survivor.stop()
        server.stop()


def test_the_fallback_tier_continues_a_job_and_says_which_engine_made_each_chunk(
    tmp_path: Path,
) -> None:
    voice = quiet_voice(tmp_path / "voice")
    server = new_redis(tmp_path / "redis")
    gpu = start_jobs_service(tmp_path, server, **vits_env(voice, "doomed", "gpu"))
    fallback: ServiceProcess | None = None
    try:
        with gpu.client() as client:
            job = create_job(client, TEXT, response_format="pcm")
        made_on_gpu = kill_while_holding(gpu, server, str(job["id"]))
        fallback = start_jobs_service(
            tmp_path,
            server,
            VOICEOPS_ENGINE="espeak",
            VOICEOPS_POD_NAME="fallback-0",
            VOICEOPS_TIER="fallback",
            VOICEOPS_SERVICE_ENGINES="vits,espeak",
            VOICEOPS_SERVICE_VOICE="en_US-joe-medium",
        )
        with fallback.client(timeout=60.0) as client:
            done = wait_job(client, str(job["id"]), deadline=60)
            total = done["chunks"]["total"]
            assert done["engines"] == {"vits": made_on_gpu, "espeak": total - made_on_gpu}
            makers = done["made_by"]
            assert [(m["engine"], m["tier"]) for m in makers[:made_on_gpu]] == [
                ("vits", "gpu")
            ] * made_on_gpu
            assert {(m["engine"], m["voice"], m["tier"]) for m in makers[made_on_gpu:]} == {
                ("espeak", "en-us", "fallback")
            }
            audio = client.get(f"/v1/audio/jobs/{job['id']}/audio")
            assert len(audio.content) == 2 * sum(m["samples"] for m in makers)
            assert httpx.get(f"{fallback.url}/readyz").status_code == 200
    finally:
        gpu.stop()
        if fallback is not None:
            fallback.stop()
        server.stop()
