"""What the app holds while it runs (`app.state.service`) and the dependencies handing it out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from voiceops_service.admission import Admission
from voiceops_service.cache import AudioCache
from voiceops_service.engines.base import Engine
from voiceops_service.errors import ApiError
from voiceops_service.faults import FaultState
from voiceops_service.gpu import GpuMonitor
from voiceops_service.metrics import ServiceMetrics
from voiceops_service.models import ModelSwapper
from voiceops_service.resilience import OomGuard
from voiceops_service.routing import RoutingState
from voiceops_service.settings import ServiceSettings
from voiceops_service.synthesis import EngineRunner, SpeechService

READY_LOADING = "loading"
READY_LOAD_FAILED = "load_failed"
READY_GPU_UNUSABLE = "gpu_unusable"
READY_GPU_UNHEALTHY = "gpu_unhealthy"  # NVML: fatal XID, GPU lost, NVML failing, ECC
READY_DEGRADED = "degraded"
READY_STALLED = "stalled"  # an engine call has run past readiness_stall_seconds
READY_DRAINING = "draining"  # SIGTERM: finishing what is in flight before exiting


@dataclass
class ServiceState:
    settings: ServiceSettings
    metrics: ServiceMetrics
    faults: FaultState
    admission: Admission
    gpu: GpuMonitor
    engine: Engine | None = None
    fallback: Engine | None = None
    guard: OomGuard | None = None
    runner: EngineRunner | None = None
    speech: SpeechService | None = None
    load_error: str | None = None
    on_fatal: Callable[[str], None] | None = None
    routing: RoutingState = field(default_factory=RoutingState)
    models: ModelSwapper | None = None  # the versioned engine and its swapper, once loaded
    audio_cache: AudioCache | None = None

    def not_ready_reasons(self) -> dict[str, str]:
        """Reason -> human message; empty when the pod should receive traffic."""
        reasons: dict[str, str] = {}
        if self.load_error is not None:
            reasons[READY_LOAD_FAILED] = self.load_error
        elif self.speech is None:
            reasons[READY_LOADING] = f"loading the {self.settings.engine} engine"
        if (message := self.gpu_problem()) is not None:
            reasons[READY_GPU_UNUSABLE] = message
        # Whatever the engine runs on: every GPU NVML sees was allocated to this pod.
        if (message := self.gpu.latest.unhealthy_message()) is not None:
            reasons[READY_GPU_UNHEALTHY] = message
        # A full queue is no reason to leave the Service: when every pod is full, an
        # empty Service refuses connections, while a pod that stays answers 429 with
        # Retry-After, and the HPA sees the load. (/readyz shows it: admission.saturated.)
        if self.guard is not None and self.guard.degraded:
            fallback = self.guard.fallback.name if self.guard.fallback else "none"
            reasons[READY_DEGRADED] = (
                f"repeated CUDA out-of-memory errors ({self.guard.oom_count} so far); "
                f"in-process fallback engine: {fallback}"
            )
        stuck = self.oldest_engine_call_seconds()
        if stuck > self.settings.readiness_stall_limit_seconds:
            reasons[READY_STALLED] = (
                f"an engine call has run {stuck:.1f}s (readiness stall limit "
                f"{self.settings.readiness_stall_limit_seconds:g}s); liveness restarts it "
                f"after {self.settings.liveness_stall_seconds:g}s"
            )
        if self.routing.draining:
            reasons[READY_DRAINING] = (
                f"shutting down: finishing {self.admission.running} running and "
                f"{self.admission.waiting} queued requests"
            )
        return reasons

    def speech_in_flight(self) -> int:
        """Speech requests admitted or queued now."""
        return self.admission.running + self.admission.waiting

    def oldest_engine_call_seconds(self) -> float:
        """The longest-running engine call right now (direct or batched); 0 when idle."""
        ages = [self.runner.oldest_call_seconds()] if self.runner is not None else []
        batcher = self.speech.batcher if self.speech is not None else None
        if batcher is not None:
            ages.append(batcher.oldest_call_seconds())
        return max(ages, default=0.0)

    def gpu_problem(self) -> str | None:
        """Why the GPU this pod needs cannot be used (None: fine, or no GPU needed)."""
        engine = self.engine
        if engine is not None and not engine.device.startswith("cuda"):
            if self.settings.device == "cuda":
                return f"device=cuda was asked for but the {engine.name} engine runs on cpu"
            return None
        if engine is None and self.settings.device != "cuda":
            return None
        snapshot = self.gpu.latest
        if not snapshot.cuda_available:
            return "the engine needs CUDA but torch sees no usable GPU"
        if snapshot.nvml_error is not None and not snapshot.simulated:
            return snapshot.nvml_error
        return None


# Dependencies are async on purpose: FastAPI runs sync ones in its thread pool,
# one thread hop each per request.
async def get_state(request: Request) -> ServiceState:
    return request.app.state.service


def speech_service(state: ServiceState) -> SpeechService:
    """The running speech service, or 503 while the engine loads (or failed to)."""
    if state.speech is None:
        reason = state.load_error or f"the {state.settings.engine} engine is still loading"
        raise ApiError(
            503, reason, code="not_ready", type_="server_error", headers={"Retry-After": "5"}
        )
    return state.speech


async def get_speech(request: Request) -> SpeechService:
    return speech_service(request.app.state.service)


StateDep = Annotated[ServiceState, Depends(get_state)]
SpeechDep = Annotated[SpeechService, Depends(get_speech)]
