"""GPU telemetry and health from NVML: memory, utilisation, XIDs, ECC; polled off the request path.

Without NVML or a GPU the monitor keeps running, reports why in
:attr:`GpuSnapshot.nvml_error` (shown by ``/readyz``) and exports no per-GPU
series at all. Fault injection's ``gpu_memory`` replaces the reading (as GPU
"0" when there is none), so chaos tests see pressure through ``/metrics``.

**Health.** Every GPU NVML sees is this pod's (the device plugin exposes only
the GPUs allocated to the container), so an unhealthy one makes the pod unready
(``gpu_unhealthy`` on ``/readyz``, whatever device the engine runs on) and is
exported as ``voiceops_gpu_healthy{gpu, uuid, reason} 0``. A GPU is unhealthy,
by the first that applies:

* ``xid_<code>`` — NVML delivered a *fatal* XID (see :data:`FATAL_XIDS`). Sticky
  for the life of the process: a GPU that raised one needs a reset, which this
  pod cannot do, so it stays unready until it is replaced;
* ``gpu_lost`` — NVML answers ``NVML_ERROR_GPU_IS_LOST``;
* ``nvml_error`` — NVML worked at start and a device call now fails;
* ``ecc_uncorrectable`` — the volatile (since driver load) uncorrectable ECC
  count is above zero.

Every XID, fatal or not, is counted in ``voiceops_gpu_xid_errors_total{gpu,
xid}`` and listed under ``gpu.health`` on ``/readyz``; non-fatal ones change
nothing else. XID events are read in the poll (``nvmlEventSetWait`` with a zero
timeout, drained each interval), so nothing waits on NVML in a request and
shutdown has no thread to stop.

**Fatal XIDs**, from NVIDIA's XID catalogue (docs.nvidia.com/deploy/xid-errors):
the codes whose resolution is a GPU reset, a node reboot or a hardware
check — not "restart the application", which our own restart would cover:
48 (double-bit ECC error), 74 (NVLink error), 79 (GPU has fallen off the
bus), 94 (contained ECC error: the catalogue restarts the affected
application, and the affected application is this one, so it moves), 95
(uncontained ECC error), 119 (GSP RPC timeout) and 120 (GSP error).
Application-class XIDs (13 graphics engine exception, 31 MMU fault, 43 GPU
stopped processing, 45 preemptive cleanup, ...) are counted only.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from voiceops_contract import metrics as contract

if TYPE_CHECKING:
    from voiceops_service.faults import FaultState
    from voiceops_service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

FATAL_XIDS: Mapping[int, str] = {
    48: "double-bit ECC error",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
}
MAX_EVENTS_PER_POLL = 256  # a storm of XIDs must not hold the poller forever


@dataclass(frozen=True)
class GpuReading:
    gpu: str  # NVML index as a string (the metric label)
    used_bytes: int
    total_bytes: int
    utilization_ratio: float | None = None
    simulated: bool = False


@dataclass(frozen=True)
class GpuHealth:
    """One GPU's health as NVML reports it; ``reason`` is a contract GPU_HEALTH_* value."""

    gpu: str
    uuid: str = ""
    name: str = ""
    reason: str = contract.GPU_HEALTH_OK
    message: str = ""
    xids: tuple[tuple[int, int], ...] = ()  # (code, times seen), every XID

    @property
    def healthy(self) -> bool:
        return self.reason == contract.GPU_HEALTH_OK

    def describe(self) -> str:
        """``GPU 0 (GPU-..., NVIDIA H100): <message>`` for /readyz."""
        who = ", ".join(part for part in (self.uuid or "uuid unknown", self.name) if part)
        return f"GPU {self.gpu} ({who}): {self.message}"


@dataclass(frozen=True)
class XidEvent:
    gpu: str
    xid: int


@dataclass(frozen=True)
class NvmlPoll:
    readings: tuple[GpuReading, ...] = ()
    health: tuple[GpuHealth, ...] = ()
    xids: tuple[XidEvent, ...] = ()


@dataclass(frozen=True)
class GpuSnapshot:
    gpus: tuple[GpuReading, ...] = ()
    nvml_error: str | None = "not polled yet"
    torch_allocated_bytes: int = 0
    torch_reserved_bytes: int = 0
    cuda_available: bool = False
    simulated: bool = False
    health: tuple[GpuHealth, ...] = ()

    def unhealthy_message(self) -> str | None:
        """Every unhealthy GPU, named with its UUID and why; None when all are healthy."""
        sick = [h.describe() for h in self.health if not h.healthy]
        return "; ".join(sick) if sick else None

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
            "health": [
                {
                    "gpu": h.gpu,
                    "uuid": h.uuid,
                    "name": h.name,
                    "healthy": h.healthy,
                    "reason": h.reason,
                    "message": h.message,
                    "xids": {str(code): count for code, count in h.xids},
                }
                for h in self.health
            ],
        }


class GpuReader(Protocol):
    """What the monitor polls (NvmlReader; tests give it scripted polls)."""

    error: str | None

    def poll(self) -> NvmlPoll: ...

    def close(self) -> None: ...


def _address(handle: object) -> int | None:
    """A device handle's address, to match an event's device to an index."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value  # type: ignore[arg-type]
    except (TypeError, ctypes.ArgumentError):
        return None


@dataclass
class _Device:
    gpu: str
    handle: Any = None
    uuid: str = ""
    name: str = ""
    fatal_xid: int | None = None
    xid_counts: dict[int, int] = field(default_factory=dict)


class NvmlReader:
    """Reads NVML (``nvidia-ml-py``). ``error`` says why there are no readings."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.events_error: str | None = None
        self._devices: list[_Device] = []
        self._event_set: Any = None
        self._initialized = False
        try:
            import pynvml

            pynvml.nvmlInit()
            self._initialized = True
            count = pynvml.nvmlDeviceGetCount()
            self._devices = [_Device(str(i)) for i in range(count)]
            if not self._devices:
                self.error = "NVML sees no GPU"
        except Exception as error:  # NVMLError_LibraryNotFound, driver missing, ...
            self.error = f"NVML unavailable: {type(error).__name__}: {error}"
            return
        for index, device in enumerate(self._devices):
            self._open(index, device)
        self._open_events()

    def _open(self, index: int, device: _Device) -> None:
        """Get the handle, name and UUID (again, after a failure); errors are read() problems."""
        import pynvml

        try:
            if device.handle is None:
                device.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            if not device.uuid:
                device.uuid = pynvml.nvmlDeviceGetUUID(device.handle)
                device.name = pynvml.nvmlDeviceGetName(device.handle)
        except pynvml.NVMLError as error:
            log.warning("NVML: GPU %s: %s", device.gpu, error)

    def _open_events(self) -> None:
        """Register every GPU for XID events; without them health still reads the rest."""
        import pynvml

        try:
            self._event_set = pynvml.nvmlEventSetCreate()
        except pynvml.NVMLError as error:
            self.events_error = f"no XID events: nvmlEventSetCreate: {error}"
            log.warning("NVML: %s", self.events_error)
            return
        for device in self._devices:
            self._register(device)

    def _register(self, device: _Device) -> None:
        import pynvml

        if self._event_set is None or device.handle is None:
            return
        try:
            supported = pynvml.nvmlDeviceGetSupportedEventTypes(device.handle)
            if not supported & pynvml.nvmlEventTypeXidCriticalError:
                self.events_error = f"GPU {device.gpu} reports no XID events"
            else:
                pynvml.nvmlDeviceRegisterEvents(
                    device.handle, pynvml.nvmlEventTypeXidCriticalError, self._event_set
                )
                return
        except pynvml.NVMLError as error:
            self.events_error = f"GPU {device.gpu}: no XID events: {error}"
        log.warning("NVML: %s", self.events_error)

    def poll(self) -> NvmlPoll:
        """Memory, utilisation and health of every GPU, and the XIDs since the last poll."""
        if self.error is not None or not self._initialized:
            return NvmlPoll()
        xids = self._drain_events()
        readings: list[GpuReading] = []
        health: list[GpuHealth] = []
        for index, device in enumerate(self._devices):
            reading, problem = self._read_device(index, device)
            if reading is not None:
                readings.append(reading)
            health.append(self._health(device, problem))
        return NvmlPoll(tuple(readings), tuple(health), tuple(xids))

    def _read_device(
        self, index: int, device: _Device
    ) -> tuple[GpuReading | None, tuple[str, str]]:
        """One GPU's reading (None when unreadable) and its (reason, message) problem."""
        import pynvml

        if device.handle is not None and not device.uuid:
            self._open(index, device)
        step = "nvmlDeviceGetHandleByIndex"
        try:
            if device.handle is None:  # lost at start: raises why, or it is back
                device.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                self._open(index, device)
                self._register(device)
            step = "nvmlDeviceGetMemoryInfo"
            memory = pynvml.nvmlDeviceGetMemoryInfo(device.handle)
            try:
                utilization: float | None = (
                    pynvml.nvmlDeviceGetUtilizationRates(device.handle).gpu / 100
                )
            except pynvml.NVMLError:
                utilization = None  # not supported on some MIG/vGPU setups
            reading = GpuReading(device.gpu, int(memory.used), int(memory.total), utilization)
            step = "nvmlDeviceGetTotalEccErrors"
            try:
                ecc = pynvml.nvmlDeviceGetTotalEccErrors(
                    device.handle,
                    pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                    pynvml.NVML_VOLATILE_ECC,
                )
            except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_NoPermission):
                ecc = 0  # ECC off or not offered (consumer GPUs, some vGPUs)
        except pynvml.NVMLError_GpuIsLost as error:
            return None, (contract.GPU_HEALTH_GPU_LOST, f"NVML: {error} ({step})")
        except pynvml.NVMLError as error:
            return None, (
                contract.GPU_HEALTH_NVML_ERROR,
                f"NVML call {step} failed: {type(error).__name__}: {error}",
            )
        if ecc > 0:
            return reading, (
                contract.GPU_HEALTH_ECC_UNCORRECTABLE,
                f"{ecc} volatile uncorrectable ECC error(s)",
            )
        return reading, (contract.GPU_HEALTH_OK, "")

    def _health(self, device: _Device, problem: tuple[str, str]) -> GpuHealth:
        reason, message = problem
        if device.fatal_xid is not None:  # sticky, and named first
            fatal = device.fatal_xid
            xid_message = f"XID {fatal} ({FATAL_XIDS[fatal]})"
            message = f"{xid_message}; {message}" if message else xid_message
            reason = contract.gpu_health_xid(fatal)
        return GpuHealth(
            gpu=device.gpu,
            uuid=device.uuid,
            name=device.name,
            reason=reason,
            message=message,
            xids=tuple(sorted(device.xid_counts.items())),
        )

    def _drain_events(self) -> list[XidEvent]:
        if self._event_set is None:
            return []
        import pynvml

        by_address = {_address(d.handle): d for d in self._devices if d.handle is not None}
        events: list[XidEvent] = []
        for _ in range(MAX_EVENTS_PER_POLL):
            try:
                data = pynvml.nvmlEventSetWait_v2(self._event_set, 0)
            except pynvml.NVMLError_Timeout:
                break  # nothing pending
            except pynvml.NVMLError as error:  # lost/failing: the device reads say so
                log.debug("NVML event wait: %s", error)
                break
            if data.eventType != pynvml.nvmlEventTypeXidCriticalError:
                continue
            device = by_address.get(_address(data.device))
            if device is None:
                continue
            xid = int(data.eventData)
            device.xid_counts[xid] = device.xid_counts.get(xid, 0) + 1
            if xid in FATAL_XIDS and device.fatal_xid is None:
                device.fatal_xid = xid
            events.append(XidEvent(device.gpu, xid))
            log.log(
                logging.ERROR if xid in FATAL_XIDS else logging.WARNING,
                "NVML: GPU %s (%s) XID %d%s",
                device.gpu,
                device.uuid or "uuid unknown",
                xid,
                f": {FATAL_XIDS[xid]}, GPU unhealthy" if xid in FATAL_XIDS else " (not fatal)",
            )
        return events

    def close(self) -> None:
        if not self._initialized:
            return
        import pynvml

        self._initialized = False
        try:  # shutting down must not fail on a GPU that is already gone
            if self._event_set is not None:
                pynvml.nvmlEventSetFree(self._event_set)
                self._event_set = None
        except pynvml.NVMLError as error:
            log.debug("NVML event set free: %s", error)
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as error:
            log.debug("NVML shutdown: %s", error)


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
    _published_health: dict[str, tuple[str, str, str]] = field(default_factory=dict)
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
        xids: tuple[XidEvent, ...] = ()
        try:
            polled = self.reader.poll()
            readings, health, xids = list(polled.readings), polled.health, polled.xids
            error = self.reader.error
        except Exception as exc:  # a GPU that fell off the bus must not kill the poller
            error = f"NVML read failed: {type(exc).__name__}: {exc}"
            readings = []
            health = tuple(
                replace(h, reason=contract.GPU_HEALTH_NVML_ERROR, message=error) if h.healthy else h
                for h in self.latest.health
            )
        readings = _apply_simulation(readings, self.faults)
        cuda, allocated, reserved = _torch_memory()
        snapshot = GpuSnapshot(
            gpus=tuple(readings),
            nvml_error=error,
            torch_allocated_bytes=allocated,
            torch_reserved_bytes=reserved,
            cuda_available=cuda,
            simulated=any(r.simulated for r in readings),
            health=tuple(health),
        )
        self._publish(snapshot, xids)
        self.latest = snapshot
        return snapshot

    def _publish(self, snapshot: GpuSnapshot, xids: tuple[XidEvent, ...] = ()) -> None:
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
        for event in xids:
            m.gpu_xid_errors_total.labels(gpu=event.gpu, xid=str(event.xid)).inc()
        health_labels = {h.gpu: (h.gpu, h.uuid, h.reason) for h in snapshot.health}
        for gpu, labels in list(self._published_health.items()):
            if health_labels.get(gpu) != labels:  # one series per GPU: its current reason
                m.remove_gpu_health(*labels)
                del self._published_health[gpu]
        for h in snapshot.health:
            m.gpu_healthy.labels(gpu=h.gpu, uuid=h.uuid, reason=h.reason).set(1 if h.healthy else 0)
            self._published_health[h.gpu] = health_labels[h.gpu]
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
        with self._poll_lock:  # not under a poll still running in its thread
            if self.reader is not None:
                self.reader.close()
