"""The real service process with ``--engine vits`` over HTTP on a loopback port.

The voice is the bundled joe voice reached through ``VOICEOPS_MODEL_PATH`` (as
the operator mounts ``model.uri``), with a config whose noise scales are 0 so
that audio is deterministic: every caller's audio can then be compared with
the same text synthesised alone, in this process, without any batcher.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
from testsupport.service_process import (
    FAULT_TOKEN,
    ServiceProcess,
    metric_value,
    speech,
    start_service,
)
from voiceops_service.engines.base import SynthesisRequest
from voiceops_service.engines.vits import VitsEngine, VitsOptions
from voiceops_service.engines.vits.voice import bundled_voice_files

pytestmark = pytest.mark.slow
TEXTS = (
    "Good morning.",
    "The weather is lovely today.",
    "Please call me back when you can.",
    "Thanks!",
)
BATCH_MAX_SIZE = 4


@pytest.fixture(scope="module")
def quiet_voice_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled voice with noise scales 0 in its config (deterministic synthesis)."""
    directory = tmp_path_factory.mktemp("voice")
    bundled = bundled_voice_files()
    (directory / "en_US-joe-medium.onnx").symlink_to(bundled.model)
    config = json.loads(bundled.config.read_text(encoding="utf-8"))
    config["inference"].update(noise_scale=0.0, noise_w=0.0)
    (directory / "en_US-joe-medium.onnx.json").write_text(json.dumps(config), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def vits_service(
    tmp_path_factory: pytest.TempPathFactory, quiet_voice_dir: Path
) -> Iterator[ServiceProcess]:
    env = {
        "VOICEOPS_MODEL_PATH": str(quiet_voice_dir),
        "VOICEOPS_DEVICE": "cpu",
        "VOICEOPS_BATCH_MAX_SIZE": str(BATCH_MAX_SIZE),
        # Long enough that concurrent test requests always meet in one batch.
        "VOICEOPS_BATCH_MAX_DELAY_MS": "500",
        "VOICEOPS_MAX_CONCURRENCY": "8",
        "VOICEOPS_FAULT_INJECTION": "true",
        "VOICEOPS_FAULT_TOKEN": FAULT_TOKEN,
        "VOICEOPS_OOM_BACKOFF_INITIAL_SECONDS": "0",
        "VOICEOPS_OOM_BACKOFF_MAX_SECONDS": "0",
    }
    service = start_service(tmp_path_factory.mktemp("vits"), env, ["--engine", "vits"])
    yield service
    service.stop()


@pytest.fixture(scope="module")
def unbatched(quiet_voice_dir: Path) -> dict[str, np.ndarray]:
    """Each text synthesised alone in this process: the reference for every HTTP caller."""
    engine = VitsEngine(VitsOptions(model_path=str(quiet_voice_dir), device="cpu"))
    engine.load()
    return {text: engine.synthesize(SynthesisRequest(text=text)) for text in TEXTS}


def decode_wav(response: httpx.Response) -> tuple[np.ndarray, int]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("audio/wav")
    audio, rate = soundfile.read(io.BytesIO(response.content), dtype="float32")
    return audio, rate


def metric(service: ServiceProcess, name: str) -> float:
    return metric_value(service, name) or 0.0


def post_all(service: ServiceProcess, texts: tuple[str, ...]) -> list[httpx.Response]:
    def post(text: str) -> httpx.Response:
        with service.client(timeout=60) as client:
            return speech(client, input=text, response_format="wav")

    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        return list(pool.map(post, texts))


def assert_matches(audio: np.ndarray, reference: np.ndarray) -> None:
    assert audio.shape == reference.shape
    assert np.abs(audio - reference).max() < 1e-3  # 16-bit WAV quantisation is ~3e-5


def test_speaks_through_http(vits_service: ServiceProcess) -> None:
    with vits_service.client(timeout=60) as client:
        voices = client.get("/v1/audio/voices").json()
        assert "en_US-joe-medium" in json.dumps(voices)
        response = speech(client, input="Hello from the neural voice service.")
    audio, rate = decode_wav(response)
    assert rate == 22050
    seconds = audio.size / rate
    assert 1.5 < seconds < 6.0
    assert np.sqrt(np.mean(audio**2)) > 0.02


def test_concurrent_callers_get_their_own_audio_batched(
    vits_service: ServiceProcess, unbatched: dict[str, np.ndarray]
) -> None:
    passes_before = metric(vits_service, "voiceops_batch_size_count")
    items_before = metric(vits_service, "voiceops_batch_size_sum")
    responses = post_all(vits_service, TEXTS)
    for text, response in zip(TEXTS, responses, strict=True):
        audio, _ = decode_wav(response)
        assert_matches(audio, unbatched[text])
    passes = metric(vits_service, "voiceops_batch_size_count") - passes_before
    items = metric(vits_service, "voiceops_batch_size_sum") - items_before
    assert items == len(TEXTS)
    assert passes < len(TEXTS)  # requests really shared forward passes


def test_injected_oom_during_a_batch_is_recovered(
    vits_service: ServiceProcess, unbatched: dict[str, np.ndarray]
) -> None:
    headers = {"Authorization": f"Bearer {FAULT_TOKEN}"}
    ooms_before = metric(vits_service, "voiceops_cuda_oom_total")
    with vits_service.client() as client:
        answer = client.post("/admin/faults", json={"oom_next_calls": 1}, headers=headers)
        assert answer.status_code == 200, answer.text
    responses = post_all(vits_service, TEXTS)
    for text, response in zip(TEXTS, responses, strict=True):
        audio, _ = decode_wav(response)
        assert_matches(audio, unbatched[text])
    assert metric(vits_service, "voiceops_cuda_oom_total") == ooms_before + 1
    with vits_service.client() as client:
        assert client.get("/admin/faults", headers=headers).json()["oom_next_calls"] == 0
