"""What real clients see through a failover: both client kinds, on the local cluster.

Real parts: the operator process, ``voiceops-service`` processes for both tiers (VITS
with the bundled joe voice on the GPU tier, on CPU here; espeak on the fallback),
the official ``openai`` client with its defaults (keep-alive pool, two retries) and a
plain client with a new connection per request and no retries, back to back, through
the front Service (``voiceops_sim.traffic``). Test doubles: the API emulator and the
simulated kubelet (its Service proxy keeps established connections where they are,
as kube-proxy does).

Scenarios, in one cluster, window 1 s:

* pressure: GPU memory 99 % → FailedOver; cleared → Recovering → Serving. Failed
  requests per client; the share of requests that start ≥ 1 s after the switch
  (until the fault is cleared) answered by the fallback tier, and of those that start
  ≥ 1 s after Serving (for 4 s) answered by the GPU tier. Run twice: routing notices
  on, and off (an operator without a routing key: the baseline, how it was before).
* kill: the GPU pod SIGKILLed while Serving → FailedOver at once. Failed requests
  per client, beside the plain client's requests in flight at the kill.
* lost fallback: the fallback pod SIGKILLed while FailedOver. The longest time the
  front Service had no ready endpoint (sampled every 10 ms), against one
  observation period.

    .venv/bin/python bench/failover_clients.py [--seconds 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from voiceops_sim.apiserver import KubeApiEmulator
from voiceops_sim.kubelet import KubeletConfig, SimulatedKubelet, parse_node
from voiceops_sim.operator_process import OperatorProcess
from voiceops_sim.traffic import Traffic

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-fault-token"
TIER = "voiceops.io/tier"
WINDOW = 1.0
OBSERVATION_PERIOD = 0.25  # policy.observation_interval for a 1 s window


def voiceservice(ns: str) -> dict[str, Any]:
    probes = {"periodSeconds": 1, "timeoutSeconds": 1}
    return {
        "apiVersion": "voiceops.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": "tts", "namespace": ns},
        "spec": {
            "model": {"engine": "vits", "voice": "en_US-joe-medium"},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "serving": {"maxConcurrency": 4, "batch": {"maxSize": 4, "maxDelayMs": 5}},
            "fallback": {"standbyReplicas": 1, "maxReplicas": 2},
            "failover": {"windowSeconds": WINDOW, "cooldownSeconds": 1, "recoverAfterSeconds": 2},
            "probes": {
                "startup": {**probes, "failureThreshold": 120},
                "readiness": {**probes, "failureThreshold": 2},
                "liveness": {"periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 6},
            },
            "faultInjection": {"enabled": True, "tokenSecretRef": {"name": "faults", "key": "t"}},
        },
    }


class Bench:
    def __init__(self, emulator: KubeApiEmulator, kubelet: SimulatedKubelet, ns: str) -> None:
        self.emu, self.kubelet, self.ns = emulator, kubelet, ns

    def phase(self) -> str:
        return ((self.emu.get("voiceservices", "tts", self.ns) or {}).get("status") or {}).get(
            "phase", ""
        )

    def tier(self) -> str:
        svc = self.emu.get("services", "tts", self.ns) or {}
        return ((svc.get("spec") or {}).get("selector") or {}).get(TIER, "both")

    def ready_pods(self, tier: str) -> list[dict[str, Any]]:
        out = []
        for p in self.emu.list("pods", self.ns, label_selector=f"{TIER}={tier}"):
            conds = {c["type"]: c["status"] for c in (p.get("status") or {}).get("conditions", [])}
            if conds.get("Ready") == "True":
                out.append(p)
        return out

    async def routed(self, phase: str, tier: str, within: float = 120) -> float:
        deadline = time.monotonic() + within
        while not (self.phase() == phase and self.tier() == tier):
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {phase} on {tier} (at {self.phase()})")
            await asyncio.sleep(0.01)
        return time.monotonic()

    async def faults(self, pod: dict[str, Any], body: dict[str, Any] | None) -> None:
        url = f"http://{pod['status']['podIP']}:8000/admin/faults"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as s:
            call = (
                s.delete(url, headers=headers)
                if body is None
                else s.post(url, json=body, headers=headers)
            )
            async with call as resp:
                assert resp.status == 200, await resp.text()


def share(records: list[Any], engine: str) -> str:
    if not records:
        return "n/a"
    hits = sum(1 for r in records if r.ok and r.engine == engine)
    return f"{100 * hits / len(records):.1f} % of {len(records)}"


async def pressure(b: Bench, seconds: float) -> dict[str, Any]:
    traffic = Traffic(lambda: b.kubelet.service_url(b.ns, "tts"))
    await traffic.discover()
    traffic.start()
    await asyncio.sleep(seconds / 2)
    gpu = b.ready_pods("gpu")[0]
    await b.faults(gpu, {"gpu_memory": {"used_bytes": 99, "total_bytes": 100}})
    switched = await b.routed("FailedOver", "fallback")
    await asyncio.sleep(1 + seconds)
    cleared = time.monotonic()
    await b.faults(gpu, None)
    back = await b.routed("Serving", "gpu")
    await asyncio.sleep(1 + seconds)
    await traffic.stop()
    out: dict[str, Any] = {}
    for kind in ("plain", "openai"):
        out[kind] = {
            "requests": len(traffic.of(kind)),
            "failed": len(traffic.failures(kind)),
            "on fallback ≥1 s after the switch": share(
                traffic.of(kind, since=switched + 1, until=cleared), "espeak"
            ),
            "on GPU ≥1 s after Serving": share(
                traffic.of(kind, since=back + 1, until=back + 1 + seconds), "vits"
            ),
        }
    return out


async def kill(b: Bench, seconds: float) -> dict[str, Any]:
    traffic = Traffic(lambda: b.kubelet.service_url(b.ns, "tts"))
    await traffic.discover()
    traffic.start()
    await asyncio.sleep(seconds / 2)
    pod = b.ready_pods("gpu")[0]
    in_flight = traffic.in_flight["plain"]
    killed = time.monotonic()
    b.kubelet.kill_pod_process(b.ns, pod["metadata"]["name"])
    switched = await b.routed("FailedOver", "fallback")
    await asyncio.sleep(seconds)
    await traffic.stop()
    return {
        "kill → front Service on fallback (s)": round(switched - killed, 3),
        "plain in flight at the kill": in_flight,
        "plain failed": len(traffic.failures("plain")),
        "openai failed": len(traffic.failures("openai")),
        "requests": len(traffic.records),
    }


async def lost_fallback(b: Bench, seconds: float) -> dict[str, Any]:
    gpu = b.ready_pods("gpu")[0]
    await b.faults(gpu, {"gpu_memory": {"used_bytes": 99, "total_bytes": 100}})
    await b.routed("FailedOver", "fallback")
    for pod in b.ready_pods("fallback"):
        b.kubelet.kill_pod_process(b.ns, pod["metadata"]["name"])
    end = time.monotonic() + seconds
    longest = empty_since = 0.0
    while time.monotonic() < end:
        now = time.monotonic()
        if b.kubelet.service_endpoints(b.ns, "tts"):
            empty_since = 0.0
        else:
            empty_since = empty_since or now
            longest = max(longest, now - empty_since)
        await asyncio.sleep(0.01)
    await b.faults(gpu, None)
    return {
        "longest zero-endpoint window (s)": round(longest, 3),
        "observation period (s)": OBSERVATION_PERIOD,
        "ratio": round(longest / OBSERVATION_PERIOD, 2),
    }


async def cluster_run(tmp: Path, seconds: float, routing_key: bool) -> dict[str, Any]:
    emulator = KubeApiEmulator(crd_files=[ROOT / "crds" / "voiceservice.yaml"])
    await emulator.start()
    kubelet = SimulatedKubelet(
        emulator,
        KubeletConfig(
            nodes=[parse_node("sim-gpu-0:1:8"), parse_node("sim-cpu-0:0:16")],
            pod_mode="process",
            log_dir=str(tmp / "pods"),
            resync_seconds=0.1,
            extra_env={
                "VOICEOPS_GPU_POLL_INTERVAL_SECONDS": "0.2",
                "VOICEOPS_LOG_LEVEL": "warning",
            },
        ),
    )
    await kubelet.start()
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    emulator.ensure_namespace(ns)
    secret = base64.b64encode(TOKEN.encode()).decode()
    emulator.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "faults", "namespace": ns},
         "data": {"t": secret}}
    )  # fmt: skip
    extra = {} if routing_key else {"routing_key": ""}
    operator = OperatorProcess(
        emulator.write_kubeconfig(tmp / "kubeconfig"),
        tmp / "operator.log",
        namespaces=[ns],
        scrape_interval_seconds=0.5,
        **extra,
    )
    await operator.start()
    b = Bench(emulator, kubelet, ns)
    try:
        emulator.create(voiceservice(ns))
        await b.routed("Serving", "gpu", within=180)
        results: dict[str, Any] = {"pressure": await pressure(b, seconds)}
        if routing_key:
            await asyncio.sleep(1.5)  # the cooldown after Serving
            results["kill"] = await kill(b, seconds)
            await b.routed("Serving", "gpu", within=120)
            await asyncio.sleep(1.5)
            results["lost fallback"] = await lost_fallback(b, seconds)
        return results
    finally:
        await operator.stop()
        await kubelet.stop()
        await emulator.stop()


async def run(seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        notices = await cluster_run(Path(tmp) / "on", seconds, routing_key=True)
        baseline = await cluster_run(Path(tmp) / "off", seconds, routing_key=False)
    return {"routing notices on": notices, "baseline: routing notices off": baseline}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="traffic per phase")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.seconds))
    text = json.dumps(results, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
