"""Model hot swap on the real service process (vits on CPU), through the token-guarded admin API.

One ``voiceops-service --engine vits`` process per module, whose NVML is the fake
``libnvidia-ml.so.1`` (tools/fake-nvml) so GPU memory enters where real readings
do. Model versions are derived from the bundled joe voice (``model_versions``).
Each test reads the active version it starts from, so tests do not depend on
their order. Every wait has a deadline.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from testsupport.model_versions import file_uri, nan_weights, reexported, truncated
from testsupport.needs import build_fake_nvml
from testsupport.service_process import (
    ServiceProcess,
    assert_envelope,
    metric_value,
    speech,
    start_service,
    wait_for,
)
from voiceops_contract import metrics as contract
from voiceops_contract import pod
from voiceops_operator.routing_notices import sign_model_command, sign_notice
from voiceops_service.models import CanaryError, check_canary, model_path_for_uri

pytestmark = pytest.mark.slow

TOKEN = "test-model-token"
POD = "tts-gpu-5f6d-abcde"
OPERATOR_KEY = Ed25519PrivateKey.generate()
AUTH = {pod.MODEL_ADMIN_TOKEN_HEADER: TOKEN}
GIB = 2**30
SWAP_TIMEOUT = 120.0


class Versions:
    """Directories of the derived model versions, made once per module."""

    def __init__(self, root: Path) -> None:
        self.v1 = reexported(root / "v1")
        self.slow = reexported(root / "slow", length_scale=1.6)
        self.v2 = reexported(root / "v2", length_scale=1.1)
        self.nan = nan_weights(root / "nan")
        self.truncated = truncated(root / "truncated")


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    return Versions(tmp_path_factory.mktemp("model-versions"))


@pytest.fixture(scope="module")
def nvml_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder of the fake libnvidia-ml.so.1, its state file): one 80 GiB GPU, 30 used."""
    out = build_fake_nvml(tmp_path_factory.mktemp("fake-nvml"))
    state = out / "state"
    write_gpu_memory(state, used=30 * GIB)
    return out, state


def write_gpu_memory(state: Path, used: int) -> None:
    partial = state.with_name("state.partial")
    partial.write_text(f"device_count=1\ngpu0.memory_total={80 * GIB}\ngpu0.memory_used={used}\n")
    partial.replace(state)  # the fake re-reads the file on every call: one atomic change


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, versions: Versions, nvml_state: tuple[Path, Path]
) -> Iterator[ServiceProcess]:
    library_dir, state = nvml_state
    env = {
        "VOICEOPS_MODEL_PATH": str(versions.v1),
        "VOICEOPS_MODEL_VERSION": "v1",
        "VOICEOPS_DEVICE": "cpu",
        "VOICEOPS_MAX_CONCURRENCY": "4",
        "VOICEOPS_MODEL_ADMIN": "true",
        "VOICEOPS_MODEL_ADMIN_TOKEN": TOKEN,
        # The operator's key: its signed commands pass beside the token.
        "VOICEOPS_POD_NAME": POD,
        "VOICEOPS_ROUTING_PUBLIC_KEY": base64.b64encode(
            OPERATOR_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        ).decode(),
        # A shared 2-core machine under test load: the RTF rule has its own test below.
        "VOICEOPS_MODEL_SWAP_MAX_RTF": "50",
        "LD_LIBRARY_PATH": ":".join(
            p for p in (str(library_dir), os.environ.get("LD_LIBRARY_PATH", "")) if p
        ),
        "VOICEOPS_FAKE_NVML_STATE": str(state),
    }
    process = start_service(tmp_path_factory.mktemp("vits-swap"), env, ["--engine", "vits"])
    yield process
    process.stop()


@pytest.fixture
def admin(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=SWAP_TIMEOUT, headers=AUTH) as client:
        yield client


def active_version(client: httpx.Client) -> str:
    listing = client.get("/v1/models", params={"versions": "true"}).json()
    return listing["versions"]["active"]["version"]


def swap_to(client: httpx.Client, directory: Path, version: str) -> httpx.Response:
    return client.post(pod.PATH_MODELS_ADMIN, json={"uri": file_uri(directory), "version": version})


def test_the_admin_api_needs_its_token(service: ServiceProcess) -> None:
    with service.client() as client:
        refused = client.post(pod.PATH_MODELS_ADMIN, json={"uri": ""})
        assert_envelope(refused, 401, "Authorization")
        wrong = client.get(pod.PATH_MODELS_ADMIN, headers={pod.MODEL_ADMIN_TOKEN_HEADER: "nope"})
        assert_envelope(wrong, 401, "Authorization")
        bearer = client.get(pod.PATH_MODELS_ADMIN, headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        assert set(bearer.json()) == {"active", "previous", "swapping", "last_swap"}
        bad_uri = client.post(pod.PATH_MODELS_ADMIN, json={"uri": "s3://bucket/x"}, headers=AUTH)
        assert_envelope(bad_uri, 400, "uri")


def test_the_admin_api_takes_the_operators_signed_commands_for_this_pod_only(
    service: ServiceProcess,
) -> None:
    now = time.time()

    def get(token: str) -> httpx.Response:
        with service.client() as client:
            return client.get(pod.PATH_MODELS_ADMIN, headers={"Authorization": f"Bearer {token}"})

    assert get(sign_model_command(OPERATOR_KEY, POD, now)).status_code == 200
    other_pod = get(sign_model_command(OPERATOR_KEY, "tts-gpu-other", now))
    assert_envelope(other_pod, 401, "Authorization")
    assert "tts-gpu-other" in other_pod.json()["error"]["message"]
    # A routing notice is signed with the same key but is not a model command.
    assert_envelope(get(sign_notice(OPERATOR_KEY, POD, True, now)), 401, "Authorization")
    assert_envelope(
        get(sign_model_command(Ed25519PrivateKey.generate(), POD, now)), 401, "Authorization"
    )
    assert_envelope(get(sign_model_command(OPERATOR_KEY, POD, now - 600)), 401, "Authorization")


def test_admin_api_is_absent_unless_enabled(espeak_service: ServiceProcess) -> None:
    with espeak_service.client() as client:
        assert client.get(pod.PATH_MODELS_ADMIN, headers=AUTH).status_code == 404


def test_swap_under_steady_load_fails_no_request_and_rolls_back(
    service: ServiceProcess, admin: httpx.Client, versions: Versions
) -> None:
    start = active_version(admin)
    target = f"load-{start}"  # a name never active before in this module
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def caller(worker: int) -> None:
        with service.client(timeout=60.0) as client:
            count = 0
            while not stop.is_set():
                count += 1  # distinct texts: every request reaches the engine
                response = speech(client, input=f"Caller {worker} says number {count}.")
                answers.append(
                    (response.status_code, response.headers.get(pod.HEADER_MODEL_VERSION))
                )

    callers = [threading.Thread(target=caller, args=(n,)) for n in range(2)]
    for thread in callers:
        thread.start()
    try:
        swapped = swap_to(admin, versions.v2, target)
        answered_at_swap = len(answers)
        wait_for(lambda: len(answers) >= answered_at_swap + 4, 60.0)  # callers go on after it
    finally:
        stop.set()
        for thread in callers:
            thread.join(timeout=60)
    assert swapped.status_code == 200, swapped.text
    report = swapped.json()
    assert report["result"] == "swapped"
    assert (report["active"], report["previous"]) == (target, start)
    assert report["canary"]["sample_rate"] == 22050
    assert report["load_seconds"] > 0
    assert [code for code, _ in answers if code != 200] == []  # zero failed requests
    spoken = [version for _, version in answers if version]
    assert spoken[0] == start
    assert spoken[-1] == target
    listing = admin.get("/v1/models", params={"versions": "true"}).json()
    assert listing["versions"]["active"]["version"] == target
    assert listing["versions"]["previous"]["version"] == start
    assert "versions" not in admin.get("/v1/models").json()  # every tier lists the same bytes
    assert metric_value(service, "voiceops_model_swaps_total", result="swapped") >= 1
    info = metric_value(service, contract.MODEL_VERSION_INFO.name, version=target, previous=start)
    assert info == 1

    rolled = admin.post(pod.PATH_MODELS_ROLLBACK)
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["rollback"] is True
    assert active_version(admin) == start
    assert speech(admin).headers[pod.HEADER_MODEL_VERSION] == start


def test_bad_models_are_refused_and_the_active_one_keeps_serving(
    service: ServiceProcess, admin: httpx.Client, versions: Versions, nvml_state: tuple[Path, Path]
) -> None:
    start = active_version(admin)
    corrupt = swap_to(admin, versions.nan, "nan")
    error = assert_envelope(corrupt, 422, None)
    assert error["code"] == "validation_failed"
    assert "non-finite" in error["message"]

    unreadable = swap_to(admin, versions.truncated, "truncated")
    error = assert_envelope(unreadable, 422, "uri")
    assert error["code"] == "load_failed"
    assert "not a readable ONNX model" in error["message"]

    _, state = nvml_state
    write_gpu_memory(state, used=int(79.9 * GIB))  # a 60 MB model would pass 97 %
    try:
        pressed = swap_to(admin, versions.v2, "under-pressure")
    finally:
        write_gpu_memory(state, used=30 * GIB)
    error = assert_envelope(pressed, 507, None)
    assert error["code"] == "refused_memory"
    assert "critical ratio 97%" in error["message"]

    assert active_version(admin) == start
    answer = speech(admin)
    assert answer.status_code == 200
    assert answer.headers[pod.HEADER_MODEL_VERSION] == start
    for result in ("validation_failed", "load_failed", "refused_memory"):
        assert metric_value(service, "voiceops_model_swaps_total", result=result) >= 1
    last = admin.get(pod.PATH_MODELS_ADMIN).json()["last_swap"]
    assert last["result"] == "refused_memory"


def decode_samples(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.frombuffer(response.content, dtype="<i2")


def test_the_cache_never_serves_the_old_model_after_a_swap(
    service: ServiceProcess, admin: httpx.Client, versions: Versions
) -> None:
    start = active_version(admin)
    text = "Press one for sales."
    first = speech(admin, input=text, response_format="pcm")
    again = speech(admin, input=f"  {text} ", response_format="pcm")  # the same, normalised
    assert first.headers[pod.HEADER_AUDIO_CACHE] == "miss"
    assert again.headers[pod.HEADER_AUDIO_CACHE] == "hit"
    assert again.content == first.content
    assert again.headers[pod.HEADER_MODEL_VERSION] == start

    slow = f"slow-{start}"
    assert swap_to(admin, versions.slow, slow).status_code == 200
    after = speech(admin, input=text, response_format="pcm")
    assert after.headers[pod.HEADER_MODEL_VERSION] == slow
    assert after.headers[pod.HEADER_AUDIO_CACHE] == "miss"
    # length_scale 1.6 against at most 1.1: the new model's audio is clearly longer.
    assert decode_samples(after).size > 1.3 * decode_samples(first).size
    evicted = metric_value(service, "voiceops_audio_cache_evictions_total", reason="model_swap")
    assert evicted >= 1
    assert admin.post(pod.PATH_MODELS_ROLLBACK).status_code == 200
    back = speech(admin, input=text, response_format="pcm")
    assert back.headers[pod.HEADER_MODEL_VERSION] == start
    assert back.headers[pod.HEADER_AUDIO_CACHE] == "miss"  # the slow model's entry went too


def test_canary_rules_name_what_is_wrong() -> None:
    rate = 22050
    speech_like = (0.3 * np.sin(np.arange(rate) / 7.0)).astype(np.float32)
    assert check_canary(speech_like, rate, rate, 0.1, 1.0).realtime_factor == pytest.approx(0.1)
    cases = {
        "sample rate 16000 Hz": (speech_like, 16000, 0.1, 1.0),
        "no audio": (np.zeros(0, dtype=np.float32), rate, 0.1, 1.0),
        "non-finite": (np.full(rate, np.inf, dtype=np.float32), rate, 0.1, 1.0),
        "silent": (np.zeros(rate, dtype=np.float32), rate, 0.1, 1.0),
        "real-time factor 2.000 is over the bound 1": (speech_like, rate, 2.0, 1.0),
    }
    for message, (audio, got_rate, seconds, bound) in cases.items():
        with pytest.raises(CanaryError, match=message):
            check_canary(audio, got_rate, rate, seconds, bound)


def test_model_uris_map_to_pod_paths() -> None:
    assert model_path_for_uri("") == ""
    assert model_path_for_uri("file:///models/joe") == "/models/joe"
    assert model_path_for_uri("pvc://voices/joe/v2") == f"{pod.MODEL_MOUNT_PATH}/joe/v2"
    assert model_path_for_uri("pvc://voices") == pod.MODEL_MOUNT_PATH
    for bad in ("s3://bucket/x", "file://relative", "/abs/path", "pvc://voices/../etc"):
        with pytest.raises(ValueError, match="uri"):
            model_path_for_uri(bad)
