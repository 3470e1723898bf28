"""Resource metrics: the node agent's kubelet endpoint, the real metrics-server, an HPA.

The unit tests check the endpoint's body and the process-tree figures. The cluster test
runs a REAL control plane with the real metrics-server behind the aggregation layer
(``ControlPlane(metrics_server=True)``) and the node agent (the kubelet test double):
a pod that burns CPU shows in ``metrics.k8s.io`` and the real HPA controller scales its
Deployment on CPU utilisation; a client the API server does not allow ``nodes/metrics``
gets 403 from the endpoint, and one without a client certificate no TLS session.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from testsupport.needs import missing
from voiceops_localcluster import kubelet_metrics
from voiceops_localcluster.control_plane import ControlPlane
from voiceops_localcluster.kube_binaries import find_metrics_server
from voiceops_localcluster.kubelet_metrics import ContainerUsage, NodeUsage
from voiceops_localcluster.node_agent import NodeAgent, parse_node

BURN = "while True: pass"


# ------------------------------------------------------------------------- unit
def test_the_body_has_the_kubelets_metric_names_labels_and_timestamps() -> None:
    rows = [
        ContainerUsage("ns", "web-1", "app", 12.5, 300_000_000, 1_700_000_000.25),
        ContainerUsage("ns", 'we"ird', "side", 0.25, 1_000, 1_700_000_001.0),
    ]
    text = kubelet_metrics.resource_metrics(
        NodeUsage(1234.5, 8_000_000_000), rows, 1_700_000_100_000
    )
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # prometheus_client drops the _total suffix of a counter's family name.
    assert set(families) == {
        "node_cpu_usage_seconds", "node_memory_working_set_bytes",
        "container_cpu_usage_seconds", "container_memory_working_set_bytes",
        "container_start_time_seconds",
    }  # fmt: skip
    cpu = {s.labels["pod"]: s for s in families["container_cpu_usage_seconds"].samples}
    assert cpu["web-1"].value == 12.5
    assert cpu["web-1"].labels == {"container": "app", "namespace": "ns", "pod": "web-1"}
    assert cpu['we"ird'].value == 0.25  # quotes in a label value are escaped
    assert cpu["web-1"].timestamp == 1_700_000_100.0  # milliseconds in the text
    memory = {
        s.labels["pod"]: s.value for s in families["container_memory_working_set_bytes"].samples
    }
    assert memory == {"web-1": 300_000_000, 'we"ird': 1_000}
    (node_cpu,) = families["node_cpu_usage_seconds"].samples
    assert node_cpu.value == 1234.5
    assert node_cpu.labels == {}


def test_a_process_tree_counts_its_childrens_cpu_and_memory() -> None:
    # A parent that waits on a child burning CPU: the tree's CPU grows, the parent's alone
    # not. Both in a process group of their own, killed together (an orphaned burner
    # would take a core from every test after this one).
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys; subprocess.run([sys.executable, '-c', "
         f"{BURN!r}])"],
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        first = kubelet_metrics.process_tree_usage(parent.pid)
        assert first is not None
        while True:
            now = kubelet_metrics.process_tree_usage(parent.pid)
            assert now is not None
            if now[0] >= first[0] + 0.3:
                break
            assert time.monotonic() < deadline, f"the tree's CPU stayed at {now[0]}"
            time.sleep(0.05)
        _, memory, started = now
        assert memory > 2 * 5_000_000  # two Python interpreters
        assert abs(started - time.time()) < 60
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    assert kubelet_metrics.process_tree_usage(parent.pid) is None
    deadline = time.monotonic() + 10
    while _group_alive(parent.pid):
        assert time.monotonic() < deadline, "the burning child outlived the kill"
        time.sleep(0.05)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_client_identity_is_the_certificates_common_name_and_organizations() -> None:
    peer = {
        "subject": (
            (("organizationName", "system:masters"),),
            (("organizationName", "ops"),),
            (("commonName", "voiceops:metrics-server"),),
        )
    }
    assert kubelet_metrics.peer_identity(peer) == (
        "voiceops:metrics-server",
        ["system:masters", "ops"],
    )
    assert kubelet_metrics.peer_identity(None) == ("", [])
    review = kubelet_metrics.access_review("u", ["g"], "node-1")
    assert review["spec"] == {
        "user": "u",
        "groups": ["g"],
        "resourceAttributes": {"verb": "get", "resource": "nodes", "subresource": "metrics",
                               "name": "node-1"},
    }  # fmt: skip


# ---------------------------------------------------------------------- cluster
NODE = "local-metrics-0"


def on_the_cluster(test: Callable[..., Any]) -> Callable[..., Any]:
    """A slow test on the module's control plane (one event loop for the module)."""
    for mark in (pytest.mark.slow, pytest.mark.timeout(240),
                 pytest.mark.asyncio(loop_scope="module")):  # fmt: skip
        test = mark(test)
    return test


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def metered(
    new_control_plane: Callable[..., ControlPlane], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[ControlPlane, NodeAgent, str]]:
    """A control plane with metrics-server, one node, a namespace (for the module)."""
    if find_metrics_server() is None:
        missing("metrics-server is not built: run `make kube-binaries`")
    plane = new_control_plane(metrics_server=True)
    work = tmp_path_factory.mktemp("metrics-agent")
    agent = NodeAgent(plane.admin_kubeconfig, [parse_node(f"{NODE}:0:4")], work)
    await agent.start()
    namespace = f"metrics-{uuid.uuid4().hex[:8]}"
    await agent.api.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    try:
        yield plane, agent, namespace
    finally:
        await agent.stop()
        plane.stop()


def _burner(namespace: str) -> dict[str, Any]:
    labels = {"app": "burner"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "burner", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "burn",
                        "image": "local/burn",
                        "command": [sys.executable, "-c", BURN],
                        "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}},
                    }],
                },
            },
        },
    }  # fmt: skip


def _hpa(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "burner", "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "burner"},
            "minReplicas": 1,
            "maxReplicas": 2,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
        },
    }  # fmt: skip


async def _until(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"not within {within:g}s: {what} (last: {last!r})")


@on_the_cluster
async def test_a_busy_pod_shows_in_the_metrics_api_and_its_hpa_scales_out(
    metered: tuple[ControlPlane, NodeAgent, str],
) -> None:
    _, agent, namespace = metered
    api = agent.api
    await api.request(
        "POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", _burner(namespace)
    )

    async def usage() -> list[dict[str, Any]] | None:
        found = await api.get(f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods")
        items = (found or {}).get("items") or []
        return items or None

    # Two scrapes a metric-resolution apart make the first rate.
    (pod,) = await _until(usage, 90, "the burning pod in metrics.k8s.io")
    (container,) = pod["containers"]
    assert container["name"] == "burn"
    cpu = container["usage"]["cpu"]  # nanocores, e.g. "987654321n"
    assert cpu.endswith("n")
    assert int(cpu[:-1]) > 300_000_000, cpu  # more than 0.3 core
    assert container["usage"]["memory"].endswith("Ki")

    await api.request(
        "POST", f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers",
        _hpa(namespace),
    )  # fmt: skip

    async def scaled() -> dict[str, Any] | None:
        hpa = await api.get(
            f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/burner"
        )
        status = (hpa or {}).get("status") or {}
        return status if status.get("desiredReplicas", 0) >= 2 else None

    status = await _until(scaled, 90, "the HPA wanting 2 replicas")
    (metric,) = status["currentMetrics"]
    assert metric["resource"]["current"]["averageUtilization"] > 50

    async def two_pods() -> bool:
        found = await api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/burner")
        return ((found or {}).get("status") or {}).get("readyReplicas", 0) >= 2

    await _until(two_pods, 60, "the Deployment at 2 ready replicas")
    # Stop burning CPU on a 2-core machine as soon as the point is made.
    await api.request("DELETE", f"/apis/apps/v1/namespaces/{namespace}/deployments/burner")


@on_the_cluster
async def test_the_kubelet_endpoint_wants_a_client_certificate_allowed_nodes_metrics(
    metered: tuple[ControlPlane, NodeAgent, str],
) -> None:
    plane, agent, _ = metered
    node = await agent.api.request("GET", f"/api/v1/nodes/{NODE}")
    port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    assert port > 0
    url = f"https://127.0.0.1:{port}/metrics/resource"

    def client(user: str | None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the node's certificate is self-signed
        if user is not None:
            context.load_cert_chain(plane.pki.path(f"{user}.crt"), plane.pki.path(f"{user}.key"))
        return context

    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=client("metrics-server-client")) as answer:
            assert answer.status == 200
            assert "node_cpu_usage_seconds_total" in await answer.text()
        async with session.get(url, ssl=client("scheduler")) as answer:
            assert answer.status == 403  # kube-scheduler may not get nodes/metrics
            assert "user=system:kube-scheduler" in await answer.text()
        with pytest.raises(aiohttp.ClientError):
            async with session.get(url, ssl=client(None)):
                pass
    # The client kubectl uses sees the metrics API in discovery.
    found = await agent.api.get("/apis/metrics.k8s.io/v1beta1")
    assert {r["name"] for r in (found or {}).get("resources") or []} >= {"nodes", "pods"}
