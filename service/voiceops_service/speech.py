"""The speech request: its schema, its validation against the running engine, and its plan."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from voiceops_service.audio import UNSUPPORTED_FORMATS, ResponseFormat, chunk_text, split_sentences
from voiceops_service.engines.base import Engine, SynthesisRequest, VoiceInfo
from voiceops_service.errors import ApiError
from voiceops_service.settings import HARD_MAX_INPUT_CHARS, ServiceSettings

OPENAI_MODELS: tuple[str, ...] = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
# OpenAI's voice names, accepted as aliases of the service's default voice (never
# the engine's first voice: espeak's is Afrikaans) so stock OpenAI clients work unchanged.
OPENAI_VOICES: tuple[str, ...] = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)


ENGINE_NAMES: tuple[str, ...] = ("espeak", "vits")
# Control characters would end the C string early (NUL) or confuse the phonemiser.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


class SpeechBody(BaseModel):
    """``POST /v1/audio/speech`` (OpenAI-compatible; unknown extra fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(
        min_length=1,
        max_length=256,
        description="tts-1, tts-1-hd, gpt-4o-mini-tts or an engine of the service "
        "(GET /v1/models); the tier that answers chooses the engine, not the model.",
        json_schema_extra={"enum": [*OPENAI_MODELS, *ENGINE_NAMES]},
    )
    input: str = Field(min_length=1, max_length=HARD_MAX_INPUT_CHARS, description="Text to speak.")
    voice: str | None = Field(
        None,
        max_length=256,
        description="A voice of GET /v1/audio/voices, one of this engine's own voices, or an "
        "OpenAI voice name (alloy, ...) for the default; default if absent.",
    )
    response_format: Literal["wav", "pcm", "flac", "mp3", "opus", "aac"] = "wav"
    speed: float = Field(1.0, ge=0.25, le=4.0, allow_inf_nan=False)
    stream: bool = Field(False, description="Chunked audio, sentence by sentence (wav or pcm).")


@dataclass(frozen=True)
class SpeechPlan:
    voice: str
    response_format: ResponseFormat
    stream: bool
    chunks: tuple[SynthesisRequest, ...]


@dataclass(frozen=True)
class CatalogueVoice:
    """A voice every tier of the VoiceService accepts and lists (``GET /v1/audio/voices``).

    Only what every tier can derive from its settings alone: the name, its
    language (:func:`voice_language`) and the engine the service names for it.
    Sample rate and speaker count belong to one engine's copy of the voice and
    are not listed (the ``X-Voiceops-Sample-Rate`` header of each answer says
    the rate; ``?native=true`` lists this pod's own voices with theirs).
    """

    name: str
    language: str
    engine: str


@dataclass(frozen=True)
class VoiceBook:
    """What this pod advertises and accepts, fixed once its engine is loaded."""

    models: tuple[str, ...]
    default: str  # the service voice: what no voice, or an OpenAI alias, asks for
    catalogue: tuple[CatalogueVoice, ...]
    native: tuple[VoiceInfo, ...]  # this engine's own voices
    native_names: frozenset[str]
    speaks_as: Mapping[str, str]  # catalogue voice -> this engine's voice that speaks it


_PIPER_NAME = re.compile(r"^([a-z]{2,3})_([A-Z]{2})-")


def voice_language(name: str) -> str:
    """The language of a voice from its name alone, so every tier derives the same.

    A Piper name ``<ll>_<CC>-<speaker>-<quality>`` (``en_US-joe-medium``) has
    language ``ll_CC`` (``en_US``); any other name is taken to be an espeak
    voice, whose name is its language code (``en-us``, ``de``), so the name
    itself. Compare languages with :func:`same_language`.
    """
    piper = _PIPER_NAME.match(name)
    return f"{piper[1]}_{piper[2]}" if piper else name


def normal_language(code: str) -> str:
    """Languages compare case-insensitively with ``_`` and ``-`` equal: en_US == en-us."""
    return code.strip().lower().replace("_", "-")


def same_language(a: str, b: str) -> bool:
    return normal_language(a) == normal_language(b)


def nearest_voice(language: str, voices: Sequence[VoiceInfo], default: str) -> str:
    """This engine's voice nearest to ``language`` (``voices`` in the engine's order).

    Same language exactly, else a voice whose language is the primary subtag
    (``en`` for ``en_US``), else ``default`` when it speaks a variant of that
    language (``en-us`` for ``en_AU``), else the first voice of such a variant,
    else ``default`` (the engine's default voice).
    """
    wanted = normal_language(language)
    primary = wanted.split("-")[0]
    if not primary:
        return default
    languages = [(voice.name, normal_language(voice.language)) for voice in voices]
    variant = primary + "-"
    for match in (
        lambda name, code: code == wanted,
        lambda name, code: code == primary,
        lambda name, code: code.startswith(variant) and name == default,
        lambda name, code: code.startswith(variant),
    ):
        for name, code in languages:
            if match(name, code):
                return name
    return default


def resolve_voice(requested: str | None, book: VoiceBook) -> str:
    """The voice of this engine that speaks for ``requested``; ApiError if none may.

    No voice or an OpenAI alias (alloy, ...) asks for the service voice; a voice
    this engine has is itself; a catalogue voice this engine lacks is spoken by
    its nearest voice by language; anything else is 400 ``voice_not_found``.
    """
    wanted = book.default if requested is None or requested in OPENAI_VOICES else requested
    if wanted in book.native_names:
        return wanted
    if wanted in book.speaks_as:
        return book.speaks_as[wanted]
    listed = ", ".join(voice.name for voice in book.catalogue)
    raise ApiError(
        400,
        f"voice {requested!r} is not available; use {listed} or an OpenAI voice name "
        f"({', '.join(OPENAI_VOICES[:3])}, ...) for the default (see GET /v1/audio/voices)",
        param="voice",
        code="voice_not_found",
    )


def accepted_models(engine: Engine, settings: ServiceSettings) -> tuple[str, ...]:
    """The OpenAI ids, then every tier's engine, then this pod's engine if not among them.

    The same on every tier (the operator lists each tier's engine in
    ``service_engines``); the model id never chooses the engine: the tier does.
    """
    return tuple(dict.fromkeys((*OPENAI_MODELS, *settings.service_engines, engine.name)))


def build_catalogue(engine: Engine, settings: ServiceSettings) -> tuple[CatalogueVoice, ...]:
    """The service voice, named and described identically on every tier.

    Empty ``service_voice`` (no operator): this pod's own voice and engine.
    """
    if not settings.service_voice:
        name = engine.default_voice
        return (CatalogueVoice(name, voice_language(name), engine.name),)
    name = settings.service_voice
    owner = settings.service_engines[0] if settings.service_engines else engine.name
    language = voice_language(name)
    if engine.name == "espeak" and name == language:  # an espeak voice on an espeak pod
        language = next((v.language for v in engine.voices() if v.name == name), language)
    return (CatalogueVoice(name, language, owner),)


def voice_book(engine: Engine, settings: ServiceSettings) -> VoiceBook:
    """This pod's VoiceBook (the app builds it once, when the engine has loaded)."""
    catalogue = build_catalogue(engine, settings)
    native = tuple(engine.voices())
    return VoiceBook(
        models=accepted_models(engine, settings),
        default=catalogue[0].name,
        catalogue=catalogue,
        native=native,
        native_names=frozenset(voice.name for voice in native),
        speaks_as={
            voice.name: nearest_voice(voice.language, native, engine.default_voice)
            for voice in catalogue
        },
    )


def plan_speech(body: SpeechBody, book: VoiceBook, settings: ServiceSettings) -> SpeechPlan:
    """Check ``body`` against the running engine's ``book``; raise ApiError naming the field."""
    if body.model not in book.models:
        raise ApiError(
            404,
            f"model {body.model!r} does not exist; use one of "
            f"{', '.join(book.models)} (see GET /v1/models)",
            param="model",
            code="model_not_found",
        )
    if _SURROGATES.search(body.input):
        raise ApiError(
            400,
            "input contains unpaired UTF-16 surrogates; send valid Unicode text",
            param="input",
            code="invalid_text",
        )
    text = _CONTROL_CHARACTERS.sub(" ", body.input)
    if not text.strip():
        raise ApiError(400, "input must contain text to speak", param="input", code="empty_input")
    if len(text) > settings.max_input_chars:
        raise ApiError(
            400,
            f"input is {len(text)} characters; the limit is {settings.max_input_chars} "
            "(send longer text as several requests)",
            param="input",
            code="string_too_long",
        )
    voice = resolve_voice(body.voice, book)
    if body.response_format in UNSUPPORTED_FORMATS:
        raise ApiError(
            400,
            f"response_format {body.response_format!r} needs an encoder this server does not "
            "ship; use wav, pcm or flac",
            param="response_format",
            code="unsupported_format",
        )
    if body.stream and body.response_format == "flac":
        raise ApiError(
            400,
            "streaming supports response_format wav or pcm, not flac",
            param="response_format",
            code="unsupported_format",
        )
    pieces = split_sentences(text) if body.stream else chunk_text(text)
    if not pieces:
        raise ApiError(400, "input must contain text to speak", param="input", code="empty_input")
    return SpeechPlan(
        voice=voice,
        response_format=body.response_format,  # type: ignore[arg-type]
        stream=body.stream,
        chunks=tuple(SynthesisRequest(text=p, voice=voice, speed=body.speed) for p in pieces),
    )
