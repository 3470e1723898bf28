"""Every object `render` produces validates against the official Kubernetes schemas."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes_validate.utils import ValidationError
from testsupport.manifests import manifest
from voiceops_operator import build
from voiceops_operator.cli import render_documents
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import parse_voiceservice

# The newest Kubernetes release kubernetes-validate==1.37.0 ships schemas for.
K8S_VERSION = "1.37.0"


def test_pinned_version_is_the_newest_shipped() -> None:
    assert kubernetes_validate.utils.latest_version() == K8S_VERSION


def test_rendered_objects_validate_strictly(example_path: Path, settings: OperatorSettings) -> None:
    objects = render_documents(example_path.read_text(), str(example_path), settings)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("tier", ["gpu", "fallback", "both"])
def test_objects_validate_under_every_routing(tier: str, settings: OperatorSettings) -> None:
    body = manifest({"model": {"uri": "pvc://m/x"}})
    body["metadata"]["uid"] = "0b0e7a52-9d1b-4a0c-8f5b-0a1c2d3e4f50"
    vs = parse_voiceservice(body)
    routing = build.Routing(active_tier=tier, fallback_replicas=3)  # type: ignore[arg-type]
    for obj in build.build_all(vs, routing, settings):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_validator_is_strict(settings: OperatorSettings) -> None:
    vs = parse_voiceservice(manifest())
    deployment = build.build_gpu_deployment(vs, settings)
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["bogus"] = 1
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("allow_egress", [False, True])
def test_network_policy_with_every_peer_shape_validates(allow_egress: bool) -> None:
    peers = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}},
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "gw"}}},
        {"podSelector": {"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]}},
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
    ]
    spec = {"networkPolicy": {"allowFrom": peers, "allowEgress": allow_egress}}
    policy = build.build_network_policy(parse_voiceservice(manifest(spec)))
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
