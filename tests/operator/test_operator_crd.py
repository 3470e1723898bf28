"""The CRD: generated from the models, structural, and it admits/refuses what it should."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from testsupport.crd_admission import admit
from testsupport.manifests import REPO, manifest, voiceservices_in
from voiceops_operator import apidoc, crd, policy, spec, tiers
from voiceops_operator.cli import crd_yaml

CRD_FILE = REPO / "crds" / "voiceservice.yaml"
DOC_FILE = REPO / "docs" / "voiceservice-api.md"
K8S_VERSION = "1.37.0"


def test_committed_crd_is_the_generated_one() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), "run: voiceops-operator crd > crds/voiceservice.yaml"


def test_api_docs_are_up_to_date() -> None:
    assert DOC_FILE.read_text() == apidoc.render_markdown(), (
        "run: voiceops-operator api-docs > docs/voiceservice-api.md"
    )


def test_crd_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate.validate(crd.build_crd(), K8S_VERSION, strict=True)


def test_crd_identity() -> None:
    body = crd.build_crd()["spec"]
    assert body["group"] == "voiceops.io"
    assert body["scope"] == "Namespaced"
    assert body["names"]["shortNames"] == ["voicesvc", "vsvc"]
    (version,) = body["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Tier"] == ".status.activeTier"
    assert columns["Phase"] == ".status.phase"
    assert columns["Ready"] == ".status.ready"
    assert columns["GPU-Mem"] == ".status.gpu.memoryUsedRatio"
    assert columns["Model"] == ".status.model.current.version"
    assert columns["Available"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"] == ".metadata.creationTimestamp"


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for key, sub in schema.get("properties", {}).items():
        found.extend(walk(sub, f"{path}.{key}"))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found.extend(walk(schema[key], f"{path}[]"))
    return found


def root_schema() -> dict[str, Any]:
    return crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_schema_is_structural_and_described() -> None:
    for path, node in walk(root_schema()):
        assert "$ref" not in node, path
        assert "title" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert "type" in node, f"{path} has no type"
            assert "anyOf" not in node, path
            assert "oneOf" not in node, path
        if node.get("type") == "object":
            assert not ("properties" in node and "additionalProperties" in node), path
        # metadata takes nothing but its type: the API server refuses anything more.
        if not path.endswith("[]") and path != ".metadata":
            assert node.get("description"), f"{path} has no description"


def test_status_schema_covers_what_self_healing_writes() -> None:
    status = root_schema()["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == list(tiers.PHASES)
    assert status["activeTier"]["enum"] == ["gpu", "fallback", "both"]
    assert set(status["gpu"]["properties"]) == {"replicas", "readyReplicas", "memoryUsedRatio"}
    assert set(status["fallback"]["properties"]) == {
        "replicas",
        "readyReplicas",
        "desiredReplicas",
    }
    assert set(status["lastTransition"]["properties"]) == {
        "time",
        "from",
        "to",
        "reason",
        "message",
    }
    assert {"failovers", "observedGeneration", "conditions", "ready"} <= set(status)
    # The policy's pending windows survive a restart only if the schema keeps them.
    signals = status["healing"]["properties"]["signals"]["properties"]
    assert set(signals) == set(policy.SIGNALS)
    assert all(s["type"] == "string" for s in signals.values())
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def pydantic_fields(model: type, path: str) -> set[str]:
    fields = set()
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        alias = info.alias or name
        fields.add(f"{path}.{alias}")
        for arg in crd._type_args(info.annotation):
            if isinstance(arg, type) and hasattr(arg, "model_fields"):
                sub = f"{path}.{alias}[]" if "list" in str(info.annotation) else f"{path}.{alias}"
                fields |= pydantic_fields(arg, sub)
    return fields


def test_schema_and_model_agree_field_by_field() -> None:
    schema_fields = {p for p, _ in walk(root_schema()["properties"]["spec"], ".spec")} - {".spec"}
    schema_fields = {p for p in schema_fields if not p.endswith("]") or p.endswith("[]")}
    model_fields = pydantic_fields(spec.VoiceServiceSpec, ".spec")
    schema_named = {p for p in schema_fields if not p.endswith("[]")}
    assert schema_named == {p for p in model_fields if not p.endswith("[]")}


def test_schema_defaults_equal_model_defaults() -> None:
    defaulted, errors = admit(manifest({}))
    assert errors == []
    model_defaults = spec.VoiceServiceSpec().model_dump(by_alias=True, exclude_none=True)
    # Every default the API server fills in is the model's default...
    for key, value in defaulted["spec"].items():
        expected = model_defaults[key]
        assert value.items() <= expected.items() if isinstance(value, dict) else value == expected
    # ...and what it leaves out (empty maps/lists) parses to the same spec.
    assert spec.parse_spec(defaulted["spec"]) == spec.VoiceServiceSpec()


def test_every_example_is_admitted(example_path: Path) -> None:
    for document in voiceservices_in(example_path):
        defaulted, errors = admit(document)
        assert errors == [], errors
        # What the API server stores, the operator parses to the same values.
        assert spec.parse_spec(defaulted["spec"]) == spec.parse_spec(document["spec"])


def with_spec(changes: dict[str, Any]) -> dict[str, Any]:
    return manifest(copy.deepcopy(changes))


# Each refused by the schema or by CEL with a message naming the field.
INVALID = [
    ({"failover": {"memoryHighRatio": 0.98, "memoryCriticalRatio": 0.95}}, "memoryHighRatio"),
    ({"failover": {"windowSeconds": 120, "recoverAfterSeconds": 60}}, "recoverAfterSeconds"),
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas"),
    ({"fallback": {"standbyReplicas": 5, "maxReplicas": 2}}, "standbyReplicas"),
    ({"fallback": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}, "fallback.resources"),
    ({"fallback": {"resources": {"requests": {"amd.com/gpu": 1}}}}, "fallback.resources"),
    ({"resources": {"limits": {"nvidia.com/gpu": 2}}}, "spec.resources"),
    ({"resources": {"requests": {"memory": "1Gi"}}}, "resources.requests"),
    ({"serving": {"maxConcurrency": 2, "batch": {"maxSize": 4}}}, "batch.maxSize"),
    ({"probes": {"liveness": {"timeoutSeconds": 20}}}, "liveness.timeoutSeconds"),
    ({"model": {"engine": "espeak", "uri": "file:///x"}}, "model.uri"),
    ({"model": {"engine": "espeak", "precision": "fp16"}}, "model.precision"),
    ({"model": {"precision": "bf16"}}, "model.precision"),
    ({"faultInjection": {"enabled": True}}, "tokenSecretRef.name"),
    (
        {"faultInjection": {"tokenSecretRef": {"name": "faults", "key": "a/b"}}},
        "tokenSecretRef.key",
    ),
    ({"model": {"engine": "tacotron"}}, "model.engine"),
    ({"failover": {"memoryHighRatio": 1.5}}, "memoryHighRatio"),
    ({"replicas": -1}, "replicas"),
    ({"serving": {"port": 70000}}, "serving.port"),
    ({"gpu": {"count": "one"}}, "gpu.count"),
    ({"resources": {"limits": {"memory": "lots"}}}, "resources.limits.memory"),
    ({"autoscaling": {"metric": "gpu"}}, "autoscaling.metric"),
    ({"unknownField": 1}, "unknownField"),
    ({"networkPolicy": {"allowFrom": [{}]}}, "spec.networkPolicy.allowFrom[0]"),
    (
        {
            "networkPolicy": {
                "allowFrom": [
                    {"podSelector": {}},
                    {"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}},
                ]
            }
        },
        "spec.networkPolicy.allowFrom[1].ipBlock",
    ),
    (
        {"networkPolicy": {"allowFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}},
        "spec.networkPolicy.allowFrom[0].ipBlock",
    ),
    ({"networkPolicy": {"allowFrom": [{"ipBlock": {"cidr": "10.0.0.0"}}]}}, "ipBlock.cidr"),
    ({"networkPolicy": {"allowFrom": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}}, "ipBlock.cidr"),
    (
        {"networkPolicy": {"allowFrom": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["x"]}}]}},
        "ipBlock.except",
    ),
    (
        {
            "networkPolicy": {
                "allowFrom": [
                    {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals"}]}}
                ]
            }
        },
        "matchExpressions.0.operator",
    ),
    (
        {"networkPolicy": {"allowFrom": [{"namespaceSelector": {"matchLabels": {"a": "not ok"}}}]}},
        "namespaceSelector.matchLabels",
    ),
    ({"networkPolicy": {"allowFrom": [{"podSelector": {}, "extra": 1}]}}, "extra"),
    (
        {
            "networkPolicy": {
                "allowFrom": [
                    {
                        "podSelector": {
                            "matchExpressions": [
                                {"key": "app", "operator": "In", "values": ["not ok"]}
                            ]
                        }
                    }
                ]
            }
        },
        "values",
    ),
    ({"networkPolicy": {"allowEgress": "maybe"}}, "allowEgress"),
]


@pytest.mark.parametrize(("changes", "field"), INVALID, ids=[f for _, f in INVALID])
def test_invalid_specs_are_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    _, errors = admit(with_spec(changes))
    assert errors, f"admitted {changes}"
    assert any(field in e for e in errors), errors
    # The operator refuses the same specs (it may run against an API server without CEL).
    with pytest.raises(spec.InvalidSpec):
        spec.parse_spec(changes)


@pytest.mark.parametrize("name", ["Upper", "x" * (spec.MAX_NAME_LENGTH + 1), "1starts-with-digit"])
def test_bad_names_are_refused(name: str) -> None:
    _, errors = admit(manifest({}, name=name))
    assert any("metadata.name" in e for e in errors), errors


def test_longest_allowed_name_is_admitted() -> None:
    _, errors = admit(manifest({}, name="a" * spec.MAX_NAME_LENGTH))
    assert errors == []


def test_cel_rules_hold_for_valid_edge_values() -> None:
    # Equal bounds are allowed where the rule says "at most".
    edges = {
        "autoscaling": {"minReplicas": 3, "maxReplicas": 3},
        "fallback": {"standbyReplicas": 4, "maxReplicas": 4},
        "serving": {"maxConcurrency": 8, "batch": {"maxSize": 8}},
        "failover": {"windowSeconds": 60, "recoverAfterSeconds": 60},
    }
    _, errors = admit(with_spec(edges))
    assert errors == []
    spec.parse_spec(edges)


@pytest.mark.parametrize(
    ("peers", "field"),
    [
        ([{"podSelector": {}}, {}], "spec.networkPolicy.allowFrom[1]"),
        (
            [{"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}],
            "spec.networkPolicy.allowFrom[0].ipBlock",
        ),
        (
            [{"podSelector": {}}, {"podSelector": {"matchExpressions": [
                {"key": "a", "operator": "Exists"}, {"key": "b", "operator": "In"}]}}],
            "spec.networkPolicy.allowFrom[1].podSelector.matchExpressions[1].values",
        ),
        (
            [{"namespaceSelector": {"matchExpressions": [
                {"key": "a", "operator": "DoesNotExist", "values": ["x"]}]}}],
            "spec.networkPolicy.allowFrom[0].namespaceSelector.matchExpressions[0].values",
        ),
    ],
)  # fmt: skip
def test_bad_network_policy_peers_name_the_indexed_field(
    peers: list[dict[str, Any]], field: str
) -> None:
    changes = {"networkPolicy": {"allowFrom": peers}}
    _, errors = admit(with_spec(changes))
    assert [e.split(":", 1)[0] for e in errors] == [field], errors
    with pytest.raises(spec.InvalidSpec) as refused:
        spec.parse_spec(changes)
    assert [e.field for e in refused.value.errors] == [field]
    assert str(refused.value).startswith(field + " ")


def test_every_network_policy_peer_shape_is_admitted() -> None:
    peers = [
        {"podSelector": {}},
        {"namespaceSelector": {}},
        {"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {}},
        {
            "podSelector": {
                "matchExpressions": [
                    {"key": "app", "operator": "In", "values": ["gw"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                ]
            }
        },
        {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}},
        {"ipBlock": {"cidr": "2001:db8::/32"}},
    ]
    changes = {"networkPolicy": {"enabled": True, "allowFrom": peers, "allowEgress": True}}
    defaulted, errors = admit(with_spec(changes))
    assert errors == []
    parsed = spec.parse_spec(defaulted["spec"])
    assert len(parsed.network_policy.allow_from) == len(peers)
    assert parsed.network_policy.allow_from[4].ip_block.except_ == ["192.168.1.0/24"]  # type: ignore[union-attr]
