"""RBAC: no wildcards, exactly voiceops_operator.permissions, each rule in the right scope."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from testsupport.chart import by_kind, one, render
from voiceops_operator import permissions as operator_permissions

Permission = tuple[str, str, str]  # (apiGroup, resource, verb)

# Cluster-scoped resources among those the operator uses (a Kubernetes fact:
# these cannot be granted by a namespaced Role).
CLUSTER_SCOPED = {
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("", "namespaces"),
    ("kopf.dev", "clusterkopfpeerings"),
}


def _flatten(rules: Iterable[Mapping[str, Any]]) -> set[Permission]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _of(entries: Iterable[operator_permissions.Permission]) -> set[Permission]:
    return {(p.api_group, p.resource, verb) for p in entries for verb in p.verbs}


OPERATOR = _of(operator_permissions.PERMISSIONS)
PEERING = _of(operator_permissions.PEERING_PERMISSIONS)
CLUSTER_PEERING = {p for p in PEERING if p[1] == "clusterkopfpeerings"}
NAMESPACED_PEERING = {p for p in PEERING if p[1] == "kopfpeerings"}


def _cluster_scoped(perms: set[Permission]) -> set[Permission]:
    return {p for p in perms if (p[0], p[1]) in CLUSTER_SCOPED}


def _namespaced(perms: set[Permission]) -> set[Permission]:
    return perms - _cluster_scoped(perms)


PROFILES = {
    "cluster": {},
    "namespaced": {"watchNamespaces": ["tts-a", "tts-b"]},
    "cluster-ha": {"replicas": 2},
    "namespaced-ha": {"replicas": 2, "watchNamespaces": ["tts-a", "tts-b"]},
}


def _all_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for kind in ("ClusterRole", "Role") for obj in by_kind(objects, kind)
            for rule in obj["rules"]]  # fmt: skip


def test_the_peering_permissions_are_the_two_kopf_peering_resources() -> None:
    # Guards the split below: if the operator adds peering permissions, revisit the chart.
    assert CLUSTER_PEERING
    assert NAMESPACED_PEERING
    assert CLUSTER_PEERING | NAMESPACED_PEERING == PEERING


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_rbac_has_no_wildcards(profile: str) -> None:
    rules = _all_rules(render(PROFILES[profile]))
    assert rules
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert not any("*" in item for item in rule[key]), f"wildcard in {key}: {rule}"
        assert "nonResourceURLs" not in rule
        assert "resourceNames" not in rule or rule["resourceNames"]


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("cluster", OPERATOR),
        ("namespaced", OPERATOR),
        ("cluster-ha", OPERATOR | CLUSTER_PEERING),
        ("namespaced-ha", OPERATOR | NAMESPACED_PEERING),
    ],
)
def test_granted_permissions_are_exactly_what_the_operator_uses(
    profile: str, expected: set[Permission]
) -> None:
    assert _flatten(_all_rules(render(PROFILES[profile]))) == expected


def test_cluster_mode_puts_everything_in_one_bound_cluster_role() -> None:
    objects = render({})
    assert not by_kind(objects, "Role")
    assert not by_kind(objects, "RoleBinding")
    cluster_role = one(objects, "ClusterRole")
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
        "name": cluster_role["metadata"]["name"],
    }  # fmt: skip
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "voiceops", "namespace": "voiceops-system"}
    ]


@pytest.mark.parametrize("profile", ["namespaced", "namespaced-ha"])
def test_namespaced_mode_grants_namespaced_rights_only_in_watched_namespaces(profile: str) -> None:
    objects = render(PROFILES[profile])
    expected_namespaced = _namespaced(OPERATOR) | (NAMESPACED_PEERING if "ha" in profile else set())
    roles = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["tts-a", "tts-b"]
    for role in roles:
        assert _flatten(role["rules"]) == expected_namespaced
    bindings = by_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["tts-a", "tts-b"]
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "voiceops",
        }  # fmt: skip
        assert binding["subjects"][0]["namespace"] == "voiceops-system"
    # Cluster-wide only what cannot be namespaced (CRDs, namespaces).
    assert _flatten(one(objects, "ClusterRole")["rules"]) == _cluster_scoped(OPERATOR)


def test_rbac_and_service_account_can_be_turned_off() -> None:
    objects = render(
        {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops"}}
    )
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"):
        assert not by_kind(objects, kind), kind
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


def test_the_operator_runs_as_the_bound_service_account() -> None:
    objects = render({"serviceAccount": {"name": "tts-operator"}})
    assert one(objects, "ServiceAccount")["metadata"]["name"] == "tts-operator"
    assert one(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "tts-operator"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tts-operator"
