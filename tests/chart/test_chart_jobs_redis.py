"""The chart's optional Redis for long-text jobs: off by default; on, a restricted one-replica
Redis with its append-only file, a Service, an optional PVC and NetworkPolicy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from testsupport.chart import (
    KUBERNETES_VERSIONS,
    NAMESPACE,
    RELEASE,
    by_kind,
    helm_template,
    pod_spec_of,
    render,
    restricted_pss_violations,
    run,
    tool,
)

REDIS = f"{RELEASE}-redis"  # the release name contains the chart's: fullname = release
ON = {"redis": {"enabled": True}}


def redis_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [obj for obj in render(values) if obj["metadata"]["name"] == REDIS]


def test_redis_is_off_by_default() -> None:
    assert redis_objects({}) == []


def test_on_it_is_a_single_redis_with_its_append_only_file_behind_a_service() -> None:
    objects = redis_objects(ON)
    assert sorted(obj["kind"] for obj in objects) == ["Deployment", "Service"]
    deployment = by_kind(objects, "Deployment")[0]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = pod_spec_of(deployment)
    assert pod["automountServiceAccountToken"] is False
    args = pod["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert pod["volumes"] == [{"name": "data", "emptyDir": {}}]
    service = by_kind(objects, "Service")[0]
    assert service["metadata"]["namespace"] == NAMESPACE
    assert service["spec"]["ports"][0]["port"] == 6379
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_redis_pod_meets_the_restricted_pod_security_standard() -> None:
    deployment = by_kind(redis_objects(ON), "Deployment")[0]
    assert restricted_pss_violations(pod_spec_of(deployment)) == []


def test_persistence_puts_the_append_only_file_on_a_claim() -> None:
    objects = redis_objects({"redis": {"enabled": True, "persistence": {"enabled": True}}})
    claim = by_kind(objects, "PersistentVolumeClaim")[0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    volumes = pod_spec_of(by_kind(objects, "Deployment")[0])["volumes"]
    assert volumes == [{"name": "data", "persistentVolumeClaim": {"claimName": REDIS}}]


def test_with_network_policies_only_inference_pods_reach_redis() -> None:
    objects = redis_objects({**ON, "networkPolicy": {"enabled": True}})
    policy = by_kind(objects, "NetworkPolicy")[0]
    assert policy["spec"]["egress"] == []
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    assert rule["from"] == [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "voiceops-service"}},
        }
    ]


@pytest.mark.parametrize(
    "values",
    [
        ON,
        {
            "redis": {"enabled": True, "persistence": {"enabled": True}},
            "networkPolicy": {"enabled": True},
        },
    ],
    ids=["on", "persistent-with-policies"],
)
def test_every_redis_object_is_valid_kubernetes(values: dict[str, Any]) -> None:
    for obj in redis_objects(values):
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize(
    ("redis", "field"),
    [({"maxMemory": "lots"}, "maxMemory"), ({"port": 0}, "port"), ({"bogus": 1}, "bogus")],
)
def test_bad_redis_values_are_refused_naming_the_field(redis: dict[str, Any], field: str) -> None:
    result = helm_template({"redis": redis}, check=False)
    assert result.returncode != 0
    assert "redis" in result.stderr
    assert field in result.stderr


@pytest.mark.slow
def test_checkov_passes_on_the_redis_objects(tmp_path: Path) -> None:
    values = {
        "redis": {"enabled": True, "persistence": {"enabled": True}},
        "networkPolicy": {"enabled": True},
    }
    path = tmp_path / "redis.yaml"
    path.write_text(yaml.safe_dump_all(redis_objects(values)))
    command: list[str | Path] = [
        tool("checkov"), "--framework", "kubernetes", "--output", "json", "--quiet",
        "--skip-download", "--file", path,
    ]  # fmt: skip
    result = run(command, check=False)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in report.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)
    assert report.get("summary", {}).get("passed", 0) > 20  # checkov really ran
