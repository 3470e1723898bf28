"""helm lint and helm template, and every rendered object against real Kubernetes schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from testsupport.chart import (
    ALL_FEATURES,
    CHART_DIR,
    KUBERNETES_VERSIONS,
    deep_merge,
    render,
    run,
)

PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "all-features": ALL_FEATURES,
    "namespaced": {"watchNamespaces": ["tts-a", "tts-b"]},
    "ha": {"replicas": 3},
    "ha-namespaced-all-features": deep_merge(
        ALL_FEATURES, {"replicas": 2, "watchNamespaces": ["tts-a", "tts-b"]}
    ),
    "pinned-digest": {"image": {"digest": "sha256:" + "ab" * 32, "pullPolicy": "Always"}},
}

# Kinds whose CRDs kubernetes-validate does not ship (Prometheus Operator):
# they get a minimal check of the structure the operator's CRDs require.
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@pytest.mark.parametrize("profile", ["default", "all-features", "ha-namespaced-all-features"])
def test_helm_lint_strict_passes(helm: Path, tmp_path: Path, profile: str) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(PROFILES[profile]))
    result = run([helm, "lint", "--strict", CHART_DIR, "--values", values])
    assert "0 chart(s) failed" in result.stdout


def _peering_crd_schemas() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((CHART_DIR / "crds" / "kopf-peering.yaml").read_text())
    return {
        doc["spec"]["names"]["kind"]: doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for doc in docs
    }


def _check_prometheus_operator_object(obj: dict[str, Any]) -> None:
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert obj["metadata"]["name"]
    assert obj["metadata"]["namespace"]
    spec = obj["spec"]
    if obj["kind"] == "ServiceMonitor":
        assert spec["selector"]["matchLabels"]
        assert all(endpoint["port"] for endpoint in spec["endpoints"])
    elif obj["kind"] == "PodMonitor":
        assert spec["selector"]["matchLabels"]
        assert all(endpoint["port"] for endpoint in spec["podMetricsEndpoints"])
    else:
        for group in spec["groups"]:
            assert group["name"]
            assert group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}
                assert rule["expr"].strip()


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_rendered_object_is_valid(profile: str) -> None:
    objects = render(PROFILES[profile])
    peering_schemas = _peering_crd_schemas()
    assert objects, "the chart rendered nothing"
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in PROMETHEUS_OPERATOR_KINDS:
            _check_prometheus_operator_object(obj)
        elif obj["apiVersion"] == "kopf.dev/v1":
            jsonschema.validate(obj, peering_schemas[obj["kind"]])
        else:
            for version in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    pytest.fail(f"{profile}: {name} invalid in {version}: {error.message}")


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_namespaced_objects_go_to_the_release_namespace_or_a_watched_one(profile: str) -> None:
    watched = set(PROFILES[profile].get("watchNamespaces", []))
    cluster_scoped = {
        "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ClusterKopfPeering",
    }  # fmt: skip
    for obj in render(PROFILES[profile]):
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert namespace is None, f"{obj['kind']} must not have a namespace"
        elif obj["kind"] in {"Role", "RoleBinding", "KopfPeering"}:
            assert namespace in watched
        else:
            assert namespace == "voiceops-system", f"{obj['kind']}/{obj['metadata']['name']}"


def test_names_fit_kubernetes_limits_with_a_long_release_name(helm: Path) -> None:
    long_release = "a-release-name-of-the-longest-length-helm-allows-53ch"
    assert len(long_release) == 53
    result = run([helm, "template", long_release, CHART_DIR, "--namespace", "x"])
    for obj in yaml.safe_load_all(result.stdout):
        if obj:
            assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
