"""The nodes a node agent registers: ``parse_node("local-gpu-0:1:8")`` and their Node objects."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

GPU = "nvidia.com/gpu"

_SUFFIXES = {
    "m": 0.001,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: Any) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``1Gi``) as a float in base units."""
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in ("", *_SUFFIXES):
        raise ValueError(f"invalid quantity {value!r}")
    number, suffix = match.groups()
    return float(number) * (_SUFFIXES[suffix] if suffix else 1.0)


@dataclass
class NodeSpec:
    """One node the node agent registers: allocatable resources, labels, taints."""

    name: str
    allocatable: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    unschedulable: bool = False

    @property
    def gpus(self) -> int:
        return int(self.allocatable.get(GPU, 0))

    def as_object(self) -> dict[str, Any]:
        """The Node object the node agent registers (it adds conditions and versions)."""

        def fmt(key: str, value: float) -> str:
            if key == "memory":
                return f"{int(value // 2**20)}Mi"
            if key == "cpu":
                return f"{int(value * 1000)}m" if value % 1 else str(int(value))
            return str(int(value))

        resources = {k: fmt(k, v) for k, v in self.allocatable.items()}
        spec: dict[str, Any] = {"taints": self.taints} if self.taints else {}
        if self.unschedulable:
            spec["unschedulable"] = True
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    **self.labels,
                },
            },
            "spec": spec,
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "the node agent is posting ready status",
                    }
                ],
                "nodeInfo": {
                    "kubeletVersion": "v1.33.0-voiceops-localcluster",
                    "kubeProxyVersion": "v1.33.0-voiceops-localcluster",
                    "containerRuntimeVersion": "voiceops-localcluster://0.1.0",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "osImage": "simulated node (local processes)",
                    "kernelVersion": "n/a",
                    "machineID": self.name,
                    "systemUUID": self.name,
                    "bootID": self.name,
                },
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.name},
                ],
            },
        }


def parse_node(text: str) -> NodeSpec:
    """``NAME[:GPUS[:CPU[:PODS]]]`` → a node with 64Gi memory (CLI and test shorthand).

    PODS defaults to 110, the kubelet's default ``maxPods``.
    """
    parts = text.split(":")
    if not parts[0] or len(parts) > 4:
        raise ValueError(f"node spec {text!r}: expected NAME[:GPUS[:CPU[:PODS]]]")
    try:
        gpus = int(parts[1]) if len(parts) > 1 and parts[1] else 0
        cpu = float(parts[2]) if len(parts) > 2 and parts[2] else 8.0
        pods = int(parts[3]) if len(parts) > 3 and parts[3] else 110
    except ValueError as exc:
        raise ValueError(f"node spec {text!r}: GPUS and PODS are integers, CPU a number") from exc
    labels = {"voiceops.io/local-gpu": "true"} if gpus else {}
    resources = {"cpu": cpu, "memory": float(64 * 2**30), GPU: float(gpus), "pods": float(pods)}
    return NodeSpec(parts[0], resources, labels)
