"""The service's Prometheus metrics, on a registry owned by the app (not the global default).

Every name comes from ``voiceops_contract.metrics``; nothing here respells one.
Other components (the batcher, the OOM guard, the GPU monitor) receive the
:class:`ServiceMetrics` object and update its fields.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from voiceops_contract import metrics as contract

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RTF_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _base_name(spec: contract.MetricSpec) -> str:
    """prometheus_client appends ``_total`` to counters and ``_info`` to infos itself."""
    if spec.type == "counter":
        return spec.name.removesuffix("_total")
    if spec.type == "info":
        return spec.name.removesuffix("_info")
    return spec.name


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry

        def gauge(spec: contract.MetricSpec) -> Gauge:
            return Gauge(_base_name(spec), spec.help, spec.labels, registry=r)

        def counter(spec: contract.MetricSpec) -> Counter:
            return Counter(_base_name(spec), spec.help, spec.labels, registry=r)

        def histogram(spec: contract.MetricSpec, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(_base_name(spec), spec.help, spec.labels, buckets=buckets, registry=r)

        self.gpu_memory_used_bytes = gauge(contract.GPU_MEMORY_USED_BYTES)
        self.gpu_memory_total_bytes = gauge(contract.GPU_MEMORY_TOTAL_BYTES)
        self.gpu_utilization_ratio = gauge(contract.GPU_UTILIZATION_RATIO)
        self.gpu_healthy = gauge(contract.GPU_HEALTHY)
        self.gpu_xid_errors_total = counter(contract.GPU_XID_ERRORS_TOTAL)
        self.torch_memory_allocated_bytes = gauge(contract.TORCH_MEMORY_ALLOCATED_BYTES)
        self.torch_memory_reserved_bytes = gauge(contract.TORCH_MEMORY_RESERVED_BYTES)
        self.cuda_oom_total = counter(contract.CUDA_OOM_TOTAL)
        self.requests_in_flight = gauge(contract.REQUESTS_IN_FLIGHT)
        self.queue_depth = gauge(contract.QUEUE_DEPTH)  # inc()/dec() only: shared with batcher
        self.requests_total = counter(contract.REQUESTS_TOTAL)
        self.request_duration_seconds = histogram(
            contract.REQUEST_DURATION_SECONDS, LATENCY_BUCKETS
        )
        self.time_to_first_audio_seconds = histogram(
            contract.TIME_TO_FIRST_AUDIO_SECONDS, LATENCY_BUCKETS
        )
        self.audio_seconds_total = counter(contract.AUDIO_SECONDS_TOTAL)
        self.realtime_factor = histogram(contract.REALTIME_FACTOR, RTF_BUCKETS)
        self.batch_size = histogram(contract.BATCH_SIZE, BATCH_BUCKETS)
        self.degraded = gauge(contract.DEGRADED)
        self.engine_info = Info(
            _base_name(contract.ENGINE_INFO), contract.ENGINE_INFO.help, registry=r
        )
        # Model hot swap and the audio cache (models.py, cache.py).
        self.model_version_info = Info(
            _base_name(contract.MODEL_VERSION_INFO), contract.MODEL_VERSION_INFO.help, registry=r
        )
        self.model_swaps_total = counter(contract.MODEL_SWAPS_TOTAL)
        self.model_swap_seconds = histogram(contract.MODEL_SWAP_SECONDS, LATENCY_BUCKETS)
        self.audio_cache_hits_total = counter(contract.AUDIO_CACHE_HITS_TOTAL)
        self.audio_cache_misses_total = counter(contract.AUDIO_CACHE_MISSES_TOTAL)
        self.audio_cache_evictions_total = counter(contract.AUDIO_CACHE_EVICTIONS_TOTAL)
        self.audio_cache_bytes = gauge(contract.AUDIO_CACHE_BYTES)
        # Service-local extras (not part of the operator contract).
        self.routed = Gauge(
            "voiceops_routed",
            "1 while the front Service sends this pod traffic, 0 while routed away "
            "(routing notices from the operator).",
            registry=r,
        )
        self.fallback_calls_total = Counter(
            "voiceops_fallback_calls",
            "Engine calls served by the in-process fallback engine.",
            registry=r,
        )
        self.cancelled_requests_total = Counter(
            "voiceops_cancelled_requests",
            "Speech requests whose client went away before the answer.",
            ("stage",),
            registry=r,
        )
        self.rejected_requests_total = Counter(
            "voiceops_rejected_requests",
            "Speech requests refused at admission (queue full).",
            registry=r,
        )

    def set_engine_info(self, engine: str, voice: str, version: str, device: str) -> None:
        labels = dict(
            zip(contract.ENGINE_INFO.labels, (engine, voice, version, device), strict=True)
        )
        self.engine_info.info(labels)

    def remove_gpu(self, gpu: str) -> None:
        """Drop one GPU's series (gone, or a simulation cleared): no stale or fake numbers."""
        for gauge in (
            self.gpu_memory_used_bytes,
            self.gpu_memory_total_bytes,
            self.gpu_utilization_ratio,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(gpu)

    def remove_gpu_health(self, gpu: str, uuid: str, reason: str) -> None:
        """Drop one GPU's health series (its reason changed, or the GPU is gone)."""
        with contextlib.suppress(KeyError):
            self.gpu_healthy.remove(gpu, uuid, reason)
