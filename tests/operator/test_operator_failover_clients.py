"""Failover that real clients follow: keep-alive pools, the advertised voice, empty tiers.

Real: the operator process, ``voiceops-service`` processes for both tiers (VITS with
the bundled joe voice on the GPU tier, on CPU here; espeak on the fallback tier),
the official ``openai`` client with its defaults (keep-alive pool, two retries) and
a plain client that opens a connection per request, all through the front Service.
Test doubles: the API emulator and the simulated kubelet, whose Service proxy keeps
an established connection on its backend, as kube-proxy does.

Each test failed before its fix: keep-alive clients stayed on the tier traffic had
left; the fallback refused the advertised model and voice; a dead GPU pod waited a
window with a ready fallback pod unused; a lost fallback pod left the front Service
empty while a ready GPU pod went unused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from voiceops_sim.apiserver import KubeApiEmulator
from voiceops_sim.kubelet import KubeletConfig, SimulatedKubelet, parse_node
from voiceops_sim.operator_process import OperatorProcess
from voiceops_sim.traffic import RequestRecord, Traffic

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "failover-fault-token"
TIER = "voiceops.io/tier"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


class Cluster:
    def __init__(self, emulator: KubeApiEmulator, kubelet: SimulatedKubelet, ns: str) -> None:
        self.emu = emulator
        self.kubelet = kubelet
        self.ns = ns

    def status(self) -> dict[str, Any]:
        return (self.emu.get("voiceservices", "tts", self.ns) or {}).get("status") or {}

    def selected_tier(self) -> str:
        service = self.emu.get("services", "tts", self.ns) or {}
        return ((service.get("spec") or {}).get("selector") or {}).get(TIER, "both")

    def pods(self, tier: str, ready: bool = True) -> list[dict[str, Any]]:
        found = []
        for pod in self.emu.list("pods", self.ns, label_selector=f"{TIER}={tier}"):
            conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
            if not ready or conds.get("Ready") == "True":
                found.append(pod)
        return found

    def front(self) -> str:
        return self.kubelet.service_url(self.ns, "tts")

    async def wait(self, predicate: Callable[[], Any], seconds: float, what: str) -> Any:
        return await self.emu.wait_for(predicate, seconds, what)

    async def routed(self, phase: str, tier: str, seconds: float = 30) -> float:
        """Wait for ``phase`` with the front Service on ``tier``; when it was first seen."""
        await self.wait(
            lambda: self.status().get("phase") == phase and self.selected_tier() == tier,
            seconds,
            f"{phase} with the front Service on {tier}",
        )
        return time.monotonic()

    async def set_faults(self, pod: dict[str, Any], body: dict[str, Any] | None) -> None:
        url = f"http://{pod['status']['podIP']}:8000/admin/faults"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as session:
            call = session.delete(url, headers=headers) if body is None else None
            call = call or session.post(url, json=body, headers=headers)
            async with call as resp:
                assert resp.status == 200, await resp.text()


def voiceservice(ns: str, window: float) -> dict[str, Any]:
    probes = {"periodSeconds": 1, "timeoutSeconds": 1}
    return {
        "apiVersion": "voiceops.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": "tts", "namespace": ns},
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
                "windowSeconds": window,
                "cooldownSeconds": 1,
                "recoverAfterSeconds": max(2.0, window),
            },
            "probes": {
                "startup": {**probes, "failureThreshold": 120},
                "readiness": {**probes, "failureThreshold": 2},
                # Generous: a busy 2-core CI box must not turn slow answers into restarts.
                "liveness": {"periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 6},
            },
            "faultInjection": {"enabled": True, "tokenSecretRef": {"name": "faults", "key": "t"}},
        },
    }


@pytest.fixture
async def cluster_for(tmp_path: Path) -> AsyncIterator[Callable[[float], Any]]:
    """Start the cluster and the operator; the test calls it with its failover window."""
    emulator = KubeApiEmulator(crd_files=[ROOT / "crds" / "voiceservice.yaml"])
    await emulator.start()
    kubelet = SimulatedKubelet(
        emulator,
        KubeletConfig(
            nodes=[parse_node("sim-gpu-0:1:8"), parse_node("sim-cpu-0:0:16")],
            pod_mode="process",
            log_dir=str(tmp_path / "pods"),
            resync_seconds=0.1,
            extra_env={
                "VOICEOPS_GPU_POLL_INTERVAL_SECONDS": "0.2",
                "VOICEOPS_LOG_LEVEL": "warning",
            },
        ),
    )
    await kubelet.start()
    ns = f"fo-{uuid.uuid4().hex[:6]}"
    emulator.ensure_namespace(ns)
    emulator.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "faults", "namespace": ns},
            "data": {"t": base64.b64encode(TOKEN.encode()).decode()},
        }
    )
    operator = OperatorProcess(
        emulator.write_kubeconfig(tmp_path / "kubeconfig"),
        tmp_path / "operator.log",
        namespaces=[ns],
        scrape_interval_seconds=0.5,
    )
    await operator.start()

    async def start(window: float) -> Cluster:
        cluster = Cluster(emulator, kubelet, ns)
        emulator.create(voiceservice(ns, window))
        await cluster.routed("Serving", "gpu", seconds=120)
        await cluster.wait(lambda: cluster.pods("fallback"), 60, "a ready fallback pod")
        return cluster

    try:
        yield start
    finally:
        await operator.stop()
        await kubelet.stop()
        await emulator.stop()
        with contextlib.suppress(OSError):
            print((tmp_path / "operator.log").read_text()[-3000:])


async def answered_by(traffic: Traffic, client: str, engine: str, after: float, n: int = 4) -> None:
    """Wait until ``client``'s last ``n`` answers, all started after ``after``, came from
    ``engine`` (a keep-alive client that never moves never gets there)."""

    def done() -> bool:
        recent = traffic.of(client, since=after)[-n:]
        return len(recent) == n and all(r.ok and r.engine == engine for r in recent)

    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, _summary(traffic.of(client, since=after)[-8:])
        await asyncio.sleep(0.05)


def _summary(records: list[RequestRecord]) -> str:
    return "; ".join(f"{r.status} {r.engine} {r.voice} {r.error[:80]}" for r in records)


async def test_keep_alive_clients_follow_a_failover_and_come_back(
    cluster_for: Callable[[float], Any],
) -> None:
    cluster: Cluster = await cluster_for(1.0)
    traffic = Traffic(cluster.front)
    model, voice = await traffic.discover()
    assert (model, voice) == ("vits", "en_US-joe-medium")  # what the service advertises
    traffic.start()
    try:
        await answered_by(traffic, "openai", "vits", after=0)
        gpu_pod = cluster.pods("gpu")[0]
        await cluster.set_faults(gpu_pod, {"gpu_memory": {"used_bytes": 99, "total_bytes": 100}})
        switched = await cluster.routed("FailedOver", "fallback")
        # The keep-alive pool leaves the GPU tier; the fallback speaks the advertised voice.
        await answered_by(traffic, "openai", "espeak", after=switched)
        await answered_by(traffic, "plain", "espeak", after=switched)
        spoken = {r.voice for r in traffic.of("openai", since=switched) if r.engine == "espeak"}
        assert spoken
        assert "" not in spoken

        await cluster.set_faults(gpu_pod, None)
        back = await cluster.routed("Serving", "gpu")
        await answered_by(traffic, "openai", "vits", after=back)
        await answered_by(traffic, "plain", "vits", after=back)
    finally:
        await traffic.stop()
    assert not traffic.failures(), _summary(traffic.failures())


async def test_a_killed_gpu_pod_fails_over_at_once(cluster_for: Callable[[float], Any]) -> None:
    # A window far longer than the test waits: only the fact path can fail over in time.
    cluster: Cluster = await cluster_for(60.0)
    traffic = Traffic(cluster.front)
    await traffic.discover()
    traffic.start()
    try:
        await answered_by(traffic, "openai", "vits", after=0)
        pod = cluster.pods("gpu")[0]
        killed = time.monotonic()
        assert cluster.kubelet.kill_pod_process(cluster.ns, pod["metadata"]["name"])
        switched = await cluster.routed("FailedOver", "fallback", seconds=15)
        last = cluster.status()["lastTransition"]
        assert last["reason"] == "NoReadyGPUPods"
        assert "at once" in last["message"]
        await answered_by(traffic, "openai", "espeak", after=killed)
    finally:
        await traffic.stop()
    assert not traffic.failures("openai"), _summary(traffic.failures("openai"))
    # The plain client (no retries) loses what was in flight on the dead pod and what
    # it sent in the moment before the switch (bench/failover_clients.py measures it);
    # nothing it sends once the front Service has switched fails.
    late = [r for r in traffic.failures("plain") if r.started >= switched]
    assert not late, _summary(late)
