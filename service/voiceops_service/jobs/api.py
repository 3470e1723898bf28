"""The job routes: create, read, list, cancel, and the audio (finished, or as it is made)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from redis.exceptions import RedisError
from voiceops_contract import pod

from voiceops_service.api import check_json_content_type, read_body
from voiceops_service.audio import MEDIA_TYPES, streaming_wav_header, wav_header
from voiceops_service.errors import ApiError
from voiceops_service.jobs.models import (
    Job,
    JobBody,
    JobList,
    JobState,
    check_job_format,
    clean_input,
    plan_chunks,
)
from voiceops_service.jobs.runtime import JobsRuntime
from voiceops_service.jobs.store import JobStore
from voiceops_service.speech import resolve_voice
from voiceops_service.state import ServiceState, speech_service
from voiceops_service.streaming import AudioStream

FOLLOW_POLL_SECONDS = 0.1  # a running job's audio: look for its next chunk this often
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
_ERROR = {"description": "OpenAI error envelope", "content": {"application/json": {}}}
_JOB_ERRORS: dict[int | str, dict[str, Any]] = {404: _ERROR, 503: _ERROR}

jobs_router = APIRouter(tags=["jobs"])


def _runtime(request: Request) -> JobsRuntime:
    return request.app.state.jobs


@contextmanager
def store_errors(runtime: JobsRuntime) -> Iterator[JobStore]:
    """The store; a Redis that cannot be reached is a 503 naming it (speech keeps serving)."""
    try:
        yield runtime.store
    except RedisError as error:
        raise ApiError(
            503,
            f"the job store (Redis at {runtime.where}) cannot be reached: {error}; the job "
            f"API is unavailable until it is back ({pod.PATH_SPEECH} keeps serving)",
            code="jobs_unavailable",
            type_="server_error",
            headers={"Retry-After": "5"},
        ) from error


def _not_found(job_id: str) -> ApiError:
    return ApiError(
        404,
        f"job {job_id!r} does not exist (or has expired)",
        param="job_id",
        code="job_not_found",
    )


async def _parse_body(request: Request, limit_chars: int) -> JobBody:
    raw = await read_body(request, limit=12 * limit_chars + 4096)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(
            400, f"request body is not valid JSON: {error}", param="body", code="json_invalid"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", param="body", code="invalid")
    try:
        return JobBody.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        ) from None


def _job_response(job: Job, status: int = 200) -> JSONResponse:
    return JSONResponse(
        job.model_dump(mode="json"),
        status_code=status,
        headers={"Location": f"{pod.PATH_JOBS}/{job.id}"},
    )


@jobs_router.post(
    pod.PATH_JOBS,
    status_code=202,
    response_model=Job,
    responses={400: _ERROR, 409: _ERROR, 413: _ERROR, 415: _ERROR, 503: _ERROR},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": JobBody.model_json_schema()}},
        }
    },
)
async def create_job(
    request: Request,
    idempotency_key: Annotated[str | None, Header(alias=pod.HEADER_IDEMPOTENCY_KEY)] = None,
) -> JSONResponse:
    """Queue a long text; 202 with the job. The same ``Idempotency-Key`` returns the same job."""
    state: ServiceState = request.app.state.service
    runtime = _runtime(request)
    check_json_content_type(request.headers.get("content-type"))
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ApiError(
            400,
            "Idempotency-Key must be 1-255 printable ASCII characters without spaces",
            param=pod.HEADER_IDEMPOTENCY_KEY,
            code="invalid_idempotency_key",
        )
    settings = state.settings
    body = await _parse_body(request, settings.jobs_max_input_chars)
    speech = speech_service(state)
    if body.model not in speech.voices.models:
        raise ApiError(
            404,
            f"model {body.model!r} does not exist; use one of {', '.join(speech.voices.models)}",
            param="model",
            code="model_not_found",
        )
    text = clean_input(body.input, settings.jobs_max_input_chars)
    resolve_voice(body.voice, speech.voices)  # 400 voice_not_found now, not in a worker
    response_format = check_job_format(body.response_format)
    chunks = plan_chunks(text)
    digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    fields = {
        "model": body.model,
        "voice": body.voice or "",
        "response_format": response_format,
        "speed": body.speed,
        "input_chars": len(text),
        "sample_rate": speech.engine.sample_rate,
    }
    with store_errors(runtime) as store:
        job_id, created = await store.create(
            chunks=chunks,
            fields=fields,
            idempotency=(idempotency_key, digest) if idempotency_key else None,
        )
        if not created:
            existing = await store.idempotent_job(idempotency_key or "")
            if existing is not None and existing[1] != digest:
                raise ApiError(
                    409,
                    f"Idempotency-Key {idempotency_key!r} was used for job {job_id} with a "
                    "different body; use a new key for a new job",
                    param=pod.HEADER_IDEMPOTENCY_KEY,
                    code="idempotency_key_reused",
                )
        job = await store.get(job_id)
    if job is None:  # the first request with this key has not finished creating it
        raise ApiError(
            409,
            f"job {job_id} for this Idempotency-Key is still being created; retry",
            param=pod.HEADER_IDEMPOTENCY_KEY,
            code="job_being_created",
            headers={"Retry-After": "1"},
        )
    return _job_response(job, 202)


@jobs_router.get(pod.PATH_JOBS, response_model=JobList, responses={503: _ERROR})
async def list_jobs(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobList:
    """Jobs newest first, ``limit`` at a time from ``offset``."""
    with store_errors(_runtime(request)) as store:
        jobs, more = await store.list(offset, limit)
    return JobList(data=jobs, has_more=more, next_offset=offset + limit if more else None)


@jobs_router.get(pod.PATH_JOBS + "/{job_id}", response_model=Job, responses=_JOB_ERRORS)
async def get_job(request: Request, job_id: str) -> Job:
    """State, chunks done of total, audio seconds so far, who made each chunk, the error."""
    with store_errors(_runtime(request)) as store:
        job = await store.get(job_id)
    if job is None:
        raise _not_found(job_id)
    return job


@jobs_router.delete(
    pod.PATH_JOBS + "/{job_id}", response_model=Job, responses={**_JOB_ERRORS, 409: _ERROR}
)
async def cancel_job(request: Request, job_id: str) -> Job:
    """Cancel: no further chunk is made; what is made stays readable until the TTL."""
    with store_errors(_runtime(request)) as store:
        cancelled = await store.cancel(job_id)
        job = await store.get(job_id)
    if cancelled is None or job is None:
        raise _not_found(job_id)
    if not cancelled and job.state is not JobState.CANCELLED:
        raise ApiError(
            409,
            f"job {job_id} has already {job.state.value}; nothing to cancel",
            param="job_id",
            code="job_finished",
        )
    return job


@jobs_router.get(
    pod.PATH_JOBS + "/{job_id}/audio",
    response_class=Response,
    responses={
        200: {"description": "Audio", "content": {t: {} for t in ("audio/wav", "audio/pcm")}},
        **_JOB_ERRORS,
        409: _ERROR,
    },
)
async def job_audio(request: Request, job_id: str, follow: bool = True) -> Response:
    """The finished audio; while the job runs, a stream of the chunks made so far.

    ``follow`` (default): the stream waits for each next chunk until the job ends;
    ``follow=false``: it ends after the chunks made so far.
    """
    runtime = _runtime(request)
    with store_errors(runtime) as store:
        job = await store.get(job_id)
    if job is None:
        raise _not_found(job_id)
    if job.state in (JobState.FAILED, JobState.CANCELLED):
        reason = f": {job.error.message}" if job.error else ""
        raise ApiError(
            409,
            f"job {job_id} has {job.state.value}{reason}; its audio is incomplete",
            param="job_id",
            code=f"job_{job.state.value}",
        )
    wav = job.response_format == "wav"
    headers = {"X-Voiceops-Sample-Rate": str(job.sample_rate), "X-Voiceops-Job-State": job.state}
    if job.state is JobState.SUCCEEDED:
        data_bytes = sum(maker.samples for maker in job.made_by) * 2
        head = wav_header(job.sample_rate, data_bytes) if wav else b""
        headers["Content-Length"] = str(len(head) + data_bytes)
        parts = _chunks(runtime.store, job, head, follow=False)
    else:
        head = streaming_wav_header(job.sample_rate) if wav else b""
        parts = _chunks(runtime.store, job, head, follow=follow)
    return AudioStream(parts, _closed, MEDIA_TYPES[job.response_format], headers)


async def _closed(_outcome: str) -> None:
    return None


async def _chunks(store: JobStore, job: Job, head: bytes, *, follow: bool) -> AsyncIterator[bytes]:
    """The audio in order, one chunk from Redis at a time (never the whole job in memory)."""
    if head:
        yield head
    for index in range(job.chunks.total):
        while (pcm := await store.audio_chunk(job.id, index)) is None:
            state = await store.state(job.id)
            if state is None or state in (JobState.FAILED, JobState.CANCELLED):
                # Abort the transfer: the client sees a truncated file, not a short one.
                raise RuntimeError(f"job {job.id} ended ({state}) before chunk {index}")
            if not follow:
                return
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
        yield pcm
