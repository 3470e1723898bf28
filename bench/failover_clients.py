"""What real clients see through a failover: both client kinds, on the local cluster.

Real parts: the Kubernetes control plane (etcd, kube-apiserver, controller manager,
scheduler), the operator process, ``voiceops-service`` processes for both tiers
(VITS with the bundled joe voice on the GPU tier, on CPU here; espeak on the
fallback), the official ``openai`` client with its defaults (keep-alive pool, two
retries), back to back, and a plain client with a new connection per request and
no retries, at most 20 requests a second, through the front Service
(``voiceops_localcluster.traffic``). Test double: the node agent (kubelet and kube-proxy;
pods in network namespaces with real addresses, a Service proxy that routes by
EndpointSlices and keeps established connections where they are, as kube-proxy
does); ``voiceops_localcluster.failover_cluster`` sets it all up (needs root).

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
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from voiceops_localcluster.failover_cluster import FailoverCluster, failover_cluster
from voiceops_localcluster.traffic import RequestRecord, Traffic

WINDOW = 1
OBSERVATION_PERIOD = 0.25  # policy.observation_interval for a 1 s window
PLAIN_INTERVAL = 0.05  # the plain client's pace: 20 requests a second at most


def share(records: list[RequestRecord], engine: str) -> str:
    if not records:
        return "n/a"
    hits = sum(1 for r in records if r.ok and r.engine == engine)
    return f"{100 * hits / len(records):.1f} % of {len(records)}"


async def traffic_for(c: FailoverCluster) -> Traffic:
    traffic = Traffic(c.front_url, plain_interval_seconds=PLAIN_INTERVAL)
    await traffic.discover()
    traffic.start()
    return traffic


async def pressure(c: FailoverCluster, seconds: float) -> dict[str, Any]:
    traffic = await traffic_for(c)
    await asyncio.sleep(seconds / 2)
    await c.gpu_memory(0.99)
    switched = await c.routed("FailedOver", "fallback")
    await asyncio.sleep(1 + seconds)
    cleared = time.monotonic()
    await c.gpu_memory(None)
    back = await c.routed("Serving", "gpu")
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


async def kill(c: FailoverCluster, seconds: float) -> dict[str, Any]:
    traffic = await traffic_for(c)
    await asyncio.sleep(seconds / 2)
    in_flight = traffic.in_flight["plain"]
    killed = time.monotonic()
    c.kill(c.ready_pods("gpu")[0])
    not_ready = await c.until(lambda: not c.ready_pods("gpu"), 30, "the GPU pod not ready")
    switched = await c.routed("FailedOver", "fallback")
    await asyncio.sleep(seconds)
    await traffic.stop()
    return {
        "kill → front Service on fallback (s)": round(switched - killed, 3),
        "kill → pod not ready (s)": round(not_ready - killed, 3),
        "plain in flight at the kill": in_flight,
        "plain failed": len(traffic.failures("plain")),
        "openai failed": len(traffic.failures("openai")),
        "requests": len(traffic.records),
    }


async def lost_fallback(c: FailoverCluster, seconds: float) -> dict[str, Any]:
    await c.gpu_memory(0.99)
    await c.routed("FailedOver", "fallback")
    for pod in c.ready_pods("fallback"):
        c.kill(pod)
    end = time.monotonic() + seconds
    longest = empty_since = 0.0
    while time.monotonic() < end:
        now = time.monotonic()
        if c.front_endpoints():
            empty_since = 0.0
        else:
            empty_since = empty_since or now
            longest = max(longest, now - empty_since)
        await asyncio.sleep(0.01)
    await c.gpu_memory(None)
    return {
        "longest zero-endpoint window (s)": round(longest, 3),
        "observation period (s)": OBSERVATION_PERIOD,
        "ratio": round(longest / OBSERVATION_PERIOD, 2),
    }


async def cluster_run(work: Path, seconds: float, notices: bool) -> dict[str, Any]:
    settings = {} if notices else {"routing_key": ""}  # no key: no routing notices
    async with failover_cluster(work, WINDOW, **settings) as c:
        results: dict[str, Any] = {"pressure": await pressure(c, seconds)}
        if notices:
            await asyncio.sleep(1.5)  # the cooldown after Serving
            results["kill"] = await kill(c, seconds)
            await c.routed("Serving", "gpu", within=120)
            await asyncio.sleep(1.5)
            results["lost fallback"] = await lost_fallback(c, seconds)
        return results


async def run(seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        on = await cluster_run(Path(tempfile.mkdtemp(dir=tmp)), seconds, notices=True)
        off = await cluster_run(Path(tempfile.mkdtemp(dir=tmp)), seconds, notices=False)
    return {"routing notices on": on, "baseline: routing notices off": off}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
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
