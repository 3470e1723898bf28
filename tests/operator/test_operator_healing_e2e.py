"""The real operator process heals real service processes on a simulated cluster.

Real: the ``voiceops-operator run`` process (kopf, the spec reconcile and the
healing daemon), ``voiceops-service --engine espeak`` processes for both tiers
(fault injection on, token from a Secret), HTTP everywhere. Test doubles: the
Kubernetes API emulator and the simulated kubelet (scheduler, Deployment and
HPA controllers, process pods on 127.0.0.x with probes) from voiceops_sim.
GPU memory pressure comes in through the service's ``/admin/faults``, so the
operator sees it exactly as it would: in the pod's /metrics.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from voiceops_sim.apiserver import KubeApiEmulator
from voiceops_sim.kubelet import KubeletConfig, SimulatedKubelet, parse_node
from voiceops_sim.operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-fault-token"
GPU_NODE = "sim-gpu-0"
TIER = "voiceops.io/tier"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[KubeApiEmulator, SimulatedKubelet]]:
    emulator = KubeApiEmulator(crd_files=[ROOT / "crds" / "voiceservice.yaml"])
    await emulator.start()
    config = KubeletConfig(
        nodes=[parse_node(f"{GPU_NODE}:1:8"), parse_node("sim-cpu-0:0:16")],
        pod_mode="process",
        time_scale=0.5,
        log_dir=str(tmp_path / "pods"),
        resync_seconds=0.2,
        extra_env={"VOICEOPS_GPU_POLL_INTERVAL_SECONDS": "0.2", "VOICEOPS_LOG_LEVEL": "warning"},
    )
    kubelet = SimulatedKubelet(emulator, config)
    await kubelet.start()
    try:
        yield emulator, kubelet
    finally:
        await kubelet.stop()
        await emulator.stop()


def voiceservice(namespace: str) -> dict[str, Any]:
    probes = {"periodSeconds": 1, "timeoutSeconds": 1}
    return {
        "apiVersion": "voiceops.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": "tts", "namespace": namespace},
        "spec": {
            "model": {"engine": "espeak", "voice": "en-us"},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "fallback": {
                "standbyReplicas": 1,
                "maxReplicas": 3,
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            },
            "failover": {
                "windowSeconds": 2,
                "cooldownSeconds": 2,
                "recoverAfterSeconds": 3,
                "unschedulableAfterSeconds": 1,
            },
            "probes": {
                "startup": {**probes, "failureThreshold": 60},
                "readiness": {"periodSeconds": 2, "timeoutSeconds": 2},
                # Generous: a busy 2-core CI box must not turn slow answers into restarts.
                "liveness": {"periodSeconds": 4, "timeoutSeconds": 4, "failureThreshold": 5},
            },
            "faultInjection": {
                "enabled": True,
                "tokenSecretRef": {"name": "faults", "key": "token"},
            },
        },
    }


def vs_status(emulator: KubeApiEmulator, ns: str) -> dict[str, Any]:
    return (emulator.get("voiceservices", "tts", ns) or {}).get("status") or {}


def front_selector(emulator: KubeApiEmulator, ns: str) -> dict[str, str]:
    return ((emulator.get("services", "tts", ns) or {}).get("spec") or {}).get("selector") or {}


def transition_event(
    emulator: KubeApiEmulator, ns: str, reason: str, type_: str
) -> dict[str, Any] | None:
    for event in emulator.list("events", ns):
        about = event.get("involvedObject") or {}
        if (about.get("kind"), event.get("reason"), event.get("type")) == (
            "VoiceService",
            reason,
            type_,
        ):
            return event
    return None


def fallback_min(emulator: KubeApiEmulator, ns: str) -> int:
    hpa = emulator.get("horizontalpodautoscalers", "tts-fallback", ns) or {}
    return int((hpa.get("spec") or {}).get("minReplicas") or 0)


def ready_gpu_pod(emulator: KubeApiEmulator, ns: str) -> dict[str, Any] | None:
    for pod in emulator.list("pods", ns, label_selector=f"{TIER}=gpu"):
        conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True":
            return pod
    return None


async def set_faults(pod: dict[str, Any], body: dict[str, Any] | None) -> None:
    url = f"http://{pod['status']['podIP']}:8000/admin/faults"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        if body is None:
            async with session.delete(url, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
        else:
            async with session.post(url, json=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()


def memory(ratio: float) -> dict[str, Any]:
    total = 80 * 2**30
    return {"gpu_memory": {"used_bytes": int(total * ratio), "total_bytes": total}}


async def test_operator_heals_pressure_restart_and_lost_gpus(
    cluster: tuple[KubeApiEmulator, SimulatedKubelet], tmp_path: Path
) -> None:
    emulator, kubelet = cluster
    ns = f"e2e-{uuid.uuid4().hex[:6]}"
    emulator.ensure_namespace(ns)
    emulator.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "faults", "namespace": ns},
            # data, not stringData: the emulator does not fold stringData into data.
            "data": {"token": base64.b64encode(TOKEN.encode()).decode()},
        }
    )
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    operator = OperatorProcess(
        kubeconfig,
        tmp_path / "operator.log",
        namespaces=[ns],
        scrape_interval_seconds=0.5,
        scrape_timeout_seconds=1,
    )
    await operator.start()
    try:
        emulator.create(voiceservice(ns))
        await emulator.wait_for(
            lambda: (
                vs_status(emulator, ns).get("phase") == "Serving" and ready_gpu_pod(emulator, ns)
            ),
            60,
            "Serving with a ready GPU pod",
        )
        assert front_selector(emulator, ns).get(TIER) == "gpu"
        gpu_pod = ready_gpu_pod(emulator, ns)
        assert gpu_pod is not None

        # High memory → Degraded: both tiers serve, the fallback HPA minimum goes up.
        await set_faults(gpu_pod, memory(0.93))
        await routed(emulator, ns, "Degraded", "both")
        await emulator.wait_for(lambda: fallback_min(emulator, ns) == 2, 10, "fallback min 2")

        # Critical memory → FailedOver: the front Service selects the fallback tier.
        await set_faults(gpu_pod, memory(0.99))
        await routed(emulator, ns, "FailedOver", "fallback")
        status = vs_status(emulator, ns)
        assert status["activeTier"] == "fallback"
        assert status["failovers"] == 1
        conds = {c["type"]: c for c in status["conditions"]}
        assert conds["FailedOver"]["status"] == "True"
        assert conds["FailedOver"]["reason"] == "GPUMemoryCritical"
        await emulator.wait_for(
            lambda: transition_event(emulator, ns, "GPUMemoryCritical", "Warning"),
            10,
            "a Warning Event about the failover",
        )
        text = await operator.metrics()
        assert 'to="FailedOver"' in text

        # Operator restarted mid-failover: state kept, no flapping.
        last = status["lastTransition"]
        await operator.stop()
        await operator.start()
        await _hold(emulator, ns, seconds=4.0, phase="FailedOver", tier="fallback")
        assert vs_status(emulator, ns)["lastTransition"] == last
        assert vs_status(emulator, ns)["failovers"] == 1

        # Pressure gone → Recovering (both tiers) → Serving (GPU tier, standby fallback).
        await set_faults(gpu_pod, None)
        await routed(emulator, ns, "Recovering", "both")
        await routed(emulator, ns, "Serving", "gpu")
        await emulator.wait_for(lambda: fallback_min(emulator, ns) == 1, 10, "fallback min 1")

        # The GPU goes away: the pod is evicted, its replacement cannot be scheduled.
        # No ready GPU pod is a fact: the failover comes at once, cooldown or not.
        evicted = await kubelet.set_gpu_capacity(GPU_NODE, 0)
        assert evicted
        await routed(emulator, ns, "FailedOver", "fallback")
        status = vs_status(emulator, ns)
        assert status["lastTransition"]["reason"] == "NoReadyGPUPods"
        assert "Insufficient nvidia.com/gpu" in status["lastTransition"]["message"]
        assert status["failovers"] == 2
    finally:
        await operator.stop()
        with contextlib.suppress(OSError):
            print((tmp_path / "operator.log").read_text()[-4000:])


async def routed(emulator: KubeApiEmulator, ns: str, phase: str, tier: str) -> None:
    """Wait until status says ``phase`` and the front Service selects ``tier``.

    The loop writes status first, then the Service (so a concurrent spec
    reconcile builds from the new routing); both land within one pass.
    """

    def done() -> bool:
        selected = front_selector(emulator, ns).get(TIER, "both")
        return vs_status(emulator, ns).get("phase") == phase and selected == tier

    await emulator.wait_for(done, 20, f"{phase} with the front Service on {tier}")


async def _hold(emulator: KubeApiEmulator, ns: str, seconds: float, phase: str, tier: str) -> None:
    """Fail if phase or front tier change at any moment during ``seconds``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        assert vs_status(emulator, ns).get("phase") == phase
        assert front_selector(emulator, ns).get(TIER) == tier
        await asyncio.sleep(0.05)
