"""A local cluster with a two-tier VoiceService, for failover tests and benchmarks.

The API emulator and the simulated kubelet (test doubles) with one GPU node and
one CPU node, process pods (real ``voiceops-service`` processes: VITS with the
bundled joe voice on the GPU tier, espeak on the fallback tier), the real operator
process, and a namespace with the fault-injection token. ``FailoverCluster``
reads phases and routing, finds ready pods and injects faults through the pods'
token-guarded ``/admin/faults``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .apiserver import KubeApiEmulator
from .kubelet import KubeletConfig, SimulatedKubelet, parse_node
from .operator_process import OperatorProcess

CRD = Path(__file__).resolve().parents[2] / "crds" / "voiceservice.yaml"
FAULT_TOKEN = "failover-fault-token"
TIER = "voiceops.io/tier"
NAME = "tts"


def two_tier_voiceservice(namespace: str, window_seconds: float) -> dict[str, Any]:
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
                "recoverAfterSeconds": max(2.0, window_seconds),
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
    emulator: KubeApiEmulator
    kubelet: SimulatedKubelet
    operator: OperatorProcess
    namespace: str

    def status(self) -> dict[str, Any]:
        return (self.emulator.get("voiceservices", NAME, self.namespace) or {}).get("status") or {}

    def phase(self) -> str:
        return str(self.status().get("phase", ""))

    def selected_tier(self) -> str:
        service = self.emulator.get("services", NAME, self.namespace) or {}
        return ((service.get("spec") or {}).get("selector") or {}).get(TIER, "both")

    def ready_pods(self, tier: str) -> list[dict[str, Any]]:
        found = []
        for pod in self.emulator.list("pods", self.namespace, label_selector=f"{TIER}={tier}"):
            conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
            if conds.get("Ready") == "True":
                found.append(pod)
        return found

    def front_url(self) -> str:
        return self.kubelet.service_url(self.namespace, NAME)

    def front_endpoints(self) -> list[str]:
        return self.kubelet.service_endpoints(self.namespace, NAME)

    def kill(self, pod: dict[str, Any]) -> bool:
        """SIGKILL the pod's container process (the kubelet restarts it)."""
        return self.kubelet.kill_pod_process(self.namespace, pod["metadata"]["name"])

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


@contextlib.asynccontextmanager
async def failover_cluster(
    work_dir: Path, window_seconds: float, **operator_settings: Any
) -> AsyncIterator[FailoverCluster]:
    """The cluster, the operator and the VoiceService, Serving with a ready fallback pod."""
    emulator = KubeApiEmulator(crd_files=[CRD])
    await emulator.start()
    kubelet = SimulatedKubelet(
        emulator,
        KubeletConfig(
            nodes=[parse_node("sim-gpu-0:1:8"), parse_node("sim-cpu-0:0:16")],
            pod_mode="process",
            log_dir=str(work_dir / "pods"),
            resync_seconds=0.1,
            extra_env={
                "VOICEOPS_GPU_POLL_INTERVAL_SECONDS": "0.2",
                "VOICEOPS_LOG_LEVEL": "warning",
            },
        ),
    )
    operator: OperatorProcess | None = None
    try:
        await kubelet.start()
        namespace = f"fo-{uuid.uuid4().hex[:6]}"
        emulator.ensure_namespace(namespace)
        emulator.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "faults", "namespace": namespace},
                "data": {"token": base64.b64encode(FAULT_TOKEN.encode()).decode()},
            }
        )
        operator = OperatorProcess(
            emulator.write_kubeconfig(work_dir / "kubeconfig"),
            work_dir / "operator.log",
            namespaces=[namespace],
            scrape_interval_seconds=0.5,
            **operator_settings,
        )
        await operator.start()
        cluster = FailoverCluster(emulator, kubelet, operator, namespace)
        emulator.create(two_tier_voiceservice(namespace, window_seconds))
        await cluster.routed("Serving", "gpu", within=180)
        await cluster.until(lambda: cluster.ready_pods("fallback"), 60, "a ready fallback pod")
        yield cluster
    finally:
        if operator is not None:
            await operator.stop()
        await kubelet.stop()
        await emulator.stop()
