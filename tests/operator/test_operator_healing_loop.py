"""The healing loop against a real Kubernetes control plane.

Real: etcd, kube-apiserver (the CRD's schema, merge patches with resourceVersion
preconditions, the status subresource), the controller manager (ReplicaSets and
pods under the Deployments the core's reconcile creates; Deployment status; HPAs)
and the scheduler (binding the pods, or reporting them unschedulable), the
kubernetes_asyncio client, the core's reconcile, and the healing loop's scraping
over loopback HTTP with its patches and Events. Test double: the node's kubelet
(``testsupport.loopback_kubelet.LoopbackKubelet``), which reports the pods Running
and Ready with loopback pod IPs where small /metrics servers in the contract's format
answer. Each loop reads its pods as in production, from an index kept by a pod watch
(``testsupport.pod_watch.WatchedPods`` through ``healing.pods_from_index``). The
loop is driven here pass by pass (``HealingLoop.step``) or as kopf's daemon runs it
(``healing.run_loop``). The full operator process with real service processes is in
test_operator_failover_clients.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from testsupport.loopback_kubelet import (
    VOICESERVICES,
    DaemonStopped,
    GpuMetrics,
    LiveObject,
    LoopbackKubelet,
    apply_crd,
    create_namespace,
    eventually,
)
from testsupport.pod_watch import WatchedPods
from voiceops_localcluster.control_plane import ControlPlane
from voiceops_localcluster.node_agent import KubeClient
from voiceops_operator import events, healing, names, policy, reasons, tiers
from voiceops_operator.kube import KubeApi, KubeError
from voiceops_operator.reconcile import Reconciler
from voiceops_operator.settings import OperatorSettings

GPUS = 64
SETTLE_SECONDS = 60.0  # pods of a new namespace ready; generous for a busy 2-core machine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest.fixture(scope="module")
def plane(new_control_plane: Callable[..., ControlPlane]) -> Iterator[ControlPlane]:
    """A control plane of this module's own: its Node takes every pod scheduled there."""
    started = new_control_plane()
    try:
        yield started
    finally:
        started.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(
    plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[KubeClient]:
    client = KubeClient.from_kubeconfig(
        plane.admin_kubeconfig, tmp_path_factory.mktemp("credentials")
    )
    try:
        await apply_crd(client)
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def kubelet(api: KubeClient) -> AsyncIterator[LoopbackKubelet]:
    node = LoopbackKubelet(api, gpus=GPUS)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()
    assert node.failures == [], node.failures


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def watched_pods(api: KubeClient) -> AsyncIterator[WatchedPods]:
    """The pods as the operator's pod watch sees them: the loops' pod source."""
    pods = WatchedPods(api)
    await pods.start()
    try:
        yield pods
    finally:
        await pods.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def namespace(api: KubeClient) -> AsyncIterator[str]:
    name = f"heal-{uuid.uuid4().hex[:6]}"
    await create_namespace(api, name)
    yield name
    # Its pods go with it (the kubelet finishes their deletion), freeing the Node.
    await api.request("DELETE", f"/api/v1/namespaces/{name}")


@pytest_asyncio.fixture(loop_scope="module")
async def gpu_metrics(kubelet: LoopbackKubelet, namespace: str) -> AsyncIterator[GpuMetrics]:
    metrics = kubelet.run(namespace)
    try:
        yield metrics
    finally:
        await metrics.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def runtime(plane: ControlPlane) -> AsyncIterator[healing.HealingRuntime]:
    settings = OperatorSettings(scrape_interval_seconds=0.2, scrape_timeout_seconds=0.5)
    rt = await healing.make_runtime(settings, str(plane.admin_kubeconfig))
    try:
        yield rt
    finally:
        await rt.close()


@dataclass
class Service:
    """The VoiceService ``tts`` of one test's namespace, read through the real API."""

    api: KubeClient
    namespace: str

    def path(self, plural: str, name: str, group: str = "") -> str:
        base = f"/apis/{group}" if group else "/api/v1"
        return f"{base}/namespaces/{self.namespace}/{plural}/{name}"

    async def vs(self) -> dict[str, Any]:
        found = await self.api.get(f"{VOICESERVICES.format(namespace=self.namespace)}/tts")
        assert found is not None
        return found

    async def status(self) -> dict[str, Any]:
        return (await self.vs()).get("status") or {}

    async def patch_status(self, status: dict[str, Any]) -> None:
        path = f"{VOICESERVICES.format(namespace=self.namespace)}/tts/status"
        await self.api.request("PATCH", path, {"status": status}, patch="merge")

    async def front_tier(self) -> str:
        svc = await self.api.get(self.path("services", "tts"))
        assert svc is not None
        return str(svc["spec"]["selector"].get(names.LABEL_TIER, "both"))

    async def fallback_min(self) -> int:
        hpa = await self.api.get(
            self.path("horizontalpodautoscalers", "tts-fallback", "autoscaling/v2")
        )
        assert hpa is not None
        return int(hpa["spec"]["minReplicas"])

    async def gpu_ready_replicas(self) -> int:
        deployment = await self.api.get(self.path("deployments", "tts-gpu", "apps/v1"))
        assert deployment is not None
        return int((deployment.get("status") or {}).get("readyReplicas") or 0)

    async def gpu_ready_is(self, count: int) -> bool:
        return await self.gpu_ready_replicas() == count

    async def signals(self) -> dict[str, str]:
        return signals_in(await self.vs())

    async def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in (await self.status())["conditions"] if c["type"] == type_)

    async def operator_events(self) -> list[dict[str, Any]]:
        """Events the operator posted (the controllers' and the scheduler's left out)."""
        found = await self.api.request("GET", f"/api/v1/namespaces/{self.namespace}/events")
        return [
            e
            for e in found.get("items") or []
            if (e.get("source") or {}).get("component") == events.COMPONENT
        ]

    async def gpu_pods(self) -> list[dict[str, Any]]:
        """The GPU tier's pods wherever they are (bound to a node or not)."""
        selector = f"{names.LABEL_INSTANCE}=tts,{names.LABEL_TIER}=gpu"
        found = await self.api.request(
            "GET", f"/api/v1/namespaces/{self.namespace}/pods", params={"labelSelector": selector}
        )
        return list(found.get("items") or [])


async def _setup(
    api: KubeClient,
    kubelet: LoopbackKubelet,
    runtime: healing.HealingRuntime,
    namespace: str,
    ready_tiers: tuple[str, ...] = tiers.TIERS,
    **failover: Any,
) -> Service:
    """The VoiceService, its children (the core's reconcile), a ready pod in each tier asked."""
    spec = {
        "failover": {
            "windowSeconds": 1,
            "recoverAfterSeconds": 2,
            "cooldownSeconds": 1,
            "unschedulableAfterSeconds": 1,
            **failover,
        }
    }
    body = {
        "apiVersion": "voiceops.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": "tts", "namespace": namespace},
        "spec": spec,
    }
    await api.request("POST", VOICESERVICES.format(namespace=namespace), body)
    service = Service(api, namespace)
    await runtime.reconciler.reconcile_body(await service.vs())
    # The ReplicaSet controller makes the pods, the scheduler binds them, the kubelet runs them.
    await eventually(
        lambda: all(len(kubelet.ready_pods(namespace, tier)) == 1 for tier in ready_tiers),
        SETTLE_SECONDS,
        f"one ready pod in the tiers {ready_tiers} of {namespace}",
    )
    return service


async def step_until(
    loop: healing.HealingLoop,
    service: Service,
    done: Callable[[dict[str, Any]], bool],
    deadline_s: float = 10.0,
) -> list[policy.Transition]:
    """Run passes (like the daemon, 0.1 s apart) until ``done(vs)``; the transitions seen."""
    seen = []
    deadline = time.monotonic() + deadline_s
    while True:
        body = await service.vs()
        if done(body):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {deadline_s}s; status: {body.get('status')}")
        decision = await loop.step(body)
        if decision is not None and decision.transition is not None:
            seen.append(decision.transition)
        await asyncio.sleep(0.1)  # the pace of the passes, not a wait for something


async def _steps_for(
    loop: healing.HealingLoop, service: Service, seconds: float
) -> list[policy.Transition]:
    """Passes 0.1 s apart for ``seconds``; the transitions they made."""
    transitions = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        d = await loop.step(await service.vs())
        if d is not None and d.transition is not None:
            transitions.append(d.transition)
        await asyncio.sleep(0.1)
    return transitions


def new_loop(
    runtime: healing.HealingRuntime, namespace: str, pods: WatchedPods
) -> healing.HealingLoop:
    """The loop of ``tts`` as the operator's daemon makes it: pods from the pod watch."""
    return healing.HealingLoop(runtime, namespace, "tts", pods.source(namespace, "tts"))


def signals_in(vs: dict[str, Any]) -> dict[str, str]:
    """The pending signals the healing loop recorded in the status (restarts resume them)."""
    return (((vs.get("status") or {}).get("healing") or {}).get("signals")) or {}


def phase_is(phase: str) -> Callable[[dict[str, Any]], bool]:
    return lambda vs: (vs.get("status") or {}).get("phase") == phase


def metric_samples(runtime: healing.HealingRuntime) -> dict[tuple[str, tuple[str, ...]], float]:
    """Operator metrics keyed by (sample name, (from, to) or (phase,) labels)."""
    out: dict[tuple[str, tuple[str, ...]], float] = {}
    for family in text_string_to_metric_families(runtime.metrics.exposition().decode()):
        for s in family.samples:
            key: tuple[str, ...]
            if "from" in s.labels:
                key = (s.labels["from"], s.labels["to"])
            elif "phase" in s.labels:
                key = (s.labels["phase"],)
            else:
                key = ()
            out[(s.name, key)] = out.get((s.name, key), 0) + s.value
    return out


async def test_pressure_degrades_fails_over_and_recovers(
    watched_pods: WatchedPods,
    api: KubeClient,
    kubelet: LoopbackKubelet,
    runtime: healing.HealingRuntime,
    namespace: str,
    gpu_metrics: GpuMetrics,
) -> None:
    service = await _setup(api, kubelet, runtime, namespace)
    loop = new_loop(runtime, namespace, watched_pods)
    await step_until(loop, service, phase_is("Serving"))
    assert await service.front_tier() == "gpu"

    gpu_metrics.ratio = 0.93
    await step_until(loop, service, phase_is("Degraded"))
    status = await service.status()
    assert status["activeTier"] == "both"
    assert await service.front_tier() == "both"
    assert await service.fallback_min() == 2
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Degraded"]["status"] == "True"
    assert conds["Degraded"]["reason"] == "GPUMemoryHigh"
    assert conds["Ready"]["status"] in ("True", "False")  # the core's condition survives

    gpu_metrics.ratio = 0.99
    await step_until(loop, service, phase_is("FailedOver"))
    status = await service.status()
    assert await service.front_tier() == "fallback"
    assert status["failovers"] == 1
    assert status["lastTransition"]["reason"] == "GPUMemoryCritical"
    events = await service.operator_events()
    event_reasons = [(e["reason"], e["type"]) for e in events]
    assert ("GPUMemoryCritical", "Warning") in event_reasons
    assert ("GPUMemoryHigh", "Warning") in event_reasons
    assert all(
        (e["involvedObject"]["kind"], e["involvedObject"]["name"]) == ("VoiceService", "tts")
        for e in events
    )

    # A restarted operator (fresh loop, state from status) keeps the failover.
    restarted = new_loop(runtime, namespace, watched_pods)
    flaps = await _steps_for(restarted, service, seconds=1.5)
    assert flaps == []
    assert await service.front_tier() == "fallback"

    gpu_metrics.ratio = 0.3
    await step_until(restarted, service, phase_is("Recovering"))
    assert await service.front_tier() == "both"
    await step_until(restarted, service, phase_is("Serving"))
    assert await service.front_tier() == "gpu"
    assert await service.fallback_min() == 1
    conds = {c["type"]: c for c in (await service.status())["conditions"]}
    assert conds["Degraded"]["status"] == "False"
    assert conds["FailedOver"]["status"] == "False"
    samples = metric_samples(runtime)
    assert samples[("voiceops_operator_transitions_total", ("Serving", "Degraded"))] == 1
    assert samples[("voiceops_operator_transitions_total", ("Degraded", "FailedOver"))] == 1
    assert samples[("voiceops_operator_decision_latency_seconds_count", ())] == 2
    assert samples[("voiceops_operator_voiceservice_phase", ("Serving",))] == 1
    assert samples[("voiceops_operator_voiceservice_phase", ("FailedOver",))] == 0


async def test_unreadable_metrics_are_not_healthy(
    watched_pods: WatchedPods,
    api: KubeClient,
    kubelet: LoopbackKubelet,
    runtime: healing.HealingRuntime,
    namespace: str,
    gpu_metrics: GpuMetrics,
) -> None:
    service = await _setup(api, kubelet, runtime, namespace)
    loop = new_loop(runtime, namespace, watched_pods)
    await step_until(loop, service, phase_is("Serving"))
    await gpu_metrics.stop()  # the pod stays Ready, its /metrics goes away
    await step_until(loop, service, phase_is("Degraded"))
    status = await service.status()
    assert status["lastTransition"]["reason"] == "MetricsUnavailable"
    assert metric_samples(runtime)[("voiceops_operator_observation_errors_total", ())] >= 1


async def test_no_writes_in_steady_state(
    watched_pods: WatchedPods,
    api: KubeClient,
    kubelet: LoopbackKubelet,
    runtime: healing.HealingRuntime,
    namespace: str,
    gpu_metrics: GpuMetrics,
) -> None:
    service = await _setup(api, kubelet, runtime, namespace)
    loop = new_loop(runtime, namespace, watched_pods)
    await step_until(loop, service, phase_is("Serving"))
    await _steps_for(loop, service, seconds=0.3)  # settle the first writes
    before = runtime.api.counts.writes
    events = len(await service.operator_events())
    await _steps_for(loop, service, seconds=1.0)
    assert runtime.api.counts.writes == before
    assert len(await service.operator_events()) == events


async def test_gpu_pod_lost_with_no_gpu_left_to_reschedule_on_fails_over_once(
    watched_pods: WatchedPods,
    api: KubeClient,
    kubelet: LoopbackKubelet,
    runtime: healing.HealingRuntime,
    namespace: str,
    gpu_metrics: GpuMetrics,
) -> None:
    service = await _setup(api, kubelet, runtime, namespace, unschedulableAfterSeconds=2)
    loop = new_loop(runtime, namespace, watched_pods)
    await step_until(loop, service, phase_is("Serving"))
    await kubelet.set_gpu_capacity(0)  # the node's GPU is gone
    try:
        await _scheduler_sees_no_gpu(api, kubelet, namespace)
        # The GPU pod is lost; its ReplicaSet makes a new one, which no node can take.
        (lost,) = kubelet.pods(namespace, "gpu")
        await api.request("DELETE", service.path("pods", lost["metadata"]["name"]))
        transitions = await step_until(loop, service, phase_is("FailedOver"))
        assert [t.to_phase for t in transitions] == ["FailedOver"]
        # Serving with no ready GPU pod and a ready fallback pod is a fact: at once, not
        # after the unschedulable grace (which is for GPU pods that never started).
        assert transitions[0].reason == reasons.NO_READY_GPU_PODS
        assert await service.front_tier() == "fallback"

        async def replacement_unschedulable() -> bool:
            return any(
                c.get("reason") == "Unschedulable"
                and "Insufficient nvidia.com/gpu" in c.get("message", "")
                for p in await service.gpu_pods()
                for c in (p.get("status") or {}).get("conditions") or []
            )

        await eventually(replacement_unschedulable, 30, "the new GPU pod unschedulable")
        flaps = await _steps_for(loop, service, seconds=0.5)
        assert flaps == [], "failed over once, and stays failed over"
    finally:
        await kubelet.set_gpu_capacity(GPUS)


async def test_gpu_pods_that_never_schedule_fail_over_after_the_grace(
    watched_pods: WatchedPods,
    api: KubeClient,
    kubelet: LoopbackKubelet,
    runtime: healing.HealingRuntime,
    namespace: str,
    gpu_metrics: GpuMetrics,
) -> None:
    await kubelet.set_gpu_capacity(0)  # no free GPU anywhere from the start
    try:
        await _scheduler_sees_no_gpu(api, kubelet, namespace)
        service = await _setup(
            api, kubelet, runtime, namespace, ("fallback",), unschedulableAfterSeconds=2
        )
        loop = new_loop(runtime, namespace, watched_pods)
        transitions = await step_until(loop, service, phase_is("FailedOver"))
        (failover,) = transitions
        assert (failover.from_phase, failover.reason) == ("Pending", "GPUUnschedulable")
        assert "Insufficient nvidia.com/gpu" in failover.message
        (pod,) = await service.gpu_pods()
        scheduled = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
        since = policy.from_rfc3339(scheduled["lastTransitionTime"])
        # The scheduler's condition has whole seconds: the grace ran from its time.
        assert failover.time >= since + 2
        assert await service.front_tier() == "fallback"
    finally:
        await kubelet.set_gpu_capacity(GPUS)


async def _scheduler_sees_no_gpu(api: KubeClient, kubelet: LoopbackKubelet, namespace: str) -> None:
    """Until the scheduler's cache has the node without a GPU: a pod asking for one on that
    node is reported unschedulable (then it goes)."""
    canary = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpu-canary", "namespace": namespace},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": kubelet.node},
            "containers": [
                {
                    "name": "c",
                    "image": "canary",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
    }
    pods = f"/api/v1/namespaces/{namespace}/pods"
    await api.request("POST", pods, canary)

    async def unschedulable() -> bool:
        pod = await api.get(f"{pods}/gpu-canary") or {}
        return any(
            c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
            for c in (pod.get("status") or {}).get("conditions") or []
        )

    await eventually(unschedulable, 30, "the scheduler without the node's GPU")
    await api.request("DELETE", f"{pods}/gpu-canary")


# --- restart resume: pending windows live in status.healing.signals ----------------------


async def test_restart_mid_recovering_resumes_the_recover_after_clock(
    watched_pods: WatchedPods,
    api: KubeClient,
    kubelet: LoopbackKubelet,
    runtime: healing.HealingRuntime,
    namespace: str,
    gpu_metrics: GpuMetrics,
) -> None:
    service = await _setup(api, kubelet, runtime, namespace, recoverAfterSeconds=3)
    loop = new_loop(runtime, namespace, watched_pods)
    await step_until(loop, service, phase_is("Serving"))
    gpu_metrics.ratio = 0.99
    await step_until(loop, service, phase_is("FailedOver"))
    gpu_metrics.ratio = 0.3
    await step_until(loop, service, phase_is("Recovering"))
    # The API server kept the healthy since-time (the CRD has the field).
    healthy_since = policy.from_rfc3339((await service.signals())[policy.SIGNAL_HEALTHY])

    # Restart: a fresh loop that knows only what the status says.
    restarted_at = time.time()
    restarted = new_loop(runtime, namespace, watched_pods)
    first = await restarted.step(await service.vs())
    assert first is not None
    assert first.transition is None
    assert first.state.signals[policy.SIGNAL_HEALTHY] == pytest.approx(healthy_since, abs=1e-6)
    seen = await step_until(restarted, service, phase_is("Serving"))
    (back,) = seen
    assert (back.from_phase, back.to_phase) == ("Recovering", "Serving")
    # The clock ran on from the first healthy observation, not from the restart.
    assert back.signal_since == pytest.approx(healthy_since, abs=1e-6)
    assert back.time >= healthy_since + 3
    assert back.time < restarted_at + 3, "the recover-after clock restarted with the operator"
    assert await service.front_tier() == "gpu"


async def test_restart_mid_pending_pressure_resumes_the_window(
    watched_pods: WatchedPods,
    api: KubeClient,
    kubelet: LoopbackKubelet,
    runtime: healing.HealingRuntime,
    namespace: str,
    gpu_metrics: GpuMetrics,
) -> None:
    service = await _setup(api, kubelet, runtime, namespace, windowSeconds=2)
    loop = new_loop(runtime, namespace, watched_pods)
    await step_until(loop, service, phase_is("Serving"))
    gpu_metrics.ratio = 0.93
    await step_until(loop, service, lambda vs: policy.SIGNAL_PRESSURE in signals_in(vs))
    pressure_since = policy.from_rfc3339((await service.signals())[policy.SIGNAL_PRESSURE])
    await _steps_for(loop, service, seconds=1.2)  # part of the window passes
    assert (await service.status())["phase"] == "Serving"

    restarted_at = time.time()
    restarted = new_loop(runtime, namespace, watched_pods)
    seen = await step_until(restarted, service, phase_is("Degraded"))
    (degraded,) = seen
    assert degraded.reason == reasons.GPU_MEMORY_HIGH
    assert degraded.signal_since == pytest.approx(pressure_since, abs=1e-6)
    assert degraded.time < restarted_at + 2, "the pressure window restarted with the operator"


# --- both writers at once: resourceVersion + retry on 409 -----------------------------


def ready_condition(message: str) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": "True",
        "reason": "ServingTierReady",
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }


def intercept_status_patches(api: KubeApi, before_first: Callable[[], Any]) -> list[int]:
    """Run ``before_first`` just before the first VoiceService status patch goes out.

    Returns a list that records the HTTP status of every status patch (409s included).
    """
    original = api.patch
    outcomes: list[int] = []

    async def patch(api_version, kind, namespace, name, body, subresource=""):  # type: ignore[no-untyped-def]
        if kind == "VoiceService" and subresource == "status":
            if not outcomes:
                result = before_first()
                if asyncio.iscoroutine(result):
                    await result
            try:
                written = await original(api_version, kind, namespace, name, body, subresource)
            except KubeError as exc:
                outcomes.append(exc.status)
                raise
            outcomes.append(200)
            return written
        return await original(api_version, kind, namespace, name, body, subresource)

    api.patch = patch  # type: ignore[method-assign]
    return outcomes


async def test_healing_write_racing_the_core_does_not_clobber_ready(
    watched_pods: WatchedPods,
    api: KubeClient,
    kubelet: LoopbackKubelet,
    runtime: healing.HealingRuntime,
    namespace: str,
    gpu_metrics: GpuMetrics,
) -> None:
    service = await _setup(api, kubelet, runtime, namespace)
    loop = new_loop(runtime, namespace, watched_pods)
    await step_until(loop, service, phase_is("Serving"))
    gpu_metrics.ratio = 0.93
    stale = await service.vs()  # what the loop's body says

    async def core_writes_ready() -> None:
        # The spec reconcile lands a new Ready condition between the loop's read and write.
        status = await service.status()
        others = [c for c in status["conditions"] if c["type"] != "Ready"]
        await service.patch_status(
            {"conditions": [ready_condition("written by the core"), *others]}
        )

    outcomes = intercept_status_patches(runtime.api, core_writes_ready)
    decision = await loop.step(stale)
    assert decision is not None
    assert outcomes == [409, 200], "the loop must send resourceVersion and retry on 409"
    assert (await service.condition("Ready"))["message"] == "written by the core"
    assert (await service.condition("Degraded"))["reason"] == reasons.GPU_TIER_HEALTHY
    assert policy.SIGNAL_PRESSURE in await service.signals()


async def test_core_write_racing_the_healing_loop_keeps_its_routing(
    watched_pods: WatchedPods,
    api: KubeClient,
    kubelet: LoopbackKubelet,
    runtime: healing.HealingRuntime,
    namespace: str,
    gpu_metrics: GpuMetrics,
    plane: ControlPlane,
) -> None:
    service = await _setup(api, kubelet, runtime, namespace, cooldownSeconds=0)
    loop = new_loop(runtime, namespace, watched_pods)
    await step_until(loop, service, phase_is("Serving"))
    gpu_metrics.ratio = 0.99
    # The GPU tier's pod is ready and the Deployment controller has counted it; the core
    # wrote its status before that (set here: the loop's first pass had the core apply
    # its routing, which recorded the count), so it has a change to write.
    await eventually(service.gpu_ready_replicas, 30, "the GPU Deployment's ready replica")
    await service.patch_status({"gpu": {"readyReplicas": 0}})
    stale = await service.vs()
    assert (stale["status"].get("gpu") or {}).get("readyReplicas", 0) == 0
    healer = new_loop(runtime, namespace, watched_pods)
    assert loop.state is not None
    long_ago = time.time() - 10  # the failure has held its window already
    healer.state = loop.state.model_copy(
        update={"signals": {policy.SIGNAL_PRESSURE: long_ago, policy.SIGNAL_FAILURE: long_ago}}
    )

    async def heal_first() -> None:
        decision = await healer.step(await service.vs())
        assert decision is not None
        assert decision.phase == "FailedOver"

    # The loop fails over between the core's read and its status write.
    core_api = await KubeApi.connect(
        runtime.settings.api_timeout_seconds, str(plane.admin_kubeconfig)
    )
    outcomes = intercept_status_patches(core_api, heal_first)
    reconciler = Reconciler(core_api, runtime.settings, runtime.events)
    try:
        await reconciler.reconcile_body(stale)
    finally:
        await core_api.close()
    # 409: the core sent the resourceVersion it computed from. On the fresh status it
    # finds nothing left to write: the reconcile the loop asked for to apply its
    # routing recorded the count already.
    assert outcomes == [409], "the core must send resourceVersion and retry on 409"
    status = await service.status()
    assert (status["phase"], status["activeTier"]) == ("FailedOver", "fallback")
    assert (await service.condition("FailedOver"))["status"] == "True"
    assert status["gpu"]["readyReplicas"] == 1, "the core's own change landed too"
    assert await service.front_tier() == "fallback"


async def test_concurrent_writers_converge_without_losing_either_side(
    watched_pods: WatchedPods,
    api: KubeClient,
    kubelet: LoopbackKubelet,
    runtime: healing.HealingRuntime,
    namespace: str,
    gpu_metrics: GpuMetrics,
) -> None:
    service = await _setup(api, kubelet, runtime, namespace, cooldownSeconds=0)
    loop = new_loop(runtime, namespace, watched_pods)
    reconciler = runtime.reconciler
    await step_until(loop, service, phase_is("Serving"))
    (gpu_pod,) = kubelet.pods(namespace, "gpu")
    for round_ in range(12):
        ready = round_ % 2
        gpu_metrics.ratio = 0.99 if round_ % 4 < 2 else 0.3
        # The GPU pod's readiness flips; the real Deployment controller counts it.
        await kubelet.set_ready(namespace, gpu_pod["metadata"]["name"], bool(ready))
        await eventually(
            lambda ready=ready: service.gpu_ready_is(ready),
            30,
            f"the GPU Deployment at {ready} ready",
        )
        stale = await service.vs()
        await asyncio.gather(loop.step(stale), reconciler.reconcile_body(stale))
        # Whatever the interleaving, each side's last word is in the status.
        status = await service.status()
        assert loop.state is not None
        assert status["gpu"]["readyReplicas"] == ready
        assert status["phase"] == loop.state.phase
        assert status["activeTier"] == loop.state.active_tier
        types = [c["type"] for c in status["conditions"]]
        assert sorted(types) == ["Degraded", "FailedOver", "Progressing", "Ready"]


# --- cadence: from the spec, not SCRAPE_INTERVAL_SECONDS -------------------------------


async def test_loop_observes_at_the_spec_cadence_not_the_scrape_interval(
    watched_pods: WatchedPods,
    api: KubeClient,
    kubelet: LoopbackKubelet,
    plane: ControlPlane,
    namespace: str,
    gpu_metrics: GpuMetrics,
) -> None:
    # SCRAPE_INTERVAL_SECONDS 60, window 1 s: the loop still looks every 0.25 s, so
    # pressure that starts after the first pass degrades within seconds, not a minute.
    settings = OperatorSettings(scrape_interval_seconds=60, scrape_timeout_seconds=0.5)
    rt = await healing.make_runtime(settings, str(plane.admin_kubeconfig))
    stopped = DaemonStopped()
    task = None
    try:
        service = await _setup(api, kubelet, rt, namespace)
        loop = new_loop(rt, namespace, watched_pods)
        collection = VOICESERVICES.format(namespace=namespace)
        async with LiveObject(api, collection, namespace, "tts") as body:
            task = asyncio.ensure_future(healing.run_loop(loop, body, stopped, asyncio.Event()))
            await eventually(lambda: phase_is("Serving")(dict(body)), 10, "Serving", every=0.02)
            # Let every deadline the Serving transition set (window, recoverAfter, cooldown)
            # run out, so nothing but the cadence can bring the loop back.
            healthy = policy.from_rfc3339((await service.signals())[policy.SIGNAL_HEALTHY])
            await eventually(lambda: time.time() > healthy + 2.3, 10, "deadlines passed")
            assert loop.interval == policy.MIN_OBSERVATION_INTERVAL_SECONDS
            gpu_metrics.ratio = 0.93
            await eventually(
                lambda: phase_is("Degraded")(dict(body)), 10, "Degraded at the spec's cadence"
            )
            stopped.set()
            await asyncio.wait_for(task, 10)
    finally:
        stopped.set()
        if task is not None and not task.done():
            await asyncio.wait_for(task, 10)
        await rt.close()
