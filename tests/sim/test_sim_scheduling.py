"""The pure scheduler of the simulated cluster."""

from __future__ import annotations

import pytest
from voiceops_sim.scheduling import node_usage, parse_node, parse_quantity, schedule


def _pod(gpus: int = 0, cpu: str = "100m", **spec: object) -> dict:
    limits = {"nvidia.com/gpu": gpus} if gpus else {}
    return {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu}, "limits": limits}}
            ],
            **spec,
        },
    }


def test_quantities() -> None:
    assert parse_quantity("500m") == 0.5
    assert parse_quantity("2") == 2.0
    assert parse_quantity("1Gi") == 2**30
    with pytest.raises(ValueError, match="invalid quantity"):
        parse_quantity("lots")


def test_gpu_pods_go_to_gpu_nodes_cpu_pods_avoid_them() -> None:
    nodes = [parse_node("gpu:1:8"), parse_node("cpu:0:8")]
    assert schedule(_pod(gpus=1), nodes, {}) == ("gpu", "")
    assert schedule(_pod(), nodes, {}) == ("cpu", "")


def test_insufficient_gpu_message_counts_every_node() -> None:
    nodes = [parse_node("gpu:1:8"), parse_node("cpu:0:8")]
    busy = node_usage([{**_pod(gpus=1), "spec": {**_pod(gpus=1)["spec"], "nodeName": "gpu"}}])
    node, message = schedule(_pod(gpus=1), nodes, busy)
    assert node is None
    assert message == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."


def test_selector_taints_cordon_and_pod_count() -> None:
    tainted = parse_node("t:1:8")
    tainted.taints = [{"key": "nvidia.com/gpu", "value": "", "effect": "NoSchedule"}]
    cordoned = parse_node("c:0:8")
    cordoned.unschedulable = True
    full = parse_node("f:0:8:1")
    usage = node_usage([{**_pod(), "spec": {**_pod()["spec"], "nodeName": "f"}}])
    _, message = schedule(_pod(nodeSelector={"disk": "ssd"}), [tainted], {})
    assert (
        message == "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    )
    _, message = schedule(_pod(gpus=1), [tainted, cordoned, full], usage)
    assert message == (
        "0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 1 Too many pods, "
        "1 node(s) had untolerated taint "
        "{nvidia.com/gpu: }, 1 node(s) were unschedulable."
    )
    tolerated = _pod(gpus=1, tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}])
    assert schedule(tolerated, [tainted], {}) == ("t", "")


def test_node_spec_errors_name_the_format() -> None:
    with pytest.raises(ValueError, match="NAME"):
        parse_node("a:b:c:d:e")
    with pytest.raises(ValueError, match="integers"):
        parse_node("n:x")
