"""spec.jobs: its rules (pydantic and the CRD's schema and CEL), the env both tiers get, and
the NetworkPolicy's egress to Redis."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from testsupport.crd_admission import admit
from testsupport.manifests import manifest
from voiceops_contract import pod
from voiceops_operator import build
from voiceops_operator.build import Routing
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import InvalidSpec, VoiceService, parse_spec, parse_voiceservice

URL = "redis://redis.speech.svc:6380/0"
K8S_VERSION = "1.37.0"  # as in test_operator_k8s_schemas.py


def vs_of(jobs: dict[str, Any] | None = None, allow_egress: bool = False) -> VoiceService:
    body = manifest({"networkPolicy": {"allowEgress": allow_egress}})
    body["metadata"]["namespace"] = "speech"
    if jobs is not None:
        body["spec"]["jobs"] = jobs
    return parse_voiceservice(body)


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def deployments(vs: VoiceService, settings: OperatorSettings) -> list[dict[str, Any]]:
    return [
        build.build_gpu_deployment(vs, settings),
        build.build_fallback_deployment(vs, Routing(), settings),
    ]


def test_jobs_are_off_by_default_and_add_nothing(settings: OperatorSettings) -> None:
    vs = vs_of()
    assert vs.spec.jobs.enabled is False
    for deployment in deployments(vs, settings):
        assert not [name for name in env_of(deployment) if name.startswith("VOICEOPS_JOBS_")]
    egress = build.build_network_policy(vs)["spec"]["egress"]
    assert [port["port"] for rule in egress for port in rule["ports"]] == [53, 53]


def test_both_tiers_get_the_same_job_settings(settings: OperatorSettings) -> None:
    vs = vs_of({"enabled": True, "redisUrl": URL, "ttlSeconds": 3600, "maxInputChars": 50_000})
    envs = [env_of(deployment) for deployment in deployments(vs, settings)]
    for env in envs:
        assert env[pod.ENV_JOBS_REDIS_URL] == URL
        assert env[pod.ENV_JOBS_KEY_PREFIX] == "voiceops:speech/tts:"
        assert env[pod.ENV_JOBS_TTL_SECONDS] == "3600"
        assert env[pod.ENV_JOBS_MAX_INPUT_CHARS] == "50000"
    assert envs[0][pod.ENV_TIER] == "gpu"
    assert envs[1][pod.ENV_TIER] == "fallback"


def test_a_redis_url_with_credentials_comes_from_a_secret(settings: OperatorSettings) -> None:
    vs = vs_of({"enabled": True, "redisSecretRef": {"name": "tts-redis"}})
    for deployment in deployments(vs, settings):
        assert env_of(deployment)[pod.ENV_JOBS_REDIS_URL] == {
            "secretKeyRef": {"name": "tts-redis", "key": "url"}
        }


def test_the_network_policy_lets_the_pods_reach_redis() -> None:
    egress = build.build_network_policy(vs_of({"enabled": True, "redisUrl": URL}))["spec"]["egress"]
    assert {"ports": [{"port": 6380, "protocol": "TCP"}]} in egress
    default_port = vs_of({"enabled": True, "redisUrl": "redis://redis"})
    assert {"ports": [{"port": 6379, "protocol": "TCP"}]} in build.build_network_policy(
        default_port
    )["spec"]["egress"]
    from_secret = vs_of({"enabled": True, "redisSecretRef": {"name": "tts-redis"}})
    assert {"ports": [{"port": 6379, "protocol": "TCP"}]} in build.build_network_policy(
        from_secret
    )["spec"]["egress"]
    open_egress = vs_of({"enabled": True, "redisUrl": URL}, allow_egress=True)
    assert build.build_network_policy(open_egress)["spec"]["egress"] == [{}]


INVALID = [
    ({"enabled": True}, "spec.jobs.redisUrl", "exactly one of"),
    (
        {"enabled": True, "redisUrl": URL, "redisSecretRef": {"name": "tts-redis"}},
        "spec.jobs.redisUrl",
        "exactly one of",
    ),
    ({"redisUrl": "redis://user:secret@redis:6379/0"}, "spec.jobs.redisUrl", "pattern"),
    ({"redisUrl": "http://redis:6379"}, "spec.jobs.redisUrl", "pattern"),
    ({"ttlSeconds": 10}, "spec.jobs.ttlSeconds", "greater than or equal to 60"),
    ({"maxInputChars": 2_000_000}, "spec.jobs.maxInputChars", "less than or equal to 1000000"),
    ({"redisSecretRef": {"name": "x", "key": "a b"}}, "spec.jobs.redisSecretRef.key", "pattern"),
]


@pytest.mark.parametrize(
    ("jobs", "field", "words"), INVALID, ids=[f"{f}-{w}" for _, f, w in INVALID]
)
def test_bad_job_settings_are_refused_naming_the_field(
    jobs: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_spec({"jobs": jobs})
    assert field in [error.field for error in caught.value.errors], str(caught.value)
    assert words in str(caught.value)
    # The API server refuses the same (schema or CEL), naming the field.
    _, errors = admit(manifest({"jobs": jobs}))
    assert any(field.removeprefix("spec.").split(".")[-1] in error for error in errors), errors


@pytest.mark.parametrize(
    "jobs",
    [
        {},
        {"enabled": False, "redisUrl": URL, "redisSecretRef": {"name": "both-while-off"}},
        {"enabled": True, "redisUrl": "rediss://redis.speech.svc:6380/1"},
        {"enabled": True, "redisSecretRef": {"name": "tts-redis", "key": "redis.url"}},
    ],
)
def test_good_job_settings_are_admitted(jobs: dict[str, Any]) -> None:
    parse_spec({"jobs": jobs})
    _, errors = admit(manifest({"jobs": jobs}))
    assert errors == []


@pytest.mark.parametrize(
    "jobs",
    [{"enabled": True, "redisUrl": URL}, {"enabled": True, "redisSecretRef": {"name": "r"}}],
    ids=["url", "secret"],
)
def test_every_object_with_jobs_on_is_valid_kubernetes(
    jobs: dict[str, Any], settings: OperatorSettings
) -> None:
    for obj in build.build_all(vs_of(jobs), Routing(), settings):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
