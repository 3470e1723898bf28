"""Kubeconfig files that point clients at the emulator."""

from __future__ import annotations

from pathlib import Path

import yaml

CONTEXT = "voiceops-sim"


def kubeconfig_dict(server: str, token: str, namespace: str = "default") -> dict[str, object]:
    """A kubeconfig for plain HTTP with a bearer-token user (what kopf and kubectl read)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {"name": CONTEXT, "cluster": {"server": server, "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": CONTEXT, "user": {"token": token}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
    }


def write_kubeconfig(path: str | Path, server: str, token: str, namespace: str = "default") -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(kubeconfig_dict(server, token, namespace), sort_keys=False))
    target.chmod(0o600)
    return target
