"""Spec-reconcile benchmark: the real operator process against a real kube-apiserver.

Real parts: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
(``voiceops_localcluster.control_plane``; no nodes, so pods stay Pending) and the operator
process (self-healing off: this measures the spec reconcile). Measures (1) the time
from creating a VoiceService to all of its children existing (the watch event of the
last child), median and p95 over N objects created one at a time and in a burst,
and the operator's API requests while it built them; (2) the operator's API
requests per steady-state reconcile of unchanged objects (goal: zero reads, zero
writes). Requests are counted from the API server's audit log by user agent (kopf's
and the spec reconcile's), so controllers' own writes are not counted; reconciles
are counted from the operator's log (kopf logs each resync timer run).

    .venv/bin/python bench/operator_reconcile.py [--objects 50] [--resync 2]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import percentile
from kubernetes_asyncio import client, config, watch
from voiceops_localcluster.control_plane import ControlPlane
from voiceops_operator.kube import USER_AGENT

REPO = Path(__file__).resolve().parents[1]
# 2 Deployments, 3 Services, 2 HPAs, 2 PDBs, 1 NetworkPolicy (the default spec)
CHILDREN_PER_OBJECT = 10
MANAGED = "app.kubernetes.io/managed-by=voiceops-operator"
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
READS = {"get", "list"}  # a watch is neither: it is how the operator avoids reads
RESYNC_DONE = "Timer 'register.<locals>.resync' succeeded"  # kopf, one per timer run


def voiceservice(name: str) -> dict[str, Any]:
    return {"apiVersion": "voiceops.io/v1alpha1", "kind": "VoiceService",
            "metadata": {"name": name}, "spec": {}}  # fmt: skip


class ChildClock:
    """When each VoiceService's last child appeared, from watches on the child kinds."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.seen: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self.complete: dict[tuple[str, str], float] = {}
        self.changed = asyncio.Event()

    def lists(self) -> list[Any]:
        apps, core = client.AppsV1Api(self.api), client.CoreV1Api(self.api)
        return [
            apps.list_deployment_for_all_namespaces,
            core.list_service_for_all_namespaces,
            client.AutoscalingV2Api(self.api).list_horizontal_pod_autoscaler_for_all_namespaces,
            client.PolicyV1Api(self.api).list_pod_disruption_budget_for_all_namespaces,
            client.NetworkingV1Api(self.api).list_network_policy_for_all_namespaces,
        ]

    async def follow(self, list_fn: Any) -> None:
        stream = watch.Watch()
        async for event in stream.stream(list_fn, label_selector=MANAGED, timeout_seconds=0):
            if event["type"] != "ADDED":
                continue
            meta = event["object"].metadata
            owner = (meta.labels or {}).get("app.kubernetes.io/instance")
            key = (meta.namespace, owner)
            found = self.seen.setdefault(key, set())
            found.add((event["object"].kind or list_fn.__name__, meta.name))
            if len(found) == CHILDREN_PER_OBJECT and key not in self.complete:
                self.complete[key] = time.perf_counter()
                self.changed.set()

    async def wait(self, keys: list[tuple[str, str]], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not all(k in self.complete for k in keys):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"children of {len(keys)} objects did not all appear")
            self.changed.clear()
            try:
                async with asyncio.timeout(min(remaining, 1.0)):
                    await self.changed.wait()
            except TimeoutError:
                continue


async def create(api: client.ApiClient, namespace: str, name: str) -> None:
    await client.CustomObjectsApi(api).create_namespaced_custom_object(
        "voiceops.io", "v1alpha1", namespace, "voiceservices", voiceservice(name)
    )


async def namespace(api: client.ApiClient, name: str) -> None:
    await client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})


async def sequential(api: client.ApiClient, clock: ChildClock, n: int) -> list[float]:
    await namespace(api, "bench-seq")
    latencies = []
    for i in range(n):
        key = ("bench-seq", f"tts-{i}")
        started = time.perf_counter()
        await create(api, *key)
        await clock.wait([key], 60)
        latencies.append(clock.complete[key] - started)
    return latencies


async def burst(api: client.ApiClient, clock: ChildClock, n: int) -> list[float]:
    await namespace(api, "bench-burst")
    keys = [("bench-burst", f"tts-{i}") for i in range(n)]
    started = {}
    for key in keys:
        started[key] = time.perf_counter()
        await create(api, *key)
    await clock.wait(keys, 300)
    return [clock.complete[k] - started[k] for k in keys]


def _ours(event: dict[str, Any]) -> bool:
    agent = str(event.get("userAgent", ""))
    return agent == USER_AGENT or agent.startswith("kopf/")


def _resource(event: dict[str, Any]) -> object:
    return (event.get("objectRef") or {}).get("resource")


def _subresource(event: dict[str, Any]) -> str:
    sub = (event.get("objectRef") or {}).get("subresource")
    return f"/{sub}" if sub else ""


def _at(event: dict[str, Any]) -> float:
    stamp = str(event.get("requestReceivedTimestamp", ""))
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _by_kind(events: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(f"{e.get('verb')} {_resource(e)}{_subresource(e)}" for e in events))


def _refused(event: dict[str, Any]) -> bool:
    return (event.get("responseStatus") or {}).get("code") == 409


def creation_requests(
    plane: ControlPlane, since: float, until: float, objects: int
) -> dict[str, Any]:
    """The operator's requests while it built ``objects`` VoiceServices (and the echoes)."""
    ours = [e for e in plane.audit_events() if _ours(e) and since <= _at(e) < until]
    reads = [e for e in ours if e.get("verb") in READS and e.get("userAgent") == USER_AGENT]
    writes = [e for e in ours if e.get("verb") in WRITES]
    return {
        "reads_per_object": len(reads) / objects,
        "writes_per_object": len(writes) / objects,
        "refused_409": sum(1 for e in writes if _refused(e)),
        "refused_by_kind": _by_kind([e for e in writes if _refused(e)]),
    }


def _timer_runs(operator_log: Path) -> int:
    return operator_log.read_text(errors="replace").count(RESYNC_DONE)


async def steady_state(
    plane: ControlPlane, operator_log: Path, resync: float, periods: int
) -> dict[str, Any]:
    # Let the creation echoes die down: the controllers catch up with a burst (pods
    # created under each ReplicaSet change the replica counts the status reports),
    # then three quiet resync periods in a row.
    quiet = 0
    for _ in range(120):
        since_check = time.time()
        await asyncio.sleep(resync)
        recent = [e for e in plane.audit_events() if _ours(e) and _at(e) >= since_check]
        quiet = 0 if any(e.get("verb") in WRITES for e in recent) else quiet + 1
        if quiet == 3:
            break
    since = time.time()
    runs_before = _timer_runs(operator_log)
    await asyncio.sleep(resync * periods)
    reconciles = _timer_runs(operator_log) - runs_before
    ours = [e for e in plane.audit_events() if _ours(e) and _at(e) >= since]
    reads = [e for e in ours if e.get("verb") in READS]
    writes = [e for e in ours if e.get("verb") in WRITES]
    return {
        "since": since,
        "reads_by_kind": _by_kind(reads),
        "writes_by_kind": _by_kind(writes),
        "reconciles": reconciles,
        "reads_total": len(reads),
        "reads_per_reconcile": len(reads) / reconciles if reconciles else float("nan"),
        "writes_total": len(writes),
        "writes_per_reconcile": len(writes) / reconciles if reconciles else float("nan"),
    }


def row(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"| {name} | {len(ms)} | {statistics.median(ms):8.1f} | {percentile(ms, 0.95):8.1f} "
        f"| {max(ms):8.1f} |"
    )


async def run(plane: ControlPlane, args: argparse.Namespace, work: Path) -> None:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(plane.admin_kubeconfig), client_configuration=configuration
    )
    api = client.ApiClient(configuration)
    crd = (REPO / "crds" / "voiceservice.yaml").read_text()
    await asyncio.to_thread(_kubectl, plane, "apply", "--server-side", "-f", "-", stdin=crd)
    await asyncio.to_thread(
        _kubectl, plane, "wait", "--for=condition=Established",
        "crd/voiceservices.voiceops.io", "--timeout=60s",
    )  # fmt: skip
    clock = ChildClock(api)
    watchers = [asyncio.create_task(clock.follow(fn)) for fn in clock.lists()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEOPS_OPERATOR_")}
    env.update(
        KUBECONFIG=str(plane.admin_kubeconfig),
        VOICEOPS_OPERATOR_HEALTH_PORT="0",
        VOICEOPS_OPERATOR_METRICS_PORT="0",
        VOICEOPS_OPERATOR_SELF_HEALING="false",
        VOICEOPS_OPERATOR_RESYNC_INTERVAL_SECONDS=str(args.resync),
    )
    script = Path(sys.executable).parent / "voiceops-operator"
    operator_log = work / "operator.log"
    with operator_log.open("w") as log:
        operator = await asyncio.create_subprocess_exec(
            str(script), "run", "--all-namespaces", env=env, stdout=log, stderr=log
        )
    try:
        await namespace(api, "bench-warmup")  # the first object waits for kopf to start
        await create(api, "bench-warmup", "warmup")
        await clock.wait([("bench-warmup", "warmup")], 120)
        building = time.time()
        seq = await sequential(api, clock, args.objects)
        bur = await burst(api, clock, args.objects)
        steady = await steady_state(plane, operator_log, args.resync, args.periods)
        # Up to the steady state: the creations' echoes (status, drift repair) count too.
        built = creation_requests(plane, building, steady["since"], 2 * args.objects)
    finally:
        operator.send_signal(signal.SIGTERM)
        await asyncio.wait_for(operator.wait(), 30)
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await api.close()
    print(
        f"VoiceService create → all {CHILDREN_PER_OBJECT} children exist "
        "(ms; operator process vs a real kube-apiserver)"
    )
    print("| mode | objects | median | p95 | max |")
    print("|---|---|---|---|---|")
    print(row("one at a time", seq))
    print(row(f"burst of {args.objects}", bur))
    print()
    print(
        f"Building them: the operator's requests per object ({2 * args.objects} objects, "
        "creation to steady state)"
    )
    print("| reconcile reads | writes | refused 409 |")
    print("|---|---|---|")
    print(
        f"| {built['reads_per_object']:.2f} | {built['writes_per_object']:.2f} "
        f"| {built['refused_409']:.0f} |"
    )
    if built["refused_by_kind"]:
        print(f"refused: {built['refused_by_kind']}")
    print()
    print(
        f"Steady state: {2 * args.objects + 1} unchanged objects, resync every {args.resync:g} s, "
        f"observed {args.periods} periods (the operator's requests, from the audit log)"
    )
    print("| reconciles | API reads per reconcile | writes per reconcile | reads | writes |")
    print("|---|---|---|---|---|")
    print(
        f"| {steady['reconciles']:.0f} | {steady['reads_per_reconcile']:.1f} "
        f"| {steady['writes_per_reconcile']:.2f} | {steady['reads_total']:.0f} "
        f"| {steady['writes_total']:.0f} |"
    )
    if steady["reads_by_kind"]:
        print(f"reads: {steady['reads_by_kind']}")
    if steady["writes_by_kind"]:
        print(f"writes: {steady['writes_by_kind']}")


def _kubectl(plane: ControlPlane, *args: str, stdin: str | None = None) -> None:
    kubectl = REPO / ".tools" / "bin" / "kubectl"
    subprocess.run(
        [str(kubectl), "--kubeconfig", str(plane.admin_kubeconfig), *args],
        input=stdin, text=True, check=True, capture_output=True,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--resync", type=float, default=2.0, help="operator resync interval (s)")
    parser.add_argument("--periods", type=int, default=5, help="resync periods to observe")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="voiceops-bench-") as tmp:
        work = Path(tmp)
        with ControlPlane(work / "plane", audit=True) as plane:
            asyncio.run(run(plane, args, work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
