"""The app factory: ``create_app(settings)`` wires settings, metrics, engine and routes.

The lifespan starts serving probes at once and loads + warms the engine in
the background, so ``/readyz`` can say ``loading`` (and a startup probe on
``/healthz`` passes) while a large model loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voiceops_service import __version__
from voiceops_service.admin_models import models_admin_router
from voiceops_service.admission import Admission
from voiceops_service.api import faults_router, info_router, probe_router, speech_router
from voiceops_service.batching import create_batcher
from voiceops_service.cache import AudioCache
from voiceops_service.engines.base import Engine
from voiceops_service.engines.registry import create_engine
from voiceops_service.errors import install_error_handlers
from voiceops_service.faults import FaultState
from voiceops_service.gpu import GpuMonitor
from voiceops_service.jobs.api import jobs_router
from voiceops_service.jobs.runtime import JobsRuntime
from voiceops_service.metrics import ServiceMetrics
from voiceops_service.models import ModelSwapper, VersionedEngine, initial_version
from voiceops_service.resilience import OomGuard, OomPolicy
from voiceops_service.routing import (
    ConnectionCloseWhileRoutedAway,
    RoutingState,
    public_key,
    routing_router,
)
from voiceops_service.settings import ServiceSettings
from voiceops_service.speech import voice_book
from voiceops_service.state import ServiceState
from voiceops_service.synthesis import Batcher, EngineRunner, SpeechService
from voiceops_service.web import web_router

log = logging.getLogger(__name__)


class RequestMetricsMiddleware:
    """Counts every HTTP answer as ``voiceops_requests_total{route, code}`` (route = template)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests_total.labels(route=route, code=str(status)).inc()


class ServiceApp(FastAPI):
    """The FastAPI app with :class:`ConnectionCloseWhileRoutedAway` (routing.py) outermost.

    Outside Starlette's error middleware too, so a 500 also says ``Connection: close``
    while the pod is routed away.
    """

    def build_middleware_stack(self) -> ASGIApp:
        state: ServiceState = self.state.service
        return ConnectionCloseWhileRoutedAway(super().build_middleware_stack(), state.routing)


def _load_engines(settings: ServiceSettings) -> tuple[Engine, Engine | None]:
    """Create, load and warm the engine (and the in-process fallback). Blocking."""
    if settings.faults_enabled:
        # Injected OOMs raise torch.OutOfMemoryError: import torch now, not on the first
        # injected call (seconds on a CPU pod, which would blow that request's deadline).
        importlib.import_module("torch")
    engine = create_engine(settings.engine, settings)
    engine.load()
    engine.warm_up()
    fallback: Engine | None = None
    if settings.fallback_engine:
        fallback = create_engine(settings.fallback_engine, settings)
        fallback.load()
        fallback.warm_up()
    return engine, fallback


def _create_batcher(engine: Engine, guard: OomGuard, state: ServiceState) -> Batcher | None:
    """The dynamic batcher when the engine batches (memory caps read the pod's GPU telemetry)."""
    if not engine.supports_batching:
        return None
    return create_batcher(
        engine=engine,
        guard=guard,
        settings=state.settings,
        metrics=state.metrics,
        gpu=state.gpu,
    )


async def load_service(state: ServiceState) -> None:
    """Bring the engine up and publish it on ``state`` (readiness flips when done)."""
    settings = state.settings
    try:
        engine, fallback = await asyncio.to_thread(_load_engines, settings)
        # Every part below holds the versioned engine, so a model swap reaches all of them.
        versions = VersionedEngine(await asyncio.to_thread(initial_version, settings, engine))
        engine = versions
        guard = OomGuard(
            OomPolicy.from_settings(settings),
            metrics=state.metrics,
            faults=state.faults,
            fallback=fallback,
            target_sample_rate=engine.sample_rate,
        )
        parallelism = settings.max_concurrency if engine.thread_safe else 1
        runner = EngineRunner(parallelism, state.metrics)
        batcher = _create_batcher(engine, guard, state)
        if batcher is not None and hasattr(batcher, "start"):
            await batcher.start()
        await asyncio.to_thread(state.gpu.poll_once)  # readiness sees the loaded engine's GPU
    except Exception as error:
        state.load_error = f"loading engine {settings.engine!r} failed: {error}"
        log.exception("engine load failed")
        if state.on_fatal is not None:
            state.on_fatal(state.load_error)
        return
    state.engine, state.fallback, state.guard, state.runner = engine, fallback, guard, runner
    state.metrics.set_engine_info(engine.name, engine.default_voice, engine.version, engine.device)
    state.speech = SpeechService(
        engine, guard, runner, batcher, state.metrics, voices=voice_book(engine, settings)
    )
    cache = AudioCache(
        settings.audio_cache_max_bytes, settings.audio_cache_max_chars, state.metrics
    )
    state.audio_cache = cache
    state.models = ModelSwapper(
        versions, settings, state.metrics, state.gpu, on_swapped=[cache.keep_only]
    )
    log.info(
        "ready: engine %s %s on %s, voice %s, fallback %s",
        engine.name,
        engine.version,
        engine.device,
        engine.default_voice,
        fallback.name if fallback else "none",
    )


async def close_service(state: ServiceState) -> None:
    speech = state.speech
    if speech is not None and speech.batcher is not None and hasattr(speech.batcher, "close"):
        await speech.batcher.close()
    if state.runner is not None:
        state.runner.close()
    for engine in (state.engine, state.fallback):
        if engine is not None:
            engine.close()
    state.gpu.close()


def create_app(
    settings: ServiceSettings | None = None, *, on_fatal: Callable[[str], None] | None = None
) -> FastAPI:
    """A new app; ``on_fatal(message)`` is called if the engine cannot load (the CLI exits)."""
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics()
    faults = FaultState()
    state = ServiceState(
        settings=settings,
        metrics=metrics,
        faults=faults,
        admission=Admission(settings.max_concurrency, settings.max_queue, metrics),
        gpu=GpuMonitor(metrics, faults, settings.gpu_poll_interval_seconds),
        on_fatal=on_fatal,
        routing=RoutingState(metrics.routed),
    )
    metrics.set_engine_info(settings.engine, settings.voice, "loading", settings.device)
    jobs = JobsRuntime(state) if settings.jobs_enabled else None  # docs/jobs.md

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # Telemetry runs from the start: GPU memory matters while a model loads, too.
        poller = asyncio.create_task(state.gpu.run(), name="gpu-poller")
        loader = asyncio.create_task(load_service(state), name="engine-loader")
        if jobs is not None:
            jobs.start()
        try:
            yield {}
        finally:
            if jobs is not None:
                await jobs.stop()
            for task in (loader, poller):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await close_service(state)

    app = ServiceApp(
        title="voiceops-service",
        version=__version__,
        description="OpenAI-compatible text-to-speech with truthful health and GPU telemetry.",
        lifespan=lifespan,
    )
    app.state.service = state
    install_error_handlers(app)
    app.include_router(speech_router)
    app.include_router(info_router)
    app.include_router(probe_router)
    if settings.web_ui:
        app.include_router(web_router())
    app.state.jobs = jobs
    if jobs is not None:
        app.include_router(jobs_router)
    if settings.faults_enabled:
        log.warning("fault injection is ENABLED at %s", "/admin/faults")
        app.include_router(faults_router)
    elif settings.fault_injection:
        log.warning("VOICEOPS_FAULT_INJECTION=true but VOICEOPS_FAULT_TOKEN is empty: faults off")
    if settings.model_admin_enabled:
        log.warning("the model admin API is ENABLED at %s", "/admin/models")
        app.include_router(models_admin_router)
    elif settings.model_admin:
        log.warning(
            "VOICEOPS_MODEL_ADMIN=true but neither VOICEOPS_MODEL_ADMIN_TOKEN nor the "
            "operator's key (VOICEOPS_ROUTING_PUBLIC_KEY, VOICEOPS_POD_NAME) is set: it is off"
        )
    if settings.routing_notices_enabled:
        app.include_router(
            routing_router(public_key(settings.routing_public_key), settings.pod_name)
        )
    elif settings.routing_public_key:
        log.warning("VOICEOPS_ROUTING_PUBLIC_KEY is set but VOICEOPS_POD_NAME is empty: no notices")
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app
