"""Cross-field rules: one table feeds both the CRD (CEL) and pydantic. Pure: no I/O.

Each :class:`CrossFieldRule` is a CEL expression for the API server and a
predicate for the operator, with one message for both. The models in
:mod:`~voiceops_operator.spec.models` list theirs in ``__rules__``; the CRD
generator (:mod:`voiceops_operator.crd`) writes them as x-kubernetes-validations.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voiceops_operator.spec.validation import (
    LABEL_KEY_PATTERN,
    LABEL_KEY_PREFIX_PATTERN,
    LABEL_KEY_RULE,
    LABEL_PREFIX_MAX_LENGTH,
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    bad_label_keys,
    label_key_problems,
)

if TYPE_CHECKING:
    from voiceops_operator.spec.models import ResourceRequirements


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
        detail=lambda o: bad_label_keys(get(o)),
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


def probe_rules(probe: str) -> tuple[CrossFieldRule, ...]:
    """The rules of one probe's settings (its name goes into the messages)."""
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
        rule="self.model.updateStrategy == 'Rolling' || self.model.engine == 'vits'",
        message="spec.model.updateStrategy InPlace needs the vits engine (espeak has no "
        "weights to swap)",
        field=".model.updateStrategy",
        holds=lambda s: s.model.update_strategy == "Rolling" or s.model.engine == "vits",
    ),
    CrossFieldRule(
        rule="!self.faultInjection.enabled || self.faultInjection.tokenSecretRef.name != ''",
        message="spec.faultInjection.tokenSecretRef.name is required when fault injection "
        "is enabled",
        field=".faultInjection.tokenSecretRef.name",
        holds=lambda s: not s.fault_injection.enabled or s.fault_injection.token_secret_ref.name,
    ),
)
JOBS_RULES = (
    CrossFieldRule(
        rule="!self.enabled || ((self.redisUrl != '') != (self.redisSecretRef.name != ''))",
        message="spec.jobs.redisUrl or spec.jobs.redisSecretRef.name is required when "
        "spec.jobs.enabled: exactly one of them",
        field=".redisUrl",
        holds=lambda j: not j.enabled or (bool(j.redis_url) != bool(j.redis_secret_ref.name)),
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
