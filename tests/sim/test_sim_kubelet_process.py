"""The simulated kubelet in process mode: real local processes, probes, restarts."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from voiceops_sim.apiserver import KubeApiEmulator
from voiceops_sim.kubelet import KubeletConfig, SimulatedKubelet, parse_node

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

HTTP_SERVER = [
    sys.executable,
    "-c",
    "import os, http.server as s; s.ThreadingHTTPServer((os.environ['VOICEOPS_HOST'], "
    "int(os.environ['VOICEOPS_PORT'])), s.SimpleHTTPRequestHandler).serve_forever()",
]
CRASHER = [sys.executable, "-c", "import sys; print('starting and failing'); sys.exit(3)"]


@pytest.fixture
async def kubelet(emulator: KubeApiEmulator, tmp_path: Path) -> AsyncIterator[SimulatedKubelet]:
    config = KubeletConfig(
        nodes=[parse_node("sim-cpu-0:0:8")],
        pod_mode="process",
        time_scale=0.02,  # probe periods of 10 s become 0.2 s; back-off 10 s becomes 0.2 s
        image_commands={"test/http-server": HTTP_SERVER, "test/crasher": CRASHER},
        log_dir=str(tmp_path / "pods"),
        resync_seconds=0.2,
    )
    async with SimulatedKubelet(emulator, config) as running:
        yield running


def _deployment(name: str, namespace: str, image: str, liveness_path: str = "/") -> dict:
    probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 10}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": image,
                            "ports": [{"name": "http", "containerPort": 8000}],
                            "env": [{"name": "GREETING", "value": "hi"}],
                            # As in production: liveness waits for the startup probe (slow starts).
                            "startupProbe": {**probe, "failureThreshold": 100},
                            "readinessProbe": probe,
                            "livenessProbe": {
                                **probe,
                                "httpGet": {"path": liveness_path, "port": "http"},
                                "failureThreshold": 2,
                            },
                        }
                    ]
                },
            },
        },
    }


def _pod(emulator: KubeApiEmulator, namespace: str, app: str) -> dict:
    pods = emulator.list("pods", namespace, label_selector=f"app={app}")
    return pods[0] if pods else {}


def _container(pod: dict) -> dict:
    return ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]


async def test_process_pod_serves_on_its_loopback_ip_and_gets_ready(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    emulator.create(_deployment("web", namespace, "test/http-server:1"))
    pod = await emulator.wait_for(
        lambda: (
            _container(_pod(emulator, namespace, "web")).get("ready")
            and _pod(emulator, namespace, "web")
        ),
        20,
    )
    ip = pod["status"]["podIP"]
    assert ip.startswith("127.0.0.")
    assert ip != "127.0.0.1"
    async with aiohttp.ClientSession() as http, http.get(f"http://{ip}:8000/") as rsp:
        assert rsp.status == 200
    await emulator.wait_for(
        lambda: (
            (emulator.get("deployments", "web", namespace) or {})
            .get("status", {})
            .get("readyReplicas")
            == 1
        )
    )
    log_text = kubelet.pod_log(namespace, pod["metadata"]["name"])
    assert log_text is not None
    assert "GET / HTTP" in log_text


async def test_killed_process_is_restarted_and_reported(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    emulator.create(_deployment("web", namespace, "test/http-server:1"))
    pod = await emulator.wait_for(
        lambda: (
            _container(_pod(emulator, namespace, "web")).get("ready")
            and _pod(emulator, namespace, "web")
        ),
        20,
    )
    name = pod["metadata"]["name"]
    assert kubelet.kill_pod_process(namespace, name)
    restarted = await emulator.wait_for(
        lambda: (
            _container(_pod(emulator, namespace, "web")).get("restartCount") == 1
            and _container(_pod(emulator, namespace, "web")).get("ready")
            and _container(_pod(emulator, namespace, "web"))
        ),
        20,
    )
    assert restarted["lastState"]["terminated"]["exitCode"] == 137
    assert restarted["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert _pod(emulator, namespace, "web")["metadata"]["name"] == name  # same pod, restarted


async def test_failing_liveness_restarts_the_container(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    emulator.create(_deployment("sick", namespace, "test/http-server:1", "/no-such-path"))
    restarted = await emulator.wait_for(
        lambda: (
            _container(_pod(emulator, namespace, "sick")).get("restartCount", 0) >= 1
            and _container(_pod(emulator, namespace, "sick"))
        ),
        20,
    )
    assert restarted["lastState"]["terminated"]["reason"] == "Error"


async def test_crashing_process_goes_into_crash_loop_back_off(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    emulator.create(_deployment("crash", namespace, "test/crasher:1"))

    def looping() -> dict | None:
        container = _container(_pod(emulator, namespace, "crash"))
        waiting = container.get("state", {}).get("waiting", {})
        return container if waiting.get("reason") == "CrashLoopBackOff" else None

    container = await emulator.wait_for(looping, 20)
    assert container["restartCount"] >= 2
    assert container["lastState"]["terminated"] == {
        **container["lastState"]["terminated"],
        "exitCode": 3,
        "reason": "Error",
    }
    assert "restarting failed container=main" in container["state"]["waiting"]["message"]
    pod = _pod(emulator, namespace, "crash")
    assert "starting and failing" in kubelet.pod_log(namespace, pod["metadata"]["name"])
    url = f"{emulator.url}/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}/log"
    async with aiohttp.ClientSession() as http, http.get(url) as rsp:  # what kubectl logs reads
        assert rsp.status == 200
        assert "starting and failing" in await rsp.text()


async def test_stop_kills_every_process(
    emulator: KubeApiEmulator, tmp_path: Path, namespace: str
) -> None:
    config = KubeletConfig(
        nodes=[parse_node("n:0:8")],
        pod_mode="process",
        time_scale=0.02,
        image_commands={"test/http-server": HTTP_SERVER},
        log_dir=str(tmp_path / "pods"),
        resync_seconds=0.2,
    )
    kubelet = SimulatedKubelet(emulator, config)
    await kubelet.start()
    try:
        body = _deployment("web", namespace, "test/http-server:1")
        body["spec"]["replicas"] = 2
        emulator.create(body)
        await emulator.wait_for(
            lambda: sum(1 for r in kubelet.runtimes.values() if getattr(r, "processes", None)) == 2,
            20,
        )
        pids = [p.pid for r in kubelet.runtimes.values() for p in r.processes.values()]
    finally:
        await kubelet.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_service_proxy_follows_the_selector(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    for name in ("blue", "green"):
        emulator.create(_deployment(name, namespace, "test/http-server:1"))
    emulator.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "front", "namespace": namespace},
            "spec": {
                "selector": {"app": "blue"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        }
    )
    for name in ("blue", "green"):
        await emulator.wait_for(
            lambda n=name: _container(_pod(emulator, namespace, n)).get("ready"), 20
        )
    url = await emulator.wait_for(lambda: _url(kubelet, namespace), 10)
    assert url.endswith(":8080")  # port 80 is served on 8080: no privileges needed
    blue_ip = _pod(emulator, namespace, "blue")["status"]["podIP"]
    assert kubelet.service_endpoints(namespace, "front") == [f"{blue_ip}:8000"]
    async with aiohttp.ClientSession() as http, http.get(f"{url}/?via=first") as rsp:
        assert rsp.status == 200
    emulator.patch("services", "front", namespace, {"spec": {"selector": {"app": "green"}}})
    green_ip = _pod(emulator, namespace, "green")["status"]["podIP"]
    assert kubelet.service_endpoints(namespace, "front") == [f"{green_ip}:8000"]
    async with aiohttp.ClientSession() as http, http.get(f"{url}/?via=second") as rsp:
        assert rsp.status == 200
    logs = {
        name: kubelet.pod_log(namespace, _pod(emulator, namespace, name)["metadata"]["name"])
        for name in ("blue", "green")
    }
    assert "via=first" in logs["blue"]
    assert "via=second" not in logs["blue"]
    assert "via=second" in logs["green"]


def _url(kubelet: SimulatedKubelet, namespace: str) -> str | None:
    try:
        return kubelet.service_url(namespace, "front")
    except LookupError:
        return None
