"""Model versions that change without a restart: load aside, validate, swap, drain, roll back.

:class:`VersionedEngine` is the engine every other part holds (the speech service,
the batcher, the OOM guard). Each engine call takes a reference to the version
active when it starts and ends on that version; a swap only changes which version
the next call takes. A retired version is closed (its weights and, on a GPU, the
CUDA cache freed) when its last call returns.

:class:`ModelSwapper` runs one swap at a time: resolve the URI, refuse when loading
aside would push GPU memory past the critical ratio, load and warm the candidate
in a worker thread, validate it with a canary synthesis, then swap. Any failure
before the swap discards the candidate and the active version never stops
serving: that is the rollback. ``POST /admin/models/rollback`` swaps back to the
previous version the same way. docs/hot-swap.md has the whole design.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import posixpath
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from voiceops_contract.pod import MODEL_MOUNT_PATH

from voiceops_service.engines.base import (
    Audio,
    Engine,
    MemoryHint,
    Pcm16,
    SynthesisRequest,
    VoiceInfo,
)
from voiceops_service.resilience import free_accelerator_cache

if TYPE_CHECKING:
    from voiceops_service.engines.vits.voice import VoiceFiles
    from voiceops_service.gpu import GpuMonitor, GpuSnapshot
    from voiceops_service.metrics import ServiceMetrics
    from voiceops_service.settings import ServiceSettings

log = logging.getLogger(__name__)

SwapResult = Literal[
    "swapped", "unchanged", "refused_memory", "load_failed", "validation_failed", "busy"
]
CANARY_TEXT = "Hello, this is a short check of the new voice."
SILENCE_PEAK = 0.01  # a canary whose loudest sample is quieter than this is silent
VERSION_PATTERN = r"^[A-Za-z0-9._:+@/-]*$"  # it becomes a header and a metric label


@dataclass(eq=False)
class ModelVersion:
    """One loaded model and the engine calls running on it."""

    version: str
    uri: str  # "" = the bundled voice, file:///abs/path, pvc://claim/path
    engine: Engine
    activated_at: float = 0.0  # wall clock
    refs: int = 0  # engine calls running on it now
    retired: bool = False
    drained: threading.Event = field(default_factory=threading.Event)  # retired and idle

    def describe(self) -> dict[str, object]:
        return {"version": self.version, "uri": self.uri, "activated_at": self.activated_at}


@dataclass(frozen=True)
class VersionStamp:
    """Which version was active when a request began (``generation`` counts swaps)."""

    version: str
    generation: int


class VersionedEngine(Engine):
    """The active model version behind the ordinary engine interface."""

    def __init__(self, first: ModelVersion) -> None:
        self._lock = threading.Lock()
        first.activated_at = time.time()
        self._active = first
        self._previous: ModelVersion | None = None
        self._generation = 0
        self.name = first.engine.name

    # --- versions ------------------------------------------------------------------------
    @property
    def active(self) -> ModelVersion:
        return self._active

    @property
    def previous(self) -> ModelVersion | None:
        return self._previous

    @property
    def generation(self) -> int:
        return self._generation

    def stamp(self) -> VersionStamp:
        with self._lock:
            return VersionStamp(self._active.version, self._generation)

    def unchanged_since(self, stamp: VersionStamp) -> bool:
        """No swap since ``stamp``: every engine call in between ran on its version."""
        return self._generation == stamp.generation

    def activate(self, candidate: ModelVersion) -> ModelVersion:
        """Make ``candidate`` the active version at once; the old one is freed once idle."""
        with self._lock:
            old = self._active
            candidate.activated_at = time.time()
            self._active, self._previous = candidate, old
            self._generation += 1
            old.retired = True
            idle = old.refs == 0
        if idle:
            self._free(old)
        return old

    @contextmanager
    def _using(self) -> Iterator[Engine]:
        with self._lock:
            current = self._active
            current.refs += 1
        try:
            yield current.engine
        finally:
            with self._lock:
                current.refs -= 1
                last = current.retired and current.refs == 0
            if last:
                self._free(current)

    @staticmethod
    def _free(version: ModelVersion) -> None:
        try:
            version.engine.close()  # vits: drops the weights and empties the CUDA cache
        finally:
            version.drained.set()
        log.info("model version %s freed", version.version)

    # --- the Engine interface, on the active version --------------------------------------
    @property
    def version(self) -> str:  # type: ignore[override]  # the engine library's version
        return self._active.engine.version

    @property
    def sample_rate(self) -> int:
        return self._active.engine.sample_rate

    @property
    def device(self) -> str:
        return self._active.engine.device

    @property
    def thread_safe(self) -> bool:
        return self._active.engine.thread_safe

    @property
    def supports_batching(self) -> bool:
        return self._active.engine.supports_batching

    @property
    def default_voice(self) -> str:
        return self._active.engine.default_voice

    def load(self) -> None:
        """Versions arrive loaded (the first by the app, the others by ModelSwapper)."""

    def warm_up(self) -> None:
        with self._using() as engine:
            engine.warm_up()

    def voices(self) -> list[VoiceInfo]:
        return self._active.engine.voices()

    def synthesize(self, request: SynthesisRequest) -> Audio:
        with self._using() as engine:
            return engine.synthesize(request)

    def synthesize_batch(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        with self._using() as engine:
            return engine.synthesize_batch(requests)

    def synthesize_batch_pcm16(self, requests: Sequence[SynthesisRequest]) -> list[Pcm16]:
        with self._using() as engine:
            return engine.synthesize_batch_pcm16(requests)

    def memory_hint(self) -> MemoryHint | None:
        return self._active.engine.memory_hint()

    def close(self) -> None:
        self._active.engine.close()


# --- pure parts ------------------------------------------------------------------------------
class ModelUriError(ValueError):
    """The URI is not one the service can load."""


def model_path_for_uri(uri: str) -> str:
    """Where this pod finds ``uri``'s files (the operator's spec.model.uri forms).

    ``""`` is the bundled voice (returns ``""``); ``file:///abs/path`` is that
    path; ``pvc://claim/path`` is ``path`` inside the claim this pod mounts at
    ``MODEL_MOUNT_PATH`` (a pod reaches only the claim it was started with).
    """
    if uri == "":
        return ""
    scheme, sep, rest = uri.partition("://")
    if sep and scheme == "file" and rest.startswith("/") and ".." not in rest.split("/"):
        return posixpath.normpath(rest)
    if sep and scheme == "pvc" and rest.partition("/")[0]:
        sub_path = rest.partition("/")[2].strip("/")
        if ".." in sub_path.split("/"):
            raise ModelUriError(f"uri {uri!r}: the path inside the claim must not contain '..'")
        return posixpath.join(MODEL_MOUNT_PATH, sub_path) if sub_path else MODEL_MOUNT_PATH
    raise ModelUriError(
        f"uri {uri!r} is not loadable; use empty (the bundled voice), file:///abs/path "
        "or pvc://claim/path"
    )


def load_aside_refusal(
    snapshot: GpuSnapshot, extra_bytes: int, critical_ratio: float
) -> str | None:
    """Why loading ``extra_bytes`` beside the active model is refused; None when it fits.

    Only a pod that reads a GPU (NVML, or the fault endpoint's simulated reading)
    can be refused.
    """
    if not snapshot.gpus:
        return None
    reading = snapshot.gpus[0]
    if reading.total_bytes <= 0:
        return None
    after = reading.used_bytes + extra_bytes
    if after <= critical_ratio * reading.total_bytes:
        return None
    return (
        f"loading the model aside needs about {extra_bytes} bytes of GPU memory: GPU "
        f"{reading.gpu} would use {after} of {reading.total_bytes} bytes "
        f"({after / reading.total_bytes:.1%}), past the critical ratio {critical_ratio:.0%}; "
        "update with a Rolling restart instead"
    )


class CanaryResult(BaseModel):
    sample_rate: int
    audio_seconds: float
    synthesis_seconds: float
    realtime_factor: float
    peak: float


class CanaryError(ValueError):
    """The candidate's canary synthesis is not usable audio."""


def check_canary(
    audio: Audio, sample_rate: int, expected_rate: int, synthesis_seconds: float, max_rtf: float
) -> CanaryResult:
    """The canary's numbers, or CanaryError naming the first rule it breaks."""
    if sample_rate != expected_rate:
        raise CanaryError(
            f"sample rate {sample_rate} Hz, but the active model speaks at {expected_rate} Hz"
        )
    if audio.size == 0:
        raise CanaryError("the canary produced no audio")
    if not bool(np.isfinite(audio).all()):
        raise CanaryError("the canary's audio has non-finite samples (NaN or infinity)")
    peak = float(np.abs(audio).max())
    if peak < SILENCE_PEAK:
        raise CanaryError(f"the canary is silent (peak {peak:.5f} < {SILENCE_PEAK})")
    seconds = audio.size / sample_rate
    rtf = synthesis_seconds / seconds
    if rtf > max_rtf:
        raise CanaryError(f"real-time factor {rtf:.3f} is over the bound {max_rtf:g}")
    return CanaryResult(
        sample_rate=sample_rate,
        audio_seconds=round(seconds, 4),
        synthesis_seconds=round(synthesis_seconds, 4),
        realtime_factor=round(rtf, 4),
        peak=round(peak, 4),
    )


def files_digest(files: VoiceFiles) -> str:
    """``sha256:<16 hex>`` of the weights and the config: a re-exported config is a new version."""
    digest = hashlib.sha256()
    for path in (files.model, files.config):
        with Path(path).open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


def voice_files(model_path: str, voice: str) -> VoiceFiles:
    """The Piper files at ``model_path`` ("" = the bundled voice). Imports the vits package."""
    from voiceops_service.engines.vits.voice import bundled_voice_files, find_voice_files

    return find_voice_files(model_path, voice) if model_path else bundled_voice_files()


def initial_version(settings: ServiceSettings, engine: Engine) -> ModelVersion:
    """The version the pod starts with: ``model_version``, else a digest of its files."""
    uri = f"file://{settings.model_path}" if settings.model_path else ""
    version = settings.model_version
    if not version:
        if engine.name == "vits":
            version = files_digest(voice_files(settings.model_path, settings.voice))
        else:
            version = f"{engine.name}-{engine.version.replace(' ', '-')}"
    return ModelVersion(version=version, uri=uri, engine=engine)


# --- the admin API's bodies --------------------------------------------------------------------
class SwapRequest(BaseModel):
    """``POST /admin/models``: the model to load aside, validate and swap in."""

    model_config = ConfigDict(extra="forbid")
    uri: str = Field(
        "", max_length=4096, description="'' (bundled), file:///abs/path or pvc://claim/path"
    )
    version: str = Field(
        "",
        max_length=200,
        pattern=VERSION_PATTERN,
        description="The version's name; empty = sha256 of the files.",
    )


class SwapReport(BaseModel):
    result: SwapResult
    version: str  # the version asked for ("" when it could not be worked out)
    uri: str
    message: str = ""
    active: str  # the version serving once the attempt ended
    previous: str | None = None
    rollback: bool = False  # a swap back to the previous version
    load_seconds: float = 0.0
    validate_seconds: float = 0.0
    drain_seconds: float = 0.0
    total_seconds: float = 0.0
    canary: CanaryResult | None = None
    finished_at: float = 0.0


class SwapFailedError(Exception):
    """A swap that did not happen; the report says why, the active version is unchanged."""

    def __init__(self, status: int, report: SwapReport) -> None:
        super().__init__(report.message)
        self.status = status
        self.report = report


CandidateLoader = Callable[["ServiceSettings", "VoiceFiles"], Engine]


def load_vits_candidate(settings: ServiceSettings, files: VoiceFiles) -> Engine:
    """A new VITS engine for ``files``, loaded and warmed (blocking: a worker thread)."""
    from voiceops_service.engines.vits import VitsEngine, VitsOptions

    engine = VitsEngine(
        VitsOptions(
            model_path=str(files.model),
            voice=files.name,
            device=settings.device,
            fp16=settings.fp16,
        )
    )
    try:
        engine.load()
        engine.warm_up()
    except BaseException:
        engine.close()
        raise
    return engine


class ModelSwapper:
    """Load aside, validate, swap and drain: one swap at a time."""

    def __init__(
        self,
        versions: VersionedEngine,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        gpu: GpuMonitor,
        *,
        on_swapped: Sequence[Callable[[ModelVersion], None]] = (),
        load_candidate: CandidateLoader = load_vits_candidate,
    ) -> None:
        self.versions = versions
        self._settings = settings
        self._metrics = metrics
        self._gpu = gpu
        self._on_swapped = tuple(on_swapped)
        self._load_candidate = load_candidate
        self._busy = asyncio.Lock()
        self.last: SwapReport | None = None
        self._publish_versions()

    def describe(self) -> dict[str, object]:
        previous = self.versions.previous
        return {
            "active": self.versions.active.describe(),
            "previous": None if previous is None else previous.describe(),
            "swapping": self._busy.locked(),
            "last_swap": None if self.last is None else self.last.model_dump(),
        }

    async def rollback(self) -> SwapReport:
        """Swap back to the previous version (loaded again from its URI and validated)."""
        previous = self.versions.previous
        if previous is None:
            raise SwapFailedError(409, self._report("unchanged", "", "", "no previous version"))
        return await self.swap(SwapRequest(uri=previous.uri, version=previous.version), True)

    async def swap(self, request: SwapRequest, rollback: bool = False) -> SwapReport:
        if self._busy.locked():  # checked and taken with no await between: atomic on the loop
            report = self._report("busy", request.version, request.uri, "a swap is in progress")
            self._metrics.model_swaps_total.labels(result="busy").inc()
            raise SwapFailedError(409, report)
        async with self._busy:
            try:
                report = await self._swap(request, rollback)
            except SwapFailedError as failed:
                self._finish(failed.report)
                raise
            self._finish(report)
            return report

    def _finish(self, report: SwapReport) -> None:
        self.last = report
        self._metrics.model_swaps_total.labels(result=report.result).inc()
        if report.result == "swapped":
            self._metrics.model_swap_seconds.observe(report.total_seconds)
        level = logging.INFO if report.result in ("swapped", "unchanged") else logging.WARNING
        log.log(level, "model swap to %s: %s %s", report.version, report.result, report.message)

    async def _swap(self, request: SwapRequest, rollback: bool) -> SwapReport:
        started = time.perf_counter()
        active = self.versions.active
        settings = self._settings

        def fail(status: int, result: SwapResult, version: str, message: str) -> SwapFailedError:
            report = self._report(result, version, request.uri, message, started, rollback)
            return SwapFailedError(status, report)

        if active.engine.name != "vits":
            raise fail(
                400, "load_failed", request.version, f"the {active.engine.name} engine has no "
                "model weights to swap (only vits does)"
            )  # fmt: skip
        try:
            path = model_path_for_uri(request.uri)
            files = await asyncio.to_thread(voice_files, path, settings.voice)
        except ValueError as error:  # ModelUriError, VoiceLoadError
            raise fail(400, "load_failed", request.version, str(error)) from None
        version = request.version or await asyncio.to_thread(files_digest, files)
        if version == active.version:
            return self._report("unchanged", version, request.uri, "already active", started)

        snapshot = await asyncio.to_thread(self._gpu.poll_once)
        hint = active.engine.memory_hint()
        extra = files.model.stat().st_size + (hint.bytes_per_item if hint else 0)
        refusal = load_aside_refusal(snapshot, extra, settings.model_swap_memory_critical_ratio)
        if refusal is not None:
            raise fail(507, "refused_memory", version, refusal)

        load_started = time.perf_counter()
        try:
            candidate = await asyncio.to_thread(self._load_candidate, settings, files)
        except Exception as error:
            free_accelerator_cache()
            raise fail(422, "load_failed", version, f"loading {files.model}: {error}") from None
        load_seconds = time.perf_counter() - load_started

        validate_started = time.perf_counter()
        try:
            canary = await asyncio.to_thread(validate_candidate, candidate, active.engine, settings)
        except Exception as error:
            candidate.close()
            message = f"validation of {version} failed: {error}"
            raise fail(422, "validation_failed", version, message) from None
        validate_seconds = time.perf_counter() - validate_started

        old = self.versions.activate(ModelVersion(version, request.uri, candidate))
        self._publish_versions()
        for listener in self._on_swapped:
            listener(self.versions.active)
        drain_started = time.perf_counter()
        drained = await asyncio.to_thread(old.drained.wait, settings.request_timeout_seconds)
        drain_seconds = time.perf_counter() - drain_started
        message = "" if drained else (
            f"version {old.version} still has {old.refs} calls running; it is freed when they end"
        )  # fmt: skip
        report = self._report("swapped", version, request.uri, message, started, rollback)
        return report.model_copy(
            update={
                "load_seconds": round(load_seconds, 4),
                "validate_seconds": round(validate_seconds, 4),
                "drain_seconds": round(drain_seconds, 4),
                "canary": canary,
            }
        )

    def _report(
        self,
        result: SwapResult,
        version: str,
        uri: str,
        message: str,
        started: float | None = None,
        rollback: bool = False,
    ) -> SwapReport:
        previous = self.versions.previous
        return SwapReport(
            result=result,
            version=version,
            uri=uri,
            message=message,
            active=self.versions.active.version,
            previous=None if previous is None else previous.version,
            rollback=rollback,
            total_seconds=0.0 if started is None else round(time.perf_counter() - started, 4),
            finished_at=time.time(),
        )

    def _publish_versions(self) -> None:
        previous = self.versions.previous
        self._metrics.model_version_info.info(
            {
                "version": self.versions.active.version,
                "previous": "" if previous is None else previous.version,
            }
        )


def validate_candidate(
    candidate: Engine, active: Engine, settings: ServiceSettings
) -> CanaryResult:
    """Same voices and sample rate as the active model, and a canary that is real speech."""
    ours = sorted(voice.name for voice in active.voices())
    theirs = sorted(voice.name for voice in candidate.voices())
    if ours != theirs:
        raise CanaryError(f"voices {theirs} differ from the active model's {ours}")
    started = time.perf_counter()
    audio = candidate.synthesize(SynthesisRequest(text=CANARY_TEXT))
    seconds = time.perf_counter() - started
    return check_canary(
        audio, candidate.sample_rate, active.sample_rate, seconds, settings.model_swap_max_rtf
    )
