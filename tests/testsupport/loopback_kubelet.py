"""Test doubles for driving the operator on a real control plane: a kubelet, kopf's daemon kwargs.

The API server, the controller manager and the scheduler are real
(``voiceops_localcluster.control_plane``): the Deployments the operator creates get real
ReplicaSets and pods, and the real scheduler binds those pods to a Node.
:class:`LoopbackKubelet` is that Node's kubelet, a test double that runs nothing:

* it registers the Node (cpu, memory, pods and ``nvidia.com/gpu`` capacity) and
  keeps its Lease and Ready condition fresh, so the node lifecycle controller
  neither taints it nor evicts its pods;
* it "starts" each pod bound to it in a namespace it was told to run
  (:meth:`LoopbackKubelet.run`) by giving it a loopback address as ``status.podIP``
  and reporting it Running and Ready through ``pods/status``, as a kubelet does; a
  GPU-tier pod gets a small ``/metrics`` server on that address and its ``http``
  port, in the service's format, reporting what the namespace's :class:`GpuMetrics`
  says. Pods of other namespaces stay bound and Pending (an image that never
  arrives);
* it finishes pod deletions (the kubelet's final DELETE with grace 0).

No root needed: the pods' addresses are in 127.0.0.0/8 (the API server accepts them
as pod IPs; it refuses them in EndpointSlices, so the EndpointSlice controller
cannot publish these pods, which nothing here reads).

:class:`LiveObject` and :class:`DaemonStopped` stand in for what kopf hands a daemon
(a body kept current by a watch, a stop flag), for driving ``healing.run_loop``
without kopf.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml
from aiohttp import web
from voiceops_contract import metrics as m
from voiceops_localcluster.node_agent import Informer, KubeApiError, KubeClient
from voiceops_operator import names
from voiceops_operator.tiers import TIERS

T = TypeVar("T")
Obj = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "voiceservice.yaml"
GIB = 1 << 30
GPU_RESOURCE = "nvidia.com/gpu"
NODE_LEASE_NAMESPACE = "kube-node-lease"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 1.0  # the controller manager's node-monitor grace period is 6 s
POLL_SECONDS = 0.05
VOICESERVICES = "/apis/voiceops.io/v1alpha1/namespaces/{namespace}/voiceservices"


def rfc3339_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def eventually(
    check: Callable[[], T | Awaitable[T]], seconds: float, what: str, every: float = POLL_SECONDS
) -> T:
    """Poll ``check`` (sync or async) until it returns something truthy; that value.

    Raises AssertionError naming ``what`` once ``seconds`` have passed.
    """
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:g}s: {what}")
        await asyncio.sleep(every)


async def apply_crd(api: KubeClient) -> None:
    """Create (or keep) the VoiceService CRD and wait until the API server serves it."""
    crd = yaml.safe_load(CRD.read_text())
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    try:
        await api.request("POST", path, crd)
    except KubeApiError as error:
        if error.status != 409:
            raise

    async def established() -> bool:
        found = await api.get(f"{path}/{crd['metadata']['name']}") or {}
        conditions = (found.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    await eventually(established, 60, "the VoiceService CRD established")


async def create_namespace(api: KubeClient, name: str) -> None:
    """A namespace, once its ``default`` ServiceAccount exists (pods are refused before)."""
    await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    # The controller manager's ServiceAccount controller makes it (seconds after start-up).
    await eventually(
        lambda: api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        60,
        f"the default ServiceAccount of {name}",
    )


def pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def tier_of(pod: Mapping[str, Any]) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(names.LABEL_TIER, ""))


class GpuMetrics:
    """What the GPU pods of one namespace report on ``/metrics``: GPU memory at ``ratio``.

    :meth:`stop` takes their ``/metrics`` away (connections refused) while the pods
    stay Ready, as when a pod's server wedges.
    """

    def __init__(self) -> None:
        self.ratio = 0.4
        self.serving = True
        self._runners: dict[str, web.AppRunner] = {}

    def page(self) -> str:
        total = 16 * GIB
        used = int(self.ratio * total)
        return (
            f'{m.GPU_MEMORY_USED_BYTES.name}{{gpu="0"}} {used}\n'
            f'{m.GPU_MEMORY_TOTAL_BYTES.name}{{gpu="0"}} {total}\n'
            f"{m.CUDA_OOM_TOTAL.name} 0\n{m.REQUESTS_IN_FLIGHT.name} 1\n"
            f"{m.DEGRADED.name} 0\n"
        )

    async def serve(self, pod_uid: str, host: str, port: int) -> None:
        """Serve one pod's /metrics on ``host:port`` (nothing once stopped)."""
        if not self.serving or pod_uid in self._runners:
            return

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(text=self.page())

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runners[pod_uid] = runner

    async def close(self, pod_uid: str) -> None:
        runner = self._runners.pop(pod_uid, None)
        if runner is not None:
            await runner.cleanup()

    async def stop(self) -> None:
        """Every pod's /metrics goes away, and pods started later get none."""
        self.serving = False
        for uid in list(self._runners):
            await self.close(uid)


@dataclass
class _RunNamespace:
    tiers: frozenset[str]
    metrics: GpuMetrics = field(default_factory=GpuMetrics)


def _free_loopback_address(port: int) -> str:
    """A 127.x.y.z address whose ``port`` is free (a random one: other tests use low ones)."""
    for _ in range(100):
        host = (
            f"127.{random.randrange(100, 200)}.{random.randrange(256)}.{random.randrange(1, 255)}"
        )
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        return host
    raise RuntimeError(f"no loopback address with port {port} free")


def _http_port(pod: Mapping[str, Any]) -> int:
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == "http":
                return int(port["containerPort"])
    return 8000


class LoopbackKubelet:
    """One Node's kubelet, a test double whose pods are loopback addresses (module docstring)."""

    def __init__(self, api: KubeClient, node: str = "loopback-gpu-0", gpus: int = 64) -> None:
        self.api = api
        self.node = node
        self.gpus = gpus
        self.namespaces: dict[str, _RunNamespace] = {}
        # Pods reported Running, by uid: their address, and whether they are to be Ready.
        self.addresses: dict[str, str] = {}
        self.unready: set[str] = set()
        # What the API server refused (a bug in this double, not a condition to retry).
        self.failures: list[str] = []
        self._pods = Informer(
            api, "/api/v1/pods", self._on_pod, {"fieldSelector": f"spec.nodeName={node}"}
        )
        self._work: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    # ----------------------------------------------------------------- lifecycle
    async def start(self, within: float = 60.0) -> None:
        """Register the Node; return once it is schedulable and the pod watch has listed."""
        await self.api.request("POST", "/api/v1/nodes", self._node_object())
        await self._renew_lease()
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name=f"{self.node}-heartbeat"),
            asyncio.create_task(self._pods.run(), name=f"{self.node}-pods"),
            asyncio.create_task(self._worker(), name=f"{self.node}-worker"),
        ]

        async def schedulable() -> bool:
            node = await self.api.request("GET", f"/api/v1/nodes/{self.node}")
            taints = (node.get("spec") or {}).get("taints") or []
            return self._pods.synced.is_set() and not any(
                t.get("key") == NOT_READY_TAINT for t in taints
            )

        # The node lifecycle controller lifts the not-ready taint admission puts on a new Node.
        await eventually(schedulable, within, f"node {self.node} schedulable")

    async def stop(self) -> None:
        """Stop every task and /metrics server and delete the Node (its pods are collected)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for run in self.namespaces.values():
            await run.metrics.stop()
        with contextlib.suppress(KubeApiError, aiohttp.ClientError, OSError):
            await self.api.request("DELETE", f"/api/v1/nodes/{self.node}")

    # ------------------------------------------------------------------ controls
    def run(self, namespace: str, tiers: tuple[str, ...] = TIERS) -> GpuMetrics:
        """Start the pods of ``namespace`` in these tiers (again: change the tiers)."""
        run = self.namespaces.get(namespace)
        if run is None:
            run = self.namespaces[namespace] = _RunNamespace(frozenset(tiers))
        else:
            run.tiers = frozenset(tiers)
        self._enqueue_namespace(namespace)
        return run.metrics

    async def set_ready(self, namespace: str, name: str, ready: bool) -> None:
        """Report a started pod Ready or not (its readiness probe passing or failing)."""
        pod = self._pods.items[(namespace, name)]
        uid = pod["metadata"]["uid"]
        if uid not in self.addresses:
            raise LookupError(f"{namespace}/{name} was not started here")
        if ready:
            self.unready.discard(uid)
        else:
            self.unready.add(uid)
        await self._report(pod)

    async def set_gpu_capacity(self, gpus: int) -> None:
        """Change the Node's ``nvidia.com/gpu`` (like a kubelet, evicting nothing)."""
        resources = {**self._resources(), GPU_RESOURCE: str(gpus)}
        await self.api.request(
            "PATCH",
            f"/api/v1/nodes/{self.node}/status",
            {"status": {"capacity": resources, "allocatable": resources}},
            patch="merge",
        )

    def pods(self, namespace: str, tier: str | None = None) -> list[Obj]:
        """Pods bound to this node in ``namespace`` (as the watch has them), by name."""
        found = [
            pod
            for (ns, _), pod in sorted(self._pods.items.items())
            if ns == namespace and (tier is None or tier_of(pod) == tier)
        ]
        return [p for p in found if not p["metadata"].get("deletionTimestamp")]

    def ready_pods(self, namespace: str, tier: str) -> list[Obj]:
        return [p for p in self.pods(namespace, tier) if pod_ready(p)]

    # --------------------------------------------------------------------- node
    def _resources(self) -> dict[str, str]:
        return {"cpu": "64", "memory": "256Gi", "pods": "250", GPU_RESOURCE: str(self.gpus)}

    def _conditions(self) -> list[Obj]:
        now = rfc3339_now()
        return [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "the loopback kubelet (a test double) is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
        ]

    def _node_object(self) -> Obj:
        resources = self._resources()
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux"},
            },
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": self._conditions(),
            },
        }

    async def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases"
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {
            "holderIdentity": self.node,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now,
        }
        try:
            await self.api.request("PATCH", f"{path}/{self.node}", {"spec": spec}, patch="merge")
        except KubeApiError as error:
            if error.status != 404:
                raise
            lease = {"metadata": {"name": self.node, "namespace": NODE_LEASE_NAMESPACE}}
            await self.api.request("POST", path, {**lease, "spec": spec})

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._renew_lease()
                await self.api.request(
                    "PATCH",
                    f"/api/v1/nodes/{self.node}/status",
                    {"status": {"conditions": self._conditions()}},
                    patch="strategic",
                )
            except (KubeApiError, aiohttp.ClientError, OSError, TimeoutError):
                continue  # the next beat retries; the grace period is six of them

    # --------------------------------------------------------------------- pods
    def _on_pod(self, _: str, pod: Obj) -> None:
        meta = pod["metadata"]
        self._work.put_nowait((meta["namespace"], meta["name"]))

    def _enqueue_namespace(self, namespace: str) -> None:
        for ns, name in list(self._pods.items):
            if ns == namespace:
                self._work.put_nowait((ns, name))

    async def _worker(self) -> None:
        # One pod at a time, in event order: each step reads the watch's latest copy.
        while True:
            key = await self._work.get()
            try:
                await self._sync(key)
            except KubeApiError as error:
                if error.status == 404:
                    continue  # the pod is gone; its DELETED event follows
                if error.status < 500:
                    self.failures.append(f"{key[0]}/{key[1]}: {error}")
                    continue
                await asyncio.sleep(0.2)
                self._work.put_nowait(key)  # retried, as a kubelet's pod worker does
            except (aiohttp.ClientError, OSError, TimeoutError):
                await asyncio.sleep(0.2)
                self._work.put_nowait(key)

    async def _sync(self, key: tuple[str, str]) -> None:
        pod = self._pods.items.get(key)
        if pod is None:
            return
        meta = pod["metadata"]
        uid = meta["uid"]
        run = self.namespaces.get(key[0])
        if meta.get("deletionTimestamp"):
            if run is not None:
                await run.metrics.close(uid)
            self.addresses.pop(uid, None)
            self.unready.discard(uid)
            await self._delete(pod)
            return
        if uid in self.addresses or run is None or tier_of(pod) not in run.tiers:
            return
        port = _http_port(pod)
        host = _free_loopback_address(port)
        if tier_of(pod) == "gpu":
            await run.metrics.serve(uid, host, port)
        self.addresses[uid] = host
        await self._report(pod)

    async def _report(self, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        host = self.addresses[uid]
        ready = "False" if uid in self.unready else "True"
        now = rfc3339_now()
        started = (pod.get("status") or {}).get("startTime") or now
        containers = (pod.get("spec") or {}).get("containers") or []
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": host,
            "podIPs": [{"ip": host}],
            "startTime": started,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": started},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                {"type": "Ready", "status": ready, "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "containerID": f"loopback://{uid}/{c['name']}",
                    "ready": ready == "True",
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": started}},
                }
                for c in containers
            ],
        }
        # Strategic merge: conditions merge by type, so the scheduler's PodScheduled stays.
        await self.api.request(
            "PATCH",
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
            {"status": status},
            patch="strategic",
        )

    async def _delete(self, pod: Obj) -> None:
        """The kubelet's part of a deletion: the final DELETE, for this very pod (its uid)."""
        meta = pod["metadata"]
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        try:
            await self.api.request(
                "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body
            )
        except KubeApiError as error:
            if error.status not in (404, 409):  # gone already, or a new pod of that name
                raise


class LiveObject(Mapping[str, Any]):
    """One object as a watch on the API server keeps it (kopf's daemons get such a body).

    Use as an async context manager: it lists, then follows the watch until exit.
    """

    def __init__(self, api: KubeClient, collection: str, namespace: str, name: str) -> None:
        self._key = (namespace, name)
        self._informer = Informer(
            api, collection, lambda *_: None, {"fieldSelector": f"metadata.name={name}"}
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveObject:
        self._task = asyncio.create_task(self._informer.run())
        await asyncio.wait_for(self._informer.synced.wait(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _obj(self) -> Obj:
        return self._informer.items.get(self._key) or {}

    def __getitem__(self, key: str) -> Any:
        return self._obj()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._obj())

    def __len__(self) -> int:
        return len(self._obj())


class DaemonStopped:
    """Stands in for kopf's DaemonStopped flag: falsy until ``set()``."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()
