"""The VoiceService status as pydantic models: what the operator reports. Pure: no I/O.

Who writes which field: the table at the top of :mod:`voiceops_operator.status`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from voiceops_operator.spec.models import ApiModel
from voiceops_operator.tiers import ActiveTier, Phase


class Condition(ApiModel):
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


class GpuTierStatus(ApiModel):
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


class FallbackTierStatus(ApiModel):
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


class Transition(ApiModel):
    """The last tier transition."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    time: str = Field(description="When it happened (RFC 3339).")
    from_: str = Field(alias="from", description="Phase before.")
    to: str = Field(description="Phase after.")
    reason: str = Field(default="", description="CamelCase reason.")
    message: str = Field(default="", description="Human-readable details.")


class HealingSignals(ApiModel):
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


class HealingStatus(ApiModel):
    """What the self-healing loop is timing, kept so an operator restart resumes it."""

    model_config = ConfigDict(extra="ignore")

    signals: HealingSignals | None = Field(
        default=None,
        description="Pending signals and when each was first seen; an operator restart "
        "resumes these windows (and the recoverAfterSeconds clock) instead of restarting them.",
    )


ModelUpdateState = Literal["Updated", "Updating", "RollingBack", "Failed", "Rolling"]


class ModelRef(ApiModel):
    """One model version: its name and where its weights come from."""

    model_config = ConfigDict(extra="ignore")

    version: str = Field(max_length=128, description="The version's name (spec.model.version).")
    uri: str = Field(default="", max_length=1024, description="spec.model.uri.")


class ModelSwapRecord(ApiModel):
    """The last swap one pod did for an InPlace update."""

    model_config = ConfigDict(extra="ignore")

    pod: str = Field(max_length=253, description="The pod.")
    result: str = Field(
        max_length=64,
        description="swapped, unchanged, validation_failed, load_failed, refused_memory, busy "
        "or unreachable.",
    )
    message: str = Field(default="", max_length=1024, description="What the pod said.")
    seconds: float | None = Field(default=None, ge=0, description="How long the swap took.")
    time: str = Field(description="When it ended (RFC 3339).")


class ModelStatus(ApiModel):
    """Which model version the GPU pods run, and the update under way (written by the
    model update driver)."""

    model_config = ConfigDict(extra="ignore")

    current: ModelRef | None = Field(
        default=None, description="The version every GPU pod runs (and new pods start with)."
    )
    target: ModelRef | None = Field(
        default=None, description="The version an update is moving to; unset when none is."
    )
    strategy: Literal["Rolling", "InPlace"] | None = Field(
        default=None, description="How the last update ran (InPlace may turn into Rolling)."
    )
    state: ModelUpdateState | None = Field(
        default=None,
        description="Updated | Updating (InPlace, pod by pod) | RollingBack (a pod refused the "
        "new version: every pod goes back) | Failed (rolled back; the spec keeps the version "
        "that failed until it changes) | Rolling (the Deployment replaces the pods).",
    )
    pods_updated: int | None = Field(
        default=None, ge=0, description="GPU pods running the target version."
    )
    pods_total: int | None = Field(default=None, ge=0, description="GPU pods to update.")
    last_swap: ModelSwapRecord | None = Field(default=None, description="The last swap.")
    template_revision: str | None = Field(
        default=None,
        max_length=64,
        description="The model revision in the GPU pod template (set when an InPlace update "
        "had to roll the pods); the pods restart only when it changes.",
    )
    message: str | None = Field(default=None, max_length=1024, description="What happens now.")


class VoiceServiceStatus(ApiModel):
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
        description="Ready, Progressing, Degraded, FailedOver, ModelUpdated (metav1.Condition).",
    )
    gpu: GpuTierStatus | None = Field(default=None, description="GPU tier.")
    fallback: FallbackTierStatus | None = Field(default=None, description="Fallback tier.")
    failovers: int | None = Field(default=None, ge=0, description="Failovers so far.")
    last_transition: Transition | None = Field(default=None, description="Last tier transition.")
    healing: HealingStatus | None = Field(
        default=None, description="State of the self-healing loop (written by the operator)."
    )
    model: ModelStatus | None = Field(
        default=None, description="The GPU tier's model version and any update under way."
    )
