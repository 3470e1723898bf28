"""HTTP routes. Thin: parse, call the speech service, encode, answer."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Annotated, Any, NoReturn, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from voiceops_contract import pod

from voiceops_service.admin_tokens import token_guard
from voiceops_service.admission import OverloadedError
from voiceops_service.audio import (
    MEDIA_TYPES,
    PCM_FORMATS,
    encode,
    streaming_wav_header,
    wav_header,
)
from voiceops_service.engines.base import EngineError, SynthesisRequest, UnknownVoiceError
from voiceops_service.errors import ApiError
from voiceops_service.faults import FaultSnapshot, FaultUpdate
from voiceops_service.resilience import OutOfMemoryExhaustedError
from voiceops_service.settings import HARD_MAX_INPUT_CHARS
from voiceops_service.speech import (
    SpeechBody,
    SpeechPlan,
    plan_speech,
    resolve_voice,
)
from voiceops_service.state import ServiceState, SpeechDep, StateDep, speech_service
from voiceops_service.streaming import (
    AudioResponse,
    AudioStream,
    ClientDisconnectedError,
    cancel_on_disconnect,
)
from voiceops_service.synthesis import SpeechService

log = logging.getLogger(__name__)
T = TypeVar("T")
CRASH_EXIT_CODE = 70
INLINE_ENCODE_MAX_SAMPLES = 30 * 22050  # longer audio is encoded in a worker thread
# The longest valid body: HARD_MAX_INPUT_CHARS characters, each JSON-escaped as a
# surrogate pair (12 bytes), plus the other fields. Larger bodies are never read.
MAX_SPEECH_BODY_BYTES = 12 * HARD_MAX_INPUT_CHARS + 4096

_ERROR = {"description": "OpenAI error envelope", "content": {"application/json": {}}}
SPEECH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Audio", "content": {t: {} for t in MEDIA_TYPES.values()}},
    400: _ERROR,
    404: _ERROR,
    413: _ERROR,
    415: _ERROR,
    429: _ERROR,
    503: _ERROR,
    504: _ERROR,
}


def check_json_content_type(content_type: str | None) -> None:
    """415 for a body that does not say it is JSON (before the body is read)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ApiError(
            415,
            f"Content-Type must be application/json, not {content_type or 'missing'!r}",
            param="Content-Type",
            code="unsupported_media_type",
        )


async def require_json(content_type: Annotated[str | None, Header()] = None) -> None:
    check_json_content_type(content_type)


async def read_body(request: Request, limit: int = MAX_SPEECH_BODY_BYTES) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _body_too_large(int(declared), limit)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _body_too_large(size, limit)
        parts.append(part)
    return b"".join(parts)


def _body_too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        f"request body is {size} bytes or more; the limit is {limit}",
        param="body",
        code="request_too_large",
    )


async def parse_speech_body(request: Request) -> SpeechBody:
    """The body as FastAPI would validate it, with the same error shapes.

    Read here rather than as a FastAPI body parameter, so the route can refuse
    before reading it (429 while saturated, 415, 413 for a body over the limit).
    """
    raw = await read_body(request)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        detail = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        pos = error.pos if isinstance(error, json.JSONDecodeError) else error.start
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", pos), "msg": "JSON decode error",
              "input": {}, "ctx": {"error": detail}}]
        ) from None  # fmt: skip
    if not isinstance(data, dict):
        raise RequestValidationError(
            [{"type": "model_attributes_type", "loc": ("body",),
              "msg": "Input should be a valid dictionary or object to extract fields from",
              "input": data}]
        )  # fmt: skip
    try:
        return SpeechBody.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        ) from None


speech_router = APIRouter()


@speech_router.post(
    pod.PATH_SPEECH,
    response_class=Response,
    responses=SPEECH_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SpeechBody.model_json_schema()}},
        }
    },
)
async def create_speech(request: Request) -> Response:
    """OpenAI's ``POST /v1/audio/speech``; the body is read and validated by parse_speech_body."""
    state: ServiceState = request.app.state.service
    refuse_when_saturated(state)
    check_json_content_type(request.headers.get("content-type"))
    speech = speech_service(state)
    body = await parse_speech_body(request)
    started = time.perf_counter()
    plan = plan_speech(body, speech.voices, state.settings)
    if plan.stream:
        return await _start_stream(plan, request, state, speech, started)
    models, cache, guard = state.models, state.audio_cache, state.guard
    assert models is not None, "set with speech"
    assert cache is not None, "set with speech"
    assert guard is not None, "set with speech"
    stamp = models.versions.stamp()
    ticket = cache.ticket(body.input, plan, body.speed, models.versions, guard, state.faults)
    if ticket is not None and (hit := cache.get(ticket)) is not None:
        state.metrics.request_duration_seconds.observe(time.perf_counter() - started)
        return AudioResponse(hit.parts, MEDIA_TYPES[plan.response_format], dict(hit.headers))
    try:
        async with cancel_on_disconnect(request.receive):
            async with asyncio.timeout(state.settings.request_timeout_seconds):
                async with state.admission.slot():
                    synth_started = time.perf_counter()
                    parts, samples = await _synthesize_payload(speech, plan)
                    synth_seconds = time.perf_counter() - synth_started
    except BaseException as error:
        _reraise_mapped(error, state)
    rate = speech.engine.sample_rate
    if plan.response_format == "wav":
        parts.insert(0, wav_header(rate, samples * 2))
    _observe(state, started, samples, rate, synth_seconds, first_audio=True)
    headers = _audio_headers(speech, state, plan.voice)
    if models.versions.unchanged_since(stamp):  # else the versions that spoke are not known
        headers[pod.HEADER_MODEL_VERSION] = stamp.version
    if ticket is not None and cache.store(ticket, parts, headers, models.versions, guard):
        headers[pod.HEADER_AUDIO_CACHE] = "miss"
    return AudioResponse(parts, MEDIA_TYPES[plan.response_format], headers)


async def _synthesize_payload(speech: SpeechService, plan: SpeechPlan) -> tuple[list[bytes], int]:
    """The encoded audio in parts (wav without its header), and its sample count.

    wav and pcm are 16-bit PCM chunks made in the engine call (one part each,
    never joined); flac needs all samples at once.
    """
    if plan.response_format in PCM_FORMATS:
        parts = await _each_chunk(speech, plan, speech.synthesize_pcm16)
        return parts, sum(len(part) for part in parts) // 2
    audios = await _each_chunk(speech, plan, speech.synthesize_chunk)
    audio = audios[0] if len(audios) == 1 else np.concatenate(audios)
    rate = speech.engine.sample_rate
    if audio.size > INLINE_ENCODE_MAX_SAMPLES:  # minutes of audio: keep the event loop free
        return [await asyncio.to_thread(encode, audio, rate, plan.response_format)], audio.size
    return [encode(audio, rate, plan.response_format)], audio.size


async def _each_chunk(
    speech: SpeechService, plan: SpeechPlan, synthesize: Callable[[SynthesisRequest], Awaitable[T]]
) -> list[T]:
    """``synthesize`` over the plan's chunks, in order."""
    if speech.batcher is not None:  # let the batcher see every chunk at once
        return list(await asyncio.gather(*(synthesize(chunk) for chunk in plan.chunks)))
    return [await synthesize(chunk) for chunk in plan.chunks]


async def _start_stream(
    plan: SpeechPlan, request: Request, state: ServiceState, speech: SpeechService, started: float
) -> Response:
    """Admit and synthesise the first sentence here (so errors get real status codes)."""
    deadline = started + state.settings.request_timeout_seconds
    stack = AsyncExitStack()
    try:
        async with cancel_on_disconnect(request.receive), asyncio.timeout_at(_loop_time(deadline)):
            await stack.enter_async_context(state.admission.slot())
            synth_started = time.perf_counter()
            first = await speech.synthesize_pcm16(plan.chunks[0])
    except BaseException as error:
        await stack.aclose()
        _reraise_mapped(error, state)
    synth_seconds = time.perf_counter() - synth_started
    state.metrics.time_to_first_audio_seconds.observe(time.perf_counter() - started)
    rate = speech.engine.sample_rate
    produced: list[bytes] = [first]

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal synth_seconds
        head = streaming_wav_header(rate) if plan.response_format == "wav" else b""
        yield head + first
        for chunk in plan.chunks[1:]:
            chunk_started = time.perf_counter()
            async with asyncio.timeout_at(_loop_time(deadline)):
                pcm = await speech.synthesize_pcm16(chunk)
            synth_seconds += time.perf_counter() - chunk_started
            produced.append(pcm)
            yield pcm

    async def on_close(outcome: str) -> None:
        await stack.aclose()  # frees the admission slot
        if outcome == "disconnected":
            state.metrics.cancelled_requests_total.labels(stage="streaming").inc()
        elif outcome == "error":
            log.warning("stream aborted after %d of %d sentences", len(produced), len(plan.chunks))
        samples = sum(len(pcm) for pcm in produced) // 2
        _observe(state, started, samples, rate, synth_seconds, first_audio=False)

    headers = _audio_headers(speech, state, plan.voice)
    return AudioStream(chunks(), on_close, MEDIA_TYPES[plan.response_format], headers)


def _loop_time(perf_deadline: float) -> float:
    """A perf_counter deadline on the event loop's clock."""
    return asyncio.get_running_loop().time() + (perf_deadline - time.perf_counter())


def _audio_headers(speech: SpeechService, state: ServiceState, voice: str) -> dict[str, str]:
    """The engine and the voice that spoke: ``voice`` (the plan's), or while degraded the
    in-process fallback engine's own voice (the OOM guard speaks with its default)."""
    engine, spoke = speech.engine.name, voice
    degraded = state.guard is not None and state.guard.degraded
    if degraded and state.fallback is not None:
        engine, spoke = state.fallback.name, state.fallback.default_voice
    return {
        "X-Voiceops-Sample-Rate": str(speech.engine.sample_rate),
        pod.HEADER_ENGINE: engine,
        pod.HEADER_VOICE: spoke,
    }


def _observe(
    state: ServiceState,
    started: float,
    samples: int,
    sample_rate: int,
    synth_seconds: float,
    *,
    first_audio: bool,
) -> None:
    metrics = state.metrics
    elapsed = time.perf_counter() - started
    metrics.request_duration_seconds.observe(elapsed)
    if first_audio:
        metrics.time_to_first_audio_seconds.observe(elapsed)
    seconds = samples / sample_rate
    metrics.audio_seconds_total.inc(seconds)
    if seconds > 0:
        metrics.realtime_factor.observe(synth_seconds / seconds)


def _reraise_mapped(error: BaseException, state: ServiceState) -> NoReturn:
    mapped = _map_error(error, state)
    if mapped is error:
        raise error
    raise mapped from error


def refuse_when_saturated(state: ServiceState) -> None:
    """429 before the body is read while the queue is full.

    Refusing must cost far less than serving, or a flood of requests that will be
    refused anyway eats the CPU the admitted ones need. Admission itself still
    decides for the requests that get past this check.
    """
    if state.admission.saturated:
        state.metrics.rejected_requests_total.inc()
        raise overloaded(state.admission.retry_after_seconds())


def overloaded(retry_after_seconds: int) -> ApiError:
    return ApiError(
        429,
        f"server is at capacity; retry after {retry_after_seconds}s",
        code="server_overloaded",
        type_="rate_limit_error",
        headers={"Retry-After": str(retry_after_seconds)},
    )


def _map_error(error: BaseException, state: ServiceState) -> BaseException:
    """Turn what went wrong while serving into the client's answer."""
    if isinstance(error, ClientDisconnectedError):
        state.metrics.cancelled_requests_total.labels(stage="before_answer").inc()
        return ApiError(499, "client closed the request", code="client_closed")
    if isinstance(error, OverloadedError):
        return overloaded(error.retry_after_seconds)
    if isinstance(error, TimeoutError):
        return ApiError(
            504,
            f"no audio within the {state.settings.request_timeout_seconds:g}s request deadline",
            code="deadline_exceeded",
            type_="timeout_error",
        )
    if isinstance(error, UnknownVoiceError):
        return ApiError(400, str(error), param="voice", code="voice_not_found")
    if isinstance(error, EngineError):
        return ApiError(400, f"cannot synthesise this input: {error}", param="input")
    if isinstance(error, OutOfMemoryExhaustedError):
        return ApiError(
            503,
            f"{error}; the pod is shedding load",
            code="out_of_memory",
            type_="server_error",
            headers={"Retry-After": "5"},
        )
    return error


info_router = APIRouter()


@info_router.get("/v1/models")
async def list_models(speech: SpeechDep, state: StateDep, versions: bool = False) -> dict[str, Any]:
    """The same ids on every tier: OpenAI's, then every tier's engine (any selects this tier).

    ``?versions=true`` adds this pod's model versions, active and previous (they
    differ by tier and during a swap, so the plain listing leaves them out).
    """
    listing: dict[str, Any] = {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": 0, "owned_by": "voiceops"}
            for model in speech.voices.models
        ],
    }
    if versions and state.models is not None:
        described = state.models.describe()
        listing["versions"] = {"active": described["active"], "previous": described["previous"]}
    return listing


@info_router.get("/v1/audio/voices")
async def list_voices(speech: SpeechDep, state: StateDep, native: bool = False) -> dict[str, Any]:
    """The service's voices, identical on every tier; ``?native=true``: this pod's engine's.

    The catalogue lists what every tier accepts and derives alike (name, language,
    the service's engine for it); a tier without a voice speaks it with its
    nearest one and names that in ``X-Voiceops-Voice``. The native listing differs
    by tier by design (it is the answering pod's engine): ``default`` there is the
    native voice a request without a voice speaks with.
    """
    book = speech.voices
    if native:
        engine = speech.engine
        return {
            "engine": engine.name,
            "default": resolve_voice(None, book),
            "voices": [
                {
                    "name": v.name,
                    "language": v.language,
                    "sample_rate": v.sample_rate,
                    "speakers": v.speakers,
                    "engine": v.engine or engine.name,
                }
                for v in book.native
            ],
        }
    return {
        "default": book.default,
        "voices": [
            {"name": v.name, "language": v.language, "engine": v.engine} for v in book.catalogue
        ],
    }


probe_router = APIRouter()


@probe_router.get(pod.PATH_LIVE)
async def live(state: StateDep) -> JSONResponse:
    """Live = this event loop answers and no engine call is stuck."""
    stuck = state.oldest_engine_call_seconds()
    if stuck > state.settings.liveness_stall_seconds:
        return JSONResponse(
            {"status": "wedged", "engine_call_seconds": round(stuck, 3)}, status_code=503
        )
    return JSONResponse({"status": "ok", "engine_call_seconds": round(stuck, 3)})


@probe_router.get(pod.PATH_READY)
async def ready(state: StateDep) -> JSONResponse:
    reasons = state.not_ready_reasons()
    engine = state.engine
    body = {
        "ready": not reasons,
        "reasons": sorted(reasons),
        "messages": reasons,
        "engine": {
            "name": state.settings.engine if engine is None else engine.name,
            "device": None if engine is None else engine.device,
            "version": None if engine is None else engine.version,
            "fallback": None if state.fallback is None else state.fallback.name,
        },
        "gpu": state.gpu.latest.as_details(),
        "admission": {
            "running": state.admission.running,
            "queued": state.admission.waiting,
            "max_concurrency": state.admission.max_concurrency,
            "max_queue": state.admission.max_queue,
            "saturated": state.admission.saturated,
        },
        "degraded": state.guard is not None and state.guard.degraded,
        "tier": state.settings.tier or None,
    }
    return JSONResponse(body, status_code=503 if reasons else 200)


@probe_router.get(pod.PATH_METRICS)
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


require_fault_token = token_guard(
    lambda settings: settings.fault_token,
    pod.FAULT_TOKEN_HEADER,
    "fault injection",
    "VOICEOPS_FAULT_TOKEN",
)


# Mounted only when fault injection is enabled with a token; otherwise these paths 404.
faults_router = APIRouter(dependencies=[Depends(require_fault_token)], include_in_schema=False)


@faults_router.get(pod.PATH_FAULTS)
async def get_faults(state: StateDep) -> FaultSnapshot:
    return state.faults.snapshot()


@faults_router.post(pod.PATH_FAULTS, dependencies=[Depends(require_json)])
async def post_faults(update: FaultUpdate, state: StateDep) -> FaultSnapshot:
    current = state.faults.merge(update)
    loop = asyncio.get_running_loop()
    if update.hang_seconds:
        log.warning("fault injection: wedging the event loop for %.1fs", update.hang_seconds)
        loop.call_later(0.05, _hang, state, update.hang_seconds)
    if update.crash:
        log.critical("fault injection: crashing with exit code %d", CRASH_EXIT_CODE)
        loop.call_later(0.1, os._exit, CRASH_EXIT_CODE)
    return current


def _hang(state: ServiceState, seconds: float) -> None:
    time.sleep(seconds)  # deliberately blocks the event loop: liveness must fail meanwhile
    state.faults.merge(FaultUpdate(hang_seconds=0.0))


@faults_router.delete(pod.PATH_FAULTS)
async def clear_faults(state: StateDep) -> FaultSnapshot:
    return state.faults.clear()
