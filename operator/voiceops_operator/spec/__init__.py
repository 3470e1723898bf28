"""The VoiceService API: the single source of truth for its schema and its rules.

The CRD's openAPIV3Schema (with its CEL rules) is generated from these models by
:mod:`voiceops_operator.crd`, and the operator parses every object through them.
Pure: no I/O. By concern:

* :mod:`.resource`: API group, version, kind and names;
* :mod:`.validation`: field types and patterns (label keys and values, quantities, names);
* :mod:`.rules`: the cross-field rules, CEL for the API server and predicates for pydantic;
* :mod:`.models`: the spec models; :mod:`.status`: the status models;
* :mod:`.model_uri`: spec.model.uri; :mod:`.errors`: what is wrong, field by field;
* :mod:`.parsing`: manifest, spec and status in, validated models out.
"""

from __future__ import annotations

from voiceops_operator.spec.errors import InvalidSpec, SpecError
from voiceops_operator.spec.model_uri import MODEL_MOUNT_PATH, ModelSource, parse_model_uri
from voiceops_operator.spec.models import (
    ApiModel,
    AutoscalingSpec,
    BatchSpec,
    Engine,
    FailoverSpec,
    FallbackSpec,
    FaultInjectionSpec,
    GpuSpec,
    IPBlock,
    JobsSpec,
    LabelSelector,
    LabelSelectorRequirement,
    LivenessProbeSpec,
    ModelSpec,
    NetworkPolicyPeer,
    NetworkPolicySpec,
    ProbesSpec,
    ReadinessProbeSpec,
    RedisSecretRef,
    ResourceRequirements,
    SecretKeyRef,
    ServingSpec,
    StartupProbeSpec,
    Toleration,
    VoiceServiceSpec,
)
from voiceops_operator.spec.parsing import (
    VoiceService,
    errors_from_validation,
    parse_spec,
    parse_status,
    parse_voiceservice,
)
from voiceops_operator.spec.resource import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)
from voiceops_operator.spec.rules import ROOT_RULES, SPEC_RULES, CrossFieldRule
from voiceops_operator.spec.status import (
    Condition,
    FallbackTierStatus,
    GpuTierStatus,
    HealingSignals,
    HealingStatus,
    ModelRef,
    ModelStatus,
    ModelSwapRecord,
    ModelUpdateState,
    Transition,
    VoiceServiceStatus,
)
from voiceops_operator.spec.validation import (
    LABEL_KEY_PATTERN,
    LABEL_KEY_PREFIX_PATTERN,
    LABEL_VALUE_PATTERN,
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    LabelKey,
    LabelKeyOrEmpty,
    LabelValue,
    Quantity,
    label_key_problems,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "LABEL_KEY_PATTERN",
    "LABEL_KEY_PREFIX_PATTERN",
    "LABEL_VALUE_PATTERN",
    "MAX_NAME_LENGTH",
    "MODEL_MOUNT_PATH",
    "NAME_PATTERN",
    "PLURAL",
    "ROOT_RULES",
    "SHORT_NAMES",
    "SINGULAR",
    "SPEC_RULES",
    "VERSION",
    "ApiModel",
    "AutoscalingSpec",
    "BatchSpec",
    "Condition",
    "CrossFieldRule",
    "Engine",
    "FailoverSpec",
    "FallbackSpec",
    "FallbackTierStatus",
    "FaultInjectionSpec",
    "GpuSpec",
    "GpuTierStatus",
    "HealingSignals",
    "HealingStatus",
    "IPBlock",
    "InvalidSpec",
    "JobsSpec",
    "LabelKey",
    "LabelKeyOrEmpty",
    "LabelSelector",
    "LabelSelectorRequirement",
    "LabelValue",
    "LivenessProbeSpec",
    "ModelRef",
    "ModelSource",
    "ModelSpec",
    "ModelStatus",
    "ModelSwapRecord",
    "ModelUpdateState",
    "NetworkPolicyPeer",
    "NetworkPolicySpec",
    "ProbesSpec",
    "Quantity",
    "ReadinessProbeSpec",
    "RedisSecretRef",
    "ResourceRequirements",
    "SecretKeyRef",
    "ServingSpec",
    "SpecError",
    "StartupProbeSpec",
    "Toleration",
    "Transition",
    "VoiceService",
    "VoiceServiceSpec",
    "VoiceServiceStatus",
    "errors_from_validation",
    "label_key_problems",
    "parse_model_uri",
    "parse_spec",
    "parse_status",
    "parse_voiceservice",
]
