"""Every API permission the operator uses: the Helm chart's RBAC is tested against this."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Permission:
    api_group: str  # "" = core
    resource: str
    verbs: tuple[str, ...]
    why: str


CHILD_VERBS = ("get", "list", "watch", "create", "patch", "delete")

PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "voiceops.io",
        "voiceservices",
        ("get", "list", "watch", "patch"),
        "watch VoiceServices; kopf patches its finalizer and annotations",
    ),
    Permission(
        "voiceops.io",
        "voiceservices/status",
        ("get", "patch"),
        "write status (conditions, replica counts, routing)",
    ),
    Permission("apps", "deployments", CHILD_VERBS, "the GPU and fallback tiers"),
    Permission("", "services", CHILD_VERBS, "front and per-tier Services"),
    Permission("", "configmaps", CHILD_VERBS, "the model the GPU pods start with (<name>-model)"),
    Permission(
        "autoscaling", "horizontalpodautoscalers", CHILD_VERBS, "autoscaling/v2 HPAs per tier"
    ),
    Permission("policy", "poddisruptionbudgets", CHILD_VERBS, "a PodDisruptionBudget per tier"),
    Permission(
        "networking.k8s.io",
        "networkpolicies",
        CHILD_VERBS,
        "a NetworkPolicy around the pods of both tiers",
    ),
    Permission(
        "",
        "pods",
        ("get", "list", "watch", "delete"),
        "self-healing observes tier pods and replaces one whose GPU has a hardware fault",
    ),
    Permission("", "events", ("create", "patch"), "Kubernetes Events (kopf posts them)"),
    Permission(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("get", "list", "watch"),
        "kopf discovers the VoiceService CRD and notices it (re)appearing",
    ),
    Permission("", "namespaces", ("get", "list", "watch"), "kopf follows namespaces it serves"),
)

# Only when VOICEOPS_OPERATOR_PEERING is set (several operator replicas).
PEERING_PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "kopf.dev",
        "clusterkopfpeerings",
        ("get", "list", "watch", "patch"),
        "kopf peering, cluster-wide operator",
    ),
    Permission(
        "kopf.dev",
        "kopfpeerings",
        ("get", "list", "watch", "patch"),
        "kopf peering, namespaced operator",
    ),
)


def as_rbac_rules(permissions: tuple[Permission, ...] = PERMISSIONS) -> list[dict]:
    """The permissions as RBAC PolicyRule dicts (one rule per resource)."""
    return [
        {"apiGroups": [p.api_group], "resources": [p.resource], "verbs": list(p.verbs)}
        for p in permissions
    ]
