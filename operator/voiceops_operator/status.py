"""VoiceService status computed from the children. Pure.

Every status field has exactly one writer:

=================================================  =====================================
field                                              writer
=================================================  =====================================
observedGeneration, ready, gpu.replicas,           spec reconcile (this module)
gpu.readyReplicas, fallback.replicas,
fallback.readyReplicas, conditions Ready and
Progressing
phase, activeTier, conditions Degraded and         self-healing loop (healing.py) when
FailedOver, failovers, lastTransition,             it runs; with SELF_HEALING off the
gpu.memoryUsedRatio, fallback.desiredReplicas,     spec reconcile sets phase
healing.signals                                    (Pending/Serving) and activeTier
                                                   (gpu) and nothing else
model, condition ModelUpdated                      model update driver (model_updater.py)
=================================================  =====================================

All write through the status subresource with the resourceVersion they
computed from and retry on 409 Conflict, because the conditions list is one
field to a merge patch: each writer rewrites only its own condition types and
keeps the others as it finds them. This module never touches the healing-owned
fields.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from voiceops_operator import diff, reasons

# Condition types.
READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
FAILED_OVER = "FailedOver"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TierCounts:
    """A tier's Deployment as seen in its status."""

    desired: int = 0
    replicas: int = 0
    ready: int = 0
    updated: int = 0
    # The controller saw the latest generation, every pod is of it (status.replicas counts
    # the pods not terminating, so none of an older template is left) and enough are ready.
    rolled_out: bool = True

    @classmethod
    def from_deployment(cls, deployment: dict[str, Any] | None) -> TierCounts:
        if not deployment:
            return cls(rolled_out=False)
        spec = deployment.get("spec") or {}
        status = deployment.get("status") or {}
        desired = int(spec.get("replicas", 1))
        updated = int(status.get("updatedReplicas", 0))
        ready = int(status.get("readyReplicas", 0))
        seen = int(status.get("observedGeneration", 0)) >= int(
            deployment.get("metadata", {}).get("generation", 0)
        )
        return cls(
            desired=desired,
            replicas=int(status.get("replicas", 0)),
            ready=ready,
            updated=updated,
            rolled_out=seen
            and updated >= desired
            and ready >= desired
            and int(status.get("replicas", 0)) <= updated,
        )


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Conditions with one type set; lastTransitionTime moves only when status changes."""
    out = [dict(c) for c in conditions if c.get("type") != type_]
    previous = next((c for c in conditions if c.get("type") == type_), None)
    since = now
    if previous and previous.get("status") == status and previous.get("lastTransitionTime"):
        since = previous["lastTransitionTime"]
    condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }
    index = next((i for i, c in enumerate(conditions) if c.get("type") == type_), len(out))
    out.insert(min(index, len(out)), condition)
    return out


def condition_status(status: dict[str, Any], type_: str) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == type_:
            return condition.get("status")
    return None


def ready_string(gpu: TierCounts, fallback: TierCounts | None) -> str:
    """The READY printer column: 'gpu 1/1 · cpu 1/1'."""
    cpu = f"cpu {fallback.ready}/{fallback.desired}" if fallback else "cpu off"
    return f"gpu {gpu.ready}/{gpu.desired} · {cpu}"


def serving_ready(active_tier: str, gpu: TierCounts, fallback: TierCounts | None) -> bool:
    """Ready only when the tier the front Service selects really has ready pods."""
    fallback_ready = fallback.ready if fallback else 0
    if active_tier == "fallback":
        return fallback_ready > 0
    if active_tier == "both":
        return gpu.ready > 0 or fallback_ready > 0
    return gpu.ready > 0


def compute_status(
    current: dict[str, Any],
    *,
    generation: int,
    active_tier: str,
    gpu: TierCounts,
    fallback: TierCounts | None,
    now: str,
    writes_phase: bool = True,
) -> dict[str, Any]:
    """The new status (a copy of `current` with the reconcile-owned fields updated).

    ``active_tier`` is the routing in effect (status.activeTier, else the GPU
    tier); it decides Ready. ``writes_phase``: False when the self-healing loop
    runs, which then owns phase and activeTier.
    """
    new = copy.deepcopy(current) if current else {}
    new["observedGeneration"] = generation
    tier = new.get("activeTier") or active_tier
    new["gpu"] = {**(new.get("gpu") or {}), "replicas": gpu.replicas, "readyReplicas": gpu.ready}
    if fallback is not None:
        new["fallback"] = {
            **(new.get("fallback") or {}),
            "replicas": fallback.replicas,
            "readyReplicas": fallback.ready,
        }
    else:
        new.pop("fallback", None)
    new["ready"] = ready_string(gpu, fallback)
    ready = serving_ready(tier, gpu, fallback)
    tier_word = {"gpu": "GPU tier", "fallback": "fallback tier", "both": "both tiers"}.get(
        tier, tier
    )
    conditions = list(new.get("conditions") or [])
    if ready:
        conditions = set_condition(
            conditions,
            READY,
            "True",
            reasons.SERVING_TIER_READY,
            f"serving from the {tier_word}: {new['ready']}",
            generation,
            now,
        )
    else:
        conditions = set_condition(
            conditions,
            READY,
            "False",
            reasons.NO_READY_REPLICAS,
            f"no ready pods in the {tier_word}: {new['ready']}",
            generation,
            now,
        )
    rolled_out = gpu.rolled_out and (fallback is None or fallback.rolled_out)
    conditions = set_condition(
        conditions,
        PROGRESSING,
        "False" if rolled_out else "True",
        reasons.ROLLOUT_COMPLETE if rolled_out else reasons.ROLLING_OUT,
        "all tiers rolled out" if rolled_out else f"rolling out: {new['ready']}",
        generation,
        now,
    )
    new["conditions"] = conditions
    if writes_phase:
        # Without the self-healing loop: the routing in effect, and Serving once
        # the serving tier has been ready (nothing moves it back without the loop).
        new.setdefault("activeTier", tier)
        if new.get("phase") in (None, "Pending"):
            new["phase"] = "Serving" if ready else "Pending"
    return new


def invalid_spec_status(
    current: dict[str, Any],
    *,
    generation: int,
    message: str,
    now: str,
    writes_phase: bool = True,
) -> dict[str, Any]:
    """Status for a spec the operator refuses: Ready False with the reason."""
    new = copy.deepcopy(current) if current else {}
    new["observedGeneration"] = generation
    if writes_phase:
        new.setdefault("phase", "Pending")
    conditions = list(new.get("conditions") or [])
    conditions = set_condition(
        conditions, READY, "False", reasons.INVALID_SPEC, message, generation, now
    )
    conditions = set_condition(
        conditions, PROGRESSING, "False", reasons.INVALID_SPEC, message, generation, now
    )
    new["conditions"] = conditions
    return new


def failed_reconcile_status(
    current: dict[str, Any], *, generation: int, message: str, now: str
) -> dict[str, Any]:
    new = copy.deepcopy(current) if current else {}
    conditions = list(new.get("conditions") or [])
    new["conditions"] = set_condition(
        conditions, PROGRESSING, "False", reasons.RECONCILE_FAILED, message, generation, now
    )
    return new


def status_patch(current: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch of the status that turns ``current`` into ``new``; {} when equal.

    ``new`` is computed from ``current``, so a key it lacks was dropped on purpose
    (fallback, when the tier is turned off) and is removed (null).
    """
    return diff.merge_patch(new, current or {}, same=diff.equal, owned_whole=lambda _path: True)
