"""How the tiers' pods are replaced and evicted: rollouts, drains, and what Kubernetes accepts.

A rollout never takes a serving pod away before its replacement is ready, a node
drain is never blocked by a pod that is not serving anyway, and the probe and pod
settings are ones the API server accepts and a restricted namespace admits.
"""

from __future__ import annotations

from typing import Any

import pytest
from testsupport.manifests import manifest
from voiceops_operator import build, names
from voiceops_operator.build import Routing
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import VoiceService, parse_voiceservice

TIERS = ("gpu", "fallback")


def vs_of(spec: dict[str, Any] | None = None) -> VoiceService:
    return parse_voiceservice(manifest(spec))


def deployment(tier: str, settings: OperatorSettings, vs: VoiceService | None = None) -> dict:
    vs = vs or vs_of()
    if tier == "gpu":
        return build.build_gpu_deployment(vs, settings)
    return build.build_fallback_deployment(vs, Routing(), settings)


def pod_spec_of(dep: dict[str, Any]) -> dict[str, Any]:
    return dep["spec"]["template"]["spec"]


@pytest.mark.parametrize("tier", TIERS)
def test_a_rollout_adds_one_pod_and_removes_an_old_one_only_once_it_is_ready(
    tier: str, settings: OperatorSettings
) -> None:
    """maxUnavailable 0: the old pod serves until the new one is ready; maxSurge 1: one
    extra pod at a time (one more GPU at most, GPUs being scarce)."""
    spec = deployment(tier, settings)["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


@pytest.mark.parametrize("tier", TIERS)
def test_a_stuck_rollout_is_reported_and_can_be_undone(
    tier: str, settings: OperatorSettings
) -> None:
    """Progressing=False after 10 minutes without progress; 5 old revisions to roll back to."""
    spec = deployment(tier, settings)["spec"]
    assert spec["progressDeadlineSeconds"] == 600
    assert spec["revisionHistoryLimit"] == 5


@pytest.mark.parametrize("tier", TIERS)
def test_a_drain_evicts_one_pod_of_a_tier_at_a_time_and_never_waits_on_a_broken_one(
    tier: str,
) -> None:
    """A crash-looping pod serves nothing: keeping it would only block the node drain."""
    pdb = build.build_pdb(vs_of(), tier)  # type: ignore[arg-type]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["kind"] == "PodDisruptionBudget"
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": names.tier_selector("tts", tier)},  # type: ignore[arg-type]
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    assert pdb["metadata"]["labels"] == names.labels("tts", tier)  # type: ignore[arg-type]


@pytest.mark.parametrize("tier", TIERS)
def test_startup_and_liveness_probes_succeed_once_as_the_api_server_requires(
    tier: str, settings: OperatorSettings
) -> None:
    vs = vs_of(
        {
            "probes": {
                "startup": {"initialDelaySeconds": 1, "periodSeconds": 4, "timeoutSeconds": 3},
                "readiness": {
                    "initialDelaySeconds": 2,
                    "periodSeconds": 6,
                    "timeoutSeconds": 5,
                    "failureThreshold": 4,
                    "successThreshold": 2,
                },
                "liveness": {"initialDelaySeconds": 7, "periodSeconds": 9, "timeoutSeconds": 8},
            }
        }
    )
    container = pod_spec_of(deployment(tier, settings, vs))["containers"][0]
    ready = {"path": "/readyz", "port": "http", "scheme": "HTTP"}
    live = {"path": "/healthz", "port": "http", "scheme": "HTTP"}
    assert container["startupProbe"] == {
        "httpGet": ready,
        "initialDelaySeconds": 1,
        "periodSeconds": 4,
        "timeoutSeconds": 3,
        "failureThreshold": 60,
        "successThreshold": 1,
    }
    assert container["readinessProbe"] == {
        "httpGet": ready,
        "initialDelaySeconds": 2,
        "periodSeconds": 6,
        "timeoutSeconds": 5,
        "failureThreshold": 4,
        "successThreshold": 2,
    }
    assert container["livenessProbe"] == {
        "httpGet": live,
        "initialDelaySeconds": 7,
        "periodSeconds": 9,
        "timeoutSeconds": 8,
        "failureThreshold": 3,
        "successThreshold": 1,
    }


@pytest.mark.parametrize("tier", TIERS)
def test_pods_get_no_api_credentials_no_service_links_and_a_read_only_root(
    tier: str, settings: OperatorSettings
) -> None:
    """The service needs no Kubernetes API; it writes only to its own /tmp scratch volume."""
    pod = pod_spec_of(deployment(tier, settings))
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": build.RUN_AS_USER,
        "runAsGroup": build.RUN_AS_USER,
        "fsGroup": build.RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = pod["containers"][0]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": build.RUN_AS_USER,
        "runAsGroup": build.RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["volumes"][0] == {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}
    assert container["volumeMounts"][0] == {"name": "tmp", "mountPath": "/tmp"}
    assert {"name": "HOME", "value": "/tmp"} in container["env"]
    assert container["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize("tier", TIERS)
def test_pods_spread_over_nodes_but_still_schedule_on_one(
    tier: str, settings: OperatorSettings
) -> None:
    (spread,) = pod_spec_of(deployment(tier, settings))["topologySpreadConstraints"]
    assert spread == {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": names.tier_selector("tts", tier)},  # type: ignore[arg-type]
    }
