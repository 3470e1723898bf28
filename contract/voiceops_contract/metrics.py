"""Prometheus metric names exported by inference pods (DESIGN.md §5).

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

ALL: tuple[MetricSpec, ...] = (
    GPU_MEMORY_USED_BYTES,
    GPU_MEMORY_TOTAL_BYTES,
    GPU_UTILIZATION_RATIO,
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
)

# Metrics that exist only when the pod can see a GPU: without one the service
# exports none of them rather than fake zeros.
GPU_ONLY: frozenset[str] = frozenset(
    {GPU_MEMORY_USED_BYTES.name, GPU_MEMORY_TOTAL_BYTES.name, GPU_UTILIZATION_RATIO.name}
)

# What the operator reads from each GPU pod to decide on failover.
OPERATOR_READS: tuple[MetricSpec, ...] = (
    GPU_MEMORY_USED_BYTES,
    GPU_MEMORY_TOTAL_BYTES,
    CUDA_OOM_TOTAL,
    REQUESTS_IN_FLIGHT,
    DEGRADED,
)

# The HPA "pods" metric name for in-flight requests (served by a Prometheus
# adapter from REQUESTS_IN_FLIGHT).
HPA_IN_FLIGHT_METRIC = "voiceops_requests_in_flight"
