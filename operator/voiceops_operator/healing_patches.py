"""What the self-healing loop writes, decided purely: status, routing, sizes, Events.

From the policy's decision and the objects as they are: the healing-owned part
of the status as a merge patch, the front Service's selector, the fallback
tier's size (its HPA's minimum and the Deployment's replicas), and the Events
about transitions and replaced pods. The loop (healing.py) reads and writes;
nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voiceops_operator import build, diff, names, policy, reasons
from voiceops_operator import status as st
from voiceops_operator.spec import API_VERSION, KIND, VoiceService, VoiceServiceSpec

COMPONENT = "voiceops-operator"  # the Events' source

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


def front_selector_patch(
    service: Mapping[str, Any] | None, vs: VoiceService, routing: build.Routing
) -> dict[str, Any] | None:
    """Merge patch for the front Service's selector, or None when it already agrees."""
    if service is None:
        return None  # the spec reconcile creates it, already with this routing
    desired = build.build_front_service(vs, routing)["spec"]["selector"]
    actual = (service.get("spec") or {}).get("selector") or {}
    if actual == desired:
        return None
    selector: dict[str, Any] = dict(desired)
    for key in actual:
        if key not in desired:
            selector[key] = None  # merge patch: null deletes the key
    return {"spec": {"selector": selector}}


@dataclass(frozen=True)
class ScalePatch:
    api_version: str
    kind: str
    name: str
    patch: dict[str, Any]


def fallback_scale_patches(
    vs: VoiceService,
    routing: build.Routing,
    hpa: Mapping[str, Any] | None,
    deployment: Mapping[str, Any] | None,
) -> list[ScalePatch]:
    """Patches that size the fallback tier as routing wants, respecting its HPA."""
    if not vs.spec.fallback.enabled:
        return []
    wanted = build.fallback_replicas(vs.spec, routing)
    name = names.deployment_name(vs.name, "fallback")
    out = []
    replicas = int(((deployment or {}).get("spec") or {}).get("replicas") or 0)
    if hpa is not None:
        if int((hpa.get("spec") or {}).get("minReplicas") or 1) != wanted:
            out.append(
                ScalePatch(
                    "autoscaling/v2",
                    "HorizontalPodAutoscaler",
                    names.hpa_name(vs.name, "fallback"),
                    {"spec": {"minReplicas": wanted}},
                )
            )
        # Raising to the HPA minimum is what the HPA controller does itself;
        # doing it now saves its sync period. Scaling down is left to the HPA.
        if deployment is not None and replicas < wanted:
            out.append(ScalePatch("apps/v1", "Deployment", name, {"spec": {"replicas": wanted}}))
    elif deployment is not None and replicas != wanted:
        out.append(ScalePatch("apps/v1", "Deployment", name, {"spec": {"replicas": wanted}}))
    return out


def vs_event(
    body: Mapping[str, Any],
    reason: str,
    message: str,
    *,
    warning: bool,
    action: str,
    now: str,
    instance: str,
) -> dict[str, Any]:
    """A core/v1 Event about the VoiceService ``body`` (the healing loop's one Event shape)."""
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": f"voiceops.io/{COMPONENT}",
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "action": action,
    }


def transition_event(
    body: Mapping[str, Any], transition: policy.Transition, now: str, instance: str
) -> dict[str, Any]:
    """An Event about one tier transition."""
    return vs_event(
        body,
        transition.reason,
        f"{transition.from_phase} → {transition.to_phase} "
        f"(traffic: {transition.from_tier} → {transition.to_tier}): {transition.message}",
        warning=transition.to_phase in ESCALATIONS,
        action="FailOver" if transition.to_tier == "fallback" else "Route",
        now=now,
        instance=instance,
    )


def replacement_event(
    body: Mapping[str, Any], replacement: policy.Replacement, now: str, instance: str
) -> dict[str, Any]:
    """A Warning Event: a pod replaced for a GPU hardware fault (pod, node, GPU, XID)."""
    return vs_event(
        body,
        reasons.GPU_HARDWARE_FAULT,
        replacement.message,
        warning=True,
        action="ReplacePod",
        now=now,
        instance=instance,
    )


def routing_of(decision: policy.Decision) -> build.Routing:
    return build.Routing(
        active_tier=decision.active_tier, fallback_replicas=decision.fallback_replicas
    )
