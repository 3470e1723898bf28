"""The VoiceService spec as pydantic models: fields, defaults and their rules. Pure: no I/O.

The CRD's openAPIV3Schema is generated from :class:`VoiceServiceSpec` (and the
status models) by :mod:`voiceops_operator.crd`; descriptions here are the API
reference (docs/voiceservice-api.md).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from voiceops_operator.spec.model_uri import parse_model_uri
from voiceops_operator.spec.rules import (
    AUTOSCALING_RULES,
    FAILOVER_RULES,
    FALLBACK_RULES,
    GPU_RULES,
    JOBS_RULES,
    LABEL_SELECTOR_RULES,
    PEER_RULES,
    SELECTOR_REQUIREMENT_RULES,
    SERVING_RULES,
    SPEC_RULES,
    TOLERATION_RULES,
    CrossFieldRule,
    probe_rules,
)
from voiceops_operator.spec.validation import (
    CIDR_PATTERN,
    MODEL_VERSION_PATTERN,
    PVC_NAME_PATTERN,
    RESOURCE_NAME_PATTERN,
    SECRET_KEY_PATTERN,
    LabelKey,
    LabelKeyOrEmpty,
    LabelValue,
    Quantity,
)

Engine = Literal["vits", "espeak"]


class ApiModel(BaseModel):
    """Base of the API's models: camelCase keys, unknown fields refused, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )
    # Cross-field rules of this object: CEL in the CRD, predicates here.
    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = ()

    @model_validator(mode="after")
    def _cross_field(self) -> Any:
        for rule in type(self).__rules__:
            if not rule.holds(self):
                message = rule.message
                if rule.detail is not None:
                    message = f"{message}; {rule.detail(self)}"
                raise PydanticCustomError(
                    "cross_field", "{message}", {"message": message, "field": rule.field}
                )
        return self


class ResourceRequirements(ApiModel):
    """CPU and memory for a tier's pods (Kubernetes ResourceRequirements)."""

    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Maximum compute resources, e.g. {memory: 4Gi}.",
    )
    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Guaranteed compute resources, e.g. {cpu: '1', memory: 2Gi}. "
        "requests.cpu is required when an HPA scales the tier on CPU.",
    )


class ModelSpec(ApiModel):
    """Which speech model the GPU tier serves."""

    engine: Engine = Field(
        default="vits",
        description="Speech engine of the GPU tier: vits (neural, torch, uses the GPU) "
        "or espeak (formant synthesis, CPU).",
    )
    voice: str = Field(
        default="en_US-joe-medium",
        min_length=1,
        max_length=128,
        description="Voice name: a Piper voice for vits, an espeak-ng voice for espeak.",
    )
    uri: str = Field(
        default="",
        max_length=1024,
        description="Where the weights come from: empty = the voice bundled in the image; "
        "file:///abs/path = a path inside the container; pvc://claim/path = a file or "
        "directory on a PersistentVolumeClaim, mounted read-only into the GPU pods. "
        "Other schemes (hf://, s3://) are not supported yet.",
    )

    precision: Literal["fp32", "fp16"] = Field(
        default="fp32",
        description="Numeric precision of the vits flow and decoder (nearly all the compute) "
        "on the GPU: fp16 halves their activation memory and uses tensor cores; durations "
        "stay fp32, so speech keeps its timing. Pods without a GPU run fp32 and log it.",
    )

    version: str = Field(
        default="",
        max_length=128,
        pattern=MODEL_VERSION_PATTERN,
        description="A name for these weights, shown by the pods and in status.model; a model "
        "change is a change of uri or version (new weights at the same uri need a new "
        "version). Empty: 'bundled' for the bundled voice, else derived from the uri.",
    )
    update_strategy: Literal["Rolling", "InPlace"] = Field(
        default="Rolling",
        description="How a model change reaches running GPU pods. Rolling: the Deployment "
        "replaces them. InPlace: each pod loads the new version beside the old, validates "
        "it and swaps, one pod at a time (docs/hot-swap.md); a pod that refuses for GPU "
        "memory turns the update into a Rolling one. Changing this field restarts the GPU "
        "pods once (InPlace turns their model admin API on).",
    )

    def model_path(self) -> str:
        """VOICEOPS_MODEL_PATH inside the pod for this uri ("" = bundled)."""
        source = parse_model_uri(self.uri)
        return source.container_path

    def version_name(self) -> str:
        """The version the pods report for this model: ``version``, else one derived."""
        if self.version:
            return self.version
        if not self.uri:
            return "bundled"
        return "uri-" + hashlib.sha256(self.uri.encode()).hexdigest()[:12]


class Toleration(ApiModel):
    """A Kubernetes toleration for the GPU nodes' taints."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = TOLERATION_RULES

    key: LabelKeyOrEmpty = Field(
        default="",
        description="Taint key (a label key). Empty matches all keys and needs operator "
        "Exists: {operator: Exists} tolerates every taint.",
    )
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal",
        description="Exists (any value; value must be empty) or Equal (value must match; "
        "needs a key).",
    )
    value: LabelValue = Field(
        default="", description="Taint value for Equal (a label value); empty for Exists."
    )
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        default="",
        description="Taint effect to tolerate; empty matches all effects. Must be NoExecute "
        "when tolerationSeconds is set.",
    )
    toleration_seconds: int | None = Field(
        default=None,
        ge=0,
        description="Only with effect NoExecute: how long the pod stays bound after the "
        "taint appears; unset = forever.",
    )


class GpuSpec(ApiModel):
    """GPU request and placement of the GPU tier."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = GPU_RULES

    count: int = Field(
        default=1,
        ge=0,
        le=16,
        description="GPUs per GPU-tier pod (extended resource limit). 0 runs the "
        "GPU tier without a GPU (testing only).",
    )
    resource_name: str = Field(
        default="nvidia.com/gpu",
        max_length=253,
        pattern=RESOURCE_NAME_PATTERN,
        description="Extended resource that the device plugin advertises.",
    )
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Node labels a GPU-tier pod requires (label keys and values), e.g. "
        "{nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description="Tolerations for tainted GPU nodes, e.g. [{key: nvidia.com/gpu, "
        "operator: Exists, effect: NoSchedule}].",
    )


class AutoscalingSpec(ApiModel):
    """HorizontalPodAutoscalers (autoscaling/v2) for both tiers."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = AUTOSCALING_RULES

    enabled: bool = Field(
        default=True,
        description="Create HPAs for the GPU tier and the fallback tier. Off: the GPU "
        "tier runs spec.replicas pods and the fallback tier its standby count.",
    )
    min_replicas: int = Field(default=1, ge=1, le=1000, description="GPU tier minimum replicas.")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="GPU tier maximum replicas.")
    metric: Literal["inFlight", "cpu"] = Field(
        default="cpu",
        description="What scales the GPU tier: inFlight = the pods metric "
        "voiceops_requests_in_flight (needs a custom-metrics adapter such as "
        "prometheus-adapter), cpu = CPU utilisation (works everywhere).",
    )
    target_in_flight_per_pod: int = Field(
        default=4,
        ge=1,
        le=10000,
        description="Target average in-flight requests per GPU pod (metric inFlight).",
    )
    target_cpu_utilization_percentage: int = Field(
        default=70,
        ge=1,
        le=100,
        alias="targetCPUUtilizationPercentage",
        description="Target average CPU utilisation of requests.cpu, in percent "
        "(GPU tier with metric cpu, and always for the fallback tier).",
    )


class FallbackSpec(ApiModel):
    """The warm CPU tier that takes traffic when the GPU tier is in trouble."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = FALLBACK_RULES

    enabled: bool = Field(default=True, description="Run the fallback tier.")
    engine: Engine = Field(
        default="espeak",
        description="Engine of the fallback tier; it always runs on CPU (never requests a GPU).",
    )
    voice: str = Field(
        default="en-us",
        min_length=1,
        max_length=128,
        description="Voice of the fallback engine (an espeak-ng voice for espeak).",
    )
    image: str = Field(
        default="",
        max_length=512,
        description="Image override for the fallback tier; default: the operator's CPU "
        "service image.",
    )
    standby_replicas: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Fallback replicas kept ready at all times.",
    )
    max_replicas: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Most fallback replicas (while failed over, the self-healing loop and "
        "the HPA scale up to this).",
    )
    resources: ResourceRequirements = Field(
        default=ResourceRequirements(
            requests={"cpu": "500m", "memory": "256Mi"}, limits={"memory": "512Mi"}
        ),
        description="CPU/memory of a fallback pod. Must not request a GPU.",
    )


class FailoverSpec(ApiModel):
    """When the operator moves traffic between the tiers (see the self-healing docs)."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = FAILOVER_RULES

    memory_high_ratio: float = Field(
        default=0.90,
        ge=0.05,
        le=1.0,
        description="GPU memory used/total that, held for windowSeconds, makes the "
        "service Degraded (both tiers serve, fallback scaled up).",
    )
    memory_critical_ratio: float = Field(
        default=0.97,
        ge=0.05,
        le=1.0,
        description="GPU memory used/total that, held for windowSeconds, fails over "
        "to the fallback tier.",
    )
    window_seconds: int = Field(
        default=10,
        ge=1,
        le=3600,
        description="How long a signal must hold before the operator acts.",
    )
    recover_after_seconds: int = Field(
        default=60,
        ge=1,
        le=86400,
        description="How long the GPU tier must be healthy before traffic goes back to it.",
    )
    unschedulable_after_seconds: int = Field(
        default=30,
        ge=1,
        le=86400,
        description="GPU pods Pending as unschedulable (no free GPU) this long → fail over.",
    )
    crash_loop_restarts: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Container restarts of the GPU tier that count as crash-looping → fail over.",
    )
    cooldown_seconds: int = Field(
        default=30,
        ge=0,
        le=86400,
        description="Least time between two tier transitions (stops flapping).",
    )


class BatchSpec(ApiModel):
    """Dynamic batching in the service."""

    max_size: int = Field(default=8, ge=1, le=256, description="Most requests per forward pass.")
    max_delay_ms: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="Longest a request waits for a batch to fill, in milliseconds.",
    )


class ServingSpec(ApiModel):
    """How each service pod serves requests."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = SERVING_RULES

    port: int = Field(default=8000, ge=1024, le=65535, description="Container port (named http).")
    max_concurrency: int = Field(
        default=8, ge=1, le=1024, description="Requests a pod synthesises at once."
    )
    max_queue: int = Field(
        default=64,
        ge=0,
        le=100000,
        description="Requests a pod queues beyond maxConcurrency before answering 429.",
    )
    batch: BatchSpec = Field(default=BatchSpec(), description="Dynamic batching.")
    request_timeout_seconds: int = Field(
        default=30, ge=1, le=3600, description="Deadline of one request (504 after it)."
    )
    max_input_chars: int = Field(
        default=4096, ge=1, le=100000, description="Longest accepted input text."
    )
    in_process_fallback: bool = Field(
        default=True,
        description="GPU pods answer from an in-process espeak engine after repeated CUDA "
        "OOM instead of failing requests.",
    )


class _ProbeBase(ApiModel):
    initial_delay_seconds: int = Field(
        default=0, ge=0, le=3600, description="Seconds after start before the first probe."
    )
    timeout_seconds: int = Field(default=2, ge=1, le=300, description="Probe timeout.")


class StartupProbeSpec(_ProbeBase):
    """Startup probe on /readyz: gives slow model loads time before liveness starts."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = probe_rules("startup")

    period_seconds: int = Field(default=5, ge=1, le=3600, description="Seconds between probes.")
    failure_threshold: int = Field(
        default=60,
        ge=1,
        le=10000,
        description="Failures before the container is restarted (period × threshold = "
        "the longest model load).",
    )


class ReadinessProbeSpec(_ProbeBase):
    """Readiness probe on /readyz: the pod takes traffic only while it has capacity."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = probe_rules("readiness")

    period_seconds: int = Field(default=5, ge=1, le=3600, description="Seconds between probes.")
    failure_threshold: int = Field(
        default=3, ge=1, le=10000, description="Failures before the pod is marked not ready."
    )
    success_threshold: int = Field(
        default=1, ge=1, le=100, description="Successes before the pod is marked ready again."
    )


class LivenessProbeSpec(_ProbeBase):
    """Liveness probe on /healthz: catches a wedged process."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = probe_rules("liveness")

    period_seconds: int = Field(default=10, ge=1, le=3600, description="Seconds between probes.")
    timeout_seconds: int = Field(default=3, ge=1, le=300, description="Probe timeout.")
    failure_threshold: int = Field(
        default=3, ge=1, le=10000, description="Failures before the container is restarted."
    )


class ProbesSpec(ApiModel):
    """Probe timings; the paths are fixed by the service (/healthz, /readyz)."""

    startup: StartupProbeSpec = Field(default=StartupProbeSpec(), description="Startup probe.")
    readiness: ReadinessProbeSpec = Field(
        default=ReadinessProbeSpec(), description="Readiness probe."
    )
    liveness: LivenessProbeSpec = Field(default=LivenessProbeSpec(), description="Liveness probe.")


class SecretKeyRef(ApiModel):
    """A key of a Secret in the VoiceService's namespace."""

    name: str = Field(
        default="", max_length=253, description="Secret name.", pattern=r"^$|" + PVC_NAME_PATTERN
    )
    key: str = Field(
        default="token",
        min_length=1,
        max_length=253,
        # The API server's rule for Secret data keys (IsConfigMapKey).
        pattern=SECRET_KEY_PATTERN,
        description="Key in the Secret: letters, digits, '-', '_' and '.'.",
    )


class FaultInjectionSpec(ApiModel):
    """Fault injection endpoints for chaos tests. Off by default; never in production."""

    enabled: bool = Field(
        default=False,
        description="Turn on the service's /admin/faults endpoints (token-guarded).",
    )
    token_secret_ref: SecretKeyRef = Field(
        default=SecretKeyRef(),
        description="Secret holding the bearer token /admin/faults requires.",
    )


# A Redis URL the spec may carry in the clear: no credentials (those go in a Secret).
REDIS_URL_PATTERN = r"^$|^rediss?://[^@/\s]+(/[0-9]{1,2})?$"


class RedisSecretRef(SecretKeyRef):
    """The Secret key holding the whole Redis URL (with its password)."""

    key: str = Field(
        default="url",
        min_length=1,
        max_length=253,
        pattern=SECRET_KEY_PATTERN,
        description="Key in the Secret: letters, digits, '-', '_' and '.'.",
    )


class JobsSpec(ApiModel):
    """Long texts as jobs: /v1/audio/jobs on both tiers, chunks checkpointed in Redis."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = JOBS_RULES

    enabled: bool = Field(
        default=False,
        description="Serve the job API (/v1/audio/jobs) and run chunk workers in every pod of "
        "both tiers, sharing work and checkpoints through Redis (docs/jobs.md).",
    )
    redis_url: str = Field(
        default="",
        max_length=1024,
        pattern=REDIS_URL_PATTERN,
        description="redis://host:port/db of a Redis without a password (the chart's small "
        "Redis: redis://<release>-voiceops-redis.<namespace>:6379/0). With credentials: "
        "redisSecretRef.",
    )
    redis_secret_ref: RedisSecretRef = Field(
        default=RedisSecretRef(),
        description="Secret key holding the Redis URL (redis[s]://user:password@host:port/db).",
    )
    ttl_seconds: int = Field(
        default=86_400,
        ge=60,
        le=2_592_000,
        description="A job, its text and its audio are deleted this long after it was created.",
    )
    max_input_chars: int = Field(
        default=200_000, ge=1, le=1_000_000, description="Longest accepted job input text."
    )


class LabelSelectorRequirement(ApiModel):
    """One matchExpressions entry of a Kubernetes label selector."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = SELECTOR_REQUIREMENT_RULES

    key: LabelKey = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[LabelValue] = Field(
        default_factory=list,
        max_length=64,
        description="Label values: non-empty for In and NotIn, empty for Exists and DoesNotExist.",
    )


class LabelSelector(ApiModel):
    """A Kubernetes label selector; an empty selector ({}) selects everything."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = LABEL_SELECTOR_RULES

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Labels (label keys and values) that must all match, e.g. {app: gateway}.",
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list,
        max_length=32,
        description="Requirements that must all hold.",
    )


class IPBlock(ApiModel):
    """A CIDR range (with exceptions) allowed to connect; for sources outside the cluster."""

    cidr: str = Field(
        max_length=64,
        pattern=CIDR_PATTERN,
        description="IPv4 or IPv6 range, e.g. 10.0.0.0/8.",
    )
    except_: list[Annotated[str, Field(max_length=64, pattern=CIDR_PATTERN)]] = Field(
        default_factory=list,
        alias="except",
        max_length=32,
        description="Ranges inside cidr that are not allowed.",
    )


class NetworkPolicyPeer(ApiModel):
    """A source allowed to connect (a NetworkPolicyPeer): pods/namespaces, or an ipBlock."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = PEER_RULES

    pod_selector: LabelSelector | None = Field(
        default=None,
        description="Pods allowed to connect: in the VoiceService's namespace, or with "
        "namespaceSelector in the namespaces it selects. {} = every pod.",
    )
    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Namespaces whose pods may connect, e.g. {matchLabels: "
        "{kubernetes.io/metadata.name: gateway}}. {} = every namespace.",
    )
    ip_block: IPBlock | None = Field(
        default=None,
        description="A CIDR range allowed to connect; cannot be combined with the selectors.",
    )


class NetworkPolicySpec(ApiModel):
    """The NetworkPolicy the operator keeps around the pods of both tiers."""

    enabled: bool = Field(
        default=True,
        description="Create a NetworkPolicy selecting the pods of both tiers: ingress only "
        "on TCP serving.port, egress per allowEgress. Off: the pods accept and send traffic "
        "as the namespace's other policies allow.",
    )
    allow_from: list[NetworkPolicyPeer] = Field(
        default_factory=list,
        max_length=32,
        description="Who may connect to serving.port; empty = any source. When set, the "
        "namespaces that read the pods' /metrics for GPU memory (the operator's own and, with "
        "prometheusUrl, Prometheus': the chart's operator.metricsReaderNamespaces) are added "
        "by the operator.",
    )
    allow_egress: bool = Field(
        default=False,
        description="Let the pods open any outbound connection. Off: DNS only (UDP and "
        "TCP 53); bundled, file:// and pvc:// models need no network.",
    )


def _default_gpu_resources() -> ResourceRequirements:
    return ResourceRequirements(requests={"cpu": "1", "memory": "2Gi"}, limits={"memory": "4Gi"})


class VoiceServiceSpec(ApiModel):
    """Desired state of a VoiceService: a GPU TTS tier, a warm CPU fallback, routing."""

    model: ModelSpec = Field(default=ModelSpec(), description="The speech model to serve.")
    image: str = Field(
        default="",
        max_length=512,
        description="Image override for the GPU tier; default: the operator's GPU service image.",
    )
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="GPU-tier replicas when autoscaling is off.",
    )
    gpu: GpuSpec = Field(default=GpuSpec(), description="GPU request and placement.")
    resources: ResourceRequirements = Field(
        default=_default_gpu_resources(),
        description="CPU/memory of a GPU-tier pod (GPUs come from spec.gpu.count).",
    )
    autoscaling: AutoscalingSpec = Field(
        default=AutoscalingSpec(), description="Horizontal autoscaling of both tiers."
    )
    fallback: FallbackSpec = Field(default=FallbackSpec(), description="The warm CPU tier.")
    failover: FailoverSpec = Field(default=FailoverSpec(), description="Self-healing thresholds.")
    serving: ServingSpec = Field(default=ServingSpec(), description="Serving limits and batching.")
    probes: ProbesSpec = Field(default=ProbesSpec(), description="Probe timing overrides.")
    fault_injection: FaultInjectionSpec = Field(
        default=FaultInjectionSpec(), description="Chaos-test fault injection (off by default)."
    )
    network_policy: NetworkPolicySpec = Field(
        default=NetworkPolicySpec(),
        description="The NetworkPolicy around the pods (who may connect, outbound traffic).",
    )
    jobs: JobsSpec = Field(
        default=JobsSpec(), description="Long-text jobs checkpointed in Redis (off by default)."
    )

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = SPEC_RULES
