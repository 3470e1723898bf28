"""A speech request, from its JSON body to the voice the engine speaks with.

First through the real app (``create_app`` and ``load_service`` over ASGI) with an
engine double that records every request it is asked to speak, so the tests see
the voice that actually speaks, not only the header that names it; then
``plan_speech``'s checks one by one, each naming the field it refuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import httpx
import numpy as np
import pytest
from voiceops_contract import pod
from voiceops_service import app as app_module
from voiceops_service.app import close_service, create_app, load_service
from voiceops_service.engines.base import Audio, Engine, SynthesisRequest, VoiceInfo
from voiceops_service.errors import ApiError
from voiceops_service.settings import ServiceSettings
from voiceops_service.speech import (
    OPENAI_MODELS,
    OPENAI_VOICES,
    CatalogueVoice,
    SpeechBody,
    SpeechPlan,
    VoiceBook,
    accepted_models,
    build_catalogue,
    normal_language,
    plan_speech,
    voice_book,
)

# espeak's own order: Afrikaans first, as the real list.
ESPEAK_LIKE = [
    VoiceInfo(name=code, language=code, sample_rate=22050)
    for code in ("af", "de", "en-gb", "en-us", "fr-fr")
]
GPU_TIER_SERVICE = {"service_engines": ("vits", "espeak"), "service_voice": "en_US-joe-medium"}


class RecordingEngine(Engine):
    """An espeak-like engine (default en-us, first voice af) that records what it speaks."""

    name = "espeak"
    version = "test"

    def __init__(self) -> None:
        self.spoken: list[SynthesisRequest] = []

    @property
    def sample_rate(self) -> int:
        return 22050

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def default_voice(self) -> str:
        return "en-us"

    def load(self) -> None:
        return None

    def voices(self) -> list[VoiceInfo]:
        return list(ESPEAK_LIKE)

    def synthesize(self, request: SynthesisRequest) -> Audio:
        self.spoken.append(request)
        return np.zeros(220, dtype=np.float32)

    def synthesize_batch(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        return [self.synthesize(r) for r in requests]


async def serving(
    monkeypatch: pytest.MonkeyPatch, settings: ServiceSettings
) -> AsyncIterator[tuple[httpx.AsyncClient, RecordingEngine]]:
    engine = RecordingEngine()
    monkeypatch.setattr(app_module, "create_engine", lambda name, settings: engine)
    app = create_app(settings)
    state = app.state.service
    await load_service(state)
    assert state.speech is not None, state.load_error
    engine.spoken.clear()  # the warm-up call
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tts") as client:
            yield client, engine
    finally:
        await close_service(state)


@pytest.fixture
async def fallback_tier(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[httpx.AsyncClient, RecordingEngine]]:
    """An espeak pod of a VoiceService whose service voice is the GPU tier's Piper voice."""
    settings = ServiceSettings(engine="espeak", voice="en-us", **GPU_TIER_SERVICE)
    async for served in serving(monkeypatch, settings):
        yield served


@pytest.fixture
async def plain_pod(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[httpx.AsyncClient, RecordingEngine]]:
    """An espeak pod on its own (no operator): its own default voice is the service voice."""
    async for served in serving(monkeypatch, ServiceSettings(engine="espeak")):
        yield served


@pytest.mark.parametrize("alias", [*OPENAI_VOICES, None])
async def test_every_openai_voice_is_spoken_by_the_service_voice(
    fallback_tier: tuple[httpx.AsyncClient, RecordingEngine], alias: str | None
) -> None:
    client, engine = fallback_tier
    body = {"model": "tts-1", "input": "Hello there."} | ({} if alias is None else {"voice": alias})
    response = await client.post(pod.PATH_SPEECH, json=body)
    assert response.status_code == 200, response.text
    assert [r.voice for r in engine.spoken] == ["en-us"]  # never af, espeak's first voice
    assert response.headers[pod.HEADER_VOICE] == "en-us"


@pytest.mark.parametrize("alias", ["alloy", "shimmer", None])
async def test_without_an_operator_openai_voices_speak_the_engine_s_default(
    plain_pod: tuple[httpx.AsyncClient, RecordingEngine], alias: str | None
) -> None:
    client, engine = plain_pod
    body = {"model": "tts-1", "input": "Hello."} | ({} if alias is None else {"voice": alias})
    response = await client.post(pod.PATH_SPEECH, json=body)
    assert response.status_code == 200, response.text
    assert [r.voice for r in engine.spoken] == ["en-us"]


async def test_a_voice_of_the_engine_speaks_as_itself_at_the_requested_speed(
    fallback_tier: tuple[httpx.AsyncClient, RecordingEngine],
) -> None:
    client, engine = fallback_tier
    body = {"model": "espeak", "input": "Guten Tag.", "voice": "de", "speed": 1.5}
    response = await client.post(pod.PATH_SPEECH, json=body)
    assert response.status_code == 200, response.text
    assert [(r.voice, r.speed, r.text) for r in engine.spoken] == [("de", 1.5, "Guten Tag.")]


# --- plan_speech ----------------------------------------------------------------------------


class ListedEngine(RecordingEngine):
    pass


def book(**service: object) -> VoiceBook:
    return voice_book(ListedEngine(), ServiceSettings(**service))  # type: ignore[arg-type]


def plan(settings: ServiceSettings | None = None, **body: object) -> SpeechPlan:
    fields = {"model": "tts-1", "input": "Hello there."} | body
    return plan_speech(SpeechBody.model_validate(fields), book(), settings or ServiceSettings())


def refused(**body: object) -> ApiError:
    settings = body.pop("settings", None)
    with pytest.raises(ApiError) as raised:
        plan(settings, **body)  # type: ignore[arg-type]
    return raised.value


def test_an_unknown_model_is_404_listing_the_models() -> None:
    error = refused(model="gpt-99")
    assert (error.status_code, error.code, error.param) == (404, "model_not_found", "model")
    listed = ", ".join((*OPENAI_MODELS, "espeak"))
    hint = "(see GET /v1/models)"
    assert error.message == f"model 'gpt-99' does not exist; use one of {listed} {hint}"


def test_every_advertised_model_plans() -> None:
    for model in (*OPENAI_MODELS, "espeak"):
        assert plan(model=model).voice == "en-us"


def test_unpaired_surrogates_are_refused_naming_the_input() -> None:
    # JSON can carry them ("\\ud800"); a body built past validation must not reach the engine.
    body = SpeechBody.model_construct(model="tts-1", input="half a pair: \ud800")
    with pytest.raises(ApiError) as raised:
        plan_speech(body, book(), ServiceSettings())
    error = raised.value
    assert (error.status_code, error.code, error.param) == (400, "invalid_text", "input")
    assert error.message == "input contains unpaired UTF-16 surrogates; send valid Unicode text"


def test_control_characters_are_spoken_as_spaces() -> None:
    speech = plan(input="one\x00two\x1fthree\x7ffour\tfive\nsix")
    assert [c.text for c in speech.chunks] == ["one two three four five six"]


@pytest.mark.parametrize("text", ["   ", "\x00\x01\x02", "\x7f \x0b"])
def test_input_without_text_is_refused(text: str) -> None:
    error = refused(input=text)
    assert (error.status_code, error.code, error.param) == (400, "empty_input", "input")
    assert error.message == "input must contain text to speak"


def test_input_up_to_the_limit_is_accepted_and_past_it_refused() -> None:
    settings = ServiceSettings(max_input_chars=20)
    assert plan(settings, input="a" * 20).chunks[0].text == "a" * 20
    error = refused(input="a" * 21, settings=settings)
    assert (error.status_code, error.code, error.param) == (400, "string_too_long", "input")
    assert error.message == (
        "input is 21 characters; the limit is 20 (send longer text as several requests)"
    )


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac"])
def test_formats_without_an_encoder_are_refused(response_format: str) -> None:
    error = refused(response_format=response_format)
    assert (error.status_code, error.code, error.param) == (
        400,
        "unsupported_format",
        "response_format",
    )
    assert error.message == (
        f"response_format {response_format!r} needs an encoder this server does not ship; "
        "use wav, pcm or flac"
    )


def test_streaming_flac_is_refused_and_streaming_wav_or_pcm_planned() -> None:
    error = refused(stream=True, response_format="flac")
    assert (error.status_code, error.code, error.param) == (
        400,
        "unsupported_format",
        "response_format",
    )
    assert error.message == "streaming supports response_format wav or pcm, not flac"
    for response_format in ("wav", "pcm"):
        assert plan(stream=True, response_format=response_format).stream is True
    assert plan(response_format="flac").response_format == "flac"


def test_a_stream_is_planned_sentence_by_sentence_and_a_body_in_few_chunks() -> None:
    text = "First one. Second one! Third?"
    streamed = plan(input=text, stream=True, speed=0.5, voice="de")
    assert [c.text for c in streamed.chunks] == ["First one.", "Second one!", "Third?"]
    assert {(c.voice, c.speed) for c in streamed.chunks} == {("de", 0.5)}
    assert (streamed.voice, streamed.response_format, streamed.stream) == ("de", "wav", True)
    whole = plan(input=text)
    assert [c.text for c in whole.chunks] == [text]
    assert whole.stream is False


def test_an_unknown_voice_is_refused_before_the_format_is_checked() -> None:
    error = refused(voice="klingon", response_format="mp3")
    assert (error.code, error.param) == ("voice_not_found", "voice")


# --- what a pod advertises ------------------------------------------------------------------


def test_an_espeak_service_voice_on_an_espeak_pod_takes_the_engine_s_language() -> None:
    engine = ListedEngine()
    settings = ServiceSettings(service_engines=("espeak",), service_voice="en-gb")
    assert build_catalogue(engine, settings) == (CatalogueVoice("en-gb", "en-gb", "espeak"),)
    piper = ServiceSettings(service_engines=("vits", "espeak"), service_voice="de_DE-x-low")
    assert build_catalogue(engine, piper) == (CatalogueVoice("de_DE-x-low", "de_DE", "vits"),)
    unowned = ServiceSettings(service_voice="en-gb")  # no service engines: this pod's
    assert build_catalogue(engine, unowned)[0].engine == "espeak"


def test_the_model_list_names_each_engine_once() -> None:
    settings = ServiceSettings(service_engines=("espeak", "vits"))
    assert accepted_models(ListedEngine(), settings) == (*OPENAI_MODELS, "espeak", "vits")


def test_a_pod_s_voice_book_speaks_the_catalogue_with_its_nearest_voice() -> None:
    voices = book(**GPU_TIER_SERVICE)
    assert voices.default == "en_US-joe-medium"
    assert voices.speaks_as == {"en_US-joe-medium": "en-us"}
    assert voices.native_names == frozenset(v.name for v in ESPEAK_LIKE)
    assert voices.models == (*OPENAI_MODELS, "vits", "espeak")


class NamedVoicesEngine(RecordingEngine):
    """An engine whose voices are named apart from their language (espeak's 'english')."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(name="english", language="en-gb", sample_rate=22050)]


def test_a_service_voice_takes_its_language_from_the_espeak_engine_that_has_it() -> None:
    settings = ServiceSettings(service_engines=("espeak",), service_voice="english")
    on_espeak = build_catalogue(NamedVoicesEngine("espeak"), settings)
    assert on_espeak == (CatalogueVoice("english", "en-gb", "espeak"),)
    on_vits = build_catalogue(NamedVoicesEngine("vits"), settings)  # only espeak pods look
    assert on_vits == (CatalogueVoice("english", "english", "espeak"),)
    missing = ServiceSettings(service_engines=("espeak",), service_voice="welsh")
    assert build_catalogue(NamedVoicesEngine("espeak"), missing)[0].language == "welsh"
    piper = ServiceSettings(service_engines=("espeak",), service_voice="en_US-joe-medium")
    assert build_catalogue(NamedVoicesEngine("espeak"), piper)[0].language == "en_US"


def test_a_service_voice_in_a_language_the_engine_lacks_is_spoken_by_its_default() -> None:
    voices = book(service_engines=("vits", "espeak"), service_voice="ja_JP-x-medium")
    assert voices.speaks_as == {"ja_JP-x-medium": "en-us"}
    assert voices.native == tuple(ESPEAK_LIKE)


def test_language_codes_are_normalised_to_lower_case_with_hyphens() -> None:
    assert normal_language(" en_US ") == "en-us"


def test_an_unknown_voice_names_what_may_be_asked_for() -> None:
    with pytest.raises(ApiError) as raised:
        plan(voice="klingon")
    assert raised.value.message == (
        "voice 'klingon' is not available; use en-us or an OpenAI voice name "
        "(alloy, ash, ballad, ...) for the default (see GET /v1/audio/voices)"
    )
