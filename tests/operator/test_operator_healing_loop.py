"""The healing loop against the Kubernetes API emulator (a test double) over HTTP.

Real pieces: the emulator's HTTP API, kubernetes_asyncio, the core's reconcile
(creates the children), the healing loop's scraping over loopback HTTP and its
patches and Events. Simulated: the pods themselves — stored in the emulator
with the status a kubelet would write, their /metrics served by small
loopback HTTP servers in the contract's format. (The full operator process
with real service processes is in test_operator_healing_e2e.py.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from voiceops_contract import metrics as m
from voiceops_operator import build, healing, policy
from voiceops_operator.kube import KubeApi, KubeError
from voiceops_operator.reconcile import Reconciler
from voiceops_operator.settings import OperatorSettings
from voiceops_sim.apiserver import KubeApiEmulator
from voiceops_sim.daemon_doubles import DaemonStopped, LiveObject

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30

pytestmark = pytest.mark.timeout(60)


class FakePodMetrics:
    """One loopback /metrics endpoint in the service's format, with a settable ratio."""

    def __init__(self) -> None:
        self.ratio = 0.4
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        async def metrics(_: web.Request) -> web.Response:
            used = int(self.ratio * 16 * GIB)
            return web.Response(
                text=(
                    f'{m.GPU_MEMORY_USED_BYTES.name}{{gpu="0"}} {used}\n'
                    f'{m.GPU_MEMORY_TOTAL_BYTES.name}{{gpu="0"}} {16 * GIB}\n'
                    f"{m.CUDA_OOM_TOTAL.name} 0\n{m.REQUESTS_IN_FLIGHT.name} 1\n"
                    f"{m.DEGRADED.name} 0\n"
                )
            )

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def pod(name: str, instance: str, tier: str, namespace: str, port: int, ready: bool = True):
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "labels": build.labels(instance, tier),  # type: ignore[arg-type]
        },
        "spec": {
            "containers": [
                {
                    "name": "service",
                    "image": "voiceops/service:0.1.0",
                    "ports": [{"name": "http", "containerPort": port}],
                }
            ]
        },
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
            "containerStatuses": [
                {"name": "service", "ready": ready, "restartCount": 0, "state": {"running": {}}}
            ],
        },
    }


@pytest.fixture
async def emulator() -> AsyncIterator[KubeApiEmulator]:
    emu = KubeApiEmulator(crd_files=[ROOT / "crds" / "voiceservice.yaml"], bookmark_interval=0.5)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def runtime(emulator: KubeApiEmulator, tmp_path: Path) -> AsyncIterator[Any]:
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    settings = OperatorSettings(scrape_interval_seconds=0.2, scrape_timeout_seconds=0.5)
    rt = await healing.make_runtime(settings, str(kubeconfig))
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
async def gpu_metrics() -> AsyncIterator[FakePodMetrics]:
    server = FakePodMetrics()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _setup(emulator: KubeApiEmulator, runtime: Any, gpu_port: int, **failover: Any):
    ns = f"heal-{uuid.uuid4().hex[:6]}"
    emulator.ensure_namespace(ns)
    spec = {
        "failover": {
            "windowSeconds": 1,
            "recoverAfterSeconds": 2,
            "cooldownSeconds": 1,
            "unschedulableAfterSeconds": 1,
            **failover,
        }
    }
    emulator.create(
        {
            "apiVersion": "voiceops.io/v1alpha1",
            "kind": "VoiceService",
            "metadata": {"name": "tts", "namespace": ns},
            "spec": spec,
        }
    )
    reconciler = Reconciler(runtime.api, runtime.settings, lambda *a: None)
    await reconciler.reconcile_body(emulator.get("voiceservices", "tts", ns))
    emulator.put_object(pod("tts-gpu-0", "tts", "gpu", ns, gpu_port))
    emulator.put_object(pod("tts-fallback-0", "tts", "fallback", ns, 1))
    return ns


async def step_until(
    loop: healing.HealingLoop,
    emulator: KubeApiEmulator,
    ns: str,
    done: Callable[[dict[str, Any]], bool],
    deadline_s: float = 10.0,
) -> list[Any]:
    """Run passes (like the daemon, 0.1 s apart) until ``done(vs)``; the transitions seen."""
    seen = []
    deadline = time.monotonic() + deadline_s
    while True:
        body = emulator.get("voiceservices", "tts", ns)
        if done(body):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {deadline_s}s; status: {body.get('status')}")
        decision = await loop.step(body)
        if decision is not None and decision.transition is not None:
            seen.append(decision.transition)
        await asyncio.sleep(0.1)


def phase_is(phase: str) -> Callable[[dict[str, Any]], bool]:
    return lambda vs: (vs.get("status") or {}).get("phase") == phase


def front_tier(emulator: KubeApiEmulator, ns: str) -> str | None:
    svc = emulator.get("services", "tts", ns)
    return svc["spec"]["selector"].get(build.LABEL_TIER, "both")


def fallback_min(emulator: KubeApiEmulator, ns: str) -> int:
    return emulator.get("horizontalpodautoscalers", "tts-fallback", ns)["spec"]["minReplicas"]


async def test_pressure_degrades_fails_over_and_recovers(
    emulator: KubeApiEmulator, runtime: Any, gpu_metrics: FakePodMetrics
) -> None:
    ns = await _setup(emulator, runtime, gpu_metrics.port)
    loop = healing.HealingLoop(runtime, ns, "tts")
    await step_until(loop, emulator, ns, phase_is("Serving"))
    assert front_tier(emulator, ns) == "gpu"

    gpu_metrics.ratio = 0.93
    await step_until(loop, emulator, ns, phase_is("Degraded"))
    vs = emulator.get("voiceservices", "tts", ns)
    assert vs["status"]["activeTier"] == "both"
    assert front_tier(emulator, ns) == "both"
    assert fallback_min(emulator, ns) == 2
    conds = {c["type"]: c for c in vs["status"]["conditions"]}
    assert conds["Degraded"]["status"] == "True"
    assert conds["Degraded"]["reason"] == "GPUMemoryHigh"
    assert conds["Ready"]["status"] in ("True", "False")  # the core's condition survives

    gpu_metrics.ratio = 0.99
    await step_until(loop, emulator, ns, phase_is("FailedOver"))
    vs = emulator.get("voiceservices", "tts", ns)
    assert front_tier(emulator, ns) == "fallback"
    assert vs["status"]["failovers"] == 1
    assert vs["status"]["lastTransition"]["reason"] == "GPUMemoryCritical"
    events = emulator.list("events", ns)
    reasons = [(e["reason"], e["type"]) for e in events]
    assert ("GPUMemoryCritical", "Warning") in reasons
    assert ("GPUMemoryHigh", "Warning") in reasons
    assert all(e["involvedObject"]["name"] == "tts" for e in events)

    # A restarted operator (fresh loop, state from status) keeps the failover.
    restarted = healing.HealingLoop(runtime, ns, "tts")
    flaps = await _steps_for(restarted, emulator, ns, seconds=1.5)
    assert flaps == []
    assert front_tier(emulator, ns) == "fallback"

    gpu_metrics.ratio = 0.3
    await step_until(restarted, emulator, ns, phase_is("Recovering"))
    assert front_tier(emulator, ns) == "both"
    await step_until(restarted, emulator, ns, phase_is("Serving"))
    assert front_tier(emulator, ns) == "gpu"
    assert fallback_min(emulator, ns) == 1
    vs = emulator.get("voiceservices", "tts", ns)
    conds = {c["type"]: c for c in vs["status"]["conditions"]}
    assert conds["Degraded"]["status"] == "False"
    assert conds["FailedOver"]["status"] == "False"
    samples = metric_samples(runtime)
    assert samples[("voiceops_operator_transitions_total", ("Serving", "Degraded"))] == 1
    assert samples[("voiceops_operator_transitions_total", ("Degraded", "FailedOver"))] == 1
    assert samples[("voiceops_operator_decision_latency_seconds_count", ())] == 2
    assert samples[("voiceops_operator_voiceservice_phase", ("Serving",))] == 1
    assert samples[("voiceops_operator_voiceservice_phase", ("FailedOver",))] == 0


def metric_samples(runtime: Any) -> dict[tuple[str, tuple[str, ...]], float]:
    """Operator metrics keyed by (sample name, (from, to) or (phase,) labels)."""
    out = {}
    for family in text_string_to_metric_families(runtime.metrics.exposition().decode()):
        for s in family.samples:
            if "from" in s.labels:
                key = (s.labels["from"], s.labels["to"])
            elif "phase" in s.labels:
                key = (s.labels["phase"],)
            else:
                key = ()
            out[(s.name, key)] = out.get((s.name, key), 0) + s.value
    return out


async def _steps_for(loop: healing.HealingLoop, emulator: KubeApiEmulator, ns: str, seconds: float):
    transitions = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        d = await loop.step(emulator.get("voiceservices", "tts", ns))
        if d is not None and d.transition is not None:
            transitions.append(d.transition)
        await asyncio.sleep(0.1)
    return transitions


async def test_unreadable_metrics_are_not_healthy(
    emulator: KubeApiEmulator, runtime: Any, gpu_metrics: FakePodMetrics
) -> None:
    ns = await _setup(emulator, runtime, gpu_metrics.port)
    loop = healing.HealingLoop(runtime, ns, "tts")
    await step_until(loop, emulator, ns, phase_is("Serving"))
    await gpu_metrics.stop()  # the pod stays Ready, its /metrics goes away
    await step_until(loop, emulator, ns, phase_is("Degraded"))
    vs = emulator.get("voiceservices", "tts", ns)
    assert vs["status"]["lastTransition"]["reason"] == "MetricsUnavailable"
    assert metric_samples(runtime)[("voiceops_operator_observation_errors_total", ())] >= 1


async def test_no_writes_in_steady_state(
    emulator: KubeApiEmulator, runtime: Any, gpu_metrics: FakePodMetrics
) -> None:
    ns = await _setup(emulator, runtime, gpu_metrics.port)
    loop = healing.HealingLoop(runtime, ns, "tts")
    await step_until(loop, emulator, ns, phase_is("Serving"))
    await _steps_for(loop, emulator, ns, seconds=0.3)  # settle the first writes
    before = runtime.api.counts.writes
    events = len(emulator.list("events", ns))
    await _steps_for(loop, emulator, ns, seconds=1.0)
    assert runtime.api.counts.writes == before
    assert len(emulator.list("events", ns)) == events


async def test_gpu_pod_unschedulable_fails_over_after_grace(
    emulator: KubeApiEmulator, runtime: Any, gpu_metrics: FakePodMetrics
) -> None:
    ns = await _setup(emulator, runtime, gpu_metrics.port, unschedulableAfterSeconds=2)
    loop = healing.HealingLoop(runtime, ns, "tts")
    await step_until(loop, emulator, ns, phase_is("Serving"))
    emulator.delete("pods", "tts-gpu-0", ns)
    pending = pod("tts-gpu-1", "tts", "gpu", ns, gpu_metrics.port, ready=False)
    pending["status"] = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
                "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        ],
    }
    emulator.put_object(pending)
    transitions = await step_until(loop, emulator, ns, phase_is("FailedOver"))
    assert [t.to_phase for t in transitions] == ["FailedOver"]
    assert front_tier(emulator, ns) == "fallback"


# --- restart resume: pending windows live in status.healing.signals ----------------------


def signals_of(emulator: KubeApiEmulator, ns: str) -> dict[str, str]:
    status = emulator.get("voiceservices", "tts", ns).get("status") or {}
    return (status.get("healing") or {}).get("signals") or {}


async def test_restart_mid_recovering_resumes_the_recover_after_clock(
    emulator: KubeApiEmulator, runtime: Any, gpu_metrics: FakePodMetrics
) -> None:
    ns = await _setup(emulator, runtime, gpu_metrics.port, recoverAfterSeconds=3)
    loop = healing.HealingLoop(runtime, ns, "tts")
    await step_until(loop, emulator, ns, phase_is("Serving"))
    gpu_metrics.ratio = 0.99
    await step_until(loop, emulator, ns, phase_is("FailedOver"))
    gpu_metrics.ratio = 0.3
    await step_until(loop, emulator, ns, phase_is("Recovering"))
    # The API server kept the healthy since-time (the CRD has the field).
    healthy_since = policy.from_rfc3339(signals_of(emulator, ns)[policy.SIGNAL_HEALTHY])

    # Restart: a fresh loop that knows only what the status says.
    restarted_at = time.time()
    restarted = healing.HealingLoop(runtime, ns, "tts")
    first = await restarted.step(emulator.get("voiceservices", "tts", ns))
    assert first is not None
    assert first.transition is None
    assert first.state.signals[policy.SIGNAL_HEALTHY] == pytest.approx(healthy_since, abs=1e-6)
    seen = await step_until(restarted, emulator, ns, phase_is("Serving"))
    (back,) = seen
    assert (back.from_phase, back.to_phase) == ("Recovering", "Serving")
    # The clock ran on from the first healthy observation, not from the restart.
    assert back.signal_since == pytest.approx(healthy_since, abs=1e-6)
    assert back.time >= healthy_since + 3
    assert back.time < restarted_at + 3, "the recover-after clock restarted with the operator"
    assert front_tier(emulator, ns) == "gpu"


async def test_restart_mid_pending_pressure_resumes_the_window(
    emulator: KubeApiEmulator, runtime: Any, gpu_metrics: FakePodMetrics
) -> None:
    ns = await _setup(emulator, runtime, gpu_metrics.port, windowSeconds=2)
    loop = healing.HealingLoop(runtime, ns, "tts")
    await step_until(loop, emulator, ns, phase_is("Serving"))
    gpu_metrics.ratio = 0.93
    await step_until(
        loop, emulator, ns, lambda _: policy.SIGNAL_PRESSURE in signals_of(emulator, ns)
    )
    pressure_since = policy.from_rfc3339(signals_of(emulator, ns)[policy.SIGNAL_PRESSURE])
    await _steps_for(loop, emulator, ns, seconds=1.2)  # part of the window passes
    assert emulator.get("voiceservices", "tts", ns)["status"]["phase"] == "Serving"

    restarted_at = time.time()
    restarted = healing.HealingLoop(runtime, ns, "tts")
    seen = await step_until(restarted, emulator, ns, phase_is("Degraded"))
    (degraded,) = seen
    assert degraded.reason == policy.REASON_GPU_MEMORY_HIGH
    assert degraded.signal_since == pytest.approx(pressure_since, abs=1e-6)
    assert degraded.time < restarted_at + 2, "the pressure window restarted with the operator"


# --- both writers at once: resourceVersion + retry on 409 -----------------------------


def condition_of(emulator: KubeApiEmulator, ns: str, type_: str) -> dict[str, Any]:
    status = emulator.get("voiceservices", "tts", ns)["status"]
    return next(c for c in status["conditions"] if c["type"] == type_)


def ready_condition(message: str) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": "True",
        "reason": "ServingTierReady",
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }


def intercept_status_patches(api: Any, before_first: Callable[[], Any]) -> list[int]:
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

    api.patch = patch
    return outcomes


async def test_healing_write_racing_the_core_does_not_clobber_ready(
    emulator: KubeApiEmulator, runtime: Any, gpu_metrics: FakePodMetrics
) -> None:
    ns = await _setup(emulator, runtime, gpu_metrics.port)
    loop = healing.HealingLoop(runtime, ns, "tts")
    await step_until(loop, emulator, ns, phase_is("Serving"))
    gpu_metrics.ratio = 0.93
    stale = emulator.get("voiceservices", "tts", ns)  # what the loop's body says

    def core_writes_ready() -> None:
        # The spec reconcile lands a new Ready condition between the loop's read and write.
        status = emulator.get("voiceservices", "tts", ns)["status"]
        others = [c for c in status["conditions"] if c["type"] != "Ready"]
        emulator.patch(
            "voiceservices",
            "tts",
            ns,
            {"status": {"conditions": [ready_condition("written by the core"), *others]}},
            subresource="status",
        )

    outcomes = intercept_status_patches(runtime.api, core_writes_ready)
    decision = await loop.step(stale)
    assert decision is not None
    assert outcomes == [409, 200], "the loop must send resourceVersion and retry on 409"
    assert condition_of(emulator, ns, "Ready")["message"] == "written by the core"
    assert condition_of(emulator, ns, "Degraded")["reason"] == policy.REASON_GPU_TIER_HEALTHY
    assert policy.SIGNAL_PRESSURE in signals_of(emulator, ns)


async def test_core_write_racing_the_healing_loop_keeps_its_routing(
    emulator: KubeApiEmulator, runtime: Any, gpu_metrics: FakePodMetrics
) -> None:
    ns = await _setup(emulator, runtime, gpu_metrics.port, cooldownSeconds=0)
    loop = healing.HealingLoop(runtime, ns, "tts")
    await step_until(loop, emulator, ns, phase_is("Serving"))
    gpu_metrics.ratio = 0.99
    stale = emulator.get("voiceservices", "tts", ns)
    emulator.patch(  # the GPU tier's pods became ready: the core has a status change to write
        "deployments",
        "tts-gpu",
        ns,
        {"status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}},
        subresource="status",
    )
    healer = healing.HealingLoop(runtime, ns, "tts")
    assert loop.state is not None
    long_ago = time.time() - 10  # the failure has held its window already
    healer.state = loop.state.model_copy(
        update={"signals": {policy.SIGNAL_PRESSURE: long_ago, policy.SIGNAL_FAILURE: long_ago}}
    )

    async def heal_first() -> None:
        decision = await healer.step(emulator.get("voiceservices", "tts", ns))
        assert decision is not None
        assert decision.phase == "FailedOver"

    # The loop fails over between the core's read and its status write.
    core_api = KubeApi(runtime.api_client, runtime.settings.api_timeout_seconds)
    outcomes = intercept_status_patches(core_api, heal_first)
    reconciler = Reconciler(core_api, runtime.settings, lambda *a: None)
    await reconciler.reconcile_body(stale)
    assert outcomes == [409, 200], "the core must send resourceVersion and retry on 409"
    status = emulator.get("voiceservices", "tts", ns)["status"]
    assert (status["phase"], status["activeTier"]) == ("FailedOver", "fallback")
    assert condition_of(emulator, ns, "FailedOver")["status"] == "True"
    assert status["gpu"]["readyReplicas"] == 1, "the core's own change landed too"
    assert front_tier(emulator, ns) == "fallback"


async def test_concurrent_writers_converge_without_losing_either_side(
    emulator: KubeApiEmulator, runtime: Any, gpu_metrics: FakePodMetrics
) -> None:
    ns = await _setup(emulator, runtime, gpu_metrics.port, cooldownSeconds=0)
    loop = healing.HealingLoop(runtime, ns, "tts")
    reconciler = Reconciler(runtime.api, runtime.settings, lambda *a: None)
    await step_until(loop, emulator, ns, phase_is("Serving"))
    for round_ in range(12):
        ready = round_ % 2
        gpu_metrics.ratio = 0.99 if round_ % 4 < 2 else 0.3
        emulator.patch(
            "deployments",
            "tts-gpu",
            ns,
            {"status": {"replicas": 1, "readyReplicas": ready, "updatedReplicas": 1}},
            subresource="status",
        )
        stale = emulator.get("voiceservices", "tts", ns)
        await asyncio.gather(loop.step(stale), reconciler.reconcile_body(stale))
        # Whatever the interleaving, each side's last word is in the status.
        status = emulator.get("voiceservices", "tts", ns)["status"]
        assert status["gpu"]["readyReplicas"] == ready
        assert status["phase"] == loop.state.phase
        assert status["activeTier"] == loop.state.active_tier
        types = [c["type"] for c in status["conditions"]]
        assert sorted(types) == ["Degraded", "FailedOver", "Progressing", "Ready"]


# --- cadence: from the spec, not SCRAPE_INTERVAL_SECONDS -------------------------------


async def test_loop_observes_at_the_spec_cadence_not_the_scrape_interval(
    emulator: KubeApiEmulator, gpu_metrics: FakePodMetrics, tmp_path: Path
) -> None:
    # SCRAPE_INTERVAL_SECONDS 60, window 1 s: the loop still looks every 0.25 s, so
    # pressure that starts after the first pass degrades within seconds, not a minute.
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    settings = OperatorSettings(scrape_interval_seconds=60, scrape_timeout_seconds=0.5)
    rt = await healing.make_runtime(settings, str(kubeconfig))
    stopped = DaemonStopped()
    task = None
    try:
        ns = await _setup(emulator, rt, gpu_metrics.port)
        loop = healing.HealingLoop(rt, ns, "tts")
        body = LiveObject(emulator, "voiceservices", ns, "tts")
        task = asyncio.ensure_future(healing.run_loop(loop, body, stopped, asyncio.Event()))
        await emulator.wait_for(
            lambda: phase_is("Serving")(emulator.get("voiceservices", "tts", ns)), 10, "Serving"
        )
        # Let every deadline the Serving transition set (window, recoverAfter, cooldown)
        # run out, so nothing but the cadence can bring the loop back.
        healthy = policy.from_rfc3339(signals_of(emulator, ns)[policy.SIGNAL_HEALTHY])
        await emulator.wait_for(lambda: time.time() > healthy + 2.3, 10, "deadlines passed")
        assert loop.interval == policy.MIN_OBSERVATION_INTERVAL_SECONDS
        gpu_metrics.ratio = 0.93
        await emulator.wait_for(
            lambda: phase_is("Degraded")(emulator.get("voiceservices", "tts", ns)),
            10,
            "Degraded at the spec's cadence",
        )
    finally:
        stopped.set()
        if task is not None:
            await asyncio.wait_for(task, 10)
        await rt.close()
