"""Deployment controller logic, pure: which pods to create or delete, and the status.

Simplification (said once, here): the simulated controller owns pods
directly; there are no ReplicaSets. Pods carry the ``pod-template-hash``
label and an ownerReference to the Deployment. The RollingUpdate strategy
honours maxSurge/maxUnavailable (percentages resolved like Kubernetes:
surge rounds up, unavailable rounds down); Recreate deletes old pods first.
``minReadySeconds`` is ignored (ready = available).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
HASH_LABEL = "pod-template-hash"


def template_hash(template: Obj) -> str:
    """A stable 10-character hash of a pod template (like the ReplicaSet hash)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_NAME_CHARS[b % len(_NAME_CHARS)] for b in digest[:10])


def resolve_int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        scaled = int(text[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(text)


def pod_is_ready(pod: Obj) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def new_pod(deployment: Obj, pod_hash: str, suffix: str | None = None) -> Obj:
    """The pod the controller creates from a Deployment's template."""
    meta = deployment["metadata"]
    template = copy.deepcopy(deployment["spec"]["template"])
    tmeta = template.get("metadata") or {}
    suffix = suffix or "".join(random.choices(_NAME_CHARS, k=5))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{meta['name']}-{pod_hash}-{suffix}",
            "namespace": meta["namespace"],
            "labels": {**(tmeta.get("labels") or {}), HASH_LABEL: pod_hash},
            "annotations": dict(tmeta.get("annotations") or {}),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template.get("spec") or {},
    }


def _deletion_rank(pod: Obj) -> tuple[int, int, int, str]:
    """Lower sorts first = deleted first: unscheduled, pending, not ready, newest."""
    status = pod.get("status") or {}
    scheduled = 1 if (pod.get("spec") or {}).get("nodeName") else 0
    running = 1 if status.get("phase") == "Running" else 0
    ready = 1 if pod_is_ready(pod) else 0
    created = pod["metadata"].get("creationTimestamp", "")
    inverted = "".join(chr(0x10FFFF - ord(c)) for c in created)  # newest first
    return (scheduled, running, ready, inverted)


@dataclass
class PodPlan:
    """What the controller does in one pass."""

    create: int = 0
    delete: list[Obj] = field(default_factory=list)


def plan_pods(deployment: Obj, pods: list[Obj]) -> PodPlan:
    """Pods to create (count, current template) and to delete, for one Deployment."""
    spec = deployment["spec"]
    desired = int(spec.get("replicas", 1))
    current = template_hash(spec["template"])
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    new = [p for p in live if p["metadata"].get("labels", {}).get(HASH_LABEL) == current]
    old = [p for p in live if p not in new]
    plan = PodPlan()
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        if old:
            plan.delete = old
            return plan
        if len(new) < desired:
            plan.create = desired - len(new)
        else:
            plan.delete = sorted(new, key=_deletion_rank)[: len(new) - desired]
        return plan
    rolling = strategy.get("rollingUpdate") or {}
    surge = resolve_int_or_percent(rolling.get("maxSurge", "25%"), desired, round_up=True)
    unavailable = resolve_int_or_percent(
        rolling.get("maxUnavailable", "25%"), desired, round_up=False
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    if not old:
        if len(new) < desired:
            plan.create = desired - len(new)
        elif len(new) > desired:
            plan.delete = sorted(new, key=_deletion_rank)[: len(new) - desired]
        return plan
    room = desired + surge - len(new) - len(old)
    plan.create = max(0, min(desired - len(new), room))
    ready_total = sum(1 for p in new + old if pod_is_ready(p))
    removable = ready_total - (desired - unavailable)
    for pod in sorted(old, key=_deletion_rank):
        if not pod_is_ready(pod):
            plan.delete.append(pod)  # unhealthy old pods go first, freely
        elif removable > 0:
            plan.delete.append(pod)
            removable -= 1
    return plan


def _condition(
    previous: list[Obj], kind: str, status: str, reason: str, message: str, now: str
) -> Obj:
    before = next((c for c in previous if c.get("type") == kind), None)
    same = before is not None and before.get("status") == status
    unchanged = same and before.get("reason") == reason and before.get("message") == message
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": before.get("lastUpdateTime", now) if unchanged and before else now,
        "lastTransitionTime": before.get("lastTransitionTime", now) if same and before else now,
        "reason": reason,
        "message": message,
    }


def deployment_status(
    deployment: Obj, pods: list[Obj], now: str, *, deadline_exceeded: bool = False
) -> Obj:
    """The status the controller writes (zero counts omitted, as the API server omits them)."""
    spec = deployment["spec"]
    meta = deployment["metadata"]
    desired = int(spec.get("replicas", 1))
    current = template_hash(spec["template"])
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    updated = [p for p in live if p["metadata"].get("labels", {}).get(HASH_LABEL) == current]
    ready = sum(1 for p in live if pod_is_ready(p))
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    max_unavailable = resolve_int_or_percent(
        rolling.get("maxUnavailable", "25%"), desired, round_up=False
    )
    previous = (deployment.get("status") or {}).get("conditions") or []
    rs_name = f"{meta['name']}-{current}"
    available = ready >= desired - max_unavailable
    conditions = [
        _condition(
            previous,
            "Available",
            "True" if available else "False",
            "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
            now,
        ),
    ]
    complete = len(updated) == desired == len(live) and ready >= desired
    if complete:
        progressing = (
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{rs_name}" has successfully progressed.',
        )
    elif deadline_exceeded:
        progressing = (
            "False",
            "ProgressDeadlineExceeded",
            f'ReplicaSet "{rs_name}" has timed out progressing.',
        )
    else:
        progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
    conditions.append(_condition(previous, "Progressing", *progressing, now))
    counts = {
        "replicas": len(live),
        "updatedReplicas": len(updated),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(desired - ready, 0),
    }
    status: Obj = {"observedGeneration": meta.get("generation", 1)}
    status.update({k: v for k, v in counts.items() if v})
    status["conditions"] = conditions
    return status
