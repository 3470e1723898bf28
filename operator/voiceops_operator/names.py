"""What the operator calls things in Kubernetes: labels, child object names, the port name.

The labels are a contract with everyone who selects the pods (the chart's
dashboards and alerts, the healing loop's pod watch, kubectl users): the
recommended ``app.kubernetes.io/*`` labels plus ``voiceops.io/tier``. A child is
named ``<name>-<tier>`` or, for the front Service and the NetworkPolicy, after the
VoiceService itself. Pure: no I/O.
"""

from __future__ import annotations

from voiceops_operator.tiers import ActiveTier, Tier

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_TIER = "voiceops.io/tier"
APP_NAME = "voiceops-service"
PART_OF = "voiceops"
MANAGED_BY = "voiceops-operator"
COMPONENT_BY_TIER: dict[str, str] = {"gpu": "gpu-tier", "fallback": "fallback-tier"}
COMPONENT_FRONT = "front"
COMPONENT_NETWORK_POLICY = "network-policy"

# Labels Kubernetes itself sets: on every node, and on every namespace (by the API server).
HOSTNAME_TOPOLOGY_KEY = "kubernetes.io/hostname"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

# The serving container port's name: probes, Services and the metrics scraper use it.
HTTP_PORT_NAME = "http"


def deployment_name(name: str, tier: Tier) -> str:
    return f"{name}-{tier}"


def tier_service_name(name: str, tier: Tier) -> str:
    return f"{name}-{tier}"


def front_service_name(name: str) -> str:
    return name


def hpa_name(name: str, tier: Tier) -> str:
    return f"{name}-{tier}"


def pdb_name(name: str, tier: Tier) -> str:
    return f"{name}-{tier}"


def model_config_name(name: str) -> str:
    """The ConfigMap the GPU pods read their model from when they start."""
    return f"{name}-model"


def network_policy_name(name: str) -> str:
    return name


def labels(name: str, tier: Tier | None, component: str = "") -> dict[str, str]:
    """Labels of every child; tier None is the front Service unless component says else."""
    found = {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: name,
        LABEL_COMPONENT: component or (COMPONENT_BY_TIER[tier] if tier else COMPONENT_FRONT),
        LABEL_PART_OF: PART_OF,
        LABEL_MANAGED_BY: MANAGED_BY,
    }
    if tier:
        found[LABEL_TIER] = tier
    return found


def tier_selector(name: str, tier: Tier) -> dict[str, str]:
    """Pod selector of one tier (Deployment, tier Service, PDB)."""
    return {LABEL_INSTANCE: name, LABEL_TIER: tier}


def pods_selector(name: str) -> dict[str, str]:
    """The pods of both tiers (the labels every tier's pods share)."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: name}


def front_selector(name: str, active_tier: ActiveTier) -> dict[str, str]:
    """The front Service's selector: one tier, or both (no tier key) while recovering."""
    selector = pods_selector(name)
    if active_tier != "both":
        selector[LABEL_TIER] = active_tier
    return selector
