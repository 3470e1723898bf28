"""Routing notices on the operator's side: who is told what, and telling again when needed."""

from __future__ import annotations

import base64
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import ValidationError
from voiceops_contract import pod as pod_contract
from voiceops_operator import healing
from voiceops_operator.routing_notices import PodTarget, pod_targets, sign_notice, tier_routed
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import parse_voiceservice


def pod(name: str, tier: str, *, restarts: int = 0, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": {"voiceops.io/tier": tier}},
        "status": {
            "phase": "Running",
            "podIP": f"127.0.0.{len(name)}",
            "containerStatuses": [{"name": "service", "restartCount": restarts}],
            **status,
        },
    }


def test_the_active_tier_is_routed_and_both_means_both() -> None:
    assert [tier_routed(t, "gpu") for t in ("gpu", "fallback")] == [True, False]
    assert [tier_routed(t, "fallback") for t in ("gpu", "fallback")] == [False, True]
    assert [tier_routed(t, "both") for t in ("gpu", "fallback")] == [True, True]


def test_only_running_addressable_pods_are_told() -> None:
    pods = [
        pod("g", "gpu"),
        pod("f", "fallback", restarts=2),
        pod("pending", "gpu", phase="Pending"),
        pod("noip", "gpu", podIP=None),
        {**pod("leaving", "fallback"), "metadata": {"name": "leaving", "deletionTimestamp": "x"}},
    ]
    targets = pod_targets(pods, "fallback", 8000)
    assert [(t.name, t.routed, t.key) for t in targets] == [
        ("g", False, ("uid-g", 0)),
        ("f", True, ("uid-f", 2)),
    ]
    assert targets[0].address == "127.0.0.1:8000"


def test_the_notice_is_a_jwt_the_public_key_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    token = sign_notice(key, "tts-gpu-0", False, 1_800_000_000.25)
    claims = jwt.decode(
        token,
        key.public_key(),
        algorithms=["EdDSA"],
        audience=pod_contract.ROUTING_AUDIENCE,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["sub"] == "tts-gpu-0"
    assert claims["routed"] is False
    assert claims["t"] == 1_800_000_000.25
    assert claims["exp"] - claims["iat"] == 30


def test_settings_give_the_pods_the_public_half_of_the_key() -> None:
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes_raw()
    settings = OperatorSettings(_env_file=None, routing_key=base64.b64encode(seed).decode())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert settings.routing_public_key == base64.b64encode(public).decode()
    assert OperatorSettings(_env_file=None).routing_public_key == ""


class RecordingRuntime:
    """The one part of HealingRuntime ``_tell_pods`` uses: delivering a notice."""

    def __init__(self) -> None:
        self.settings = OperatorSettings(_env_file=None)
        self.routing_key = Ed25519PrivateKey.generate()
        self.told: list[tuple[str, bool]] = []
        self.unreachable: set[str] = set()

    async def tell_pod(self, target: PodTarget) -> bool:
        if target.name in self.unreachable:
            return False
        self.told.append((target.name, target.routed))
        return True


VS = parse_voiceservice(
    {"apiVersion": "voiceops.io/v1alpha1", "kind": "VoiceService",
     "metadata": {"name": "tts", "namespace": "ns", "uid": "u", "generation": 1}, "spec": {}}
)  # fmt: skip


async def test_each_pod_is_told_once_and_again_after_a_restart_or_a_lost_notice() -> None:
    runtime = RecordingRuntime()
    loop = healing.HealingLoop(runtime, "ns", "tts", pods=list)  # type: ignore[arg-type]
    pods = [pod("g", "gpu"), pod("f", "fallback")]
    runtime.unreachable = {"f"}

    await loop._tell_pods(pods, VS, "fallback")
    assert runtime.told == [("g", False)]
    runtime.told.clear()
    runtime.unreachable = set()

    await loop._tell_pods(pods, VS, "fallback")  # only the one that missed it
    assert runtime.told == [("f", True)]
    runtime.told.clear()

    await loop._tell_pods(pods, VS, "fallback")  # nothing changed: nothing sent
    assert runtime.told == []

    restarted = [pod("g", "gpu", restarts=1), pod("f", "fallback")]
    await loop._tell_pods(restarted, VS, "fallback")  # a restarted container forgot
    assert runtime.told == [("g", False)]
    runtime.told.clear()

    await loop._tell_pods(restarted, VS, "gpu")  # traffic moves back
    assert sorted(runtime.told) == [("f", False), ("g", True)]


def test_a_routing_key_that_is_not_32_base64_bytes_is_refused_naming_the_setting() -> None:
    for bad, rule in (("not base64!", "must be base64"), ("YWJj", "not 3")):
        with pytest.raises(ValidationError, match=rf"routing_key[\s\S]*{rule}"):
            OperatorSettings(_env_file=None, routing_key=bad)
