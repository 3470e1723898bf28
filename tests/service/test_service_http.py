"""The real server over HTTP (uvicorn on loopback, espeak engine): endpoints and bad input."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import soundfile
from prometheus_client.parser import text_string_to_metric_families
from testsupport.service_process import ServiceProcess, assert_envelope, metric_value, speech
from voiceops_contract import metrics as contract

pytestmark = pytest.mark.slow

TEXT = "The quick brown fox jumps over the lazy dog. It was a bright cold day in April."


@pytest.fixture
def client(espeak_service: ServiceProcess) -> httpx.Client:
    with espeak_service.client() as client:
        yield client


def wav_audio(response: httpx.Response) -> tuple[np.ndarray, int]:
    assert response.status_code == 200, response.text
    data, rate = soundfile.read(io.BytesIO(response.content), dtype="float32")
    return data, rate


def test_readyz_is_ready_with_details(client: httpx.Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert body["reasons"] == []
    assert body["engine"]["name"] == "espeak"
    assert body["engine"]["device"] == "cpu"
    if not body["gpu"]["nvml"]:  # this CI machine: says so instead of inventing numbers
        assert body["gpu"]["nvml_error"]
        assert body["gpu"]["gpus"] == []


def test_healthz_reports_engine_worker(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "engine_call_seconds": 0.0}


def test_models_lists_openai_ids_and_engine(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    ids = {model["id"] for model in body["data"]}
    assert {"tts-1", "tts-1-hd", "espeak"} <= ids


def test_voices_lists_the_service_voice_and_native_lists_espeak_voices(
    client: httpx.Client,
) -> None:
    # No service settings (no operator): the service voice is this pod's own voice.
    body = client.get("/v1/audio/voices").json()
    assert body == {
        "default": "en-us",
        "voices": [{"name": "en-us", "language": "en-us", "engine": "espeak"}],
    }
    native = client.get("/v1/audio/voices", params={"native": "true"}).json()
    assert native["engine"] == "espeak"
    assert native["default"] == "en-us"
    by_name = {voice["name"]: voice for voice in native["voices"]}
    assert by_name["en-us"]["sample_rate"] == 22050
    assert "de" in by_name


def test_speech_wav_is_real_speech(client: httpx.Client) -> None:
    response = speech(client, input=TEXT, voice="en-us", response_format="wav")
    assert response.headers["content-type"] == "audio/wav"
    audio, rate = wav_audio(response)
    assert rate == 22050
    seconds = audio.size / rate
    words_per_second = len(TEXT.split()) / seconds
    assert 1.5 < words_per_second < 5.0
    assert float(np.sqrt(np.mean(audio**2))) > 0.02


def test_speech_pcm_and_flac_carry_the_same_audio(client: httpx.Client) -> None:
    wav, _ = wav_audio(speech(client, input=TEXT, response_format="wav"))
    pcm = speech(client, input=TEXT, response_format="pcm")
    assert pcm.status_code == 200
    assert pcm.headers["content-type"] == "audio/pcm"
    assert pcm.headers["x-voiceops-sample-rate"] == "22050"
    samples = np.frombuffer(pcm.content, dtype="<i2")
    flac, rate = wav_audio(speech(client, input=TEXT, response_format="flac"))
    assert rate == 22050
    for size in (samples.size, flac.size):
        assert abs(size - wav.size) < 0.05 * wav.size  # espeak jitters by a few samples


def test_speed_changes_duration(client: httpx.Client) -> None:
    normal, _ = wav_audio(speech(client, input=TEXT, speed=1.0))
    fast, _ = wav_audio(speech(client, input=TEXT, speed=2.0))
    assert fast.size < 0.7 * normal.size


def test_openai_voice_and_model_aliases_are_accepted(client: httpx.Client) -> None:
    for body, spoke in (
        ({"voice": "alloy", "model": "tts-1-hd"}, "en-us"),
        ({"voice": "en-gb", "model": "espeak"}, "en-gb"),
    ):
        response = speech(client, **body)
        audio, _ = wav_audio(response)
        assert audio.size > 0
        assert response.headers["x-voiceops-engine"] == "espeak"
        assert response.headers["x-voiceops-voice"] == spoke


def test_long_input_is_spoken_whole(client: httpx.Client) -> None:
    sentence = "This sentence is repeated to build a long input for the service. "
    short_text = sentence * 8
    long_text = (sentence * 64)[:4096]
    long_text = long_text[: long_text.rfind(" ")]  # 4096 chars at most, whole words
    short_audio, _ = wav_audio(speech(client, input=short_text))
    long_audio, _ = wav_audio(speech(client, input=long_text))
    ratio = long_audio.size / short_audio.size
    expected = len(long_text.split()) / len(short_text.split())
    assert 0.85 * expected < ratio < 1.15 * expected  # nothing dropped, nothing repeated


BAD_BODIES = [
    ({"model": "tts-1", "input": ""}, 400, "input"),
    ({"model": "tts-1", "input": "   \n "}, 400, "input"),
    ({"model": "tts-1", "input": "a" * 4097}, 400, "input"),
    ({"model": "tts-1"}, 400, "input"),
    ({"model": "tts-1", "input": 123}, 400, "input"),
    ({"model": "tts-1", "input": "hi", "voice": "klingon"}, 400, "voice"),
    ({"model": "gpt-99", "input": "hi"}, 404, "model"),
    ({"input": "hi"}, 400, "model"),
    ({"model": "tts-1", "input": "hi", "response_format": "mp3"}, 400, "response_format"),
    ({"model": "tts-1", "input": "hi", "response_format": "opus"}, 400, "response_format"),
    ({"model": "tts-1", "input": "hi", "response_format": "ogg"}, 400, "response_format"),
    ({"model": "tts-1", "input": "hi", "speed": 0.1}, 400, "speed"),
    ({"model": "tts-1", "input": "hi", "speed": 4.5}, 400, "speed"),
    ({"model": "tts-1", "input": "hi", "speed": "fast"}, 400, "speed"),
    ({"model": "tts-1", "input": "hi", "speed": None}, 400, "speed"),
    ({"model": "tts-1", "input": "hi", "stream": "maybe"}, 400, "stream"),
    (
        {"model": "tts-1", "input": "hi", "stream": True, "response_format": "flac"},
        400,
        "response_format",
    ),
    ([1, 2, 3], 400, "body"),
    ("just a string", 400, "body"),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD_BODIES)
def test_bad_input_is_a_4xx_naming_the_field(
    client: httpx.Client, body: object, status: int, param: str
) -> None:
    assert_envelope(client.post("/v1/audio/speech", json=body), status, param)


@pytest.mark.parametrize(
    ("content", "content_type", "status", "param"),
    [
        (
            b'{"model": "tts-1", "input": "\\ud800 lone surrogate"}',
            "application/json",
            400,
            "input",
        ),
        (b"{not json", "application/json", 400, "body"),
        (b'{"model": "tts-1", "input": "hi", "speed": NaN}', "application/json", 400, "speed"),
        (b"", "application/json", 400, "body"),
        (b'{"model": "tts-1", "input": "hi"}', "text/plain", 415, "Content-Type"),
        (b'{"model": "tts-1", "input": "hi"}', None, 415, "Content-Type"),
        (b"model=tts-1&input=hi", "application/x-www-form-urlencoded", 415, "Content-Type"),
    ],
)
def test_malformed_body_and_wrong_content_type(
    client: httpx.Client, content: bytes, content_type: str | None, status: int, param: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/audio/speech", content=content, headers=headers)
    assert_envelope(response, status, param)


def test_oversized_body_is_refused_unread_with_413(client: httpx.Client) -> None:
    big = b'{"model": "tts-1", "input": "' + b"a" * 200_000 + b'"}'
    declared = client.post(
        "/v1/audio/speech", content=big, headers={"content-type": "application/json"}
    )
    assert_envelope(declared, 413, "body")

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while it streams
        for start in range(0, len(big), 16384):
            yield big[start : start + 16384]

    streamed = client.post(
        "/v1/audio/speech", content=chunked(), headers={"content-type": "application/json"}
    )
    assert_envelope(streamed, 413, "body")
    assert "transfer-encoding" not in declared.request.headers
    assert streamed.request.headers["transfer-encoding"] == "chunked"


def test_the_longest_valid_input_fits_the_body_limit(client: httpx.Client) -> None:
    # 4096 characters outside the BMP, each escaped as a surrogate pair (12 bytes):
    # the body is read and parsed (the unknown model is what fails), not refused as too large.
    body = json.dumps({"model": "no-such-model", "input": "\U0001f600" * 4096}).encode()
    assert len(body) > 48 * 1024
    response = client.post(
        "/v1/audio/speech", content=body, headers={"content-type": "application/json"}
    )
    assert_envelope(response, 404, "model")


def test_refusals_are_counted_under_the_speech_route(
    client: httpx.Client, espeak_service: ServiceProcess
) -> None:
    route = "/v1/audio/speech"
    before = metric_value(espeak_service, "voiceops_requests_total", route=route, code="415") or 0
    client.post(route, content=b"{}", headers={"content-type": "text/plain"})
    after = metric_value(espeak_service, "voiceops_requests_total", route=route, code="415")
    assert after == before + 1


def test_unknown_route_and_wrong_method_use_the_envelope(client: httpx.Client) -> None:
    assert_envelope(client.get("/v1/nothing-here"), 404, None)
    assert_envelope(client.get("/v1/audio/speech"), 405, None)
    assert_envelope(client.delete("/healthz"), 405, None)


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_fault_endpoints_do_not_exist_when_disabled(client: httpx.Client, method: str) -> None:
    response = client.request(
        method, "/admin/faults", headers={"Authorization": "Bearer anything"}, json={}
    )
    assert_envelope(response, 404, None)


def test_streaming_wav_arrives_sentence_by_sentence(client: httpx.Client) -> None:
    text = "First sentence here. Second sentence follows! And a third one? Yes, a fourth."
    chunks: list[bytes] = []
    with client.stream(
        "POST",
        "/v1/audio/speech",
        json={"model": "tts-1", "input": text, "stream": True, "response_format": "wav"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "audio/wav"
        assert response.headers.get("transfer-encoding") == "chunked"
        chunks = list(response.iter_raw())
    body = b"".join(chunks)
    assert body[:4] == b"RIFF"
    assert struct.unpack("<I", body[4:8])[0] == 0xFFFFFFFF  # length unknown up front
    samples = np.frombuffer(body[44:], dtype="<i2")
    # One engine call per sentence: the same audio as asking for each sentence alone.
    sentences = ["First sentence here.", "Second sentence follows!", "And a third one?"]
    sentences.append("Yes, a fourth.")
    separately = sum(wav_audio(speech(client, input=s))[0].size for s in sentences)
    assert abs(samples.size - separately) < 0.06 * separately  # espeak jitters ~2%


def test_streaming_pcm_is_raw_samples(client: httpx.Client) -> None:
    response = client.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": TEXT, "stream": True, "response_format": "pcm"},
    )
    assert response.status_code == 200
    assert response.content[:4] != b"RIFF"
    samples = np.frombuffer(response.content, dtype="<i2")
    assert samples.size / 22050 > 1.0
    assert np.abs(samples).max() > 1000


def test_metrics_parse_and_carry_every_contract_name(
    client: httpx.Client, espeak_service: ServiceProcess
) -> None:
    assert speech(client).status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    gpu_visible = client.get("/readyz").json()["gpu"]["nvml"]
    for spec in contract.ALL:
        # Prometheus text format: counters are named without _total, infos are gauges.
        name = spec.name.removesuffix("_total") if spec.type == "counter" else spec.name
        expected_type = "gauge" if spec.type == "info" else spec.type
        assert name in families, spec.name
        assert families[name].type == expected_type, spec.name
        if spec.name in contract.GPU_ONLY and not gpu_visible:
            assert families[name].samples == [], f"{spec.name} exported without a GPU"
    info = families["voiceops_engine_info"].samples[0]
    assert info.labels == {
        "engine": "espeak",
        "voice": "en-us",
        "version": "libespeak-ng 1.52.0",
        "device": "cpu",
    }
    ok = metric_value(
        espeak_service, "voiceops_requests_total", route="/v1/audio/speech", code="200"
    )
    assert ok is not None
    assert ok >= 1
    assert metric_value(espeak_service, "voiceops_audio_seconds_total") > 0
    assert metric_value(espeak_service, "voiceops_realtime_factor_count") >= 1
    assert metric_value(espeak_service, "voiceops_batch_size_count") >= 1
    assert metric_value(espeak_service, "voiceops_time_to_first_audio_seconds_count") >= 1
    assert metric_value(espeak_service, "voiceops_degraded") == 0.0
    assert metric_value(espeak_service, "voiceops_cuda_oom_total") == 0.0


def test_control_characters_do_not_truncate_input(client: httpx.Client) -> None:
    clean, _ = wav_audio(speech(client, input=TEXT))
    with_nul, _ = wav_audio(speech(client, input=TEXT.replace(". ", ".\u0000 ")))
    assert abs(with_nul.size - clean.size) < 0.1 * clean.size  # truncation would halve it
