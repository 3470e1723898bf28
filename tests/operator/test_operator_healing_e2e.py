"""The real operator heals real service processes on a real Kubernetes control plane.

Real: etcd, kube-apiserver, kube-controller-manager (Deployments, HPAs, EndpointSlices,
the node lifecycle controller and taint eviction) and kube-scheduler
(``voiceops_localcluster.control_plane``); the ``voiceops-operator run`` process (kopf, the spec
reconcile and the healing daemon); ``voiceops-service --engine espeak`` processes for
both tiers (fault injection on, token from a Secret), HTTP everywhere. Test double: the
node agent (kubelet and kube-proxy, ``voiceops_localcluster.node_agent``), whose pods run in
network namespaces of their own with real addresses, so the operator scrapes them at
``status.podIP`` as on a cluster (needs root, which CI has). GPU memory pressure comes
in through the service's ``/admin/faults``, so the operator sees it exactly as it
would: in the pod's /metrics.

The GPU node carries the usual ``nvidia.com/gpu`` NoSchedule taint, which the GPU tier
tolerates: the fallback tier never lands on it, so losing that node leaves the
fallback serving, as on a real GPU node pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from testsupport.needs import network_namespaces
from voiceops_localcluster import pod_network
from voiceops_localcluster.control_plane import ControlPlane
from voiceops_localcluster.failover_cluster import (
    GPU_NODE,
    NAME,
    TIER,
    FailoverCluster,
    apply_crd,
    namespace_with_fault_token,
)
from voiceops_localcluster.node_agent import Informer, KubeClient, NodeAgent, parse_node
from voiceops_localcluster.operator_process import OperatorProcess

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
HEALING_PASSES = re.compile(
    r'^voiceops_operator_reconcile_duration_seconds_count\{loop="healing"\} (\S+)$', re.M
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def healing_voiceservice(namespace: str) -> dict[str, Any]:
    """espeak on both tiers (quick to start), short windows, fault injection on."""
    probes = {"periodSeconds": 1, "timeoutSeconds": 1}
    return {
        "apiVersion": "voiceops.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"engine": "espeak", "voice": "en-us"},
            "gpu": {
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ]
            },
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
                # The default (30 s), longer than any wait here: a GPU pod that cannot be
                # scheduled fails over through the "no ready GPU pod" fact, at once.
                "unschedulableAfterSeconds": 30,
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


@dataclass
class HealingCluster(FailoverCluster):
    """FailoverCluster's views, plus HPAs, Events, Nodes and every phase and tier seen."""

    hpas: Informer
    events: Informer
    nodes: Informer
    # Every phase the VoiceService's watch showed and every tier its front Service's
    # did, in order: a flap between two samples cannot hide.
    phases_seen: list[str] = field(default_factory=list)
    tiers_seen: list[str] = field(default_factory=list)

    def fallback_min(self) -> int:
        hpa = self.hpas.items.get((self.namespace, f"{NAME}-fallback")) or {}
        return int((hpa.get("spec") or {}).get("minReplicas") or 0)

    def event(
        self, reason: str, type_: str, kind: str = "VoiceService", name: str = NAME
    ) -> dict[str, Any] | None:
        """An Event with ``reason`` and ``type_`` about the object ``kind``/``name``."""
        for event in self.events.items.values():
            about = event.get("involvedObject") or {}
            if (about.get("kind"), about.get("name"), event.get("reason"), event.get("type")) == (
                kind,
                name,
                reason,
                type_,
            ):
                return event
        return None

    async def create_voiceservice(self) -> None:
        await self.api.request(
            "POST",
            f"/apis/voiceops.io/v1alpha1/namespaces/{self.namespace}/voiceservices",
            healing_voiceservice(self.namespace),
        )

    def gpu_pods(self) -> list[dict[str, Any]]:
        """GPU-tier pods not being deleted, ready or not."""
        return [
            p
            for p in self.pods.items.values()
            if (p["metadata"].get("labels") or {}).get(TIER) == "gpu"
            and not p["metadata"].get("deletionTimestamp")
        ]

    def node_condition(self, node: str, kind: str = "Ready") -> str:
        found = self.nodes.items.get(("", node)) or {}
        for condition in (found.get("status") or {}).get("conditions") or []:
            if condition["type"] == kind:
                return str(condition["status"])
        return ""

    def node_taints(self, node: str) -> set[tuple[str, str]]:
        """The node's taints as (key, effect)."""
        found = self.nodes.items.get(("", node)) or {}
        return {(t["key"], t["effect"]) for t in (found.get("spec") or {}).get("taints") or []}

    def gpu_allocatable(self, node: str) -> str:
        found = self.nodes.items.get(("", node)) or {}
        return str(((found.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu"))

    async def delete_pod(self, pod: dict[str, Any]) -> None:
        """Delete the pod through the API, as an admin or a controller would."""
        meta = pod["metadata"]
        await self.api.request(
            "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        )

    async def healing_passes(self) -> int:
        """Healing passes the running operator process made (0 until its /metrics answers)."""
        try:
            text = await self.operator.metrics()
        except (aiohttp.ClientError, OSError):
            return 0
        match = HEALING_PASSES.search(text)
        return int(float(match.group(1))) if match else 0

    async def after_passes(self, passes: int, within: float = 30) -> None:
        """Wait until the operator has made ``passes`` more healing passes than now."""
        target = await self.healing_passes() + passes
        deadline = asyncio.get_running_loop().time() + within
        while await self.healing_passes() < target:
            assert asyncio.get_running_loop().time() < deadline, (
                f"the operator made fewer than {passes} healing passes in {within:g}s"
            )
            await asyncio.sleep(0.1)


def unschedulable_message(pod: dict[str, Any]) -> str:
    """The scheduler's PodScheduled=False message ('' while the pod is not marked so)."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition["type"] == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return str(condition.get("message") or "")
    return ""


@contextlib.asynccontextmanager
async def healing_cluster(
    plane: ControlPlane, work_dir: Path, serving: bool = True
) -> AsyncIterator[HealingCluster]:
    """Nodes and the operator on ``plane``; with ``serving``, the VoiceService too,
    Serving with a ready fallback pod."""
    api = KubeClient.from_kubeconfig(plane.admin_kubeconfig, work_dir / "credentials")
    gpu_node = parse_node(f"{GPU_NODE}:1:8")
    gpu_node.taints.append(dict(GPU_TAINT))
    agent = NodeAgent(
        plane.admin_kubeconfig,
        [gpu_node, parse_node("local-cpu-0:0:16")],
        work_dir / "agent",
        pod_network=pod_network.NamespacePodNetwork(plane.pod_cidr),
        extra_env={"VOICEOPS_GPU_POLL_INTERVAL_SECONDS": "0.2", "VOICEOPS_LOG_LEVEL": "warning"},
    )
    operator: OperatorProcess | None = None
    tasks: list[asyncio.Task[None]] = []
    started = False
    try:
        await apply_crd(api)
        await agent.start()
        started = True
        namespace = await namespace_with_fault_token(api, "heal")
        phases: list[str] = []
        tiers: list[str] = []

        def record_phase(_: str, vs: dict[str, Any]) -> None:
            phases.append(str((vs.get("status") or {}).get("phase", "")))

        def record_tier(_: str, svc: dict[str, Any]) -> None:
            if svc["metadata"]["name"] == NAME:
                tiers.append(((svc.get("spec") or {}).get("selector") or {}).get(TIER, "both"))

        base = f"/api/v1/namespaces/{namespace}"
        informers = [
            Informer(api, f"/apis/voiceops.io/v1alpha1/namespaces/{namespace}/voiceservices",
                     record_phase),
            Informer(api, f"{base}/services", record_tier),
            Informer(api, f"{base}/pods", lambda *_: None),
            Informer(api, f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers",
                     lambda *_: None),
            Informer(api, f"{base}/events", lambda *_: None),
            Informer(api, "/api/v1/nodes", lambda *_: None),
        ]  # fmt: skip
        tasks = [asyncio.create_task(i.run()) for i in informers]
        operator = OperatorProcess(
            plane.admin_kubeconfig,
            work_dir / "operator.log",
            namespaces=[namespace],
            scrape_interval_seconds=0.5,
            scrape_timeout_seconds=1,
        )
        await operator.start()
        cluster = HealingCluster(plane, agent, operator, namespace, api, *informers)
        cluster.phases_seen, cluster.tiers_seen = phases, tiers
        if serving:
            await cluster.create_voiceservice()
            await cluster.routed("Serving", "gpu", within=120)
            await cluster.until(lambda: cluster.ready_pods("fallback"), 60, "a ready fallback pod")
        yield cluster
    finally:
        if operator is not None:
            await operator.stop()
            print(operator.log_tail(60))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if started:
            await agent.stop()
        await api.close()


@pytest.fixture
async def starting_cluster(
    new_control_plane: Callable[..., ControlPlane], tmp_path: Path
) -> AsyncIterator[HealingCluster]:
    """As ``cluster``, before the VoiceService exists."""
    network_namespaces()
    plane = new_control_plane()
    try:
        async with healing_cluster(plane, tmp_path, serving=False) as healing:
            yield healing
    finally:
        await asyncio.to_thread(plane.stop)


@pytest.fixture
async def cluster(
    new_control_plane: Callable[..., ControlPlane], tmp_path: Path
) -> AsyncIterator[HealingCluster]:
    """A control plane of its own: the tests take nodes away, which no other test may see."""
    network_namespaces()
    plane = new_control_plane()
    try:
        async with healing_cluster(plane, tmp_path) as healing:
            yield healing
    finally:
        await asyncio.to_thread(plane.stop)


async def test_operator_heals_pressure_an_operator_restart_a_crash_and_lost_gpus(
    cluster: HealingCluster,
) -> None:
    # High memory → Degraded: both tiers serve, the fallback HPA minimum goes up.
    await cluster.gpu_memory(0.93)
    await cluster.routed("Degraded", "both")
    await cluster.until(lambda: cluster.fallback_min() == 2, 10, "fallback HPA min 2")

    # Critical memory → FailedOver: the front Service selects the fallback tier.
    await cluster.gpu_memory(0.99)
    await cluster.routed("FailedOver", "fallback")
    status = cluster.status()
    assert status["activeTier"] == "fallback"
    assert status["failovers"] == 1
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["FailedOver"]["status"] == "True"
    assert conds["FailedOver"]["reason"] == "GPUMemoryCritical"
    await cluster.until(
        lambda: cluster.event("GPUMemoryCritical", "Warning"), 10, "a Warning Event"
    )
    assert 'to="FailedOver"' in await cluster.operator.metrics()

    # Operator restarted mid-failover: state kept, no flapping. The restarted process
    # must have looked at least ten times (its own pass count) before we judge it.
    last = status["lastTransition"]
    await cluster.operator.stop()
    seen_from = (len(cluster.phases_seen), len(cluster.tiers_seen))
    await cluster.operator.start()
    await cluster.after_passes(10)
    assert set(cluster.phases_seen[seen_from[0] :]) <= {"FailedOver"}
    assert set(cluster.tiers_seen[seen_from[1] :]) <= {"fallback"}
    assert cluster.status()["lastTransition"] == last
    assert cluster.status()["failovers"] == 1
    assert "voiceops_operator_transitions_total{" not in await cluster.operator.metrics()

    # Pressure gone → Recovering (both tiers) → Serving (GPU tier, standby fallback).
    await cluster.gpu_memory(None)
    await cluster.routed("Recovering", "both")
    await cluster.routed("Serving", "gpu")
    await cluster.until(lambda: cluster.fallback_min() == 1, 10, "fallback HPA min 1")

    # The GPU pod's process dies: the pod is not ready, a fact the operator acts on at
    # once; the node agent restarts the container in the same pod and traffic comes back.
    (crashed,) = cluster.ready_pods("gpu")
    assert cluster.kill(crashed)
    await cluster.routed("FailedOver", "fallback")
    status = cluster.status()
    assert status["lastTransition"]["reason"] == "NoReadyGPUPods"
    assert "at once" in status["lastTransition"]["message"]
    assert status["failovers"] == 2

    def restarted() -> bool:
        for pod in cluster.ready_pods("gpu"):
            if pod["metadata"]["uid"] == crashed["metadata"]["uid"]:
                (container,) = pod["status"]["containerStatuses"]
                return int(container["restartCount"]) >= 1
        return False

    await cluster.until(restarted, 60, "the same GPU pod ready again after a restart")
    await cluster.routed("Recovering", "both")
    await cluster.routed("Serving", "gpu")

    # The GPUs go away (the device plugin reports none): like a real kubelet, the node
    # evicts nothing, and the running GPU pod keeps serving.
    (gpu_pod,) = cluster.ready_pods("gpu")
    await cluster.agent.set_gpu_capacity(GPU_NODE, 0)
    await cluster.until(lambda: cluster.gpu_allocatable(GPU_NODE) == "0", 10, "no GPU")
    await cluster.after_passes(4)
    assert [p["metadata"]["uid"] for p in cluster.ready_pods("gpu")] == [gpu_pod["metadata"]["uid"]]
    assert (cluster.phase(), cluster.selected_tier()) == ("Serving", "gpu")

    # The GPU pod goes (deleted, as a drain or the operator's own replacement of a pod
    # on a faulty GPU does): the real scheduler cannot place its replacement, and no
    # ready GPU pod is a fact: the failover comes at once, cooldown or not.
    await cluster.delete_pod(gpu_pod)
    await cluster.routed("FailedOver", "fallback")
    status = cluster.status()
    assert status["lastTransition"]["reason"] == "NoReadyGPUPods"
    assert "at once" in status["lastTransition"]["message"]
    assert status["failovers"] == 3

    def pending_for_want_of_a_gpu() -> bool:
        return any(
            "Insufficient nvidia.com/gpu" in unschedulable_message(p) for p in cluster.gpu_pods()
        )

    await cluster.until(pending_for_want_of_a_gpu, 30, "a replacement Pending for want of a GPU")
    (replacement,) = cluster.gpu_pods()
    # Neither node has a GPU to give: the CPU node has none, the GPU node reports 0.
    assert "0/2 nodes are available: 2 Insufficient nvidia.com/gpu" in unschedulable_message(
        replacement
    )
    assert replacement["status"]["phase"] == "Pending"
    assert not replacement["spec"].get("nodeName")

    # The GPU is back: the scheduler places the Pending pod and traffic returns to it.
    await cluster.agent.set_gpu_capacity(GPU_NODE, 1)
    await cluster.routed("Recovering", "both", within=60)
    await cluster.routed("Serving", "gpu")
    (serving,) = cluster.ready_pods("gpu")
    assert serving["metadata"]["uid"] == replacement["metadata"]["uid"]
    assert cluster.status()["failovers"] == 3


async def test_a_lost_gpu_node_fails_over_and_its_pod_is_evicted_then_comes_back(
    cluster: HealingCluster,
) -> None:
    (gpu_pod,) = cluster.ready_pods("gpu")
    assert gpu_pod["spec"]["nodeName"] == GPU_NODE
    assert all(p["spec"]["nodeName"] != GPU_NODE for p in cluster.ready_pods("fallback"))

    # The node stops reporting. After the monitor grace period the node lifecycle
    # controller marks it not ready and its pods not ready: the operator fails over.
    await cluster.agent.stop_heartbeat(GPU_NODE)
    await cluster.until(lambda: cluster.node_condition(GPU_NODE) == "Unknown", 60, "NotReady")
    await cluster.routed("FailedOver", "fallback")
    status = cluster.status()
    assert status["lastTransition"]["reason"] == "NoReadyGPUPods"
    assert "at once" in status["lastTransition"]["message"]
    assert status["failovers"] == 1

    # The unreachable node's NoExecute taint outlives the pod's toleration (4 s here):
    # the taint eviction controller deletes the pod, and its replacement cannot go
    # anywhere (the GPU node is tainted unreachable, the CPU node has no GPU).
    unreachable = ("node.kubernetes.io/unreachable", "NoExecute")
    await cluster.until(lambda: unreachable in cluster.node_taints(GPU_NODE), 30, "the taint")

    def evicted_and_stuck() -> bool:
        return any(
            "untolerated taint" in unschedulable_message(p)
            for p in cluster.gpu_pods()
            if p["metadata"]["uid"] != gpu_pod["metadata"]["uid"]
        )

    await cluster.until(evicted_and_stuck, 60, "the GPU pod evicted, its replacement Pending")
    evicted = gpu_pod["metadata"]["name"]
    await cluster.until(
        lambda: cluster.event("TaintManagerEviction", "Normal", "Pod", evicted),
        10,
        "the taint eviction controller's Event",
    )
    # (A real kubelet on a lost node could not confirm the deletion and the pod would
    # stay Terminating; the node agent is still running and confirms it. Either way the
    # ReplicaSet replaces a pod being deleted at once.)
    (replacement,) = cluster.gpu_pods()
    assert "1 Insufficient nvidia.com/gpu" in unschedulable_message(replacement)
    assert (cluster.phase(), cluster.selected_tier()) == ("FailedOver", "fallback")

    # The node is back: the taints go, the replacement is scheduled and traffic returns.
    await cluster.agent.resume_heartbeat(GPU_NODE)
    await cluster.routed("Recovering", "both", within=90)
    await cluster.routed("Serving", "gpu")
    (serving,) = cluster.ready_pods("gpu")
    assert serving["metadata"]["uid"] == replacement["metadata"]["uid"]
    assert serving["spec"]["nodeName"] == GPU_NODE


def gpu_container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return container


async def test_a_gpu_pod_crash_looping_oomkilled_from_its_start_fails_over_then_serves(
    starting_cluster: HealingCluster,
) -> None:
    """A GPU container killed for memory each time it starts (a model too big for its
    GPU): the service never serves from it, fails over as GPUCrashLoop once the restarts
    reach ``crashLoopRestarts`` (3), and comes back when the container stays up."""
    cluster = starting_cluster
    await cluster.create_voiceservice()
    kills: list[str] = []

    def running_again() -> dict[str, Any] | None:
        for pod in cluster.gpu_pods():
            container = gpu_container(pod)
            if "running" in (container.get("state") or {}) and int(
                container.get("restartCount") or 0
            ) == len(kills):
                return pod
        return None

    # SIGKILL is what the kernel's OOM killer sends: the node reports exit 137, OOMKilled.
    # Each kill comes as the container runs again, before it can turn ready.
    for n in range(3):
        await cluster.until(running_again, 90, f"the GPU container running after {n} kills")
        pod = running_again()
        assert pod is not None
        assert cluster.kill(pod)
        kills.append(pod["metadata"]["name"])
    assert len(set(kills)) == 1, "the same pod restarts its container, no replacement"

    await cluster.routed("FailedOver", "fallback", within=30)
    status = cluster.status()
    assert status["lastTransition"]["from"] == "Pending"
    assert status["lastTransition"]["reason"] == "GPUCrashLoop"
    assert kills[0] in status["lastTransition"]["message"]
    assert status["failovers"] == 1
    (pod,) = cluster.gpu_pods()
    container = gpu_container(pod)
    assert int(container["restartCount"]) == 3
    assert container["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert container["lastState"]["terminated"]["exitCode"] == 137
    assert "Serving" not in cluster.phases_seen, "no GPU pod was ever ready to serve"
    assert cluster.ready_pods("fallback"), "the fallback tier serves"

    # Left alone, the container comes up after its back-off: traffic returns to it.
    await cluster.routed("Recovering", "both", within=90)
    await cluster.routed("Serving", "gpu")
    (serving,) = cluster.ready_pods("gpu")
    assert serving["metadata"]["name"] == kills[0]
    assert cluster.status()["failovers"] == 1
