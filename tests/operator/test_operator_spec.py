"""Spec parsing, defaults and validation errors (each naming its field)."""

from __future__ import annotations

import pytest
from testsupport.manifests import manifest
from voiceops_operator import spec
from voiceops_operator.spec import (
    InvalidSpec,
    parse_model_uri,
    parse_spec,
    parse_voiceservice,
    parsing,
)


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


# --- what a refusal says ----------------------------------------------------------------------


def refusal(raw: object) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(raw)
    return caught.value


def test_an_unknown_field_is_named_as_such() -> None:
    (error,) = refusal({"bogus": True}).errors
    assert (error.field, error.message, str(error)) == (
        "spec.bogus",
        "unknown field",
        "spec.bogus: unknown field",
    )


def test_every_problem_of_a_spec_is_listed_one_after_the_other() -> None:
    refused = refusal({"replicas": -1, "bogus": True})
    assert [e.field for e in refused.errors] == ["spec.replicas", "spec.bogus"]
    assert str(refused) == "; ".join(str(e) for e in refused.errors)
    assert refused.field == "spec.replicas"


def test_a_spec_that_is_no_object_is_refused() -> None:
    (error,) = refusal(["replicas", 1]).errors
    assert str(error) == "spec: must be an object"


def test_a_rule_on_a_list_item_names_the_item() -> None:
    peers = [
        {"podSelector": {}},
        {"podSelector": {}},
        {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}},
    ]
    (error,) = refusal({"networkPolicy": {"allowFrom": peers}}).errors
    assert error.field == "spec.networkPolicy.allowFrom[2].ipBlock"
    assert str(error).startswith("spec.networkPolicy.allowFrom[2].ipBlock cannot be combined")


def test_a_rule_deep_in_a_list_item_is_named_where_it_sits() -> None:
    expressions = [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "In"}]
    peers = [{"podSelector": {}}, {"podSelector": {"matchExpressions": expressions}}]
    (error,) = refusal({"networkPolicy": {"allowFrom": peers}}).errors
    field = "spec.networkPolicy.allowFrom[1].podSelector.matchExpressions[1].values"
    assert error.field == field
    assert error.message == (
        f"{field} must be non-empty for In and NotIn and empty for Exists and DoesNotExist"
    )
    assert str(error) == error.message


def test_list_indices_fill_a_rule_s_wildcards_in_order() -> None:
    assert parsing._fill_indices("spec.a[*].b[*].c", [2, 0]) == "spec.a[2].b[0].c"
    assert parsing._fill_indices("spec.a[*].b", [3, 1]) == "spec.a[3].b"
    assert parsing._fill_indices("spec.a.b", [4]) == "spec.a.b"
    assert parsing._fill_indices("spec.a[*].b[*]", [5]) == "spec.a[5].b[*]"


def test_a_spec_error_says_its_field_once() -> None:
    named = spec.SpecError("spec.x", "spec.x must be y")
    assert (str(named), named.field, named.message) == (
        "spec.x must be y",
        "spec.x",
        "spec.x must be y",
    )
    plain = spec.SpecError("spec.x", "must be y")
    assert (str(plain), plain.message) == ("spec.x: must be y", "must be y")
    prefixed = spec.SpecError("spec.x", "spec.xy is other")
    assert str(prefixed) == "spec.x: spec.xy is other"


@pytest.mark.parametrize("gpu_key", ["amd.com/gpu", "example.com/accelerator"])
def test_no_gpu_may_be_listed_in_the_tiers_resources(gpu_key: str) -> None:
    raw = {"gpu": {"resourceName": "example.com/accelerator"}}
    refused = refusal({**raw, "resources": {"limits": {gpu_key: 1}}})
    assert [e.field for e in refused.errors] == ["spec.resources"]
    refused = refusal({**raw, "fallback": {"resources": {"requests": {gpu_key: 1}}}})
    assert [e.field for e in refused.errors] == ["spec.fallback.resources"]


# --- model URIs ---------------------------------------------------------------------------------


def test_model_uri_paths_are_normalised_or_refused() -> None:
    assert parse_model_uri("file:///models/joe/").container_path == "/models/joe"
    assert parse_model_uri("file:///models/MAX").container_path == "/models/MAX"
    assert parse_model_uri("pvc://models/voices/MAX/").sub_path == "voices/MAX"
    pvc = parse_model_uri("pvc://tts-models/piper/joe/")
    assert (pvc.sub_path, pvc.container_path) == ("piper/joe", "/var/lib/voiceops/model/piper/joe")
    assert parse_spec({"model": {"uri": "pvc://m/x"}}).model.model_path() == (
        "/var/lib/voiceops/model/x"
    )
    for uri, words in [
        ("file:///", "file URIs need an absolute path"),
        ("file:///models//joe", "the path must be normalised"),
        ("file:///models/a://b", "the path must be normalised"),
        ("pvc://claim/../x", "the path inside the claim must be normalised"),
        ("pvc://claim/x//y", "the path inside the claim must be normalised"),
    ]:
        with pytest.raises(spec.SpecError, match=words):
            parse_model_uri(uri)


def test_a_claim_name_may_be_253_characters() -> None:
    assert parse_model_uri("pvc://" + "a" * 253).claim_name == "a" * 253
    with pytest.raises(spec.SpecError, match="is not a valid PersistentVolumeClaim name"):
        parse_model_uri("pvc://" + "a" * 254)


def test_an_unsupported_scheme_says_what_is_supported() -> None:
    with pytest.raises(spec.SpecError) as caught:
        parse_model_uri("hf://rhasspy/voices")
    assert caught.value.message == (
        "unsupported scheme 'hf://' in 'hf://rhasspy/voices'; supported: empty (bundled voice), "
        "file:///abs/path, pvc://claim/path"
    )


# --- the whole manifest ------------------------------------------------------------------------


def identity_refusal(document: object) -> str:
    with pytest.raises(InvalidSpec) as caught:
        parse_voiceservice(document)
    return str(caught.value)


def test_a_manifest_s_identity_problems_are_spelt_out() -> None:
    assert identity_refusal(["not", "a", "mapping"]) == "(document): must be a mapping"
    assert identity_refusal({**manifest(), "apiVersion": "v1"}) == (
        "apiVersion: must be voiceops.io/v1alpha1, got 'v1'"
    )
    assert identity_refusal({**manifest(), "kind": "Service"}) == (
        "kind: must be VoiceService, got 'Service'"
    )
    for metadata in ({}, ["name", "tts"], "tts", {"name": 5}, {"name": ""}):
        assert identity_refusal({**manifest(), "metadata": metadata}) == (
            "metadata.name: is required"
        )


def test_a_name_may_be_as_long_as_its_longest_child_allows() -> None:
    longest = "x" * spec.MAX_NAME_LENGTH
    assert parse_voiceservice(manifest(name=longest)).name == longest


def test_a_manifest_s_namespace_uid_and_generation_are_read() -> None:
    document = manifest()
    document["metadata"] = {"name": "tts", "namespace": "voice", "uid": "u-1", "generation": 7}
    vs = parse_voiceservice(document, default_namespace="elsewhere")
    assert (vs.namespace, vs.uid, vs.generation) == ("voice", "u-1", 7)
    document["metadata"] = {"name": "tts"}
    bare = parse_voiceservice(document)
    assert (bare.namespace, bare.uid, bare.generation) == ("default", "", 0)
    assert parse_voiceservice(document, default_namespace="ops").namespace == "ops"
