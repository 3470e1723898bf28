"""Observation: Prometheus parsing, pod status classification, scraping over HTTP."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from voiceops_contract import metrics as m
from voiceops_operator import observe
from voiceops_operator.policy import GPUMetrics

NOW = 1_800_000_000.0
GIB = 1 << 30


def service_metrics(used: dict[str, int], total: int = 16 * GIB, oom: int = 0, degraded=0) -> str:
    """Exposition text shaped like the service's, built with prometheus_client itself."""
    reg = CollectorRegistry()
    u = Gauge(m.GPU_MEMORY_USED_BYTES.name, "h", ["gpu"], registry=reg)
    t = Gauge(m.GPU_MEMORY_TOTAL_BYTES.name, "h", ["gpu"], registry=reg)
    for gpu_id, value in used.items():
        u.labels(gpu=gpu_id).set(value)
        t.labels(gpu=gpu_id).set(total)
    c = Counter(m.CUDA_OOM_TOTAL.name.removesuffix("_total"), "h", registry=reg)
    c.inc(oom)
    Gauge(m.REQUESTS_IN_FLIGHT.name, "h", registry=reg).set(3)
    Gauge(m.DEGRADED.name, "h", registry=reg).set(degraded)
    Gauge(m.QUEUE_DEPTH.name, "h", registry=reg).set(7)  # not read by the operator
    return generate_latest(reg).decode()


def test_parse_takes_the_fullest_gpu() -> None:
    text = service_metrics({"0": 4 * GIB, "1": 15 * GIB}, oom=2, degraded=1)
    got = observe.parse_gpu_metrics(text)
    assert got.memory_used_ratio == pytest.approx(15 / 16)
    assert got.oom_total == 2
    assert got.in_flight == 3
    assert got.degraded is True


def test_parse_without_gpu_gauges_has_no_ratio() -> None:
    got = observe.parse_gpu_metrics(service_metrics({}))
    assert got.memory_used_ratio is None
    assert got.degraded is False


def test_parse_ignores_zero_total() -> None:
    text = (
        f'{m.GPU_MEMORY_USED_BYTES.name}{{gpu="0"}} 5\n'
        f'{m.GPU_MEMORY_TOTAL_BYTES.name}{{gpu="0"}} 0\n'
    )
    assert observe.parse_gpu_metrics(text).memory_used_ratio is None


def test_parse_rejects_another_exporter() -> None:
    # Something answers 200 with valid Prometheus text, but it is not our service.
    with pytest.raises(observe.MetricsParseError, match="no voiceops_ samples"):
        observe.parse_gpu_metrics("# TYPE node_load1 gauge\nnode_load1 0.5\n")


def test_parse_rejects_garbage() -> None:
    with pytest.raises(observe.MetricsParseError, match="not Prometheus text"):
        observe.parse_gpu_metrics("<html>oops</html> 1 2 3\n")


# --- pod status shapes, as the API server returns them ---------------------------

RUNNING_READY: dict[str, Any] = {
    "metadata": {"name": "tts-gpu-abc", "labels": {"voiceops.io/tier": "gpu"}},
    "spec": {
        "containers": [{"name": "service", "ports": [{"name": "http", "containerPort": 8010}]}]
    },
    "status": {
        "phase": "Running",
        "podIP": "127.0.0.5",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-25T11:00:00Z"},
        ],
        "containerStatuses": [
            {
                "name": "service",
                "ready": True,
                "restartCount": 1,
                "state": {"running": {"startedAt": "2026-11-25T11:00:00Z"}},
                "lastState": {
                    "terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "x"}
                },
            }
        ],
    },
}

UNSCHEDULABLE: dict[str, Any] = {
    "metadata": {"name": "tts-gpu-xyz", "creationTimestamp": "2026-11-25T10:59:00Z"},
    "spec": {"containers": [{"name": "service"}]},
    "status": {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "lastTransitionTime": "2026-11-25T11:00:00Z",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. "
                "preemption: 0/3 nodes are available: 3 No preemption victims found.",
            }
        ],
    },
}

CRASH_LOOP: dict[str, Any] = {
    "metadata": {"name": "tts-gpu-loop"},
    "status": {
        "phase": "Running",
        "podIP": "127.0.0.6",
        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
        "containerStatuses": [
            {
                "name": "service",
                "ready": False,
                "restartCount": 4,
                "state": {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off 40s restarting failed container",
                    }
                },
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
            }
        ],
    },
}


def test_classify_ready_pod_keeps_metrics_and_last_oom() -> None:
    metrics = GPUMetrics(memory_used_ratio=0.5)
    pod = observe.classify_pod(RUNNING_READY, NOW, metrics)
    assert pod.name == "tts-gpu-abc"
    assert pod.ready is True
    assert pod.restarts == 1
    assert pod.crash_looping is False
    assert pod.last_termination_reason == "OOMKilled"
    assert pod.metrics == metrics
    assert observe.pod_metrics_url(RUNNING_READY) == "http://127.0.0.5:8010/metrics"


def test_classify_unschedulable_pod_uses_condition_time() -> None:
    pod = observe.classify_pod(UNSCHEDULABLE, NOW, GPUMetrics(0.1))
    assert pod.ready is False
    assert pod.metrics is None  # never trust metrics of a pod that is not ready
    assert pod.unschedulable_since == observe._timestamp("2026-11-25T11:00:00Z")
    assert "Insufficient nvidia.com/gpu" in pod.unschedulable_message
    assert observe.pod_metrics_url(UNSCHEDULABLE) is None


def test_classify_unschedulable_without_time_falls_back_to_creation() -> None:
    pod_dict = copy.deepcopy(UNSCHEDULABLE)
    del pod_dict["status"]["conditions"][0]["lastTransitionTime"]
    pod = observe.classify_pod(pod_dict, NOW)
    assert pod.unschedulable_since == observe._timestamp("2026-11-25T10:59:00Z")


def test_classify_node_selector_mismatch() -> None:
    pod_dict = copy.deepcopy(UNSCHEDULABLE)
    pod_dict["status"]["conditions"][0]["message"] = (
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    )
    pod = observe.classify_pod(pod_dict, NOW)
    assert pod.unschedulable_since is not None
    assert "node affinity/selector" in pod.unschedulable_message


def test_classify_crash_loop() -> None:
    pod = observe.classify_pod(CRASH_LOOP, NOW)
    assert pod.crash_looping is True
    assert pod.restarts == 4
    assert pod.last_termination_reason == "Error"
    assert pod.ready is False


def test_classify_terminated_oom_now() -> None:
    pod_dict = copy.deepcopy(CRASH_LOOP)
    pod_dict["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"exitCode": 137, "reason": "OOMKilled"}
    }
    pod = observe.classify_pod(pod_dict, NOW)
    assert pod.crash_looping is True
    assert pod.last_termination_reason == "OOMKilled"


@pytest.mark.parametrize(
    ("seconds_since_the_crash", "crash_looping"),
    [(5, True), (observe.CRASH_LOOP_MEMORY_SECONDS - 1, True),
     (observe.CRASH_LOOP_MEMORY_SECONDS, False), (3600, False)],
)  # fmt: skip
def test_running_again_after_a_crash_is_crash_looping_only_while_the_crash_is_recent(
    seconds_since_the_crash: float, crash_looping: bool
) -> None:
    """Between two crashes the container runs unready; long after, an unready pod with
    old restarts (its node lost) is something else."""
    pod_dict = copy.deepcopy(CRASH_LOOP)
    finished = datetime.fromtimestamp(NOW - seconds_since_the_crash, UTC)
    pod_dict["status"]["containerStatuses"][0]["state"] = {"running": {}}
    pod_dict["status"]["containerStatuses"][0]["lastState"] = {
        "terminated": {
            "exitCode": 137,
            "reason": "OOMKilled",
            "finishedAt": finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    }
    pod = observe.classify_pod(pod_dict, NOW)
    assert pod.crash_looping is crash_looping
    assert pod.last_termination_reason == "OOMKilled"


def test_a_ready_container_on_an_unready_pod_is_not_crash_looping() -> None:
    """Its node lost: the node lifecycle controller turns the pod unready, while the
    container status still says what the kubelet last saw, ready, a crash ago."""
    pod_dict = copy.deepcopy(CRASH_LOOP)
    container = pod_dict["status"]["containerStatuses"][0]
    container["state"] = {"running": {}}
    container["ready"] = True
    finished = datetime.fromtimestamp(NOW - 30, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    container["lastState"] = {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                             "finishedAt": finished}}  # fmt: skip
    pod = observe.classify_pod(pod_dict, NOW)
    assert pod.ready is False
    assert pod.crash_looping is False


def test_build_observation_skips_terminating_and_counts_fallback_ready() -> None:
    terminating = copy.deepcopy(RUNNING_READY)
    terminating["metadata"]["name"] = "tts-gpu-old"
    terminating["metadata"]["deletionTimestamp"] = "2026-11-25T11:00:00Z"
    fallback_ready = copy.deepcopy(RUNNING_READY)
    fallback_not_ready = copy.deepcopy(CRASH_LOOP)
    o = observe.build_observation(
        NOW,
        [UNSCHEDULABLE, RUNNING_READY, terminating],
        [fallback_ready, fallback_not_ready],
        {"tts-gpu-abc": GPUMetrics(0.4)},
        gpu_replicas=2,
    )
    assert [p.name for p in o.gpu_pods] == ["tts-gpu-abc", "tts-gpu-xyz"]
    assert o.gpu_pods[0].metrics == GPUMetrics(0.4)
    assert o.fallback_ready == 1
    assert o.gpu_replicas == 2
    assert o.time == NOW


# --- scraping over real HTTP on loopback ------------------------------------------


def _pod(name: str, port: int, path_ok: bool = True) -> dict[str, Any]:
    pod = copy.deepcopy(RUNNING_READY)
    pod["metadata"]["name"] = name
    pod["status"]["podIP"] = "127.0.0.1"
    pod["spec"]["containers"][0]["ports"][0]["containerPort"] = port
    return pod


@pytest.fixture
async def pod_servers() -> AsyncIterator[dict[str, int]]:
    """Four loopback servers: good, slow (hangs), HTTP 500, garbage."""
    behaviours = {
        "good": lambda: web.Response(text=service_metrics({"0": 12 * GIB})),
        "500": lambda: web.Response(status=500, text="boom"),
        "garbage": lambda: web.Response(text="this is not { prometheus\n"),
    }
    runners = []
    ports: dict[str, int] = {}

    release = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        await release.wait()  # hangs until teardown, far past the scrape timeout
        return web.Response(text="")

    for name in ("good", "slow", "500", "garbage"):
        app = web.Application()
        if name == "slow":
            app.router.add_get("/metrics", slow)
        else:
            fn = behaviours[name]

            async def handler(_: web.Request, fn=fn) -> web.Response:
                return fn()

            app.router.add_get("/metrics", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports[name] = runner.addresses[0][1]
        runners.append(runner)
    yield ports
    release.set()
    for runner in runners:
        await runner.cleanup()


async def test_scraper_marks_failures_unknown(pod_servers: dict[str, int]) -> None:
    pods = [_pod(name, port) for name, port in pod_servers.items()]
    not_ready = copy.deepcopy(CRASH_LOOP)
    closed = _pod("closed", 1)  # nothing listens on port 1
    async with aiohttp.ClientSession() as session:
        scraper = observe.PodScraper(session, timeout_seconds=0.5)
        result = await scraper.scrape([*pods, not_ready, closed])
    assert result.metrics["good"] is not None
    assert result.metrics["good"].memory_used_ratio == pytest.approx(0.75)
    for bad in ("slow", "500", "garbage", "closed"):
        assert result.metrics[bad] is None, bad
        assert result.errors[bad]
    assert "HTTP 500" in result.errors["500"]
    # Not ready but running: scraped for GPU hardware faults; its failure is no error.
    assert "tts-gpu-loop" not in result.errors


@pytest.fixture
async def fake_prometheus() -> AsyncIterator[str]:
    """A test double for Prometheus' /api/v1/query with canned vector results."""
    seen: list[str] = []

    async def query(request: web.Request) -> web.Response:
        seen.append(request.query["query"])
        result = [
            {
                "metric": {"__name__": m.GPU_MEMORY_USED_BYTES.name, "pod": "a", "gpu": "0"},
                "value": [NOW, str(15 * GIB)],
            },
            {
                "metric": {"__name__": m.GPU_MEMORY_TOTAL_BYTES.name, "pod": "a", "gpu": "0"},
                "value": [NOW, str(16 * GIB)],
            },
            {"metric": {"__name__": m.DEGRADED.name, "pod": "a"}, "value": [NOW, "1"]},
            {"metric": {"__name__": m.QUEUE_DEPTH.name, "pod": "a"}, "value": [NOW, "9"]},
        ]
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    assert seen
    assert 'namespace="ns"' in seen[0]
    await runner.cleanup()


async def test_prometheus_source(fake_prometheus: str) -> None:
    pods = [_pod("a", 1), _pod("b", 1)]
    async with aiohttp.ClientSession() as session:
        source = observe.PrometheusSource(session, fake_prometheus, timeout_seconds=1)
        result = await source.scrape("ns", pods)
    assert result.metrics["a"] == GPUMetrics(
        memory_used_ratio=pytest.approx(15 / 16), degraded=True
    )
    assert result.metrics["b"] is None
    assert result.errors["b"] == "no samples in Prometheus"


async def test_prometheus_unreachable_makes_everything_unknown() -> None:
    async with aiohttp.ClientSession() as session:
        source = observe.PrometheusSource(session, "http://127.0.0.1:1", timeout_seconds=0.5)
        result = await source.scrape("ns", [_pod("a", 1)])
    assert result.metrics == {"a": None}
    assert "ClientConnectorError" in result.errors["a"]
