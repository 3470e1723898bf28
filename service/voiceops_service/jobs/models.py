"""The job API's request body and answers, and the pure planning of a job."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from voiceops_service.audio import chunk_text
from voiceops_service.errors import ApiError
from voiceops_service.settings import HARD_MAX_JOB_INPUT_CHARS
from voiceops_service.speech import ENGINE_NAMES, OPENAI_MODELS

# Control characters would end the C string early (NUL) or confuse the phonemiser.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class JobBody(BaseModel):
    """``POST /v1/audio/jobs``: the speech request's fields, for long input."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(
        "tts-1",
        min_length=1,
        max_length=256,
        description="As for /v1/audio/speech; the tier that makes a chunk chooses the engine.",
        json_schema_extra={"enum": [*OPENAI_MODELS, *ENGINE_NAMES]},
    )
    input: str = Field(
        min_length=1,
        max_length=HARD_MAX_JOB_INPUT_CHARS,
        description="Text to speak, up to the service's jobs_max_input_chars.",
    )
    voice: str | None = Field(None, max_length=256, description="As for /v1/audio/speech.")
    response_format: Literal["wav", "pcm", "flac", "mp3", "opus", "aac"] = Field(
        "wav", description="wav or pcm: the audio is assembled chunk by chunk, never whole."
    )
    speed: float = Field(1.0, ge=0.25, le=4.0, allow_inf_nan=False)


class JobChunks(BaseModel):
    total: int
    done: int


class ChunkMaker(BaseModel):
    """Who made one chunk: the engine and voice that spoke, the tier and the pod."""

    index: int
    engine: str
    voice: str
    tier: str
    pod: str
    samples: int


class JobError(BaseModel):
    message: str
    chunk: int | None = None


class Job(BaseModel):
    """A job as ``GET /v1/audio/jobs/{id}`` answers it."""

    id: str
    object: Literal["audio.job"] = "audio.job"
    state: JobState
    created_at: float
    updated_at: float
    finished_at: float | None = None
    input_chars: int
    voice: str | None
    response_format: Literal["wav", "pcm"]
    speed: float
    sample_rate: int
    chunks: JobChunks
    audio_seconds: float = Field(description="Audio made so far.")
    engines: dict[str, int] = Field(description="Chunks made per engine.")
    made_by: list[ChunkMaker] = Field(description="Per finished chunk, in order.")
    error: JobError | None = None


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Job]
    has_more: bool
    next_offset: int | None


def clean_input(text: str, limit: int) -> str:
    """The text to speak, or ApiError naming ``input`` and the rule it breaks."""
    if _SURROGATES.search(text):
        raise ApiError(
            400,
            "input contains unpaired UTF-16 surrogates; send valid Unicode text",
            param="input",
            code="invalid_text",
        )
    if len(text) > limit:
        raise ApiError(
            400,
            f"input is {len(text)} characters; the job limit is {limit}",
            param="input",
            code="string_too_long",
        )
    text = _CONTROL_CHARACTERS.sub(" ", text)
    if not text.strip():
        raise ApiError(400, "input must contain text to speak", param="input", code="empty_input")
    return text


def check_job_format(response_format: str) -> Literal["wav", "pcm"]:
    if response_format not in ("wav", "pcm"):
        raise ApiError(
            400,
            f"response_format {response_format!r} is not offered for jobs; use wav or pcm "
            "(a job's audio is assembled chunk by chunk, never held whole)",
            param="response_format",
            code="unsupported_format",
        )
    return response_format  # type: ignore[return-value]


def plan_chunks(text: str) -> list[str]:
    """The job's chunks: whole sentences of the service's splitter, packed as speech packs them."""
    chunks = chunk_text(text)
    if not chunks:
        raise ApiError(400, "input must contain text to speak", param="input", code="empty_input")
    return chunks
