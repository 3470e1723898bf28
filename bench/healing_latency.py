"""Decision latency: injected GPU pressure visible in a pod's /metrics → front Service on fallback.

Real parts: a real ``voiceops-service --engine espeak`` process on loopback
with fault injection enabled (its /metrics reports the injected GPU memory as
gpu "0"), the Kubernetes API emulator (a test double) over HTTP, the core's
reconcile to create the children, and the healing loop exactly as the kopf
daemon runs it (``healing.run_loop``: scrape interval, recheck at window end,
status write, Service patch, Event). Not kopf itself: the loop is driven
directly so the clock starts at the fault, not at kopf's start-up.

Each run: a fresh VoiceService (window 2 s, cooldown 2 s) reaches Serving;
the cooldown passes; ``POST /admin/faults`` sets memory to 99 %; t0 = the
first time the pod's /metrics shows it (polled every 10 ms); t1 = the
emulator commits the front Service with ``voiceops.io/tier: fallback``.

The loop observes at the cadence ``policy.observation_interval`` derives from
the spec (a quarter window, 0.25 s .. SCRAPE_INTERVAL_SECONDS); ``--interval``
is SCRAPE_INTERVAL_SECONDS, default the operator's default (5 s). Ratios:
against the goal (window + 1 s) and against the liveness-probe restart path
(10 s period × 3 failures = 30 s).

    .venv/bin/python bench/healing_latency.py [--runs 20] [--interval 5] [--window 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from voiceops_sim.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.9"
LIVENESS_PATH_S = 30  # periodSeconds 10 × failureThreshold 3: the restart path's floor
TOKEN = "bench-fault-token"


def pod(name: str, instance: str, tier: str, ns: str, port: int) -> dict[str, Any]:
    from voiceops_operator import build

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": build.labels(instance, tier)},
        "spec": {
            "containers": [{"name": "service", "ports": [{"name": "http", "containerPort": port}]}]
        },
        "status": {
            "phase": "Running",
            "podIP": HOST,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
            "containerStatuses": [
                {"name": "service", "ready": True, "restartCount": 0, "state": {"running": {}}}
            ],
        },
    }


async def wait_until(predicate: Any, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


async def bench(
    runs: int, interval: float, window: int, service: subprocess.Popen, port: int
) -> dict[str, Any]:
    from voiceops_operator import healing, observe, policy
    from voiceops_operator.reconcile import Reconciler
    from voiceops_operator.settings import OperatorSettings
    from voiceops_sim.apiserver import KubeApiEmulator
    from voiceops_sim.daemon_doubles import DaemonStopped, LiveObject

    emulator = KubeApiEmulator(crd_files=[ROOT / "crds" / "voiceservice.yaml"])
    await emulator.start()
    tmp = tempfile.mkdtemp()
    kubeconfig = emulator.write_kubeconfig(Path(tmp) / "kubeconfig")
    settings = OperatorSettings(
        scrape_interval_seconds=interval, scrape_timeout_seconds=1.0, metrics_port=0
    )
    runtime = await healing.make_runtime(settings, str(kubeconfig))
    reconciler = Reconciler(runtime.api, settings, lambda *a: None)
    switched: dict[str, float] = {}
    cadence = policy.observation_interval(policy.PolicyConfig(window_seconds=window), interval)

    def on_change(event: Any) -> None:
        obj = event.obj
        if (
            obj.get("kind") == "Service"
            and obj["spec"].get("selector", {}).get("voiceops.io/tier") == "fallback"
        ):
            switched.setdefault(obj["metadata"]["name"], time.monotonic())

    emulator.subscribe(on_change)
    base = f"http://{HOST}:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    latencies: list[float] = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):  # the service loads espeak: wait for /readyz
                try:
                    async with http.get(base + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            ns = "bench"
            emulator.ensure_namespace(ns)
            for i in range(runs):
                name = f"lat-{i}"
                emulator.create(
                    {
                        "apiVersion": "voiceops.io/v1alpha1",
                        "kind": "VoiceService",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {
                            "failover": {
                                "windowSeconds": window,
                                "cooldownSeconds": window,
                                "recoverAfterSeconds": window,
                            }
                        },
                    }
                )
                await reconciler.reconcile_body(emulator.get("voiceservices", name, ns))
                emulator.put_object(pod(f"{name}-gpu-0", name, "gpu", ns, port))
                emulator.put_object(pod(f"{name}-fallback-0", name, "fallback", ns, port))
                async with http.delete(base + "/admin/faults", headers=auth) as r:
                    r.raise_for_status()
                stopped, wake = DaemonStopped(), asyncio.Event()
                loop = healing.HealingLoop(runtime, ns, name)
                body = LiveObject(emulator, "voiceservices", ns, name)
                task = asyncio.ensure_future(healing.run_loop(loop, body, stopped, wake))
                await wait_until(
                    lambda name=name: (
                        (emulator.get("voiceservices", name, ns).get("status") or {}).get("phase")
                        == "Serving"
                    ),
                    30,
                    "Serving",
                )
                await asyncio.sleep(window + 0.2)  # let the cooldown of Pending → Serving pass
                # Inject at a spread of phases of the observation cycle.
                await asyncio.sleep((i * 0.37) % cadence)
                body = {"gpu_memory": {"used_bytes": 99 * 10**9, "total_bytes": 100 * 10**9}}
                async with http.post(base + "/admin/faults", json=body, headers=auth) as r:
                    r.raise_for_status()
                while True:
                    async with http.get(base + "/metrics") as r:
                        seen = observe.parse_gpu_metrics(await r.text())
                    if (seen.memory_used_ratio or 0) >= 0.97:
                        visible = time.monotonic()
                        break
                    await asyncio.sleep(0.01)
                await wait_until(
                    lambda name=name: name in switched, 30, "front Service on fallback"
                )
                latencies.append(switched[name] - visible)
                stopped.set()
                await asyncio.wait_for(task, 10)
    finally:
        await runtime.close()
        await emulator.stop()
    latencies.sort()
    p95 = statistics.quantiles(latencies, n=20, method="inclusive")[18]
    goal = window + 1
    return {
        "runs": runs,
        "window_s": window,
        "scrape_interval_s": interval,
        "observation_interval_s": cadence,
        "latency_s_median": round(statistics.median(latencies), 3),
        "latency_s_p95": round(p95, 3),
        "latency_s_min": round(latencies[0], 3),
        "latency_s_max": round(latencies[-1], 3),
        "goal_s": goal,
        "median_over_goal": round(statistics.median(latencies) / goal, 3),
        "p95_over_goal": round(p95 / goal, 3),
        "liveness_restart_path_s": LIVENESS_PATH_S,
        "median_vs_liveness_path": round(statistics.median(latencies) / LIVENESS_PATH_S, 3),
        "p95_vs_liveness_path": round(p95 / LIVENESS_PATH_S, 3),
    }


def start_service() -> tuple[subprocess.Popen, int]:
    """A real service process with fault injection on, serving as the GPU pod."""
    port = free_port(HOST)
    env = {
        **os.environ,
        "VOICEOPS_FAULT_INJECTION": "true",
        "VOICEOPS_FAULT_TOKEN": TOKEN,
        "VOICEOPS_GPU_POLL_INTERVAL_SECONDS": "0.1",
        "VOICEOPS_LOG_LEVEL": "warning",
    }
    service = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voiceops_service.cli",
            "--engine",
            "espeak",
            "--host",
            HOST,
            "--port",
            str(port),
        ],
        env=env,
    )
    return service, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--interval", type=float, default=5.0, help="SCRAPE_INTERVAL_SECONDS (operator default 5)"
    )
    parser.add_argument("--window", type=int, default=2)
    args = parser.parse_args()
    service, port = start_service()
    try:
        result = asyncio.run(bench(args.runs, args.interval, args.window, service, port))
    finally:
        service.terminate()
        service.wait(timeout=10)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
