"""GPU telemetry: NVML memory and utilisation per GPU, torch allocator; polled off the request path.

Without NVML or a GPU the monitor keeps running, reports why in
:attr:`GpuSnapshot.nvml_error` (shown by ``/readyz``) and exports no per-GPU
series at all. Fault injection's ``gpu_memory`` replaces the reading (as GPU
"0" when there is none), so chaos tests see pressure through ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from voiceops_service.faults import FaultState
    from voiceops_service.metrics import ServiceMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuReading:
    gpu: str  # NVML index as a string (the metric label)
    used_bytes: int
    total_bytes: int
    utilization_ratio: float | None = None
    simulated: bool = False


@dataclass(frozen=True)
class GpuSnapshot:
    gpus: tuple[GpuReading, ...] = ()
    nvml_error: str | None = "not polled yet"
    torch_allocated_bytes: int = 0
    torch_reserved_bytes: int = 0
    cuda_available: bool = False
    simulated: bool = False

    def as_details(self) -> dict[str, object]:
        return {
            "nvml": self.nvml_error is None,
            "nvml_error": self.nvml_error,
            "cuda_available": self.cuda_available,
            "simulated": self.simulated,
            "gpus": [
                {
                    "gpu": g.gpu,
                    "used_bytes": g.used_bytes,
                    "total_bytes": g.total_bytes,
                    "utilization_ratio": g.utilization_ratio,
                }
                for g in self.gpus
            ],
        }


class GpuReader(Protocol):
    error: str | None

    def read(self) -> list[GpuReading]: ...

    def close(self) -> None: ...


class NvmlReader:
    """Reads NVML (``nvidia-ml-py``). ``error`` says why there are no readings."""

    def __init__(self) -> None:
        self.error: str | None = None
        self._handles: list[tuple[str, object]] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [(str(i), pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
            if not self._handles:
                self.error = "NVML sees no GPU"
        except Exception as error:  # NVMLError_LibraryNotFound, driver missing, ...
            self.error = f"NVML unavailable: {type(error).__name__}: {error}"

    def read(self) -> list[GpuReading]:
        if self.error is not None:
            return []
        import pynvml

        readings: list[GpuReading] = []
        for gpu, handle in self._handles:
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization: float | None = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100
            except pynvml.NVMLError:
                utilization = None  # not supported on some MIG/vGPU setups
            readings.append(GpuReading(gpu, int(memory.used), int(memory.total), utilization))
        return readings

    def close(self) -> None:
        if self.error is None:
            import pynvml

            pynvml.nvmlShutdown()


def _torch_memory() -> tuple[bool, int, int]:
    torch = sys.modules.get("torch")  # only engines that use torch import it
    try:
        if torch is None or not torch.cuda.is_available():
            return False, 0, 0
        return True, int(torch.cuda.memory_allocated()), int(torch.cuda.memory_reserved())
    except AttributeError:  # torch is being imported by another thread right now
        return False, 0, 0


def _apply_simulation(readings: list[GpuReading], faults: FaultState | None) -> list[GpuReading]:
    simulated = faults.simulated_gpu_memory() if faults is not None else None
    if simulated is None:
        return readings
    first = readings[0] if readings else None
    fake = GpuReading(
        gpu=first.gpu if first else "0",
        used_bytes=simulated.used_bytes,
        total_bytes=simulated.total_bytes,
        utilization_ratio=first.utilization_ratio if first else None,
        simulated=True,
    )
    return [fake, *readings[1:]]


@dataclass
class GpuMonitor:
    metrics: ServiceMetrics
    faults: FaultState | None = None
    interval_seconds: float = 2.0
    reader: GpuReader | None = None
    latest: GpuSnapshot = field(default_factory=GpuSnapshot)
    _published: set[str] = field(default_factory=set)
    _poll_lock: threading.Lock = field(default_factory=threading.Lock)

    def poll_once(self) -> GpuSnapshot:
        """Read everything once and publish it (blocking: run it in a thread)."""
        with self._poll_lock:  # the poller and the engine loader may both poll
            return self._poll()

    def _poll(self) -> GpuSnapshot:
        if self.reader is None:
            self.reader = NvmlReader()
            if self.reader.error:
                log.info("GPU telemetry off: %s", self.reader.error)
        try:
            readings = self.reader.read()
            error = self.reader.error
        except Exception as exc:  # a GPU that fell off the bus must not kill the poller
            readings, error = [], f"NVML read failed: {type(exc).__name__}: {exc}"
        readings = _apply_simulation(readings, self.faults)
        cuda, allocated, reserved = _torch_memory()
        snapshot = GpuSnapshot(
            gpus=tuple(readings),
            nvml_error=error,
            torch_allocated_bytes=allocated,
            torch_reserved_bytes=reserved,
            cuda_available=cuda,
            simulated=any(r.simulated for r in readings),
        )
        self._publish(snapshot)
        self.latest = snapshot
        return snapshot

    def _publish(self, snapshot: GpuSnapshot) -> None:
        m = self.metrics
        current = {reading.gpu for reading in snapshot.gpus}
        for gone in self._published - current:  # no stale series for a vanished/cleared GPU
            m.remove_gpu(gone)
        self._published = current
        for reading in snapshot.gpus:
            m.gpu_memory_used_bytes.labels(gpu=reading.gpu).set(reading.used_bytes)
            m.gpu_memory_total_bytes.labels(gpu=reading.gpu).set(reading.total_bytes)
            if reading.utilization_ratio is not None:
                m.gpu_utilization_ratio.labels(gpu=reading.gpu).set(reading.utilization_ratio)
        m.torch_memory_allocated_bytes.set(snapshot.torch_allocated_bytes)
        m.torch_memory_reserved_bytes.set(snapshot.torch_reserved_bytes)

    async def run(self) -> None:
        """Poll forever on the interval (cancel the task to stop)."""
        while True:
            try:
                await asyncio.to_thread(self.poll_once)
            except Exception:  # keep polling: one bad read must not end telemetry
                log.exception("GPU telemetry poll failed")
            await asyncio.sleep(self.interval_seconds)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
