"""The web page: try voices and watch the pod (``/web/``), with its JSON status.

Three static files from this package (no framework, no build step, nothing from
the internet: many clusters cannot reach it), served with a strict
Content-Security-Policy that allows only the page's own files, and
``/web/status.json``, which the page polls: readiness and its reasons, the tier,
the engine, GPU memory, admission, and the limits the form needs. Every URL the
page uses is relative, so it works the same through the front Service, a
``kubectl port-forward`` or the API server's service proxy. Mounted unless
``VOICEOPS_WEB_UI=false``.
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field
from voiceops_contract import pod

from voiceops_service import __version__
from voiceops_service.audio import MEDIA_TYPES
from voiceops_service.errors import ApiError
from voiceops_service.state import ServiceState, StateDep

# The page's own files and nothing else: no inline script or style, no other origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
SPEED_MIN, SPEED_MAX = 0.25, 4.0  # SpeechBody.speed's bounds, for the form


class EngineStatus(BaseModel):
    name: str
    device: str | None
    version: str | None
    fallback: str | None
    degraded: bool = Field(description="Speaking with the in-process fallback after OOMs.")


class GpuMemoryStatus(BaseModel):
    used_bytes: int
    total_bytes: int
    gpus: int
    healthy: bool
    simulated: bool = Field(description="Injected by the fault endpoint, not read from NVML.")


class AdmissionStatus(BaseModel):
    running: int
    queued: int
    max_concurrency: int
    max_queue: int
    saturated: bool


class WebStatus(BaseModel):
    """``GET /web/status.json``: what the page shows about the pod that answered."""

    ready: bool
    reasons: dict[str, str] = Field(description="Why not ready: reason -> message (/readyz's).")
    tier: Literal["gpu", "fallback"] | None
    pod: str | None
    version: str
    engine: EngineStatus
    gpu_memory: GpuMemoryStatus | None = Field(description="Summed over GPUs; null: no GPU seen.")
    admission: AdmissionStatus
    voices: list[str]
    default_voice: str
    formats: list[str]
    speed_min: float
    speed_max: float
    max_input_chars: int
    jobs_enabled: bool
    jobs_max_input_chars: int | None


def build_status(state: ServiceState) -> WebStatus:
    """What the page shows, from the app's state (the job API is mounted when jobs_enabled)."""
    settings = state.settings
    engine, speech, snapshot = state.engine, state.speech, state.gpu.latest
    gpu_memory = None
    if snapshot.gpus:
        gpu_memory = GpuMemoryStatus(
            used_bytes=sum(g.used_bytes for g in snapshot.gpus),
            total_bytes=sum(g.total_bytes for g in snapshot.gpus),
            gpus=len(snapshot.gpus),
            healthy=snapshot.unhealthy_message() is None,
            simulated=snapshot.simulated,
        )
    if speech is not None:
        voices = [voice.name for voice in speech.voices.catalogue]
        default_voice = speech.voices.default
    else:
        default_voice = settings.service_voice or settings.voice
        voices = [default_voice] if default_voice else []
    return WebStatus(
        ready=not (reasons := state.not_ready_reasons()),
        reasons=reasons,
        tier=settings.tier or None,
        pod=settings.pod_name or None,
        version=__version__,
        engine=EngineStatus(
            name=settings.engine if engine is None else engine.name,
            device=None if engine is None else engine.device,
            version=None if engine is None else engine.version,
            fallback=None if state.fallback is None else state.fallback.name,
            degraded=state.guard is not None and state.guard.degraded,
        ),
        gpu_memory=gpu_memory,
        admission=AdmissionStatus(
            running=state.admission.running,
            queued=state.admission.waiting,
            max_concurrency=state.admission.max_concurrency,
            max_queue=state.admission.max_queue,
            saturated=state.admission.saturated,
        ),
        voices=voices,
        default_voice=default_voice,
        formats=list(MEDIA_TYPES),
        speed_min=SPEED_MIN,
        speed_max=SPEED_MAX,
        max_input_chars=settings.max_input_chars,
        jobs_enabled=settings.jobs_enabled,
        jobs_max_input_chars=settings.jobs_max_input_chars if settings.jobs_enabled else None,
    )


def _static_files() -> dict[str, bytes]:
    folder = resources.files(__name__).joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in STATIC_FILES}


def web_router() -> APIRouter:
    """The page's routes, with its files read once from the package."""
    files = _static_files()
    router = APIRouter(include_in_schema=False)

    def page_file(name: str) -> Response:
        return Response(files[name], media_type=STATIC_FILES[name], headers=SECURITY_HEADERS)

    @router.get("/")
    async def root() -> RedirectResponse:
        return RedirectResponse(pod.PATH_WEB.lstrip("/"), status_code=307)

    @router.get(pod.PATH_WEB.rstrip("/"))
    async def web_without_slash() -> RedirectResponse:
        # Relative to /web/, the page's own URLs (app.js, status.json) resolve under it.
        return RedirectResponse(pod.PATH_WEB.strip("/") + "/", status_code=307)

    @router.get(pod.PATH_WEB)
    async def index() -> Response:
        return page_file("index.html")

    @router.get(pod.PATH_WEB_STATUS, response_model=WebStatus, include_in_schema=True)
    async def status(state: StateDep) -> Response:
        body = build_status(state)
        return Response(
            body.model_dump_json(),
            media_type="application/json",
            headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
        )

    @router.get(pod.PATH_WEB + "{name}")
    async def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise ApiError(404, f"no file {name!r} in the web UI", code="not_found")
        return page_file(name)

    return router
