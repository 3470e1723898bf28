"""`helm install` of the chart into a real control plane: the operator runs as the chart's pod.

Real: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, helm, kubectl,
the operator process (started by the node agent from the chart's Deployment, with
the chart's ServiceAccount token and routing-key Secret mounted where the pod spec
says) and ``voiceops-service`` processes for the VoiceService's pods. Test double:
the nodes (the node agent; pods in network namespaces of their own, so it needs
root). The operator works as the chart's ServiceAccount: the audit log must show its
writes under that name and no request of it refused.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from testsupport.chart import CHART_DIR, NAMESPACE, RELEASE, TOOLS_BIN
from voiceops_localcluster import pod_network
from voiceops_localcluster.control_plane import ControlPlane
from voiceops_localcluster.node_agent import NodeAgent

SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
GPU_NODE = "local-gpu-0"
TIER = "voiceops.io/tier"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.skipif(pod_network.available() is not None, reason=str(pod_network.available())),
]


def tool(plane: ControlPlane, name: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(TOOLS_BIN / name), "--kubeconfig", str(plane.admin_kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    if "(NotFound)" in done.stderr:
        return "{}"
    assert done.returncode == 0, f"{name} {' '.join(args)}: {done.stderr}{done.stdout}"
    return done.stdout


def voiceservice(namespace: str) -> dict[str, Any]:
    probes = {"periodSeconds": 1, "timeoutSeconds": 1}
    return {
        "apiVersion": "voiceops.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": "tts", "namespace": namespace},
        "spec": {
            "model": {"engine": "espeak", "voice": "en-us"},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "fallback": {"standbyReplicas": 1, "maxReplicas": 2},
            "failover": {"windowSeconds": 2, "cooldownSeconds": 1, "recoverAfterSeconds": 2},
            "probes": {
                "startup": {**probes, "failureThreshold": 60},
                "readiness": {**probes, "failureThreshold": 2},
                "liveness": {"periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 6},
            },
        },
    }


async def until(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = await asyncio.to_thread(check)
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g}s: {what}")
        await asyncio.sleep(0.5)


async def test_helm_install_runs_the_operator_as_the_charts_pod_with_its_own_identity(
    new_control_plane: Callable[..., ControlPlane], tmp_path: Path
) -> None:
    plane = new_control_plane(audit=True)
    agent = NodeAgent(
        plane.admin_kubeconfig,
        [f"{GPU_NODE}:1:8", "local-cpu-0:0:16"],
        tmp_path / "agent",
        pod_network=pod_network.NamespacePodNetwork(plane.pod_cidr),
        extra_env={"VOICEOPS_LOG_LEVEL": "warning"},
    )
    await agent.start()
    watched = f"tts-{uuid.uuid4().hex[:6]}"

    def kubectl(*args: str, stdin: str | None = None) -> str:
        return tool(plane, "kubectl", *args, stdin=stdin)

    def get(*args: str) -> dict[str, Any]:
        return json.loads(kubectl(*args, "-o", "json"))

    try:
        await asyncio.to_thread(kubectl, "create", "namespace", watched)
        await asyncio.to_thread(
            tool, plane, "helm", "install", RELEASE, str(CHART_DIR),
            "--namespace", NAMESPACE, "--create-namespace",
            "--set", f"watchNamespaces[0]={watched}",
            "--set", "operator.scrapeIntervalSeconds=1",
            "--wait", "--timeout", "180s",
        )  # fmt: skip
        operator_pods = get("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=voiceops")
        assert len(operator_pods["items"]) == 1

        await asyncio.to_thread(
            kubectl,
            "apply",
            "--server-side",
            "-f",
            "-",
            stdin=yaml.safe_dump(voiceservice(watched)),
        )

        def serving_on_gpu() -> bool:
            status = get("-n", watched, "get", "voiceservice", "tts").get("status") or {}
            selector = (get("-n", watched, "get", "service", "tts").get("spec") or {}).get(
                "selector"
            ) or {}
            return status.get("phase") == "Serving" and selector.get(TIER) == "gpu"

        await until(serving_on_gpu, 240, "Serving with the front Service on the GPU tier")

        # The healing loop in the chart's pod scrapes and routes: lose the GPU pod and
        # the capacity it needs, and the front Service moves to the fallback tier.
        await agent.set_gpu_capacity(GPU_NODE, 0)
        await asyncio.to_thread(kubectl, "-n", watched, "delete", "pods", "-l", f"{TIER}=gpu")

        def on_fallback() -> bool:
            selector = get("-n", watched, "get", "service", "tts")["spec"]["selector"]
            return selector.get(TIER) == "fallback"

        await until(on_fallback, 120, "the front Service on the fallback tier")

        events = plane.audit_events()
        mine = [e for e in events if e.get("user", {}).get("username") == SERVICE_ACCOUNT]
        refused = [
            (e["verb"], e.get("objectRef", {}).get("resource"), e["responseStatus"]["code"])
            for e in mine
            if e.get("responseStatus", {}).get("code") in (401, 403)
        ]
        assert not refused, f"the chart's ServiceAccount was refused: {refused}"
        writes = {
            (e["verb"], e["objectRef"].get("resource"), e["objectRef"].get("subresource"))
            for e in mine
            if e["verb"] in ("create", "patch", "update")
        }
        assert ("create", "deployments", None) in writes, writes
        assert ("patch", "voiceservices", "status") in writes, writes
        assert ("patch", "services", None) in writes, writes  # the failover's routing

        await asyncio.to_thread(
            tool, plane, "helm", "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"
        )

        def operator_gone() -> bool:
            pods = get("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=voiceops")
            return not pods["items"]

        await until(operator_gone, 60, "the operator's pod gone after helm uninstall")
    finally:
        await agent.stop()
