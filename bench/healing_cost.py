"""Operator cost of observing and deciding: N VoiceServices × 2 GPU pods each.

What is real: the operator's own code path per VoiceService pass — concurrent
HTTP scraping of every ready GPU pod's /metrics over loopback with the shared
``PodScraper`` (aiohttp, bounded concurrency, timeout), Prometheus text
parsing, pod status classification, the policy decision and the status-patch
computation — run as one asyncio task per VoiceService on the scrape
interval, the way the kopf daemons run.

What is simulated (say so when quoting the numbers): the pods. One separate
process serves the contract-shaped /metrics of every pod (all metrics of
``voiceops_contract.metrics.ALL``, histograms with buckets, ~6 KB per pod) on
its own loopback address 127.1.x.y:9100; pod objects are built in memory
instead of listed from an API server, and no Kubernetes writes are made (in
steady state the loop writes nothing anyway). Its CPU is not counted: only
the operator-side process is measured.

The cadence is the operator's: ``policy.observation_interval`` of the spec's
window (a quarter window, 0.25 s .. SCRAPE_INTERVAL_SECONDS), so ``--window 10``
(the default window) scrapes every 2.5 s and ``--window 2`` every 0.5 s. The
baseline, measured in the same run right after, is the fixed cadence the loop
used before the spec-derived one (``--baseline-interval``, default the default
SCRAPE_INTERVAL_SECONDS = 5 s); the ratios compare the two.

    .venv/bin/python bench/healing_cost.py [--services 200] [--window 10] [--duration 60]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

PORT = 9100
GIB = 1 << 30


def pod_address(index: int) -> str:
    return f"127.1.{index // 250}.{index % 250 + 1}"


# --- the simulated pods (child process) -------------------------------------------------


def metrics_text(ratio: float, rng: random.Random) -> str:
    """A /metrics page shaped like the service's (every contract metric)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
    from prometheus_client.exposition import generate_latest
    from voiceops_contract import metrics as m

    reg = CollectorRegistry()
    for spec in m.ALL:
        name = spec.name.removesuffix("_total") if spec.type == "counter" else spec.name
        if spec.type == "gauge":
            g = Gauge(name, spec.help, spec.labels, registry=reg)
            if spec.labels == ("gpu",):
                total = 80 * GIB
                value = ratio * total if "used" in name else total
                if "utilization" in name:
                    value = rng.random()
                g.labels(gpu="0").set(value)
            else:
                g.set(rng.randint(0, 4) if spec.name != m.DEGRADED.name else 0)
        elif spec.type == "counter":
            c = Counter(name, spec.help, spec.labels, registry=reg)
            if spec.labels:
                for route in ("/v1/audio/speech", "/healthz", "/readyz"):
                    for code in ("200", "429"):
                        c.labels(route=route, code=code).inc(rng.randint(0, 1000))
            else:
                c.inc(rng.randint(0, 100))
        elif spec.type == "histogram":
            h = Histogram(name, spec.help, spec.labels, registry=reg)
            for _ in range(20):
                h.observe(rng.random())
        else:
            i = Info(name.removesuffix("_info"), spec.help, registry=reg)
            i.info(
                {
                    "engine": "vits",
                    "voice": "en_US-joe-medium",
                    "version": "0.1.0",
                    "device": "cuda",
                }
            )
    return generate_latest(reg).decode()


async def serve_pods(count: int) -> None:
    from aiohttp import web

    rng = random.Random(7)
    # A few distinct pages per pressure level; pods pick one (rendering 400 per
    # request would make the simulator, not the operator, the bottleneck).
    pages = {
        level: [metrics_text(level + rng.random() * 0.05, rng) for _ in range(8)]
        for level in (0.4, 0.6, 0.92)
    }

    async def handler(request: web.Request) -> web.Response:
        index = int(request.match_info["index"]) if "index" in request.match_info else 0
        level = 0.92 if index % 10 == 0 else (0.6 if index % 3 == 0 else 0.4)
        return web.Response(text=rng.choice(pages[level]), content_type="text/plain")

    runners = []
    for index in range(count):
        app = web.Application()

        async def bound(request: web.Request, index: int = index) -> web.Response:
            request.match_info["index"] = str(index)  # type: ignore[index]
            return await handler(request)

        app.router.add_get("/metrics", bound)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, pod_address(index), PORT).start()
        runners.append(runner)
    print("ready", flush=True)
    await asyncio.Event().wait()


# --- the operator side (this process) -----------------------------------------------------


def pod_dict(name: str, instance: str, tier: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "bench",
            "labels": {"app.kubernetes.io/instance": instance, "voiceops.io/tier": tier},
        },
        "spec": {
            "containers": [{"name": "service", "ports": [{"name": "http", "containerPort": PORT}]}]
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
            "containerStatuses": [
                {"name": "service", "ready": True, "restartCount": 0, "state": {"running": {}}}
            ],
        },
    }


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_operator_side(services: int, interval: float, duration: float) -> dict[str, Any]:
    import aiohttp
    from voiceops_operator import healing, observe, policy
    from voiceops_operator.spec import parse_voiceservice

    rss_idle = rss_mib()
    gc.collect()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128))
    scraper = observe.PodScraper(session, timeout_seconds=1.0)
    manifest = {
        "apiVersion": "voiceops.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": "x", "namespace": "bench", "generation": 1},
        "spec": {},
    }
    config = healing.policy_config(parse_voiceservice(manifest).spec)
    pass_seconds: list[float] = []
    transitions = 0
    errors = 0
    stop_at = 0.0

    async def one_service(i: int) -> None:
        nonlocal transitions, errors
        name = f"tts-{i}"
        gpu = [pod_dict(f"{name}-gpu-{k}", name, "gpu", pod_address(2 * i + k)) for k in range(2)]
        fallback = [pod_dict(f"{name}-fallback-0", name, "fallback", "127.0.0.1")]
        state = policy.PolicyState(phase="Serving", fallback_replicas=1)
        status: dict[str, Any] = {}
        await asyncio.sleep(random.random() * interval)  # daemons start spread out
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            result = await scraper.scrape(gpu)
            errors += len(result.errors)
            obs = observe.build_observation(time.time(), gpu, fallback, result.metrics, 1)
            decision = policy.decide(config, state, obs)
            patch = healing.healing_status(status, decision, True, 1, "2027-01-01T00:00:00Z")
            status = {**status, **patch}
            transitions += decision.transition is not None
            state = decision.state
            pass_seconds.append(time.perf_counter() - started)
            await asyncio.sleep(interval)

    # Warm-up pass (imports, connection pool), then measure.
    stop_at = time.monotonic() + 0.01
    await asyncio.gather(*(one_service(i) for i in range(min(services, 5))))
    pass_seconds.clear()
    cpu0, t0 = cpu_seconds(), time.monotonic()
    stop_at = t0 + duration + interval
    tasks = [asyncio.ensure_future(one_service(i)) for i in range(services)]
    await asyncio.sleep(duration)
    wall = time.monotonic() - t0
    cpu = cpu_seconds() - cpu0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()
    passes = len(pass_seconds)
    return {
        "services": services,
        "gpu_pods": 2 * services,
        "interval_s": interval,
        "measured_wall_s": round(wall, 1),
        "passes": passes,
        "scrape_errors": errors,
        "transitions": transitions,
        "cpu_s": round(cpu, 2),
        "cpu_s_per_min": round(cpu / wall * 60, 2),
        "cpu_ms_per_pass": round(cpu / max(passes, 1) * 1000, 3),
        "pass_wall_ms_median": round(statistics.median(pass_seconds) * 1000, 2),
        "pass_wall_ms_p95": round(statistics.quantiles(pass_seconds, n=20)[18] * 1000, 2),
        "rss_mib_idle_after_imports": round(rss_idle, 1),
        "rss_mib_end": round(rss_mib(), 1),
        "maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument(
        "--window", type=float, default=10.0, help="spec.failover.windowSeconds (cadence)"
    )
    parser.add_argument(
        "--scrape-interval",
        type=float,
        default=5.0,
        help="SCRAPE_INTERVAL_SECONDS (the cadence's ceiling)",
    )
    parser.add_argument(
        "--interval", type=float, default=0.0, help="fixed cadence instead of the spec's"
    )
    parser.add_argument(
        "--baseline-interval",
        type=float,
        default=5.0,
        help="fixed cadence of the baseline phase (0: none)",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    parser.add_argument("--serve-pods", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_pods:
        asyncio.run(serve_pods(args.serve_pods))
        return 0
    pods = subprocess.Popen(
        [sys.executable, __file__, "--serve-pods", str(2 * args.services)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert pods.stdout is not None
        line = pods.stdout.readline().strip()
        if line != "ready":
            print(f"pod simulator failed to start: {line!r}", file=sys.stderr)
            return 1
        # Import the operator only now, so the idle RSS baseline includes its modules.
        import voiceops_operator.healing  # noqa: F401
        from voiceops_operator import policy

        interval = args.interval or policy.observation_interval(
            policy.PolicyConfig(window_seconds=args.window), args.scrape_interval
        )
        result = asyncio.run(run_operator_side(args.services, interval, args.duration))
        result["window_s"] = args.window
        result["cadence"] = "fixed" if args.interval else "spec (policy.observation_interval)"
        if args.baseline_interval:
            baseline = asyncio.run(
                run_operator_side(args.services, args.baseline_interval, args.duration)
            )
            result["baseline"] = {
                k: baseline[k]
                for k in ("interval_s", "passes", "cpu_s_per_min", "cpu_ms_per_pass", "rss_mib_end")
            }
            result["cpu_per_min_vs_baseline"] = round(
                result["cpu_s_per_min"] / max(baseline["cpu_s_per_min"], 1e-9), 2
            )
            result["passes_vs_baseline"] = round(result["passes"] / max(baseline["passes"], 1), 2)
    finally:
        pods.terminate()
        pods.wait(timeout=10)
    result["cpus"] = os.cpu_count()
    # Against the machine: the share of one core the loop keeps busy.
    result["share_of_one_core"] = round(result["cpu_s_per_min"] / 60, 3)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
