"""Prometheus metric names exported by inference pods (see docs/architecture.md).

Names are the full exposition names (counters end in ``_total``). Base units:
bytes, seconds, ratios in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricType = Literal["gauge", "counter", "histogram", "info"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()


PREFIX = "voiceops_"

GPU_MEMORY_USED_BYTES = MetricSpec(
    "voiceops_gpu_memory_used_bytes", "gauge", "GPU memory in use, from NVML.", ("gpu",)
)
GPU_MEMORY_TOTAL_BYTES = MetricSpec(
    "voiceops_gpu_memory_total_bytes", "gauge", "GPU memory in total, from NVML.", ("gpu",)
)
GPU_UTILIZATION_RATIO = MetricSpec(
    "voiceops_gpu_utilization_ratio", "gauge", "GPU compute utilisation 0..1, from NVML.", ("gpu",)
)
GPU_HEALTHY = MetricSpec(
    "voiceops_gpu_healthy",
    "gauge",
    "1 while NVML reports the GPU healthy, 0 when not; reason says why "
    "(ok, xid_<code> for a fatal XID, gpu_lost, nvml_error, ecc_uncorrectable).",
    ("gpu", "uuid", "reason"),
)
GPU_XID_ERRORS_TOTAL = MetricSpec(
    "voiceops_gpu_xid_errors_total",
    "counter",
    "XID errors NVML delivered for the GPU, fatal or not, by XID code.",
    ("gpu", "xid"),
)
TORCH_MEMORY_ALLOCATED_BYTES = MetricSpec(
    "voiceops_torch_memory_allocated_bytes", "gauge", "Memory held by live torch tensors."
)
TORCH_MEMORY_RESERVED_BYTES = MetricSpec(
    "voiceops_torch_memory_reserved_bytes", "gauge", "Memory reserved by torch's caching allocator."
)
CUDA_OOM_TOTAL = MetricSpec(
    "voiceops_cuda_oom_total", "counter", "CUDA out-of-memory errors caught around engine calls."
)
REQUESTS_IN_FLIGHT = MetricSpec(
    "voiceops_requests_in_flight", "gauge", "Speech requests admitted and not yet answered."
)
QUEUE_DEPTH = MetricSpec(
    "voiceops_queue_depth", "gauge", "Requests waiting for an engine slot or a batch."
)
REQUESTS_TOTAL = MetricSpec(
    "voiceops_requests_total",
    "counter",
    "HTTP requests by route and status code.",
    ("route", "code"),
)
REQUEST_DURATION_SECONDS = MetricSpec(
    "voiceops_request_duration_seconds", "histogram", "Speech request latency, end to end."
)
TIME_TO_FIRST_AUDIO_SECONDS = MetricSpec(
    "voiceops_time_to_first_audio_seconds",
    "histogram",
    "Time from request to the first audio byte.",
)
AUDIO_SECONDS_TOTAL = MetricSpec(
    "voiceops_audio_seconds_total", "counter", "Seconds of audio synthesised."
)
REALTIME_FACTOR = MetricSpec(
    "voiceops_realtime_factor", "histogram", "Synthesis time divided by audio duration."
)
BATCH_SIZE = MetricSpec("voiceops_batch_size", "histogram", "Requests per engine forward pass.")
DEGRADED = MetricSpec(
    "voiceops_degraded",
    "gauge",
    "1 while the pod has marked itself degraded (repeated OOM), else 0.",
)
ENGINE_INFO = MetricSpec(
    "voiceops_engine_info",
    "info",
    "The engine this pod serves.",
    ("engine", "voice", "version", "device"),
)
MODEL_VERSION_INFO = MetricSpec(
    "voiceops_model_version_info",
    "info",
    "The model version this pod serves and the one before it (model hot swap).",
    ("version", "previous"),
)
MODEL_SWAPS_TOTAL = MetricSpec(
    "voiceops_model_swaps_total",
    "counter",
    "Model swap attempts by result: swapped, unchanged, refused_memory, load_failed, "
    "validation_failed, busy.",
    ("result",),
)
MODEL_SWAP_SECONDS = MetricSpec(
    "voiceops_model_swap_seconds",
    "histogram",
    "Time of a successful swap: load aside, validate, swap and drain the old model.",
)
AUDIO_CACHE_HITS_TOTAL = MetricSpec(
    "voiceops_audio_cache_hits_total", "counter", "Speech answers served from the audio cache."
)
AUDIO_CACHE_MISSES_TOTAL = MetricSpec(
    "voiceops_audio_cache_misses_total",
    "counter",
    "Cacheable speech requests the audio cache did not hold.",
)
AUDIO_CACHE_EVICTIONS_TOTAL = MetricSpec(
    "voiceops_audio_cache_evictions_total",
    "counter",
    "Entries removed from the audio cache: capacity (least recently used, to stay within "
    "its byte bound) or model_swap (another model version's audio).",
    ("reason",),
)
AUDIO_CACHE_BYTES = MetricSpec(
    "voiceops_audio_cache_bytes", "gauge", "Bytes of audio held by the audio cache."
)

ALL: tuple[MetricSpec, ...] = (
    GPU_MEMORY_USED_BYTES,
    GPU_MEMORY_TOTAL_BYTES,
    GPU_UTILIZATION_RATIO,
    GPU_HEALTHY,
    GPU_XID_ERRORS_TOTAL,
    TORCH_MEMORY_ALLOCATED_BYTES,
    TORCH_MEMORY_RESERVED_BYTES,
    CUDA_OOM_TOTAL,
    REQUESTS_IN_FLIGHT,
    QUEUE_DEPTH,
    REQUESTS_TOTAL,
    REQUEST_DURATION_SECONDS,
    TIME_TO_FIRST_AUDIO_SECONDS,
    AUDIO_SECONDS_TOTAL,
    REALTIME_FACTOR,
    BATCH_SIZE,
    DEGRADED,
    ENGINE_INFO,
    MODEL_VERSION_INFO,
    MODEL_SWAPS_TOTAL,
    MODEL_SWAP_SECONDS,
    AUDIO_CACHE_HITS_TOTAL,
    AUDIO_CACHE_MISSES_TOTAL,
    AUDIO_CACHE_EVICTIONS_TOTAL,
    AUDIO_CACHE_BYTES,
)

# Metrics that exist only when the pod can see a GPU: without one the service
# exports none of them rather than fake zeros.
GPU_ONLY: frozenset[str] = frozenset(
    {
        GPU_MEMORY_USED_BYTES.name,
        GPU_MEMORY_TOTAL_BYTES.name,
        GPU_UTILIZATION_RATIO.name,
        GPU_HEALTHY.name,
        GPU_XID_ERRORS_TOTAL.name,
    }
)

# GPU_HEALTHY's reason label: "ok" while healthy, else why (the service's
# voiceops_service.gpu documents each and lists the fatal XIDs).
GPU_HEALTH_OK = "ok"
GPU_HEALTH_XID_PREFIX = "xid_"  # + the fatal XID's code: "xid_79"
GPU_HEALTH_GPU_LOST = "gpu_lost"
GPU_HEALTH_NVML_ERROR = "nvml_error"
GPU_HEALTH_ECC_UNCORRECTABLE = "ecc_uncorrectable"


def gpu_health_xid(xid: int) -> str:
    """The reason label for a fatal XID."""
    return f"{GPU_HEALTH_XID_PREFIX}{xid}"


def gpu_health_fatal_xid(reason: str) -> int | None:
    """The fatal XID a reason label names, or None (not an XID reason)."""
    code = reason.removeprefix(GPU_HEALTH_XID_PREFIX)
    return int(code) if reason.startswith(GPU_HEALTH_XID_PREFIX) and code.isdigit() else None


# What the operator reads from each GPU pod to decide on failover.
OPERATOR_READS: tuple[MetricSpec, ...] = (
    GPU_MEMORY_USED_BYTES,
    GPU_MEMORY_TOTAL_BYTES,
    CUDA_OOM_TOTAL,
    REQUESTS_IN_FLIGHT,
    DEGRADED,
    GPU_HEALTHY,
    GPU_XID_ERRORS_TOTAL,
)

# The HPA "pods" metric name for in-flight requests (served by a Prometheus
# adapter from REQUESTS_IN_FLIGHT).
HPA_IN_FLIGHT_METRIC = "voiceops_requests_in_flight"
