"""Each toggle adds or removes exactly its objects; HA switches the workload and peering."""

from __future__ import annotations

from typing import Any

import pytest
from testsupport.chart import ALL_FEATURES, NAMESPACE, by_kind, kinds, one, render
from voiceops_operator.settings import OperatorSettings

DEFAULT_KINDS = sorted(
    [
        "ClusterRole", "ClusterRoleBinding", "Deployment", "Pod", "Service", "ServiceAccount",
        # The key that signs routing notices (docs/routing.md).
        "Secret",
        # The VoiceService CRD and kopf's two peering CRDs.
        "CustomResourceDefinition", "CustomResourceDefinition", "CustomResourceDefinition",
    ]
)  # fmt: skip

TOGGLES: dict[str, tuple[dict[str, Any], str]] = {
    "serviceMonitor": ({"metrics": {"serviceMonitor": {"enabled": True}}}, "ServiceMonitor"),
    "podMonitor": ({"metrics": {"podMonitor": {"enabled": True}}}, "PodMonitor"),
    "prometheusRule": ({"prometheusRule": {"enabled": True}}, "PrometheusRule"),
    "grafanaDashboard": ({"grafanaDashboard": {"enabled": True}}, "ConfigMap"),
    "networkPolicy": ({"networkPolicy": {"enabled": True}}, "NetworkPolicy"),
}


def test_defaults_render_only_the_operator() -> None:
    assert kinds(render({})) == DEFAULT_KINDS


@pytest.mark.parametrize("toggle", sorted(TOGGLES))
def test_each_toggle_adds_exactly_its_object(toggle: str) -> None:
    values, kind = TOGGLES[toggle]
    objects = render(values)
    assert kinds(objects) == sorted([*DEFAULT_KINDS, kind])
    assert kinds(render(_switched_off(values))) == DEFAULT_KINDS


def _switched_off(values: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _switched_off(value)
        if isinstance(value, dict)
        else (False if key == "enabled" else value)
        for key, value in values.items()
    }


def test_all_features_together_add_all_their_objects() -> None:
    objects = render(ALL_FEATURES)
    assert kinds(objects) == sorted([*DEFAULT_KINDS, *(kind for _, kind in TOGGLES.values())])


def test_one_replica_is_a_recreate_deployment_without_peering() -> None:
    objects = render({})
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not by_kind(objects, "StatefulSet")
    assert not by_kind(objects, "ClusterKopfPeering")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VOICEOPS_OPERATOR_PEERING"]["value"] == ""
    assert env["VOICEOPS_OPERATOR_PRIORITY"]["value"] == "0"


def test_replicas_above_one_run_peered_replicas_with_distinct_priorities() -> None:
    objects = render({"replicas": 3})
    assert not by_kind(objects, "Deployment")
    statefulset = one(objects, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 3
    env = {e["name"]: e for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VOICEOPS_OPERATOR_PEERING"]["value"] == "voiceops"
    # Each pod's index (0, 1, 2) is its priority: distinct by construction.
    assert env["VOICEOPS_OPERATOR_PRIORITY"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    peering = one(objects, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "voiceops"
    assert statefulset["spec"]["serviceName"] == one(objects, "Service")["metadata"]["name"]


def test_namespaced_ha_creates_a_peering_object_in_each_watched_namespace() -> None:
    objects = render(
        {"replicas": 2, "watchNamespaces": ["tts-a", "tts-b"], "peering": {"name": "p"}}
    )
    peerings = by_kind(objects, "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings) == [
        ("tts-a", "p"), ("tts-b", "p"),
    ]  # fmt: skip
    assert not by_kind(objects, "ClusterKopfPeering")


@pytest.mark.parametrize(
    ("values", "expected_args", "expected_namespaces"),
    [
        ({}, ["run", "--all-namespaces"], ""),
        ({"watchNamespaces": ["a", "b"]}, ["run", "--namespace=a", "--namespace=b"], "a,b"),
    ],
)
def test_operator_watch_scope_follows_watch_namespaces(
    values: dict[str, Any], expected_args: list[str], expected_namespaces: str
) -> None:
    container = one(render(values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == expected_args
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VOICEOPS_OPERATOR_NAMESPACES"] == expected_namespaces


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], NAMESPACE),
        (["monitoring"], f"{NAMESPACE},monitoring"),
        (["monitoring", NAMESPACE], f"{NAMESPACE},monitoring"),
    ],
)
def test_metrics_readers_are_the_release_namespace_and_the_extras(
    extra: list[str], expected: str
) -> None:
    deployment = one(render({"operator": {"metricsReaderNamespaces": extra}}), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VOICEOPS_OPERATOR_METRICS_READER_NAMESPACES"] == expected


def test_operator_settings_come_from_values() -> None:
    values = {
        "serviceImages": {"cpu": "reg/cpu:1", "gpu": "reg/gpu:1"},
        "operator": {"scrapeIntervalSeconds": 2, "prometheusUrl": "http://prom:9090",
                     "metricsPort": 9100, "healthPort": 9101},
        "image": {"repository": "reg/op", "tag": "9.9.9"},
    }  # fmt: skip
    objects = render(values)
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VOICEOPS_OPERATOR_SERVICE_IMAGE"] == "reg/cpu:1"
    assert env["VOICEOPS_OPERATOR_SERVICE_GPU_IMAGE"] == "reg/gpu:1"
    assert env["VOICEOPS_OPERATOR_SCRAPE_INTERVAL_SECONDS"] == "2"
    assert env["VOICEOPS_OPERATOR_PROMETHEUS_URL"] == "http://prom:9090"
    assert env["VOICEOPS_OPERATOR_METRICS_PORT"] == "9100"
    assert env["VOICEOPS_OPERATOR_HEALTH_PORT"] == "9101"
    assert container["image"] == "reg/op:9.9.9"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9100, "health": 9101}
    service_ports = {p["name"]: p["port"] for p in one(objects, "Service")["spec"]["ports"]}
    assert service_ports == {"metrics": 9100, "health": 9101}
    assert (
        one(render({"image": {"digest": "sha256:" + "0" * 64}}), "Deployment")["spec"]["template"][
            "spec"
        ]["containers"][0]["image"]
        == "voiceops/operator@sha256:" + "0" * 64
    )


def test_operator_env_names_are_operator_settings() -> None:
    """Every VOICEOPS_OPERATOR_* the chart sets is a field of OperatorSettings."""
    fields = set(OperatorSettings.model_fields)
    container = one(render({"replicas": 2}), "StatefulSet")["spec"]["template"]["spec"][
        "containers"
    ][0]
    prefix = "VOICEOPS_OPERATOR_"
    for env in container["env"]:
        if env["name"].startswith(prefix):
            assert env["name"].removeprefix(prefix).lower() in fields, env["name"]


@pytest.mark.parametrize(
    "values", [{}, {"watchNamespaces": ["a", "b"]}], ids=["all-namespaces", "namespaced"]
)
def test_operator_cli_accepts_the_chart_args(values: dict[str, Any]) -> None:
    from voiceops_operator.cli import make_parser

    container = one(render(values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    parsed = make_parser().parse_args(container["args"])
    assert parsed.command == "run"
    assert parsed.namespace == values.get("watchNamespaces")
    assert parsed.all_namespaces is not bool(values)
