"""What the self-healing loop writes, decided purely: its status fields and Events.

From the policy's decision: the healing-owned part of the status as a merge
patch (the decision; the spec reconcile builds the routing from it), and what
the Events about transitions and replaced pods say. The loop (healing.py) reads
and writes; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voiceops_operator import build, diff, policy, reasons
from voiceops_operator import status as st
from voiceops_operator.events import Note
from voiceops_operator.spec import VoiceServiceSpec

# Phases that are trouble: their conditions are True and their Events Warnings.
ESCALATIONS = frozenset({"Degraded", "FailedOver"})


def policy_config(spec: VoiceServiceSpec) -> policy.PolicyConfig:
    """The policy's view of a parsed spec."""
    f = spec.failover
    return policy.PolicyConfig(
        memory_high_ratio=f.memory_high_ratio,
        memory_critical_ratio=f.memory_critical_ratio,
        window_seconds=f.window_seconds,
        recover_after_seconds=f.recover_after_seconds,
        unschedulable_after_seconds=f.unschedulable_after_seconds,
        crash_loop_restarts=f.crash_loop_restarts,
        cooldown_seconds=f.cooldown_seconds,
        fallback_enabled=spec.fallback.enabled,
        fallback_standby_replicas=spec.fallback.standby_replicas if spec.fallback.enabled else 0,
        fallback_max_replicas=spec.fallback.max_replicas,
    )


def healing_conditions(
    conditions: list[dict[str, Any]],
    decision: policy.Decision,
    fallback_enabled: bool,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Conditions with Degraded and FailedOver set from the decision; others kept."""
    phase = decision.phase
    if phase in ESCALATIONS:
        degraded = ("True", decision.reason, decision.message)
    elif phase == "Recovering":
        degraded = ("False", reasons.RECOVERING, decision.message)
    elif phase == "Pending":
        degraded = ("False", reasons.WAITING_FOR_GPU, decision.message)
    else:
        degraded = ("False", reasons.GPU_TIER_HEALTHY, "the GPU tier serves")
    if phase == "FailedOver":
        failed = ("True", decision.reason, decision.message)
    elif not fallback_enabled:
        failed = (
            "False",
            reasons.FALLBACK_DISABLED,
            "spec.fallback.enabled is false: there is no tier to fail over to",
        )
    elif decision.active_tier == "both":
        failed = ("False", reasons.BOTH_TIERS_SERVING, "the GPU and fallback tiers both serve")
    else:
        failed = ("False", reasons.GPU_TIER_ACTIVE, "the front Service selects the GPU tier")
    out = st.set_condition(conditions, st.DEGRADED, *degraded, generation, now)
    return st.set_condition(out, st.FAILED_OVER, *failed, generation, now)


def healing_status(
    current: Mapping[str, Any],
    decision: policy.Decision,
    fallback_enabled: bool,
    generation: int,
    now: str,
) -> dict[str, Any]:
    """The healing-owned part of the status, as a merge patch; {} when nothing changed."""
    wanted = policy.state_to_status(decision.state, decision.transition)
    # Exactly the pending signals: one that ended is removed (null), or a restart
    # would resume a window that is long over.
    signals = wanted["healing"]["signals"]
    wanted["healing"]["signals"] = {k: signals.get(k) for k in policy.SIGNALS}
    wanted["conditions"] = healing_conditions(
        list(current.get("conditions") or []), decision, fallback_enabled, generation, now
    )
    if not fallback_enabled:
        wanted.pop("fallback", None)
    ratio = decision.assessment.memory_used_ratio
    wanted["gpu"] = {"memoryUsedRatio": None if ratio is None else round(min(ratio, 1.0), 2)}
    # Only the fields listed: the rest of the status is the spec reconcile's.
    return diff.merge_patch(wanted, current, same=diff.equal, owned_whole=lambda _path: False)


def transition_note(transition: policy.Transition) -> Note:
    """What the Event about one tier transition says."""
    return Note(
        "Warning" if transition.to_phase in ESCALATIONS else "Normal",
        transition.reason,
        f"{transition.from_phase} → {transition.to_phase} "
        f"(traffic: {transition.from_tier} → {transition.to_tier}): {transition.message}",
        "FailOver" if transition.to_tier == "fallback" else "Route",
    )


def replacement_note(replacement: policy.Replacement) -> Note:
    """A Warning: a pod replaced for a GPU hardware fault (pod, node, GPU, XID)."""
    return Note("Warning", reasons.GPU_HARDWARE_FAULT, replacement.message, "ReplacePod")


def routing_of(decision: policy.Decision) -> build.Routing:
    return build.Routing(
        active_tier=decision.active_tier, fallback_replicas=decision.fallback_replicas
    )
