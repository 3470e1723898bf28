"""GPU telemetry: what NVML reports is exported as is; no GPU means no GPU series at all."""

from __future__ import annotations

from voiceops_service.faults import FaultState, FaultUpdate, SimulatedGpuMemory
from voiceops_service.gpu import GpuMonitor, GpuReading, NvmlPoll, NvmlReader
from voiceops_service.metrics import ServiceMetrics

GIB = 2**30


class FakeNvmlReader:
    """Test double for NvmlReader: scripted readings instead of a driver."""

    def __init__(self, readings: list[GpuReading], error: str | None = None) -> None:
        self.readings = readings
        self.error = error

    def poll(self) -> NvmlPoll:
        return NvmlPoll(readings=tuple(self.readings))

    def close(self) -> None:
        return None


def value(metrics: ServiceMetrics, name: str, gpu: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"gpu": gpu})


def test_readings_are_exported_per_gpu_and_vanished_gpus_removed() -> None:
    metrics = ServiceMetrics()
    reader = FakeNvmlReader(
        [GpuReading("0", 70 * GIB, 80 * GIB, 0.5), GpuReading("1", 1 * GIB, 80 * GIB, None)],
    )
    monitor = GpuMonitor(metrics, reader=reader)
    snapshot = monitor.poll_once()
    assert snapshot.nvml_error is None
    assert value(metrics, "voiceops_gpu_memory_used_bytes", "0") == 70 * GIB
    assert value(metrics, "voiceops_gpu_memory_total_bytes", "1") == 80 * GIB
    assert value(metrics, "voiceops_gpu_utilization_ratio", "0") == 0.5
    assert value(metrics, "voiceops_gpu_utilization_ratio", "1") is None  # unsupported: absent
    reader.readings = reader.readings[:1]
    monitor.poll_once()
    assert value(metrics, "voiceops_gpu_memory_used_bytes", "1") is None


def test_without_nvml_nothing_is_invented() -> None:
    metrics = ServiceMetrics()
    monitor = GpuMonitor(metrics, reader=FakeNvmlReader([], error="NVML unavailable: no driver"))
    snapshot = monitor.poll_once()
    assert snapshot.gpus == ()
    assert snapshot.as_details()["nvml"] is False
    assert value(metrics, "voiceops_gpu_memory_used_bytes", "0") is None
    assert metrics.registry.get_sample_value("voiceops_torch_memory_allocated_bytes") == 0.0


def test_simulated_memory_replaces_gpu_zero_and_clears() -> None:
    metrics = ServiceMetrics()
    faults = FaultState()
    reader = FakeNvmlReader([GpuReading("0", 1 * GIB, 80 * GIB, 0.25)])
    monitor = GpuMonitor(metrics, faults, reader=reader)
    faults.merge(
        FaultUpdate(gpu_memory=SimulatedGpuMemory(used_bytes=79 * GIB, total_bytes=80 * GIB))
    )
    snapshot = monitor.poll_once()
    assert snapshot.simulated
    assert value(metrics, "voiceops_gpu_memory_used_bytes", "0") == 79 * GIB
    assert value(metrics, "voiceops_gpu_utilization_ratio", "0") == 0.25  # the real reading
    faults.clear()
    monitor.poll_once()
    assert value(metrics, "voiceops_gpu_memory_used_bytes", "0") == 1 * GIB


def test_simulation_without_a_gpu_appears_as_gpu_zero() -> None:
    metrics = ServiceMetrics()
    faults = FaultState()
    monitor = GpuMonitor(metrics, faults, reader=FakeNvmlReader([], error="no NVML"))
    faults.merge(FaultUpdate(gpu_memory=SimulatedGpuMemory(used_bytes=5, total_bytes=10)))
    monitor.poll_once()
    assert value(metrics, "voiceops_gpu_memory_total_bytes", "0") == 10
    faults.clear()
    monitor.poll_once()
    assert value(metrics, "voiceops_gpu_memory_total_bytes", "0") is None


def test_real_nvml_reader_either_reads_or_says_why() -> None:
    reader = NvmlReader()
    try:
        readings = list(reader.poll().readings)
        if reader.error is None:
            assert readings
            assert all(r.total_bytes > 0 for r in readings)
        else:
            assert "NVML" in reader.error
            assert readings == []
    finally:
        reader.close()
