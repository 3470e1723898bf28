"""The VoiceService API as pydantic models: defaults, field and cross-field rules.

This module is the single source of truth: the CRD's openAPIV3Schema (with its
CEL rules) is generated from these models by :mod:`voiceops_operator.crd`, and
the operator parses every object through them. Pure: no I/O.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

GROUP = "voiceops.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VoiceService"
PLURAL = "voiceservices"
SINGULAR = "voiceservice"
SHORT_NAMES = ("voicesvc", "vsvc")

# Children are named <name>-fallback (longest suffix) and Service names are
# DNS-1035 labels of at most 63 characters.
MAX_NAME_LENGTH = 63 - len("-fallback")
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
RESOURCE_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
PVC_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
_IPV4 = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
CIDR_PATTERN = (
    rf"^({_IPV4}\.){{3}}{_IPV4}/(3[0-2]|[12]?[0-9])$"
    r"|^[0-9a-fA-F]*:[0-9a-fA-F:.]*/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_VALUE_MAX_LENGTH = 63

# Label keys (and annotation keys) are Kubernetes "qualified names"
# (k8s.io/apimachinery/pkg/util/validation.IsQualifiedName): an optional prefix
# and "/", then a name. The prefix is a DNS-1123 subdomain of at most 253
# characters, the name at most 63 characters of [-A-Za-z0-9_.], alphanumeric at
# both ends. The patterns are RE2 (OpenAPI `pattern` and CEL `matches()` in the
# API server) and Python re alike: no lookahead, no escapes (`[.]`, not `\.`).
LABEL_NAME_MAX_LENGTH = 63
LABEL_PREFIX_MAX_LENGTH = 253
LABEL_KEY_MAX_LENGTH = LABEL_PREFIX_MAX_LENGTH + 1 + LABEL_NAME_MAX_LENGTH
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = rf"{_DNS1123_LABEL}([.]{_DNS1123_LABEL})*"
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"  # 1 to 63 characters
# The whole rule but the prefix's 253-character limit: a regular expression without
# lookahead cannot bound the length of one part while it checks that part's form
# (maxLength bounds only the whole key, to 317). LABEL_KEY_PREFIX_PATTERN does, so
# the CRD checks it in CEL and pydantic in label_key_problems().
LABEL_KEY_PATTERN = rf"^({_DNS1123_SUBDOMAIN}/)?{_LABEL_NAME}$"
LABEL_KEY_PREFIX_PATTERN = rf"^([^/]{{1,{LABEL_PREFIX_MAX_LENGTH}}}/)?[^/]*$"
LABEL_KEY_RULE = (
    f"a label key, [prefix/]name: the optional prefix a DNS-1123 subdomain of at most "
    f"{LABEL_PREFIX_MAX_LENGTH} characters (lower-case alphanumerics, '-' and '.', each "
    "'.'-separated part starting and ending with an alphanumeric), the name 1 to "
    f"{LABEL_NAME_MAX_LENGTH} characters of alphanumerics, '-', '_' and '.', starting and "
    "ending with an alphanumeric (e.g. app, kubernetes.io/metadata.name)"
)
LABEL_VALUE_RULE = (
    f"a label value: empty, or at most {LABEL_VALUE_MAX_LENGTH} characters of alphanumerics, "
    "'-', '_' and '.', starting and ending with an alphanumeric"
)

Engine = Literal["vits", "espeak"]
Tier = Literal["gpu", "fallback"]
ActiveTier = Literal["gpu", "fallback", "both"]
Phase = Literal["Pending", "Serving", "Degraded", "FailedOver", "Recovering"]
PHASES: tuple[str, ...] = ("Pending", "Serving", "Degraded", "FailedOver", "Recovering")


_LABEL_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN)
_LABEL_VALUE_RE = re.compile(LABEL_VALUE_PATTERN)


def label_key_problems(key: str) -> list[str]:
    """Why key is not a label key, worded like the API server's IsQualifiedName; [] if it is."""
    parts = key.split("/")
    if len(parts) > 2:
        return ["has more than one '/' (a label key is [prefix/]name)"]
    problems = []
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            problems.append("prefix part must be non-empty")
        elif len(prefix) > LABEL_PREFIX_MAX_LENGTH:
            problems.append(
                f"prefix part must be no more than {LABEL_PREFIX_MAX_LENGTH} characters"
            )
        if prefix and not _DNS1123_SUBDOMAIN_RE.fullmatch(prefix):
            problems.append(
                "prefix part must be a DNS-1123 subdomain: lower-case alphanumerics, '-' and "
                "'.', each '.'-separated part starting and ending with an alphanumeric"
            )
    name = parts[-1]
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > LABEL_NAME_MAX_LENGTH:
        problems.append(f"name part must be no more than {LABEL_NAME_MAX_LENGTH} characters")
    if name and not _LABEL_NAME_RE.fullmatch(name):
        problems.append(
            "name part must consist of alphanumerics, '-', '_' and '.', and start and end "
            "with an alphanumeric"
        )
    return problems


def _bad_label_keys(labels: dict[str, str]) -> str:
    bad = [f"{k!r} ({'; '.join(p)})" for k in labels if (p := label_key_problems(k))]
    return "got " + ", ".join(bad)


def _label_key(allow_empty: bool) -> Callable[[str], str]:
    def check(key: str) -> str:
        problems = [] if allow_empty and key == "" else label_key_problems(key)
        if problems:
            raise PydanticCustomError(
                "label_key",
                "{key} is not a label key ([prefix/]name, e.g. app or "
                "kubernetes.io/metadata.name): {problems}",
                {"key": repr(key), "problems": "; ".join(problems)},
            )
        return key

    return check


def _label_value(value: str) -> str:
    if len(value) > LABEL_VALUE_MAX_LENGTH or not _LABEL_VALUE_RE.fullmatch(value):
        raise PydanticCustomError(
            "label_value", "{value} is not {rule}", {"value": repr(value), "rule": LABEL_VALUE_RULE}
        )
    return value


# The OpenAPI schema checks the form (pattern) and the length; CEL rules on the
# owning object check the prefix's length (LABEL_KEY_PREFIX_PATTERN).
LabelKey = Annotated[
    str,
    AfterValidator(_label_key(allow_empty=False)),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": LABEL_KEY_MAX_LENGTH,
            "pattern": LABEL_KEY_PATTERN,
        }
    ),
]
LabelKeyOrEmpty = Annotated[
    str,
    AfterValidator(_label_key(allow_empty=True)),
    WithJsonSchema(
        {"type": "string", "maxLength": LABEL_KEY_MAX_LENGTH, "pattern": f"^$|{LABEL_KEY_PATTERN}"}
    ),
]
LabelValue = Annotated[
    str,
    AfterValidator(_label_value),
    WithJsonSchema(
        {"type": "string", "maxLength": LABEL_VALUE_MAX_LENGTH, "pattern": LABEL_VALUE_PATTERN}
    ),
]


def _quantity_to_str(value: Any) -> Any:
    # YAML users write `cpu: 1`; Kubernetes stores quantities as strings.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    Field(pattern=QUANTITY_PATTERN),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]


# --- cross-field rules: one table feeds both the CRD (CEL) and pydantic -------


@dataclass(frozen=True)
class CrossFieldRule:
    """A rule over several fields: CEL for the API server, a predicate for Python.

    ``field`` is relative to the object the rule sits on (CEL ``fieldPath``),
    ``message`` names the fields with their full ``spec.`` paths. ``detail``, if
    set, says what broke the rule (e.g. which map key); pydantic appends it to the
    message, CEL messages cannot carry it.
    """

    rule: str  # CEL, evaluated with `self` = the object (camelCase keys)
    message: str
    field: str  # e.g. ".memoryHighRatio"
    holds: Callable[[Any], bool]
    detail: Callable[[Any], str] | None = None


def _gpu_keys(resources: ResourceRequirements, gpu_resource: str) -> list[str]:
    keys = [*resources.limits, *resources.requests]
    return [k for k in keys if k == gpu_resource or k.endswith("/gpu")]


# The rule tables. Messages name the full field path so that both the API
# server (CEL) and the operator (pydantic) say the same thing.
FAILOVER_RULES = (
    CrossFieldRule(
        rule="self.memoryHighRatio < self.memoryCriticalRatio",
        message="spec.failover.memoryHighRatio must be less than spec.failover.memoryCriticalRatio",
        field=".memoryHighRatio",
        holds=lambda f: f.memory_high_ratio < f.memory_critical_ratio,
    ),
    CrossFieldRule(
        rule="self.recoverAfterSeconds >= self.windowSeconds",
        message="spec.failover.recoverAfterSeconds must be at least spec.failover.windowSeconds",
        field=".recoverAfterSeconds",
        holds=lambda f: f.recover_after_seconds >= f.window_seconds,
    ),
)
AUTOSCALING_RULES = (
    CrossFieldRule(
        rule="self.minReplicas <= self.maxReplicas",
        message="spec.autoscaling.minReplicas must be at most spec.autoscaling.maxReplicas",
        field=".minReplicas",
        holds=lambda a: a.min_replicas <= a.max_replicas,
    ),
)
FALLBACK_RULES = (
    CrossFieldRule(
        rule="self.standbyReplicas <= self.maxReplicas",
        message="spec.fallback.standbyReplicas must be at most spec.fallback.maxReplicas",
        field=".standbyReplicas",
        holds=lambda f: f.standby_replicas <= f.max_replicas,
    ),
)
SERVING_RULES = (
    CrossFieldRule(
        rule="self.batch.maxSize <= self.maxConcurrency",
        message="spec.serving.batch.maxSize must be at most spec.serving.maxConcurrency",
        field=".batch.maxSize",
        holds=lambda s: s.batch.max_size <= s.max_concurrency,
    ),
)


def _label_key_cel(key: str) -> str:
    """CEL: key is a label key (the OpenAPI pattern, then the prefix's length)."""
    return f"{key}.matches('{LABEL_KEY_PATTERN}') && {key}.matches('{LABEL_KEY_PREFIX_PATTERN}')"


def _label_map_rule(
    field: str, get: Callable[[Any], dict[str, str]], path: str = ""
) -> CrossFieldRule:
    """Every key of the map `field` (camelCase) is a label key.

    Structural schemas cannot constrain map keys (no propertyNames), so this is CEL.
    ``path`` is the map's full ``spec.`` path, or "" where the object sits in several
    places (the message then names no field and is reported where it sits).
    """
    subject = f"{path} keys" if path else "keys"
    return CrossFieldRule(
        rule=f"!has(self.{field}) || self.{field}.all(k, {_label_key_cel('k')})",
        message=f"{subject} must each be {LABEL_KEY_RULE}",
        field=f".{field}",
        holds=lambda o: not any(label_key_problems(k) for k in get(o)),
        detail=lambda o: _bad_label_keys(get(o)),
    )


# A label key in a string field: the OpenAPI pattern checks its form, CEL the
# prefix's length; pydantic checks both in the field's type (LabelKey).
def _label_key_prefix_rule(field: str, get: Callable[[Any], str]) -> CrossFieldRule:
    return CrossFieldRule(
        rule=f"self.{field}.matches('{LABEL_KEY_PREFIX_PATTERN}')",
        message=f"has a prefix (before '/') longer than {LABEL_PREFIX_MAX_LENGTH} characters; "
        f"it must be {LABEL_KEY_RULE}",
        field=f".{field}",
        holds=lambda o: re.fullmatch(LABEL_KEY_PREFIX_PATTERN, get(o)) is not None,
    )


LABEL_SELECTOR_RULES = (_label_map_rule("matchLabels", lambda s: s.match_labels),)
GPU_RULES = (_label_map_rule("nodeSelector", lambda g: g.node_selector, "spec.gpu.nodeSelector"),)
# What the API server's ValidateTolerations (k8s.io/kubernetes/pkg/apis/core/validation)
# refuses in a pod spec, refused here instead of when the GPU Deployment is created.
# An empty key with the default operator (Equal) is refused, not turned into Exists:
# a toleration with no key and Exists tolerates every taint on every node, which
# should be written down, not inferred from a forgotten key; and an absent operator
# keeps meaning Equal, as in a pod spec (an OpenAPI default cannot depend on key).
TOLERATION_RULES = (
    _label_key_prefix_rule("key", lambda t: t.key),
    CrossFieldRule(
        rule="self.key != '' || self.operator == 'Exists'",
        message="must be Exists when key is empty (operator defaults to Equal, which needs "
        "a key): set key to the taint's key, or operator: Exists to tolerate every taint",
        field=".operator",
        holds=lambda t: t.key != "" or t.operator == "Exists",
    ),
    CrossFieldRule(
        rule="self.operator != 'Exists' || self.value == ''",
        message="must be empty when operator is Exists (Exists matches any value): drop "
        "value, or use operator: Equal to match it",
        field=".value",
        holds=lambda t: t.operator != "Exists" or t.value == "",
    ),
    CrossFieldRule(
        rule="!has(self.tolerationSeconds) || self.effect == 'NoExecute'",
        message="must be NoExecute when tolerationSeconds is set (tolerationSeconds is how "
        "long the pod stays on a node after a NoExecute taint appears)",
        field=".effect",
        holds=lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
    ),
)


# Kubernetes refuses these when the NetworkPolicy is created; refusing the spec
# instead keeps a bad selector from failing the reconcile at its first child.
SELECTOR_REQUIREMENT_RULES = (
    CrossFieldRule(
        rule="(self.operator == 'In' || self.operator == 'NotIn')"
        " == (has(self.values) && size(self.values) > 0)",
        message="must be non-empty for In and NotIn and empty for Exists and DoesNotExist",
        field=".values",
        holds=lambda r: (r.operator in ("In", "NotIn")) == bool(r.values),
    ),
    _label_key_prefix_rule("key", lambda r: r.key),
)


# A peer sits in a list: "[*]" in a message stands for its index (pydantic fills
# it in; the API server prefixes the indexed path to the CEL message).
PEER_RULES = (
    CrossFieldRule(
        rule="has(self.podSelector) || has(self.namespaceSelector) || has(self.ipBlock)",
        message="spec.networkPolicy.allowFrom[*] must set podSelector, namespaceSelector "
        "or ipBlock",
        field="",
        holds=lambda p: (
            p.pod_selector is not None or p.namespace_selector is not None or p.ip_block is not None
        ),
    ),
    CrossFieldRule(
        rule="!has(self.ipBlock) || (!has(self.podSelector) && !has(self.namespaceSelector))",
        message="spec.networkPolicy.allowFrom[*].ipBlock cannot be combined with podSelector "
        "or namespaceSelector (a Kubernetes NetworkPolicyPeer sets one or the other)",
        field=".ipBlock",
        holds=lambda p: (
            p.ip_block is None or (p.pod_selector is None and p.namespace_selector is None)
        ),
    ),
)


def _probe_rules(probe: str) -> tuple[CrossFieldRule, ...]:
    return (
        CrossFieldRule(
            rule="self.timeoutSeconds <= self.periodSeconds",
            message=f"spec.probes.{probe}.timeoutSeconds must be at most "
            f"spec.probes.{probe}.periodSeconds",
            field=".timeoutSeconds",
            holds=lambda p: p.timeout_seconds <= p.period_seconds,
        ),
    )


_NO_GPU_IN = (
    "(!has({m}.limits) || {m}.limits.all(k, k != self.gpu.resourceName && !k.endsWith('/gpu')))"
    " && (!has({m}.requests) || {m}.requests.all(k, k != self.gpu.resourceName"
    " && !k.endsWith('/gpu')))"
)
SPEC_RULES = (
    CrossFieldRule(
        rule=_NO_GPU_IN.format(m="self.fallback.resources"),
        message="spec.fallback.resources must not request a GPU: the fallback tier runs on CPU",
        field=".fallback.resources",
        holds=lambda s: not _gpu_keys(s.fallback.resources, s.gpu.resource_name),
    ),
    CrossFieldRule(
        rule=_NO_GPU_IN.format(m="self.resources"),
        message="spec.resources must not list a GPU resource: set spec.gpu.count instead",
        field=".resources",
        holds=lambda s: not _gpu_keys(s.resources, s.gpu.resource_name),
    ),
    CrossFieldRule(
        rule="!self.autoscaling.enabled || self.autoscaling.metric != 'cpu'"
        " || (has(self.resources.requests) && 'cpu' in self.resources.requests)",
        message="spec.resources.requests.cpu is required when spec.autoscaling.metric is cpu",
        field=".resources.requests",
        holds=lambda s: (
            not s.autoscaling.enabled
            or s.autoscaling.metric != "cpu"
            or "cpu" in s.resources.requests
        ),
    ),
    CrossFieldRule(
        rule="!self.autoscaling.enabled || !self.fallback.enabled"
        " || (has(self.fallback.resources.requests) && 'cpu' in self.fallback.resources.requests)",
        message="spec.fallback.resources.requests.cpu is required when spec.autoscaling.enabled "
        "(the fallback HPA scales on CPU)",
        field=".fallback.resources.requests",
        holds=lambda s: (
            not s.autoscaling.enabled
            or not s.fallback.enabled
            or "cpu" in s.fallback.resources.requests
        ),
    ),
    CrossFieldRule(
        rule="self.model.precision == 'fp32' || self.model.engine == 'vits'",
        message="spec.model.precision fp16 needs the vits engine (espeak has no weights)",
        field=".model.precision",
        holds=lambda s: s.model.precision == "fp32" or s.model.engine == "vits",
    ),
    CrossFieldRule(
        rule="self.model.uri == '' || self.model.engine == 'vits'",
        message="spec.model.uri is only used by the vits engine; leave it empty for espeak",
        field=".model.uri",
        holds=lambda s: s.model.uri == "" or s.model.engine == "vits",
    ),
    CrossFieldRule(
        rule="!self.faultInjection.enabled || self.faultInjection.tokenSecretRef.name != ''",
        message="spec.faultInjection.tokenSecretRef.name is required when fault injection "
        "is enabled",
        field=".faultInjection.tokenSecretRef.name",
        holds=lambda s: not s.fault_injection.enabled or s.fault_injection.token_secret_ref.name,
    ),
)
# Rules on the whole object (CEL may read metadata.name at the root).
ROOT_RULES: tuple[tuple[str, str], ...] = (
    (
        f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
        f"metadata.name must be at most {MAX_NAME_LENGTH} characters "
        "(children are named <name>-fallback)",
    ),
    (
        f"self.metadata.name.matches('{NAME_PATTERN}')",
        "metadata.name must be a DNS-1035 label (lower case letters, digits, '-'; "
        "starts with a letter): it names Services",
    ),
)


class _Model(BaseModel):
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


class ResourceRequirements(_Model):
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


class ModelSpec(_Model):
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

    def model_path(self) -> str:
        """VOICEOPS_MODEL_PATH inside the pod for this uri ("" = bundled)."""
        source = parse_model_uri(self.uri)
        return source.container_path


class Toleration(_Model):
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


class GpuSpec(_Model):
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


class AutoscalingSpec(_Model):
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


class FallbackSpec(_Model):
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


class FailoverSpec(_Model):
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


class BatchSpec(_Model):
    """Dynamic batching in the service."""

    max_size: int = Field(default=8, ge=1, le=256, description="Most requests per forward pass.")
    max_delay_ms: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="Longest a request waits for a batch to fill, in milliseconds.",
    )


class ServingSpec(_Model):
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


class _ProbeBase(_Model):
    initial_delay_seconds: int = Field(
        default=0, ge=0, le=3600, description="Seconds after start before the first probe."
    )
    timeout_seconds: int = Field(default=2, ge=1, le=300, description="Probe timeout.")


class StartupProbeSpec(_ProbeBase):
    """Startup probe on /readyz: gives slow model loads time before liveness starts."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = _probe_rules("startup")

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

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = _probe_rules("readiness")

    period_seconds: int = Field(default=5, ge=1, le=3600, description="Seconds between probes.")
    failure_threshold: int = Field(
        default=3, ge=1, le=10000, description="Failures before the pod is marked not ready."
    )
    success_threshold: int = Field(
        default=1, ge=1, le=100, description="Successes before the pod is marked ready again."
    )


class LivenessProbeSpec(_ProbeBase):
    """Liveness probe on /healthz: catches a wedged process."""

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = _probe_rules("liveness")

    period_seconds: int = Field(default=10, ge=1, le=3600, description="Seconds between probes.")
    timeout_seconds: int = Field(default=3, ge=1, le=300, description="Probe timeout.")
    failure_threshold: int = Field(
        default=3, ge=1, le=10000, description="Failures before the container is restarted."
    )


class ProbesSpec(_Model):
    """Probe timings; the paths are fixed by the service (/healthz, /readyz)."""

    startup: StartupProbeSpec = Field(default=StartupProbeSpec(), description="Startup probe.")
    readiness: ReadinessProbeSpec = Field(
        default=ReadinessProbeSpec(), description="Readiness probe."
    )
    liveness: LivenessProbeSpec = Field(default=LivenessProbeSpec(), description="Liveness probe.")


class SecretKeyRef(_Model):
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


class FaultInjectionSpec(_Model):
    """Fault injection endpoints for chaos tests. Off by default; never in production."""

    enabled: bool = Field(
        default=False,
        description="Turn on the service's /admin/faults endpoints (token-guarded).",
    )
    token_secret_ref: SecretKeyRef = Field(
        default=SecretKeyRef(),
        description="Secret holding the bearer token /admin/faults requires.",
    )


class LabelSelectorRequirement(_Model):
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


class LabelSelector(_Model):
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


class IPBlock(_Model):
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


class NetworkPolicyPeer(_Model):
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


class NetworkPolicySpec(_Model):
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


class VoiceServiceSpec(_Model):
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

    __rules__: ClassVar[tuple[CrossFieldRule, ...]] = SPEC_RULES


# --- model URIs ----------------------------------------------------------------

MODEL_MOUNT_PATH = "/var/lib/voiceops/model"


@dataclass(frozen=True)
class ModelSource:
    """Where a pod finds its weights."""

    scheme: Literal["bundled", "file", "pvc"]
    container_path: str = ""  # VOICEOPS_MODEL_PATH ("" = bundled)
    claim_name: str = ""  # pvc only
    sub_path: str = ""  # pvc only: path inside the claim


class SpecError(ValueError):
    """A spec the operator cannot act on; ``field`` names it (e.g. spec.model.uri)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message if message.startswith(field + " ") else f"{field}: {message}")
        self.field = field
        self.message = message


def parse_model_uri(uri: str) -> ModelSource:
    """Turn spec.model.uri into a ModelSource, or raise SpecError naming the field."""
    field = "spec.model.uri"
    if uri == "":
        return ModelSource(scheme="bundled")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise SpecError(field, f"{uri!r} is not a URI; use file:///abs/path or pvc://claim/path")
    if scheme == "file":
        if not rest.startswith("/") or rest == "/":
            raise SpecError(field, f"{uri!r}: file URIs need an absolute path (file:///models/x)")
        path = posixpath.normpath(rest)
        if path != rest.rstrip("/") or ".." in rest.split("/"):
            raise SpecError(field, f"{uri!r}: the path must be normalised (no '..', '//')")
        return ModelSource(scheme="file", container_path=path)
    if scheme == "pvc":
        claim, _, sub_path = rest.partition("/")
        if not re.fullmatch(PVC_NAME_PATTERN, claim) or len(claim) > 253:
            raise SpecError(field, f"{uri!r}: {claim!r} is not a valid PersistentVolumeClaim name")
        sub_path = sub_path.strip("/")
        if sub_path and (
            posixpath.normpath(sub_path) != sub_path or sub_path.split("/")[0] == ".."
        ):
            raise SpecError(field, f"{uri!r}: the path inside the claim must be normalised")
        container_path = (
            posixpath.join(MODEL_MOUNT_PATH, sub_path) if sub_path else MODEL_MOUNT_PATH
        )
        return ModelSource(
            scheme="pvc", container_path=container_path, claim_name=claim, sub_path=sub_path
        )
    raise SpecError(
        field,
        f"unsupported scheme {scheme + '://'!r} in {uri!r}; supported: empty (bundled voice), "
        "file:///abs/path, pvc://claim/path",
    )


# --- status -----------------------------------------------------------------------


class Condition(_Model):
    """A metav1.Condition."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(max_length=316, description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="CamelCase reason for the last transition.")
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed for."
    )


class GpuTierStatus(_Model):
    """Observed state of the GPU tier."""

    model_config = ConfigDict(extra="ignore")

    replicas: int = Field(default=0, ge=0, description="GPU-tier pods (Deployment status).")
    ready_replicas: int = Field(default=0, ge=0, description="Ready GPU-tier pods.")
    memory_used_ratio: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Highest GPU memory used/total over the GPU pods (from their /metrics).",
    )


class FallbackTierStatus(_Model):
    """Observed state of the fallback tier."""

    model_config = ConfigDict(extra="ignore")

    replicas: int = Field(default=0, ge=0, description="Fallback pods (Deployment status).")
    ready_replicas: int = Field(default=0, ge=0, description="Ready fallback pods.")
    desired_replicas: int | None = Field(
        default=None,
        ge=0,
        description="Fallback replicas the self-healing loop wants (the fallback HPA's "
        "minReplicas); unset = spec.fallback.standbyReplicas.",
    )


class Transition(_Model):
    """The last tier transition."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    time: str = Field(description="When it happened (RFC 3339).")
    from_: str = Field(alias="from", description="Phase before.")
    to: str = Field(description="Phase after.")
    reason: str = Field(default="", description="CamelCase reason.")
    message: str = Field(default="", description="Human-readable details.")


class HealingSignals(_Model):
    """When each signal the failover policy is timing was first seen (RFC 3339)."""

    model_config = ConfigDict(extra="ignore")

    pressure: str | None = Field(
        default=None,
        description="Since when the GPU tier has been under pressure (memory at or above "
        "memoryHighRatio, a degraded, crash-looping or unschedulable GPU pod, unreadable "
        "metrics); it acts once this has held failover.windowSeconds. Unset: no pressure.",
    )
    failure: str | None = Field(
        default=None,
        description="Since when the GPU tier has been unable to serve (no usable ready GPU "
        "pod); fails over once this has held failover.windowSeconds. Unset: no failure.",
    )
    healthy: str | None = Field(
        default=None,
        description="Since when the GPU tier has been continuously healthy; Recovering "
        "starts after failover.windowSeconds of it and traffic returns to the GPU tier "
        "after failover.recoverAfterSeconds. Unset: not healthy.",
    )


class HealingStatus(_Model):
    """What the self-healing loop is timing, kept so an operator restart resumes it."""

    model_config = ConfigDict(extra="ignore")

    signals: HealingSignals | None = Field(
        default=None,
        description="Pending signals and when each was first seen; an operator restart "
        "resumes these windows (and the recoverAfterSeconds clock) instead of restarting them.",
    )


class VoiceServiceStatus(_Model):
    """Observed state, written by the operator."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(
        default=None, description="metadata.generation the operator last acted on."
    )
    phase: Phase | None = Field(
        default=None,
        description="Pending | Serving | Degraded | FailedOver | Recovering.",
    )
    active_tier: ActiveTier | None = Field(
        default=None,
        description="Tier the front Service routes to: gpu | fallback | both.",
    )
    ready: str | None = Field(
        default=None, description="Ready pods per tier for kubectl, e.g. 'gpu 1/1 · cpu 1/1'."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing, Degraded, FailedOver (metav1.Condition).",
    )
    gpu: GpuTierStatus | None = Field(default=None, description="GPU tier.")
    fallback: FallbackTierStatus | None = Field(default=None, description="Fallback tier.")
    failovers: int | None = Field(default=None, ge=0, description="Failovers so far.")
    last_transition: Transition | None = Field(default=None, description="Last tier transition.")
    healing: HealingStatus | None = Field(
        default=None, description="State of the self-healing loop (written by the operator)."
    )


# --- parsing -----------------------------------------------------------------------


def _field_path(loc: tuple[int | str, ...], prefix: str) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _fill_indices(path: str, indices: list[int]) -> str:
    """spec.a[*].b with indices [2] → spec.a[2].b (rules on list items name no index)."""
    for index in indices:
        if "[*]" not in path:
            break
        path = path.replace("[*]", f"[{index}]", 1)
    return path


def errors_from_validation(exc: ValidationError, prefix: str = "spec") -> list[SpecError]:
    """One SpecError per pydantic error, each naming its field."""
    found = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p not in ("function-after[_cross_field()]",))
        field = _field_path(loc, prefix)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "cross_field":
            named = message.split(" ", 1)[0]
            if named.startswith(prefix + "."):  # the message names its field
                field = _fill_indices(named, [p for p in loc if isinstance(p, int)])
                message = message.replace(named, field, 1)
            else:  # a rule on a nested list item: named where it sits, like CEL errors
                field += (err.get("ctx") or {}).get("field", "")
                message = f"{field} {message}"
        found.append(SpecError(field, message))
    return found


class InvalidSpec(ValueError):
    """All the problems of one spec; str() lists them one per line."""

    def __init__(self, errors: list[SpecError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors

    @property
    def field(self) -> str:
        return self.errors[0].field


def parse_spec(raw: Any) -> VoiceServiceSpec:
    """Validate and default a spec dict, checking also what the schema cannot (model.uri)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidSpec([SpecError("spec", "must be an object")])
    try:
        spec = VoiceServiceSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSpec(errors_from_validation(exc)) from None
    try:
        parse_model_uri(spec.model.uri)
    except SpecError as exc:
        raise InvalidSpec([exc]) from None
    return spec


def parse_status(raw: Any) -> VoiceServiceStatus:
    """Read status leniently: unknown or malformed parts are dropped, never fatal."""
    if not isinstance(raw, dict):
        return VoiceServiceStatus()
    try:
        return VoiceServiceStatus.model_validate(raw)
    except ValidationError:
        cleaned: dict[str, Any] = {}
        for key, value in raw.items():
            try:
                VoiceServiceStatus.model_validate({key: value})
            except ValidationError:
                continue
            cleaned[key] = value
        return VoiceServiceStatus.model_validate(cleaned)


class VoiceService(BaseModel):
    """A parsed VoiceService object: identity plus its validated spec."""

    model_config = ConfigDict(frozen=True)

    name: str
    namespace: str
    spec: VoiceServiceSpec
    uid: str = ""
    generation: int = 0


def parse_voiceservice(manifest: Any, default_namespace: str = "default") -> VoiceService:
    """Validate a whole manifest (apiVersion, kind, metadata.name, spec)."""
    if not isinstance(manifest, dict):
        raise InvalidSpec([SpecError("(document)", "must be a mapping")])
    if manifest.get("apiVersion") != API_VERSION:
        raise InvalidSpec(
            [SpecError("apiVersion", f"must be {API_VERSION}, got {manifest.get('apiVersion')!r}")]
        )
    if manifest.get("kind") != KIND:
        raise InvalidSpec([SpecError("kind", f"must be {KIND}, got {manifest.get('kind')!r}")])
    metadata = manifest.get("metadata") or {}
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise InvalidSpec([SpecError("metadata.name", "is required")])
    if len(name) > MAX_NAME_LENGTH or not re.fullmatch(NAME_PATTERN, name):
        raise InvalidSpec(
            [
                SpecError(
                    "metadata.name",
                    f"{name!r} must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters",
                )
            ]
        )
    namespace = metadata.get("namespace") or default_namespace
    spec = parse_spec(manifest.get("spec"))
    return VoiceService(
        name=name,
        namespace=namespace,
        spec=spec,
        uid=str(metadata.get("uid") or ""),
        generation=int(metadata.get("generation") or 0),
    )
