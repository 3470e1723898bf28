"""Spec parsing, defaults and validation errors (each naming its field)."""

from __future__ import annotations

import pytest
from operator_helpers import manifest
from voiceops_operator import spec
from voiceops_operator.spec import InvalidSpec, parse_model_uri, parse_spec, parse_voiceservice


def test_empty_spec_takes_every_default() -> None:
    parsed = parse_spec({})
    assert parsed.model.engine == "vits"
    assert parsed.model.voice == "en_US-joe-medium"
    assert parsed.model.uri == ""
    assert parsed.replicas == 1
    assert parsed.gpu.count == 1
    assert parsed.gpu.resource_name == "nvidia.com/gpu"
    assert parsed.autoscaling.enabled is True
    assert (parsed.autoscaling.min_replicas, parsed.autoscaling.max_replicas) == (1, 4)
    assert parsed.autoscaling.metric == "cpu"
    assert parsed.fallback.enabled is True
    assert parsed.fallback.engine == "espeak"
    assert (parsed.fallback.standby_replicas, parsed.fallback.max_replicas) == (1, 4)
    assert parsed.failover.memory_high_ratio == 0.90
    assert parsed.failover.memory_critical_ratio == 0.97
    assert parsed.failover.window_seconds == 10
    assert parsed.failover.recover_after_seconds == 60
    assert parsed.failover.unschedulable_after_seconds == 30
    assert parsed.failover.crash_loop_restarts == 3
    assert parsed.serving.port == 8000
    assert parsed.serving.batch.max_size == 8
    assert parsed.serving.max_input_chars == 4096
    assert parsed.probes.startup.failure_threshold == 60
    assert parsed.fault_injection.enabled is False
    assert parsed.resources.requests == {"cpu": "1", "memory": "2Gi"}


def test_none_spec_is_the_default_spec() -> None:
    assert parse_spec(None) == parse_spec({})


def test_partial_nested_objects_keep_sibling_defaults() -> None:
    parsed = parse_spec({"failover": {"windowSeconds": 5}, "serving": {"batch": {"maxSize": 2}}})
    assert parsed.failover.window_seconds == 5
    assert parsed.failover.memory_critical_ratio == 0.97
    assert parsed.serving.batch.max_size == 2
    assert parsed.serving.batch.max_delay_ms == 10


def test_quantities_accept_numbers_and_store_strings() -> None:
    parsed = parse_spec({"resources": {"requests": {"cpu": 2, "memory": "1Gi"}}})
    assert parsed.resources.requests == {"cpu": "2", "memory": "1Gi"}


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"replicas": -1}, "spec.replicas", "greater than or equal to 0"),
        ({"model": {"engine": "tacotron"}}, "spec.model.engine", "'vits' or 'espeak'"),
        ({"failover": {"memoryHighRatio": 1.5}}, "spec.failover.memoryHighRatio", "less than"),
        ({"serving": {"port": 80}}, "spec.serving.port", "greater than or equal to 1024"),
        ({"gpu": {"tolerations": [{"operator": "Maybe"}]}}, "spec.gpu.tolerations[0].operator", ""),
        ({"resources": {"limits": {"memory": "lots"}}}, "spec.resources.limits.memory", "pattern"),
        ({"bogus": True}, "spec.bogus", "unknown field"),
        ({"autoscaling": {"minReplicas": 5}}, "spec.autoscaling.minReplicas", "maxReplicas"),
        (
            {"failover": {"memoryHighRatio": 0.98}},
            "spec.failover.memoryHighRatio",
            "memoryCriticalRatio",
        ),
        (
            {"failover": {"windowSeconds": 100}},
            "spec.failover.recoverAfterSeconds",
            "windowSeconds",
        ),
        ({"fallback": {"standbyReplicas": 9}}, "spec.fallback.standbyReplicas", "maxReplicas"),
        (
            {"fallback": {"resources": {"limits": {"nvidia.com/gpu": 1}}}},
            "spec.fallback.resources",
            "must not request a GPU",
        ),
        (
            {"resources": {"limits": {"nvidia.com/gpu": 1}}},
            "spec.resources",
            "spec.gpu.count",
        ),
        (
            {"resources": {"requests": {"memory": "1Gi"}}},
            "spec.resources.requests.cpu",
            "autoscaling.metric is cpu",
        ),
        (
            {"serving": {"maxConcurrency": 2}},
            "spec.serving.batch.maxSize",
            "maxConcurrency",
        ),
        (
            {"probes": {"readiness": {"timeoutSeconds": 9}}},
            "spec.probes.readiness.timeoutSeconds",
            "periodSeconds",
        ),
        (
            {"model": {"engine": "espeak", "uri": "file:///m"}},
            "spec.model.uri",
            "only used by the vits engine",
        ),
        (
            {"faultInjection": {"enabled": True}},
            "spec.faultInjection.tokenSecretRef.name",
            "required",
        ),
        (  # a Secret data key (the API server's IsConfigMapKey rule)
            {"faultInjection": {"tokenSecretRef": {"name": "faults", "key": "token file"}}},
            "spec.faultInjection.tokenSecretRef.key",
            "pattern",
        ),
    ],
)
def test_invalid_specs_name_their_field(raw: dict, field: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(raw)
    fields = [e.field for e in caught.value.errors]
    assert field in fields, str(caught.value)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("uri", "scheme", "path", "claim"),
    [
        ("", "bundled", "", ""),
        ("file:///models/joe.onnx", "file", "/models/joe.onnx", ""),
        ("pvc://tts-models/piper/joe", "pvc", "/var/lib/voiceops/model/piper/joe", "tts-models"),
        ("pvc://tts-models", "pvc", "/var/lib/voiceops/model", "tts-models"),
    ],
)
def test_supported_model_uris(uri: str, scheme: str, path: str, claim: str) -> None:
    source = parse_model_uri(uri)
    assert (source.scheme, source.container_path, source.claim_name) == (scheme, path, claim)


@pytest.mark.parametrize(
    "uri",
    [
        "hf://rhasspy/piper-voices",
        "s3://bucket/key",
        "garbage",
        "file://relative/path",
        "file:///models/../etc",
        "pvc://Bad_Claim/x",
        "pvc://claim/../../etc",
        "http://example.com/x",
    ],
)
def test_unsupported_model_uris_are_permanent_errors_naming_the_field(uri: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_spec({"model": {"uri": uri}})
    assert caught.value.field == "spec.model.uri"
    assert str(caught.value).startswith("spec.model.uri:")


def test_parse_voiceservice_checks_identity() -> None:
    vs = parse_voiceservice(manifest({"replicas": 2}))
    assert (vs.name, vs.namespace, vs.spec.replicas) == ("tts", "default", 2)
    for broken, field in [
        ({**manifest(), "apiVersion": "v1"}, "apiVersion"),
        ({**manifest(), "kind": "Service"}, "kind"),
        ({**manifest(), "metadata": {}}, "metadata.name"),
        (manifest(name="Not_A_Label"), "metadata.name"),
        (manifest(name="x" * (spec.MAX_NAME_LENGTH + 1)), "metadata.name"),
    ]:
        with pytest.raises(InvalidSpec) as caught:
            parse_voiceservice(broken)
        assert caught.value.field == field


def test_status_parsing_is_lenient() -> None:
    status = spec.parse_status(
        {"activeTier": "fallback", "phase": "NotAPhase", "fallback": {"desiredReplicas": 3}}
    )
    assert status.active_tier == "fallback"
    assert status.phase is None
    assert status.fallback is not None
    assert status.fallback.desired_replicas == 3
    assert spec.parse_status(None) == spec.VoiceServiceStatus()
