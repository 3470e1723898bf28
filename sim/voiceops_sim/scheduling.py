"""Simulated nodes and a pure scheduler (resources, nodeSelector, taints).

Filters like kube-scheduler's: node not cordoned, nodeSelector labels match,
NoSchedule/NoExecute taints tolerated, requested ``cpu``/``memory``/extended
resources (``nvidia.com/gpu``) fit into what is left of allocatable. Among
fitting nodes the one with the most free GPUs, then CPU, wins (spreading).
Unschedulable pods get the scheduler's message shape:
``0/2 nodes are available: 2 Insufficient nvidia.com/gpu.``
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
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
class SimNode:
    """One simulated node: allocatable resources, labels, taints, cordon flag."""

    name: str
    allocatable: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    unschedulable: bool = False

    @property
    def gpus(self) -> int:
        return int(self.allocatable.get(GPU, 0))

    def as_object(self) -> dict[str, Any]:
        """The Node object the emulator stores for this node."""

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
                        "message": "simulated kubelet is posting ready status",
                    }
                ],
                "nodeInfo": {
                    "kubeletVersion": "v1.33.0-voiceops-sim",
                    "kubeProxyVersion": "v1.33.0-voiceops-sim",
                    "containerRuntimeVersion": "voiceops-sim://0.1.0",
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


def parse_node(text: str) -> SimNode:
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
    labels = {"voiceops.io/sim-gpu": "true"} if gpus else {}
    resources = {"cpu": cpu, "memory": float(64 * 2**30), GPU: float(gpus), "pods": float(pods)}
    return SimNode(parts[0], resources, labels)


def pod_requests(pod: Mapping[str, Any]) -> dict[str, float]:
    """Summed container requests (limits stand in for missing requests), plus one pod slot."""
    total: Counter[str] = Counter({"pods": 1.0})
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        wanted = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name, value in wanted.items():
            total[name] += parse_quantity(value)
    return dict(total)


def _tolerated(taint: Mapping[str, str], tolerations: Iterable[Mapping[str, Any]]) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" and (not tol.get("key") or tol["key"] == taint["key"]):
            return True
        if tol.get("key") == taint["key"] and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def node_usage(pods: Iterable[Mapping[str, Any]]) -> dict[str, Counter[str]]:
    """Requested resources per node of the pods bound to nodes and not finished."""
    usage: dict[str, Counter[str]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if node and phase not in ("Succeeded", "Failed"):
            usage.setdefault(node, Counter()).update(pod_requests(pod))
    return usage


def schedule(
    pod: Mapping[str, Any], nodes: list[SimNode], usage: Mapping[str, Counter[str]]
) -> tuple[str | None, str]:
    """Pick a node for ``pod``: ``(node name, "")`` or ``(None, unschedulable message)``."""
    spec = pod.get("spec") or {}
    selector = spec.get("nodeSelector") or {}
    tolerations = spec.get("tolerations") or []
    wanted = pod_requests(pod)
    reasons: Counter[str] = Counter()
    fitting: list[tuple[float, float, str]] = []
    for node in nodes:
        labels = node.as_object()["metadata"]["labels"]
        if node.unschedulable:
            reasons["node(s) were unschedulable"] += 1
            continue
        if any(labels.get(k) != v for k, v in selector.items()):
            reasons["node(s) didn't match Pod's node affinity/selector"] += 1
            continue
        untolerated = [
            t
            for t in node.taints
            if t.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(t, tolerations)
        ]
        if untolerated:
            taint = untolerated[0]
            reasons[
                f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
            ] += 1
            continue
        used = usage.get(node.name, Counter())
        short = [
            name
            for name, amount in sorted(wanted.items())
            if amount > 0 and used.get(name, 0.0) + amount > node.allocatable.get(name, 0.0) + 1e-9
        ]
        if short:
            for name in short:
                reasons["Too many pods" if name == "pods" else f"Insufficient {name}"] += 1
            continue
        free_gpu = node.allocatable.get(GPU, 0.0) - used.get(GPU, 0.0)
        free_cpu = node.allocatable.get("cpu", 0.0) - used.get("cpu", 0.0)
        fitting.append((free_gpu, free_cpu, node.name))
    if fitting:
        # GPU pods go where most GPUs are free; CPU-only pods keep off GPU nodes if they can.
        gpu_sign = -1.0 if wanted.get(GPU, 0.0) > 0 else 1.0
        fitting.sort(key=lambda f: (gpu_sign * f[0], -f[1], f[2]))
        return fitting[0][2], ""
    detail = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    return None, f"0/{len(nodes)} nodes are available: {detail}."
