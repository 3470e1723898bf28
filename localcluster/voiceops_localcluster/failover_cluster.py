"""A real local cluster with a two-tier VoiceService, for failover tests and benchmarks.

Real: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
(``control_plane``), the operator process, and ``voiceops-service`` processes for
the pods (VITS with the bundled joe voice on the GPU tier, espeak on the fallback
tier). The nodes are the node agent (a test double of kubelet and kube-proxy):
pods run in network namespaces of their own with real addresses
(``pod_network``; needs root), so the operator scrapes and notifies them at
``status.podIP`` as it would on a cluster, and the front Service routes through
EndpointSlices the real controller writes. ``FailoverCluster`` reads phases and
routing from watches, finds ready pods and injects faults through the pods'
token-guarded ``/admin/faults``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from . import pod_network
from .control_plane import ControlPlane
from .node_agent import Informer, KubeClient, NodeAgent
from .operator_process import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "voiceservice.yaml"
FAKE_NVML_BUILD = REPO / "tools" / "fake-nvml" / "build.sh"
GPU_NODE = "local-gpu-0"
HEALTHY_GPU = (
    "device_count=1\ngpu0.name=NVIDIA H200 (fake NVML)\n"
    "gpu0.uuid=GPU-0f0f0f0f-0000-4000-8000-000000000079\n"
    "gpu0.memory_total=150000000000\ngpu0.memory_used=15000000000\n"
)
FAULT_TOKEN = "failover-fault-token"
TIER = "voiceops.io/tier"
NAME = "tts"
NODES = ("local-gpu-0:1:8", "local-cpu-0:0:16")


def two_tier_voiceservice(namespace: str, window_seconds: int) -> dict[str, Any]:
    """VITS on the GPU tier, espeak on the fallback, fault injection on, quick probes."""
    probes = {"periodSeconds": 1, "timeoutSeconds": 1}
    return {
        "apiVersion": "voiceops.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"engine": "vits", "voice": "en_US-joe-medium"},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "serving": {"maxConcurrency": 4, "batch": {"maxSize": 4, "maxDelayMs": 5}},
            "fallback": {
                "standbyReplicas": 1,
                "maxReplicas": 2,
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            },
            "failover": {
                "windowSeconds": window_seconds,
                "cooldownSeconds": 1,
                # Integers: the API server's CEL sees 2.0 as a double where the schema
                # says integer, and fails the rule comparing them.
                "recoverAfterSeconds": max(2, window_seconds),
            },
            "probes": {
                "startup": {**probes, "failureThreshold": 120},
                "readiness": {**probes, "failureThreshold": 2},
                # Generous: a busy 2-core box must not turn slow answers into restarts.
                "liveness": {"periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 6},
            },
            "faultInjection": {
                "enabled": True,
                "tokenSecretRef": {"name": "faults", "key": "token"},
            },
        },
    }


@dataclass
class FailoverCluster:
    plane: ControlPlane
    agent: NodeAgent
    operator: OperatorProcess
    namespace: str
    api: KubeClient
    voiceservices: Informer
    services: Informer
    pods: Informer

    def status(self) -> dict[str, Any]:
        found = self.voiceservices.items.get((self.namespace, NAME)) or {}
        return found.get("status") or {}

    def phase(self) -> str:
        return str(self.status().get("phase", ""))

    def selected_tier(self) -> str:
        service = self.services.items.get((self.namespace, NAME)) or {}
        return ((service.get("spec") or {}).get("selector") or {}).get(TIER, "both")

    def ready_pods(self, tier: str) -> list[dict[str, Any]]:
        found = []
        for pod in self.pods.items.values():
            if (pod["metadata"].get("labels") or {}).get(TIER) != tier:
                continue
            if pod["metadata"].get("deletionTimestamp"):
                continue
            conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
            if conds.get("Ready") == "True":
                found.append(pod)
        return found

    def front_url(self) -> str:
        return self.agent.service_url(self.namespace, NAME)

    def front_endpoints(self) -> list[str]:
        try:
            return self.agent.service_endpoints(self.namespace, NAME)
        except LookupError:
            return []

    def write_nvml(self, state: str) -> None:
        """Replace the GPU node's fake NVML state (whole, by rename, as the library reads it)."""
        path = self.plane.folder.parent / "nvml-state"
        partial = path.with_suffix(".partial")
        partial.write_text(state)
        partial.replace(path)

    def kill(self, pod: dict[str, Any]) -> bool:
        """SIGKILL the pod's container process (the node agent restarts it)."""
        return self.agent.kill_pod_process(self.namespace, pod["metadata"]["name"])

    async def until(self, done: Callable[[], object], within: float, what: str) -> float:
        """Poll every 2 ms until ``done()``; when it first held (time.monotonic())."""
        deadline = time.monotonic() + within
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{what}: not within {within:g}s (phase {self.phase()!r}, "
                    f"front Service on {self.selected_tier()})"
                )
            await asyncio.sleep(0.002)
        return time.monotonic()

    async def routed(self, phase: str, tier: str, within: float = 30) -> float:
        """Wait for ``phase`` with the front Service on ``tier``; when it was first seen."""
        return await self.until(
            lambda: self.phase() == phase and self.selected_tier() == tier,
            within,
            f"{phase} with the front Service on {tier}",
        )

    async def set_faults(self, pod: dict[str, Any], body: dict[str, Any] | None) -> None:
        """Merge ``body`` into the pod's faults; None clears them."""
        url = f"http://{pod['status']['podIP']}:8000/admin/faults"
        headers = {"Authorization": f"Bearer {FAULT_TOKEN}"}
        async with aiohttp.ClientSession() as session:
            if body is None:
                call = session.delete(url, headers=headers)
            else:
                call = session.post(url, json=body, headers=headers)
            async with call as resp:
                if resp.status != 200:
                    raise RuntimeError(f"faults on {url}: {resp.status} {await resp.text()}")

    async def gpu_memory(self, ratio: float | None) -> None:
        """Report GPU memory at ``ratio`` on the ready GPU pod (None: clear its faults)."""
        pod = self.ready_pods("gpu")[0]
        body = (
            None
            if ratio is None
            else {"gpu_memory": {"used_bytes": round(ratio * 1000), "total_bytes": 1000}}
        )
        await self.set_faults(pod, body)


async def apply_crd(api: KubeClient) -> None:
    """Create the VoiceService CRD and wait until the API server has established it."""
    crd = yaml.safe_load(CRD.read_text())
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    await api.request("POST", path, crd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = await api.get(f"{path}/{crd['metadata']['name']}") or {}
        conditions = (found.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the VoiceService CRD was not established within 60 s")


async def build_fake_nvml(work_dir: Path) -> Path:
    """Build the test-double libnvidia-ml.so.1 (C) into ``work_dir/fake-nvml``; its folder."""
    nvml_dir = work_dir / "fake-nvml"
    built = await asyncio.to_thread(
        subprocess.run, [str(FAKE_NVML_BUILD), str(nvml_dir)], capture_output=True, text=True
    )
    if built.returncode != 0:
        raise RuntimeError(f"building the fake NVML library failed: {built.stderr}")
    return nvml_dir


async def namespace_with_fault_token(api: KubeClient, prefix: str) -> str:
    """A new namespace holding the Secret ``faults`` (key ``token``: FAULT_TOKEN)."""
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    secret = {
        "metadata": {"name": "faults"},
        "data": {"token": base64.b64encode(FAULT_TOKEN.encode()).decode()},
    }
    await api.request("POST", f"/api/v1/namespaces/{namespace}/secrets", secret)
    return namespace


@contextlib.asynccontextmanager
async def failover_cluster(
    work_dir: Path,
    window_seconds: int,
    *,
    spec: dict[str, Any] | None = None,
    nodes: tuple[str, ...] = NODES,
    **operator_settings: Any,
) -> AsyncIterator[FailoverCluster]:
    """The cluster, the operator and the VoiceService, Serving with a ready fallback pod.

    ``spec``: top-level spec fields that replace the two-tier VoiceService's; ``nodes``:
    the node agent's nodes (``name:gpus:cpus``)."""
    reason = pod_network.available()
    if reason is not None:
        raise RuntimeError(reason)
    plane = ControlPlane(work_dir / "plane")
    # The GPU node's pods see one GPU through a fake libnvidia-ml.so.1 (a test double
    # in C): NVML numbers and faults enter where real ones would.
    nvml_dir = await build_fake_nvml(work_dir)
    nvml_state = work_dir / "nvml-state"
    nvml_state.write_text(HEALTHY_GPU)
    await asyncio.to_thread(plane.start)
    agent: NodeAgent | None = None
    operator: OperatorProcess | None = None
    api = KubeClient.from_kubeconfig(plane.admin_kubeconfig, work_dir / "credentials")
    informers: list[Informer] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await apply_crd(api)
        agent = NodeAgent(
            plane.admin_kubeconfig,
            list(nodes),
            work_dir / "agent",
            pod_network=pod_network.NamespacePodNetwork(plane.pod_cidr),
            node_env={
                GPU_NODE: {
                    "LD_LIBRARY_PATH": str(nvml_dir),
                    "VOICEOPS_FAKE_NVML_STATE": str(nvml_state),
                }
            },
            extra_env={
                "VOICEOPS_GPU_POLL_INTERVAL_SECONDS": "0.2",
                "VOICEOPS_LOG_LEVEL": "warning",
            },
        )
        await agent.start()
        namespace = await namespace_with_fault_token(api, "fo")
        base = f"/api/v1/namespaces/{namespace}"
        informers = [
            Informer(api, f"/apis/voiceops.io/v1alpha1/namespaces/{namespace}/voiceservices",
                     lambda *_: None),
            Informer(api, f"{base}/services", lambda *_: None),
            Informer(api, f"{base}/pods", lambda *_: None),
        ]  # fmt: skip
        tasks = [asyncio.create_task(i.run()) for i in informers]
        operator = OperatorProcess(
            plane.admin_kubeconfig,
            work_dir / "operator.log",
            namespaces=[namespace],
            scrape_interval_seconds=0.5,
            **operator_settings,
        )
        await operator.start()
        cluster = FailoverCluster(plane, agent, operator, namespace, api, *informers)
        body = two_tier_voiceservice(namespace, window_seconds)
        body["spec"].update(spec or {})
        await api.request(
            "POST", f"/apis/voiceops.io/v1alpha1/namespaces/{namespace}/voiceservices", body
        )
        await cluster.routed("Serving", "gpu", within=180)
        await cluster.until(lambda: cluster.ready_pods("fallback"), 60, "a ready fallback pod")
        await cluster.until(cluster.front_endpoints, 30, "the front Service's endpoints")
        yield cluster
    finally:
        if operator is not None:
            await operator.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if agent is not None:
            await agent.stop()
        await api.close()
        await asyncio.to_thread(plane.stop)
