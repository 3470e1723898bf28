"""Routing notices: which pods the front Service sends traffic to, told to the pods.

Pure: a pod's routing from the active tier, and the signed notice (a JWT, EdDSA)
that tells it. The healing loop sends them (healing.py); the pod's side is
``voiceops_service.routing``. Why pods must be told: docs/routing.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from voiceops_contract import pod

from voiceops_operator import names

# A notice is good for this long: long enough for a slow pod, short against replays.
NOTICE_LIFETIME_SECONDS = 30


@dataclass(frozen=True)
class PodTarget:
    """A running pod that may hold client connections, and what it should be told."""

    name: str
    uid: str
    restarts: int  # a restarted container forgot what it was told
    address: str  # ip:port of the serving port
    routed: bool

    @property
    def key(self) -> tuple[str, int]:
        return (self.uid, self.restarts)


def tier_routed(tier: str, active_tier: str) -> bool:
    """Does the front Service select pods of ``tier`` when ``active_tier`` serves?"""
    return active_tier == "both" or tier == active_tier


def pod_targets(pods: list[Mapping[str, Any]], active_tier: str, port: int) -> list[PodTarget]:
    """The running, addressable pods of both tiers, each with its routing."""
    targets = []
    for p in pods:
        meta = p.get("metadata") or {}
        status = p.get("status") or {}
        tier = (meta.get("labels") or {}).get(names.LABEL_TIER, "")
        ip = status.get("podIP")
        if not ip or status.get("phase") != "Running" or meta.get("deletionTimestamp"):
            continue
        containers = status.get("containerStatuses") or []
        restarts = sum(int(c.get("restartCount") or 0) for c in containers)
        host = f"[{ip}]" if ":" in ip else ip
        targets.append(
            PodTarget(
                name=str(meta.get("name", "")),
                uid=str(meta.get("uid", "")),
                restarts=restarts,
                address=f"{host}:{port}",
                routed=tier_routed(tier, active_tier),
            )
        )
    return targets


def sign_for_pod(
    key: Ed25519PrivateKey, pod_name: str, audience: str, now: float, **claims: Any
) -> str:
    """A JWT for one pod and one audience, expiring soon; the pod checks it with our public key."""
    body = {
        "aud": audience,
        "sub": pod_name,
        "iat": int(now),
        "exp": int(now) + NOTICE_LIFETIME_SECONDS,
        **claims,
    }
    return jwt.encode(body, key, algorithm="EdDSA")


def sign_notice(key: Ed25519PrivateKey, pod_name: str, routed: bool, now: float) -> str:
    """The JWT a pod accepts: its name, the routing, when decided, and an expiry."""
    return sign_for_pod(key, pod_name, pod.ROUTING_AUDIENCE, now, routed=routed, t=now)


def sign_model_command(key: Ed25519PrivateKey, pod_name: str, now: float) -> str:
    """The JWT a pod's /admin/models accepts from the operator (an InPlace model update)."""
    return sign_for_pod(key, pod_name, pod.MODEL_ADMIN_AUDIENCE, now)
