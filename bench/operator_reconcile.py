"""Spec-reconcile benchmark: the real operator process against the API emulator.

Measures (1) the time from creating a VoiceService to all of its children
existing, median and p95 over N objects, created one at a time and in a burst;
(2) API requests per steady-state reconcile of unchanged objects (goal: zero
writes). The emulator (voiceops_sim) is a test double of kube-apiserver; numbers
are for this machine and this double, not for a real cluster.

    .venv/bin/python bench/operator_reconcile.py [--objects 50] [--resync 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import percentile
from voiceops_operator.kube import USER_AGENT
from voiceops_sim.apiserver import KubeApiEmulator

REPO = Path(__file__).resolve().parents[1]
# 2 Deployments, 3 Services, 2 HPAs, 2 PDBs, 1 NetworkPolicy (the default spec)
CHILDREN_PER_OBJECT = 10
CHILD_RESOURCES = {
    "deployments",
    "services",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
    "networkpolicies",
}


def voiceservice(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "voiceops.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {},
    }


class ChildClock:
    """Records when each VoiceService's last child appeared (emulator commit time)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.complete: dict[tuple[str, str], float] = {}

    def __call__(self, event: Any) -> None:
        if event.type != "ADDED" or event.resource.plural not in CHILD_RESOURCES:
            return
        meta = event.obj.get("metadata", {})
        owner = (meta.get("labels") or {}).get("app.kubernetes.io/instance")
        if not owner:
            return
        key = (meta.get("namespace", ""), owner)
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] == CHILDREN_PER_OBJECT:
            self.complete[key] = time.perf_counter()


async def start_operator(kubeconfig: Path, log: Path, resync: float) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEOPS_OPERATOR_")}
    env.update(
        KUBECONFIG=str(kubeconfig),
        VOICEOPS_OPERATOR_HEALTH_PORT="0",
        VOICEOPS_OPERATOR_METRICS_PORT="0",
        VOICEOPS_OPERATOR_SELF_HEALING="false",
        VOICEOPS_OPERATOR_RESYNC_INTERVAL_SECONDS=str(resync),
    )
    script = Path(sys.executable).parent / "voiceops-operator"
    with log.open("w") as handle:
        return await asyncio.create_subprocess_exec(
            str(script), "run", "--all-namespaces", env=env, stdout=handle, stderr=handle
        )


async def wait_complete(
    emulator: KubeApiEmulator, clock: ChildClock, keys: list[tuple[str, str]], deadline: float
) -> None:
    await emulator.wait_for(
        lambda: all(k in clock.complete for k in keys),
        timeout=deadline,
        message=f"children of {len(keys)} objects did not all appear",
    )


async def sequential(emulator: KubeApiEmulator, clock: ChildClock, n: int) -> list[float]:
    emulator.ensure_namespace("bench-seq")
    latencies = []
    for i in range(n):
        key = ("bench-seq", f"tts-{i}")
        started = time.perf_counter()
        emulator.create(voiceservice(key[1], key[0]))
        await wait_complete(emulator, clock, [key], 30)
        latencies.append(clock.complete[key] - started)
    return latencies


async def burst(emulator: KubeApiEmulator, clock: ChildClock, n: int) -> list[float]:
    emulator.ensure_namespace("bench-burst")
    keys = [("bench-burst", f"tts-{i}") for i in range(n)]
    started = {}
    for key in keys:
        started[key] = time.perf_counter()
        emulator.create(voiceservice(key[1], key[0]))
    await wait_complete(emulator, clock, keys, 120)
    return [clock.complete[k] - started[k] for k in keys]


async def steady_state(emulator: KubeApiEmulator, resync: float, periods: int) -> dict[str, float]:
    # Let the creation echoes (status, Events) die down: one quiet resync period.
    for _ in range(60):
        quiet_since = time.time()
        await asyncio.sleep(resync)
        if not emulator.write_requests(quiet_since):
            break
    since = emulator.reset_request_log()
    await asyncio.sleep(resync * periods)
    ours = [r for r in emulator.requests if r.time >= since and r.user_agent == USER_AGENT]
    everyone = [r for r in emulator.requests if r.time >= since]
    reconciles = sum(1 for r in ours if r.verb == "get" and r.resource == "voiceservices")
    reads = sum(1 for r in ours if r.verb in ("get", "list"))
    writes = [r for r in everyone if r.verb in ("create", "update", "patch", "delete")]
    return {
        "reconciles": reconciles,
        "reads_per_reconcile": reads / reconciles if reconciles else float("nan"),
        "writes_total": len(writes),
        "writes_per_reconcile": len(writes) / reconciles if reconciles else float("nan"),
    }


def row(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"| {name} | {len(ms)} | {statistics.median(ms):8.1f} | {percentile(ms, 0.95):8.1f} "
        f"| {max(ms):8.1f} |"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--resync", type=float, default=2.0, help="operator resync interval (s)")
    parser.add_argument("--periods", type=int, default=5, help="resync periods to observe")
    args = parser.parse_args()

    emulator = KubeApiEmulator(crd_files=[REPO / "crds" / "voiceservice.yaml"])
    await emulator.start()
    clock = ChildClock()
    emulator.subscribe(clock)
    workdir = Path(tempfile.mkdtemp(prefix="voiceops-bench-"))
    kubeconfig = emulator.write_kubeconfig(workdir / "kubeconfig")
    operator = await start_operator(kubeconfig, workdir / "operator.log", args.resync)
    try:
        # Warm-up: the first object also waits for kopf to start watching.
        emulator.ensure_namespace("bench-warmup")
        emulator.create(voiceservice("warmup", "bench-warmup"))
        await wait_complete(emulator, clock, [("bench-warmup", "warmup")], 60)
        seq = await sequential(emulator, clock, args.objects)
        bur = await burst(emulator, clock, args.objects)
        steady = await steady_state(emulator, args.resync, args.periods)
    finally:
        operator.send_signal(signal.SIGTERM)
        await asyncio.wait_for(operator.wait(), 20)
        await emulator.stop()

    print(
        f"VoiceService create → all {CHILDREN_PER_OBJECT} children exist "
        "(ms; operator process vs API emulator)"
    )
    print("| mode | objects | median | p95 | max |")
    print("|---|---|---|---|---|")
    print(row("one at a time", seq))
    print(row(f"burst of {args.objects}", bur))
    print()
    print(
        f"Steady state: {2 * args.objects + 1} unchanged objects, resync every {args.resync:g} s, "
        f"observed {args.periods} periods"
    )
    print("| reconciles | API reads per reconcile | writes per reconcile | writes (all clients) |")
    print("|---|---|---|---|")
    print(
        f"| {steady['reconciles']:.0f} | {steady['reads_per_reconcile']:.1f} "
        f"| {steady['writes_per_reconcile']:.2f} | {steady['writes_total']:.0f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
