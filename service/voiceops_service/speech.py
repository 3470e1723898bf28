"""The speech request: its schema, its validation against the running engine, and its plan."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from voiceops_service.audio import UNSUPPORTED_FORMATS, ResponseFormat, chunk_text, split_sentences
from voiceops_service.engines.base import Engine, SynthesisRequest
from voiceops_service.errors import ApiError
from voiceops_service.settings import HARD_MAX_INPUT_CHARS, ServiceSettings

OPENAI_MODELS: tuple[str, ...] = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
# OpenAI's voice names, accepted as aliases of the engine's default voice so
# stock OpenAI clients work unchanged.
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
        description="tts-1, tts-1-hd, gpt-4o-mini-tts or the engine's name (GET /v1/models).",
        json_schema_extra={"enum": [*OPENAI_MODELS, *ENGINE_NAMES]},
    )
    input: str = Field(min_length=1, max_length=HARD_MAX_INPUT_CHARS, description="Text to speak.")
    voice: str | None = Field(None, max_length=256, description="Voice name; default if absent.")
    response_format: Literal["wav", "pcm", "flac", "mp3", "opus", "aac"] = "wav"
    speed: float = Field(1.0, ge=0.25, le=4.0, allow_inf_nan=False)
    stream: bool = Field(False, description="Chunked audio, sentence by sentence (wav or pcm).")


@dataclass(frozen=True)
class SpeechPlan:
    voice: str
    response_format: ResponseFormat
    stream: bool
    chunks: tuple[SynthesisRequest, ...]


def accepted_models(engine: Engine) -> tuple[str, ...]:
    return (*OPENAI_MODELS, engine.name)


def plan_speech(body: SpeechBody, engine: Engine, settings: ServiceSettings) -> SpeechPlan:
    """Check ``body`` against the running engine; raise ApiError naming the field."""
    if body.model not in accepted_models(engine):
        raise ApiError(
            404,
            f"model {body.model!r} does not exist; use one of "
            f"{', '.join(accepted_models(engine))} (see GET /v1/models)",
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
    voice = _resolve_voice(body.voice, engine)
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


def _resolve_voice(requested: str | None, engine: Engine) -> str:
    if requested is None or requested in OPENAI_VOICES:
        return engine.default_voice
    known = [voice.name for voice in engine.voices()]
    if requested not in known:
        shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        raise ApiError(
            400,
            f"voice {requested!r} is not available; known voices: {shown} "
            "(see GET /v1/audio/voices)",
            param="voice",
            code="voice_not_found",
        )
    return requested
