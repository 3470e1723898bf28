"""One service to its clients: both tiers accept and list the same models and voices.

A VoiceService's GPU tier (vits, the Piper voice ``en_US-joe-medium``) and its
CPU fallback tier (espeak) get the same ``service_engines`` and ``service_voice``
from the operator. During a failover a client that uses what ``/v1/models`` and
``/v1/audio/voices`` advertised must keep working on the fallback, which speaks
with its nearest voice and says so in ``X-Voiceops-Voice``.

Pure functions first, then in-process apps with the real engines (FastAPI's
TestClient), then the official ``openai`` client against an espeak pod.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import httpx2
import openai
import pytest
import soundfile
from fastapi.testclient import TestClient
from testsupport.service_process import FAULT_TOKEN, assert_envelope, wait_for
from voiceops_contract import pod
from voiceops_service.app import close_service, create_app, load_service
from voiceops_service.engines.base import Audio, Engine, SynthesisRequest, VoiceInfo
from voiceops_service.engines.espeak import EspeakEngine
from voiceops_service.errors import ApiError
from voiceops_service.settings import ServiceSettings
from voiceops_service.speech import (
    CatalogueVoice,
    VoiceBook,
    accepted_models,
    build_catalogue,
    nearest_voice,
    resolve_voice,
    same_language,
    voice_book,
    voice_language,
)

SERVICE: dict[str, Any] = {
    "service_engines": ("vits", "espeak"),
    "service_voice": "en_US-joe-medium",
}
OPENAI_IDS = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"]
CATALOGUE = {
    "default": "en_US-joe-medium",
    "voices": [{"name": "en_US-joe-medium", "language": "en_US", "engine": "vits"}],
}


def voices(*codes: str) -> list[VoiceInfo]:
    """espeak-like voices: the name is the language code."""
    return [VoiceInfo(name=code, language=code, sample_rate=22050) for code in codes]


class FakeEngine(Engine):
    """An engine with a given voice list (no audio): for the pure catalogue functions."""

    version = "fake"

    def __init__(self, name: str, native: list[VoiceInfo], default: str) -> None:
        self.name = name
        self._native = native
        self._default = default

    @property
    def sample_rate(self) -> int:
        return 22050

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def default_voice(self) -> str:
        return self._default

    def load(self) -> None:
        return None

    def voices(self) -> list[VoiceInfo]:
        return list(self._native)

    def synthesize(self, request: SynthesisRequest) -> Audio:
        raise NotImplementedError


# espeak's own order: Afrikaans first, as the real list.
ESPEAK_LIKE = voices("af", "de", "en-gb", "en-us", "fr-be", "fr-fr", "pt", "pt-br")


# --- pure functions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "language"),
    [
        ("en_US-joe-medium", "en_US"),
        ("de_DE-thorsten-low", "de_DE"),
        ("pt_BR-faber-medium", "pt_BR"),
        ("en-us", "en-us"),  # an espeak voice: its name is its language code
        ("de", "de"),
        ("joe", "joe"),  # neither: taken as it is (no voice matches: the engine's default)
    ],
)
def test_voice_language_from_the_name_alone(name: str, language: str) -> None:
    assert voice_language(name) == language


def test_languages_compare_case_insensitively_with_underscore_and_hyphen_equal() -> None:
    assert same_language("en_US", "en-us")
    assert same_language("EN-gb", "en_GB")
    assert not same_language("en_US", "en-gb")


@pytest.mark.parametrize(
    ("language", "nearest"),
    [
        ("en_US", "en-us"),  # same language (case and _/- ignored)
        ("EN-GB", "en-gb"),
        ("pt_BR", "pt-br"),  # exact beats the primary subtag
        ("pt_PT", "pt"),  # the primary subtag
        ("de_DE", "de"),
        ("de", "de"),
        ("fr_CA", "fr-be"),  # the first voice of a variant of the primary subtag
        ("fr", "fr-be"),
        ("en_AU", "en-us"),  # no en_AU voice: the default voice speaks English
        ("e", "en-us"),  # a prefix of a subtag is not the subtag: the default
        ("ja_JP", "en-us"),  # nothing near: the engine's default voice
        ("", "en-us"),
    ],
)
def test_nearest_voice(language: str, nearest: str) -> None:
    assert nearest_voice(language, ESPEAK_LIKE, default="en-us") == nearest


@pytest.fixture(scope="module")
def espeak_engine() -> EspeakEngine:
    engine = EspeakEngine()
    engine.load()
    return engine


@pytest.mark.parametrize(
    ("service_voice", "nearest"),
    [
        ("en_US-joe-medium", "en-us"),
        ("en_GB-alan-medium", "en-gb"),
        ("de_DE-thorsten-medium", "de"),
        ("pt_BR-faber-medium", "pt-br"),
        ("es_MX-ald-medium", "es"),
        ("xx_XX-nobody-low", "en-us"),
    ],
)
def test_nearest_voice_of_the_real_espeak(
    espeak_engine: EspeakEngine, service_voice: str, nearest: str
) -> None:
    spoken = nearest_voice(
        voice_language(service_voice), espeak_engine.voices(), espeak_engine.default_voice
    )
    assert spoken == nearest


def test_espeak_names_are_their_languages(espeak_engine: EspeakEngine) -> None:
    """Why a vits pod can list an espeak service voice exactly as an espeak pod does."""
    for voice in espeak_engine.voices():
        assert voice_language(voice.name) == voice.language


def book_for(engine: Engine, **service: Any) -> VoiceBook:
    return voice_book(engine, ServiceSettings(**service))


@pytest.mark.parametrize(
    ("requested", "spoken"),
    [
        (None, "en-us"),  # no voice: the service voice, by its nearest voice here
        ("alloy", "en-us"),  # OpenAI aliases: the service voice, never the first voice (af)
        ("shimmer", "en-us"),
        ("en_US-joe-medium", "en-us"),  # the catalogue voice, by its nearest voice
        ("de", "de"),  # this engine's own voice: itself
        ("af", "af"),
    ],
)
def test_resolve_voice_on_the_fallback_tier(requested: str | None, spoken: str) -> None:
    book = book_for(FakeEngine("espeak", ESPEAK_LIKE, "en-us"), **SERVICE)
    assert resolve_voice(requested, book) == spoken


@pytest.mark.parametrize("requested", [None, "alloy", "en_US-joe-medium"])
def test_resolve_voice_on_the_gpu_tier(requested: str | None) -> None:
    joe = VoiceInfo("en_US-joe-medium", "en-US", 22050, engine="vits")
    book = book_for(FakeEngine("vits", [joe], "en_US-joe-medium"), **SERVICE)
    assert resolve_voice(requested, book) == "en_US-joe-medium"


@pytest.mark.parametrize("engine_name", ["espeak", "vits"])
def test_unknown_voice_is_voice_not_found_listing_the_catalogue(engine_name: str) -> None:
    engine = FakeEngine(engine_name, ESPEAK_LIKE[:1], "af")
    with pytest.raises(ApiError) as raised:
        resolve_voice("klingon", book_for(engine, **SERVICE))
    error = raised.value
    assert (error.status_code, error.code, error.param) == (400, "voice_not_found", "voice")
    assert "'klingon'" in error.message
    assert "en_US-joe-medium" in error.message


def test_without_service_settings_the_pod_advertises_itself() -> None:
    engine = FakeEngine("espeak", ESPEAK_LIKE, "en-gb")
    settings = ServiceSettings()
    assert accepted_models(engine, settings) == ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "espeak")
    assert build_catalogue(engine, settings) == (CatalogueVoice("en-gb", "en-gb", "espeak"),)
    assert resolve_voice("alloy", voice_book(engine, settings)) == "en-gb"


def test_models_are_the_openai_ids_then_the_service_engines_on_every_tier() -> None:
    settings = ServiceSettings(**SERVICE)
    for name in ("espeak", "vits"):
        engine = FakeEngine(name, ESPEAK_LIKE, "en-us")
        assert accepted_models(engine, settings) == (*OPENAI_IDS, "vits", "espeak")
    # An engine missing from service_engines (not the operator's env) is still accepted, last.
    alone = ServiceSettings(service_engines=("vits",))
    assert accepted_models(FakeEngine("espeak", [], ""), alone) == (*OPENAI_IDS, "vits", "espeak")


def test_an_espeak_service_voice_is_listed_alike_on_both_engines(
    espeak_engine: EspeakEngine,
) -> None:
    settings = ServiceSettings(service_engines=("espeak", "vits"), service_voice="en-gb")
    joe = VoiceInfo("en_US-joe-medium", "en-US", 22050, engine="vits")
    on_vits = build_catalogue(FakeEngine("vits", [joe], joe.name), settings)
    on_espeak = build_catalogue(espeak_engine, settings)  # the real entry
    assert on_vits == on_espeak == (CatalogueVoice("en-gb", "en-gb", "espeak"),)


# --- both tiers, in process, with the real engines --------------------------------------------


@contextmanager
def ready_client(settings: ServiceSettings) -> Iterator[TestClient]:
    """The app with its lifespan running, once its engine is loaded (readiness polled)."""
    with TestClient(create_app(settings)) as client:
        wait_for(lambda: client.get(pod.PATH_READY).status_code == 200, 120.0, interval=0.05)
        yield client


@pytest.fixture(scope="module")
def fallback_tier() -> Iterator[TestClient]:
    with ready_client(ServiceSettings(engine="espeak", voice="en-us", **SERVICE)) as client:
        yield client


@pytest.fixture(scope="module")
def gpu_tier() -> Iterator[TestClient]:
    with ready_client(ServiceSettings(engine="vits", device="cpu", **SERVICE)) as client:
        yield client


def post_speech(client: TestClient, **body: object) -> httpx.Response:
    return client.post(pod.PATH_SPEECH, json={"input": "Hello there.", **body})


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/v1/models", "/v1/audio/voices"])
def test_both_tiers_answer_the_same_bytes(
    fallback_tier: TestClient, gpu_tier: TestClient, path: str
) -> None:
    fallback, gpu = fallback_tier.get(path), gpu_tier.get(path)
    assert fallback.status_code == gpu.status_code == 200
    assert fallback.content == gpu.content


@pytest.mark.slow
def test_the_listings_are_the_service_s(gpu_tier: TestClient) -> None:
    models = gpu_tier.get("/v1/models").json()
    assert [model["id"] for model in models["data"]] == [*OPENAI_IDS, "vits", "espeak"]
    assert gpu_tier.get("/v1/audio/voices").json() == CATALOGUE


@pytest.mark.slow
def test_native_voices_are_listed_on_request_and_differ_by_tier(
    fallback_tier: TestClient, gpu_tier: TestClient
) -> None:
    espeak = fallback_tier.get("/v1/audio/voices", params={"native": "true"}).json()
    assert espeak["engine"] == "espeak"
    assert espeak["default"] == "en-us"  # what a request without a voice speaks with
    by_name = {voice["name"]: voice for voice in espeak["voices"]}
    assert by_name["en-us"] == {
        "name": "en-us",
        "language": "en-us",
        "sample_rate": 22050,
        "speakers": 1,
        "engine": "espeak",
    }
    vits = gpu_tier.get("/v1/audio/voices", params={"native": "true"}).json()
    assert vits["default"] == "en_US-joe-medium"
    assert [voice["name"] for voice in vits["voices"]] == ["en_US-joe-medium"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("response_format", "stream"),
    [("wav", False), ("pcm", False), ("flac", False), ("wav", True), ("pcm", True)],
)
def test_the_fallback_speaks_what_the_gpu_tier_advertises(
    fallback_tier: TestClient, response_format: str, stream: bool
) -> None:
    response = post_speech(
        fallback_tier,
        model="vits",
        voice="en_US-joe-medium",
        response_format=response_format,
        stream=stream,
    )
    assert response.status_code == 200, response.text
    assert response.headers[pod.HEADER_ENGINE] == "espeak"
    assert response.headers[pod.HEADER_VOICE] == "en-us"
    assert len(response.content) > 1000


@pytest.mark.slow
@pytest.mark.parametrize("voice", ["alloy", "nova", None])
def test_openai_aliases_speak_the_service_voice_on_each_tier(
    fallback_tier: TestClient, gpu_tier: TestClient, voice: str | None
) -> None:
    body = {"model": "tts-1"} | ({} if voice is None else {"voice": voice})
    fallback = post_speech(fallback_tier, **body)
    assert fallback.status_code == 200, fallback.text
    assert fallback.headers[pod.HEADER_VOICE] == "en-us"  # not "af", espeak's first voice
    gpu = post_speech(gpu_tier, **body)
    assert gpu.status_code == 200, gpu.text
    assert (gpu.headers[pod.HEADER_ENGINE], gpu.headers[pod.HEADER_VOICE]) == (
        "vits",
        "en_US-joe-medium",
    )


@pytest.mark.slow
def test_every_advertised_model_is_accepted_on_every_tier(fallback_tier: TestClient) -> None:
    for model in fallback_tier.get("/v1/models").json()["data"]:
        response = post_speech(fallback_tier, model=model["id"])
        assert response.status_code == 200, (model, response.text)
        assert response.headers[pod.HEADER_ENGINE] == "espeak"  # the tier chooses the engine


@pytest.mark.slow
def test_a_native_voice_speaks_as_itself(fallback_tier: TestClient) -> None:
    response = post_speech(fallback_tier, model="espeak", voice="de", input="Guten Tag.")
    assert response.status_code == 200, response.text
    assert response.headers[pod.HEADER_VOICE] == "de"


@pytest.mark.slow
@pytest.mark.parametrize("tier", ["fallback_tier", "gpu_tier"])
def test_unknown_voice_and_model_name_their_field(
    request: pytest.FixtureRequest, tier: str
) -> None:
    client: TestClient = request.getfixturevalue(tier)
    error = assert_envelope(post_speech(client, model="tts-1", voice="klingon"), 400, "voice")
    assert error["code"] == "voice_not_found"
    assert "en_US-joe-medium" in str(error["message"])
    error = assert_envelope(post_speech(client, model="gpt-99"), 404, "model")
    assert error["code"] == "model_not_found"
    assert "vits, espeak" in str(error["message"])


@pytest.mark.slow
def test_the_gpu_tier_does_not_speak_the_fallback_s_own_voices(gpu_tier: TestClient) -> None:
    """Only the catalogue is shared: espeak's own voices are not the GPU tier's."""
    assert_envelope(post_speech(gpu_tier, model="tts-1", voice="en-us"), 400, "voice")


@pytest.mark.slow
def test_while_degraded_the_headers_name_the_in_process_fallback_voice() -> None:
    settings = ServiceSettings(
        engine="vits",
        device="cpu",
        fallback_engine="espeak",
        fallback_voice="en-gb",
        fault_injection=True,
        fault_token=FAULT_TOKEN,
        oom_max_retries=0,
        oom_backoff_initial_seconds=0,
        oom_backoff_max_seconds=0,
        oom_degrade_threshold=1,
        oom_recover_quiet_seconds=3600,
        **SERVICE,
    )
    with ready_client(settings) as client:
        headers = {"Authorization": f"Bearer {FAULT_TOKEN}"}
        assert client.post(pod.PATH_FAULTS, json={"oom_next_calls": 1}, headers=headers).is_success
        response = post_speech(client, model="vits", voice="en_US-joe-medium")
        assert response.status_code == 200, response.text
        assert client.get(pod.PATH_READY).json()["degraded"] is True
        assert response.headers[pod.HEADER_ENGINE] == "espeak"
        assert response.headers[pod.HEADER_VOICE] == "en-gb"


# --- the official client ----------------------------------------------------------------------


@pytest.mark.slow
async def test_the_openai_client_keeps_working_on_the_fallback_tier() -> None:
    """The model id and default voice the service advertises, spoken by the espeak tier."""
    app = create_app(ServiceSettings(engine="espeak", **SERVICE))
    await load_service(app.state.service)
    transport = httpx2.ASGITransport(app=app)
    try:
        async with httpx2.AsyncClient(transport=transport, base_url="http://tts") as http:
            client = openai.AsyncOpenAI(
                api_key="unused", base_url="http://tts/v1", http_client=http, max_retries=0
            )
            models = [model.id async for model in client.models.list()]
            assert "vits" in models
            default = (await http.get("/v1/audio/voices")).json()["default"]
            assert default == "en_US-joe-medium"
            raw = await client.audio.speech.with_raw_response.create(
                model="vits", voice=default, input="Still here.", response_format="wav"
            )
            assert raw.headers[pod.HEADER_ENGINE] == "espeak"
            assert raw.headers[pod.HEADER_VOICE] == "en-us"
            audio, rate = soundfile.read(io.BytesIO(raw.content), dtype="float32")
            assert rate == 22050
            assert audio.size > 0
            await client.audio.speech.create(model="tts-1", voice="alloy", input="And again.")
    finally:
        await close_service(app.state.service)
