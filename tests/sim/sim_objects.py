"""Small object factories shared by the sim tests."""

from __future__ import annotations


def deployment(name: str, labels: dict[str, str] | None = None, replicas: int = 1) -> dict:
    """A minimal valid apps/v1 Deployment body."""
    pod_labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "main", "image": "voiceops/service:0.1.0"}]},
            },
        },
    }


def widget(name: str, **spec: object) -> dict:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": dict(spec),
    }
