"""NodeAgent: the nodes of a real local control plane; kubelet + kube-proxy stand-in (TEST DOUBLE).

:class:`voiceops_localcluster.control_plane.ControlPlane` runs the real etcd, API server,
controller manager and scheduler, with no nodes. A :class:`NodeAgent` is the
nodes: a plain API client (aiohttp with the kubeconfig's credentials; it shares
no in-process state with anything) that does what kubelets and kube-proxy do:

* **Nodes.** Registers each node (``parse_node("local-gpu-0:1:8")``: cpu, 64Gi
  memory, 110 pods and ``nvidia.com/gpu``, omitted for a node with no GPUs) with
  capacity, allocatable, labels and taints; renews its Lease
  (``kube-node-lease``, every ``lease_period`` = 1 s) and posts the Ready,
  MemoryPressure, DiskPressure and PIDPressure conditions (every
  ``status_period`` = 2 s; the controller manager's node-monitor-grace-period is
  6 s). It authenticates with the kubeconfig it is given (the admin's); a real
  kubelet talks as ``system:node:<name>`` under Node authorization, which these
  tests do not need.
* **Pods.** Watches the pods the real scheduler binds to its nodes
  (``fieldSelector=spec.nodeName=<node>``, one watch per node) and runs each
  container as a local process with :class:`~voiceops_localcluster.pod_runtime.ProcessPodRuntime`
  (probes, restarts with back-off, CrashLoopBackOff, OOMKilled for exit 137),
  reporting status changes by PATCHing ``pods/status`` (at most one patch per pod
  per ``status_interval`` = 50 ms). Env ``valueFrom``: ``fieldRef``, and
  ``secretKeyRef``/``configMapKeyRef`` read from the API before the containers
  start (missing, not optional: ``CreateContainerConfigError``, retried every
  second). Volumes: ``pod_volumes`` (bind mounts as root). Not done: ``envFrom``,
  init containers, resource limits,
  admission of pods that do not fit (the scheduler's word is taken), restartPolicy
  (containers always restart).
* **Images.** The container's ``command`` when set, else the image's entrypoint
  from ``images`` (matched on the repository, tag and registry ignored); ``args``
  replace the image's default arguments, as with a container runtime:

  - ``voiceops/service`` → the venv's ``voiceops-service``;
  - ``voiceops/service-gpu`` → the venv's ``voiceops-service`` (torch on CPU here);
  - ``voiceops/operator`` → the venv's ``voiceops-operator``, default arguments
    ``run --all-namespaces`` (the Dockerfile's CMD).

  An image that maps to nothing leaves its container waiting with reason
  ``ErrImagePull`` and a message naming the image.
* **Pod network.** The API server refuses loopback addresses in EndpointSlices,
  so pods get addresses in ``10.244.0.0/14``, each the twin of a loopback address
  the process binds: ``10.(244+B).C.D`` ↔ ``127.B.C.D`` (:func:`host_ip_for`,
  :func:`pod_ip_for`). ``status.podIP`` is the 10.244 address; the process is
  told its loopback address in ``VOICEOPS_HOST``; probes and this agent's proxy
  use the loopback twin, so nothing here ever sends a packet to 10.244. A client
  that dials ``podIP`` itself (the operator scraping pods) cannot reach it yet:
  pods in network namespaces of their own, with those addresses on veths, are
  the way to make pod IPs real on this machine (not built yet). If the range is
  already local here (a ``local`` route on ``lo``), processes bind their pod IPs.
* **Graceful termination.** A pod with a ``deletionTimestamp``: its ``preStop``
  hooks (exec, httpGet, sleep), SIGTERM to each container's process group,
  SIGKILL after the grace period (``deletionGracePeriodSeconds``, capped at
  ``grace_cap_seconds`` = 10 s; after a preStop at least 2 s remain), a final
  status (terminated containers, phase Succeeded/Failed), then DELETE with
  ``gracePeriodSeconds=0`` and the pod's UID as precondition — the kubelet's
  part of a deletion.
* **ServiceAccount identity.** As root: the admission plugin's projected token
  volume, mounted at the standard path, and ``KUBERNETES_SERVICE_HOST``/``PORT``
  (in-cluster clients work as on a cluster). Without root, unless
  ``automountServiceAccountToken`` is false (pod, else ServiceAccount), a token
  from the TokenRequest API (default audience, one hour, bound to the pod, so
  deleting the pod revokes it) goes into a kubeconfig in the pod's scratch folder;
  the process gets ``KUBECONFIG`` pointing at it. Every process gets
  ``POD_NAMESPACE``. Tokens are not refreshed (test lifetimes are shorter than an
  hour).
* **Services.** A kube-proxy stand-in (:class:`~voiceops_localcluster.service_proxy.ServiceProxy`):
  every Service with a selector is served on a loopback address
  (:meth:`NodeAgent.service_url`); each new connection goes to a ready endpoint
  of the **EndpointSlices** the real controller writes, round robin.
* **Resource metrics.** Each node serves the kubelet's ``/metrics/resource``
  (HTTPS on a loopback port named in ``status.daemonEndpoints``, client
  certificates checked by SubjectAccessReview): each container's process tree CPU
  and memory (:mod:`~voiceops_localcluster.kubelet_metrics`), what metrics-server
  reads for ``kubectl top`` and CPU-based HPAs.

``start()`` returns once every watch has listed and every node is schedulable
(the node lifecycle controller lifted the ``not-ready`` taint admission puts on a
new Node: about a second).

Chaos hooks: :meth:`NodeAgent.kill_pod_process`, :meth:`NodeAgent.stop_heartbeat`,
:meth:`NodeAgent.resume_heartbeat`, :meth:`NodeAgent.set_gpu_capacity`.
:meth:`NodeAgent.stop` terminates every pod process, closes the proxies and
cancels its tasks; Nodes and pods stay in the API (a stopped kubelet's node goes
NotReady).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import functools
import json
import logging
import shutil
import signal
import ssl
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from . import kubelet_metrics
from .kube_binaries import KUBERNETES_VERSION
from .nodes import GPU, NodeSpec, parse_node
from .pod_addresses import (
    POD_NETWORK,
    IpPool,
    container_ports,
    host_ip_for,
    pod_ip_for,
    pod_network_is_local,
)
from .pod_network import NamespacePodNetwork
from .pod_runtime import ContainerState, ProcessPodRuntime, RuntimeContext, now_rfc3339
from .pod_volumes import PodVolumes, VolumeError, can_mount, mount_prefix
from .ports import free_port
from .service_proxy import ServiceProxy, endpoints_from_slices, splice

log = logging.getLogger(__name__)

Obj = dict[str, Any]

__all__ = [
    "POD_NETWORK",
    "Image",
    "KubeApiError",
    "KubeClient",
    "NodeAgent",
    "NodeSpec",
    "default_images",
    "host_ip_for",
    "parse_node",
    "pod_ip_for",
]

API_GATEWAY_PORT = 6443  # pods in network namespaces reach the API server here, on the gateway
NODE_LEASE_NAMESPACE = "kube-node-lease"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
LEASE_DURATION_SECONDS = 40
TOKEN_SECONDS = 3600
TERMINAL_PHASES = ("Succeeded", "Failed")
PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


# -------------------------------------------------------------------------- images
@dataclass(frozen=True)
class Image:
    """What a container image runs: its entrypoint and default arguments."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()


def default_images() -> dict[str, Image]:
    """The project's three images → the venv's entry points (see the module docstring)."""
    venv = Path(sys.executable).parent
    service = Image((str(venv / "voiceops-service"),))
    return {
        "voiceops/service": service,
        "voiceops/service-gpu": service,
        "voiceops/operator": Image((str(venv / "voiceops-operator"),), ("run", "--all-namespaces")),
    }


def image_repository(image: str) -> str:
    """``registry:5000/voiceops/service:0.1@sha256:…`` → ``registry:5000/voiceops/service``."""
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name[: name.rfind(":")]
    return name


def find_image(images: dict[str, Image], image: str) -> Image | None:
    repository = image_repository(image)
    for key, value in images.items():
        if repository == key or repository.endswith("/" + key):
            return value
    return None


# ---------------------------------------------------------------------- API client
class KubeApiError(RuntimeError):
    """A non-2xx answer of the API server: ``status``, ``reason`` and its ``message``."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = {}
        parsed = parsed if isinstance(parsed, dict) else {}
        self.status = status
        self.reason = str(parsed.get("reason", ""))
        self.message = str(parsed.get("message", body[:500]))
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")


def _file_or_data(
    section: Obj, key: str, base: Path, secrets: Path, label: str
) -> tuple[Path | None, bytes]:
    """A kubeconfig credential given as ``key`` (a path) or ``key-data`` (base64)."""
    if section.get(f"{key}-data"):
        data = base64.b64decode(section[f"{key}-data"])
        secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = secrets / label
        path.write_bytes(data)
        path.chmod(0o600)
        return path, data
    if section.get(key):
        path = Path(section[key]).expanduser()
        path = path if path.is_absolute() else base / path
        return path, path.read_bytes()
    return None, b""


class KubeClient:
    """A small JSON client of the Kubernetes API (dicts in, dicts out) from a kubeconfig.

    Supports client certificates and bearer tokens (inline or file), a CA given as a
    file or inline, and ``insecure-skip-tls-verify``. Inline certificate data is
    written under ``secrets_dir`` (Python's TLS loads keys from files).
    """

    def __init__(
        self, server: str, ssl_context: ssl.SSLContext | bool, ca_pem: bytes, token: str | None
    ) -> None:
        self.server = server.rstrip("/")
        self.ssl = ssl_context
        self.ca_pem = ca_pem
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: Path, secrets_dir: Path | None = None) -> KubeClient:
        config = yaml.safe_load(Path(path).read_text()) or {}
        base = Path(path).resolve().parent
        secrets = secrets_dir or base / ".node-agent-credentials"
        current = config.get("current-context")
        contexts = {c["name"]: c.get("context") or {} for c in config.get("contexts") or []}
        context = contexts.get(current) or next(iter(contexts.values()), {})
        clusters = {c["name"]: c.get("cluster") or {} for c in config.get("clusters") or []}
        users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
        cluster = clusters.get(context.get("cluster", ""), {})
        user = users.get(context.get("user", ""), {})
        server = cluster.get("server")
        if not server:
            raise ValueError(f"{path}: no server for context {current!r}")
        _, ca_pem = _file_or_data(cluster, "certificate-authority", base, secrets, "ca.crt")
        tls: ssl.SSLContext | bool = True
        if server.startswith("https://"):
            if cluster.get("insecure-skip-tls-verify"):
                tls = False
            else:
                tls = ssl.create_default_context(cadata=ca_pem.decode() if ca_pem else None)
            cert, _ = _file_or_data(user, "client-certificate", base, secrets, "client.crt")
            key, _ = _file_or_data(user, "client-key", base, secrets, "client.key")
            if cert is not None:
                if tls is False:
                    tls = ssl._create_unverified_context()
                assert isinstance(tls, ssl.SSLContext)
                tls.load_cert_chain(str(cert), str(key) if key else None)
        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = Path(user["tokenFile"]).read_text().strip()
        return cls(server, tls, ca_pem, token)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json", "User-Agent": "voiceops-node-agent"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            self._session = aiohttp.ClientSession(headers=headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        params: dict[str, str] | None = None,
        patch: str | None = None,
        seconds: float = 30.0,
    ) -> Obj:
        headers = {}
        data = None
        if body is not None:
            headers["Content-Type"] = PATCH_TYPES[patch] if patch else "application/json"
            data = json.dumps(body)
        async with self.session.request(
            method,
            self.server + path,
            params=params,
            data=data,
            headers=headers,
            ssl=self.ssl,
            timeout=aiohttp.ClientTimeout(total=seconds),
        ) as rsp:
            text = await rsp.text()
            if rsp.status >= 400:
                raise KubeApiError(rsp.status, method, path, text)
            return json.loads(text) if text else {}

    async def get(self, path: str, params: dict[str, str] | None = None) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", path, params=params)
        except KubeApiError as error:
            if error.status == 404:
                return None
            raise

    async def watch(self, path: str, params: dict[str, str]) -> AsyncIterator[Obj]:
        """Watch events (dicts with ``type`` and ``object``) until the server ends the watch."""
        query = {**params, "watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "240"}
        async with self.session.get(
            self.server + path,
            params=query,
            ssl=self.ssl,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300),
        ) as rsp:
            if rsp.status >= 400:
                raise KubeApiError(rsp.status, "WATCH", path, await rsp.text())
            buffer = b""
            async for chunk in rsp.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)


class _Expired(Exception):
    """The watch's resourceVersion is too old (410): list again."""


def object_key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


class Informer:
    """List, then watch one collection; keeps ``items`` current and calls ``on_event``.

    A watch that ends is resumed from the last resourceVersion (bookmarks keep it
    fresh); a 410 or a broken connection lists again, reporting what vanished as
    DELETED.
    """

    def __init__(
        self,
        client: KubeClient,
        path: str,
        on_event: Callable[[str, Obj], None],
        params: dict[str, str] | None = None,
    ) -> None:
        self.client = client
        self.path = path
        self.params = params or {}
        self.on_event = on_event
        self.items: dict[tuple[str, str], Obj] = {}
        self.synced = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                version = await self._list()
                self.synced.set()
                while True:
                    version = await self._watch(version)
            except _Expired:
                continue
            except asyncio.CancelledError:
                raise
            except (KubeApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
                if isinstance(error, KubeApiError) and error.status == 410:
                    continue
                log.warning("watch of %s failed, listing again in 1 s: %s", self.path, error)
                await asyncio.sleep(1.0)

    async def _list(self) -> str:
        listing = await self.client.request("GET", self.path, params=self.params)
        fresh = {object_key(o): o for o in listing.get("items") or []}
        for key in [k for k in self.items if k not in fresh]:
            self.on_event("DELETED", self.items.pop(key))
        for key, obj in fresh.items():
            kind = "MODIFIED" if key in self.items else "ADDED"
            self.items[key] = obj
            self.on_event(kind, obj)
        return str(listing["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> str:
        query = {**self.params, "resourceVersion": version}
        async for event in self.client.watch(self.path, query):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Expired
                raise KubeApiError(int(obj.get("code") or 500), "WATCH", self.path, json.dumps(obj))
            version = str(obj["metadata"]["resourceVersion"])
            if kind == "BOOKMARK":
                continue
            key = object_key(obj)
            if kind == "DELETED":
                self.items.pop(key, None)
            else:
                self.items[key] = obj
            self.on_event(str(kind), obj)
        return version


# ------------------------------------------------------------------------ runtime
class ConfigError(Exception):
    """What keeps a pod's containers from starting (CreateContainerConfigError)."""


class AgentPodRuntime(ProcessPodRuntime):
    """A ProcessPodRuntime with image entrypoints, ErrImagePull and a pod-network IP."""

    def __init__(
        self,
        ctx: RuntimeContext,
        pod_ip: str,
        images: dict[str, Image],
        exec_prefix: Sequence[str] = (),
    ) -> None:
        super().__init__(ctx)
        self.pod_ip = pod_ip
        self.images = images
        self.exec_prefix = list(exec_prefix)  # e.g. ip netns exec <the pod's namespace>
        # Per container: a private mount namespace with the pod's volumes (pod_volumes).
        self.mount_prefixes: dict[str, list[str]] = {}
        self.started_containers = False

    def command_for(self, spec: Obj) -> list[str]:
        """``command`` + ``args``, else the image's entrypoint + (``args`` or its defaults)."""
        if spec.get("command"):
            entry, args = list(spec["command"]), list(spec.get("args") or [])
        else:
            image = find_image(self.images, spec.get("image", ""))
            if image is None:
                raise LookupError(self.unknown_image(spec))
            entry, args = list(image.entrypoint), list(spec.get("args") or image.cmd)
        resolved = shutil.which(entry[0], path=self._path()) or entry[0]
        mounts = self.mount_prefixes.get(spec.get("name", ""), [])
        return [*self.exec_prefix, *mounts, resolved, *entry[1:], *args]

    def unknown_image(self, spec: Obj) -> str:
        return (
            f'Failed to pull image "{spec.get("image", "")}": the node agent maps no command '
            f"to it (known images: {', '.join(sorted(self.images))}); set the container's "
            "command or pass NodeAgent(images=...)"
        )

    async def _supervise(self, state: ContainerState) -> None:
        spec = self.specs[state.name]
        if not spec.get("command") and find_image(self.images, spec.get("image", "")) is None:
            state.state, state.reason = "waiting", "ErrImagePull"
            state.message = self.unknown_image(spec)
            self.changed()
            await self.stopping.wait()
            return
        await super()._supervise(state)

    def status(self) -> Obj:
        status = super().status()
        status["podIP"] = self.pod_ip
        status["podIPs"] = [{"ip": self.pod_ip}]
        status.pop("qosClass", None)  # set by the API server at creation; immutable
        return status

    def exit_code(self, container: str) -> int | None:
        proc = self.processes.get(container)
        if proc is None or proc.returncode is None:
            return None
        return 128 - proc.returncode if proc.returncode < 0 else proc.returncode


@dataclass
class _PodEntry:
    """The agent's state of one pod (by namespace/name)."""

    key: tuple[str, str]
    node: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    uid: str = ""
    runtime: AgentPodRuntime | None = None
    pool_ip: str = ""
    netns: str = ""  # the pod's network namespace (NamespacePodNetwork)
    refs: dict[tuple[str, str], Obj | None] = field(default_factory=dict)
    worker: asyncio.Task[None] | None = None
    reporter: asyncio.Task[None] | None = None
    sent: Obj | None = None
    deleted_uid: str = ""


def _ready_status(status: Obj) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("status"))
    return None


def _resource_metrics_text(pids: list[tuple[str, str, str, int]]) -> str:
    rows = []
    for namespace, pod, container, pid in pids:
        usage = kubelet_metrics.process_tree_usage(pid)
        if usage is not None:
            cpu, memory, started = usage
            rows.append(
                kubelet_metrics.ContainerUsage(namespace, pod, container, cpu, memory, started)
            )
    node = kubelet_metrics.machine_usage()
    return kubelet_metrics.resource_metrics(node, rows, int(time.time() * 1000))


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeAgent:
    """Kubelets for ``nodes`` and a kube-proxy, against a real API server (module docstring)."""

    def __init__(
        self,
        kubeconfig: Path,
        nodes: Sequence[NodeSpec | str],
        work_dir: Path,
        *,
        images: dict[str, Image] | None = None,
        extra_env: dict[str, str] | None = None,
        time_scale: float = 1.0,
        grace_cap_seconds: float = 10.0,
        lease_period: float = 1.0,
        status_period: float = 2.0,
        status_interval: float = 0.05,
        service_proxy: bool = True,
        pod_network: NamespacePodNetwork | None = None,
        node_env: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        specs = [parse_node(n) if isinstance(n, str) else n for n in nodes]
        self.nodes: dict[str, NodeSpec] = {n.name: n for n in specs}
        if len(self.nodes) != len(specs):
            raise ValueError(f"nodes: duplicate names in {[n.name for n in specs]}")
        self.work_dir = Path(work_dir)
        self.pods_dir = self.work_dir / "pods"
        self.images = default_images() if images is None else images
        self.extra_env = dict(extra_env or {})
        # Per node: what its pods' processes get on top (a GPU node's NVML library).
        self.node_env = {node: dict(env) for node, env in (node_env or {}).items()}
        self.time_scale = time_scale
        self.grace_cap_seconds = grace_cap_seconds
        self.lease_period = lease_period
        self.status_period = status_period
        self.status_interval = status_interval
        self.client: KubeClient | None = None
        # Pods in network namespaces with real addresses (None: loopback twins).
        self.pod_network = pod_network
        self._api_gateway: asyncio.AbstractServer | None = None
        self.routed = False  # 10.244.0.0/14 local here: processes bind their pod IPs
        self.ips = IpPool()
        self.entries: dict[tuple[str, str], _PodEntry] = {}
        self.pods: dict[tuple[str, str], Obj] = {}
        self._paused: set[str] = set()
        self._node_uids: dict[str, str] = {}
        self._ready_since: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pod_informers: list[Informer] = []
        self._services: Informer | None = None
        self._slices: Informer | None = None
        self._proxy_wake = asyncio.Event()
        # Each node's kubelet endpoint (/metrics/resource for metrics-server).
        self._kubelet_ports: dict[str, int] = {}
        self._kubelet_runners: list[web.AppRunner] = []
        self.proxy: ServiceProxy | None = (
            ServiceProxy(self._cached, endpoint_source=self._slice_endpoints)
            if service_proxy
            else None
        )

    # -------------------------------------------------------------- lifecycle
    @property
    def api(self) -> KubeClient:
        if self.client is None:
            raise RuntimeError("NodeAgent.start() first")
        return self.client

    async def start(self, sync_timeout: float = 30.0) -> None:
        """Register the nodes, then watch pods (and Services) until ``stop()``.

        Returns once the watches have listed and every node is schedulable."""
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.client = KubeClient.from_kubeconfig(self.kubeconfig, self.work_dir / "credentials")
        self.routed = pod_network_is_local()
        try:
            await self._serve_kubelets()
            if self.pod_network is not None:
                await asyncio.to_thread(self.pod_network.setup)
                self._api_gateway = await self._forward_api_from_gateway(self.pod_network.gateway)
            for node in self.nodes.values():
                await self._register(node)
            for name in self.nodes:
                self._spawn(self._heartbeat(name), f"heartbeat-{name}")
                informer = Informer(
                    self.api,
                    "/api/v1/pods",
                    self._on_pod,
                    {"fieldSelector": f"spec.nodeName={name}"},
                )
                self._pod_informers.append(informer)
                self._spawn(informer.run(), f"pods-{name}")
            informers = list(self._pod_informers)
            if self.proxy is not None:
                self._services = Informer(self.api, "/api/v1/services", self._on_service)
                self._slices = Informer(
                    self.api, "/apis/discovery.k8s.io/v1/endpointslices", lambda *_: None
                )
                informers += [self._services, self._slices]
                self._spawn(self._services.run(), "services")
                self._spawn(self._slices.run(), "endpointslices")
                self._spawn(self._proxy_loop(), "service-proxy")
            await asyncio.wait_for(
                asyncio.gather(*(i.synced.wait() for i in informers), self._schedulable()),
                sync_timeout,
            )
        except BaseException:
            await self.stop()
            raise

    async def _schedulable(self) -> None:
        """Until the node lifecycle controller has seen every node Ready and lifted the
        ``node.kubernetes.io/not-ready`` taint that admission puts on a new Node."""
        waiting = set(self.nodes)
        while waiting:
            for name in sorted(waiting):
                node = await self.api.request("GET", f"/api/v1/nodes/{name}")
                taints = (node.get("spec") or {}).get("taints") or []
                if not any(t.get("key") == NOT_READY_TAINT for t in taints):
                    waiting.discard(name)
            if waiting:
                await asyncio.sleep(0.1)

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"node-agent-{name}"))

    async def stop(self) -> None:
        """Stop every pod process (SIGTERM, then SIGKILL), the proxies and all tasks."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        entries = list(self.entries.values())
        side_tasks = [t for e in entries for t in (e.worker, e.reporter) if t is not None]
        for task in side_tasks:
            task.cancel()
        await asyncio.gather(*side_tasks, return_exceptions=True)
        await asyncio.gather(
            *(e.runtime.stop() for e in entries if e.runtime is not None), return_exceptions=True
        )
        for entry in entries:
            self._release(entry)
        self.entries.clear()
        if self.proxy is not None:
            await self.proxy.close()
        for runner in self._kubelet_runners:
            await runner.cleanup()
        self._kubelet_runners.clear()
        if self._api_gateway is not None:
            self._api_gateway.close()
            self._api_gateway = None
        if self.pod_network is not None:
            await asyncio.to_thread(self.pod_network.teardown)
        if self.client is not None:
            await self.client.close()

    async def _forward_api_from_gateway(self, gateway: str) -> asyncio.AbstractServer:
        """Pods reach the API server at the pod network's gateway (TLS passes through)."""
        target = urllib.parse.urlsplit(self.api.server)
        host, port = target.hostname or "127.0.0.1", target.port or 443

        return await asyncio.start_server(
            lambda reader, writer: splice(reader, writer, host, port), gateway, API_GATEWAY_PORT
        )

    async def __aenter__(self) -> NodeAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ nodes
    def node_object(self, node: NodeSpec) -> Obj:
        obj = node.as_object()
        resources = obj["status"]["allocatable"]
        if resources.get(GPU) == "0":
            resources.pop(GPU)  # a node without GPUs has no nvidia.com/gpu at all
        obj["status"]["capacity"] = dict(resources)
        obj["status"]["allocatable"] = dict(resources)
        obj["status"]["conditions"] = self._conditions(node.name)
        info = obj["status"]["nodeInfo"]
        info["kubeletVersion"] = f"v{KUBERNETES_VERSION}"
        info["kubeProxyVersion"] = f"v{KUBERNETES_VERSION}"
        info["osImage"] = "voiceops node agent (local processes)"
        port = self._kubelet_ports.get(node.name, 0)
        obj["status"]["daemonEndpoints"] = {"kubeletEndpoint": {"Port": port}}
        return obj

    def _conditions(self, name: str) -> list[Obj]:
        now = now_rfc3339()
        since = self._ready_since.setdefault(name, now)
        rows = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "has sufficient memory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "has sufficient PID available"),
            ("Ready", "True", "KubeletReady", "the voiceops node agent is posting ready status"),
        ]
        return [
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": since,
            }
            for kind, status, reason, message in rows
        ]

    async def _register(self, node: NodeSpec) -> None:
        obj = self.node_object(node)
        try:
            created = await self.api.request("POST", "/api/v1/nodes", obj)
        except KubeApiError as error:
            if error.status != 409:
                raise
            meta = {"labels": obj["metadata"]["labels"]}
            created = await self.api.request(
                "PATCH",
                f"/api/v1/nodes/{node.name}",
                {"metadata": meta, "spec": obj["spec"]},
                patch="strategic",
            )
            await self.api.request(
                "PATCH",
                f"/api/v1/nodes/{node.name}/status",
                {"status": obj["status"]},
                patch="merge",
            )
        self._node_uids[node.name] = created["metadata"]["uid"]
        await self._renew_lease(node.name)

    # -------------------------------------------------------- kubelet endpoint
    async def _serve_kubelets(self) -> None:
        """Each node's ``/metrics/resource`` on its own loopback port (kubelet_metrics)."""
        if not self.api.ca_pem:
            log.warning("no cluster CA in %s: the nodes serve no resource metrics", self.kubeconfig)
            return
        context = kubelet_metrics.serving_context("voiceops-node-agent", self.api.ca_pem)
        for name in self.nodes:
            app = web.Application()
            app.router.add_get("/metrics/resource", functools.partial(self._resource_metrics, name))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            self._kubelet_runners.append(runner)
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
            self._kubelet_ports[name] = port

    async def _resource_metrics(self, node: str, request: web.Request) -> web.Response:
        if node in self._paused:  # a lost node answers nobody
            raise web.HTTPServiceUnavailable(text=f"node {node} is not reporting")
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        user, groups = kubelet_metrics.peer_identity(peer)
        try:
            review = await self.api.request(
                "POST",
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                kubelet_metrics.access_review(user, groups, node),
            )
        except (KubeApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
            # Nobody to ask (the API server restarting): refuse for now, the scraper retries.
            raise web.HTTPServiceUnavailable(text=f"cannot authorize {user}: {error}") from None
        if not (review.get("status") or {}).get("allowed"):
            raise web.HTTPForbidden(
                text=f"Forbidden (user={user}, verb=get, resource=nodes, subresource=metrics)"
            )
        pids = [
            (namespace, pod, container, process.pid)
            for (namespace, pod), entry in self.entries.items()
            if entry.node == node and entry.runtime is not None
            for container, process in entry.runtime.processes.items()
            if process.returncode is None
        ]
        text = await asyncio.to_thread(_resource_metrics_text, pids)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def _renew_lease(self, name: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases"
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": _micro_now(),
        }
        try:
            await self.api.request("PATCH", f"{path}/{name}", {"spec": spec}, patch="merge")
        except KubeApiError as error:
            if error.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": name}
            owner["uid"] = self._node_uids.get(name, "")
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": NODE_LEASE_NAMESPACE,
                    "ownerReferences": [owner] if owner["uid"] else [],
                },
                "spec": spec,
            }
            await self.api.request("POST", path, lease)

    async def _post_status(self, name: str) -> None:
        await self.api.request(
            "PATCH",
            f"/api/v1/nodes/{name}/status",
            {"status": {"conditions": self._conditions(name)}},
            patch="strategic",
        )

    async def _heartbeat(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        next_status = 0.0
        while True:
            if name not in self._paused:
                try:
                    await self._renew_lease(name)
                    if loop.time() >= next_status:
                        await self._post_status(name)
                        next_status = loop.time() + self.status_period
                except (KubeApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
                    log.warning("node %s: heartbeat failed: %s", name, error)
            await asyncio.sleep(self.lease_period)

    # ------------------------------------------------------------------- pods
    def _on_pod(self, kind: str, pod: Obj) -> None:
        key = object_key(pod)
        if kind == "DELETED":
            self.pods.pop(key, None)
        else:
            self.pods[key] = pod
        entry = self.entries.get(key)
        if entry is not None and kind == "MODIFIED" and self._status_overwritten(entry, pod):
            # Someone else changed what this node said (the node lifecycle controller
            # marks pods not ready when the node seemed lost): say it again, as the
            # kubelet's status manager does.
            entry.sent = None
            entry.dirty.set()
        if entry is None:
            if kind == "DELETED":
                return
            entry = _PodEntry(key, pod["spec"]["nodeName"])
            self.entries[key] = entry
            entry.worker = asyncio.create_task(
                self._work(entry), name=f"node-agent-pod-{key[0]}/{key[1]}"
            )
        entry.wake.set()

    def _status_overwritten(self, entry: _PodEntry, pod: Obj) -> bool:
        if entry.sent is None or entry.node in self._paused:
            return False
        return _ready_status(entry.sent) != _ready_status(pod.get("status") or {})

    async def _work(self, entry: _PodEntry) -> None:
        """The pod worker: brings the local containers to what the API says, one step a wake."""
        while await self._step(entry):
            await entry.wake.wait()

    async def _step(self, entry: _PodEntry) -> bool:
        """One pass for one pod; False when the pod is gone and its worker can end."""
        key = entry.key
        entry.wake.clear()
        try:
            pod = self.pods.get(key)
            if entry.runtime is not None and (pod is None or pod["metadata"]["uid"] != entry.uid):
                await self._discard(entry)  # force-deleted, or replaced by a pod of that name
                pod = self.pods.get(key)
            if pod is None:
                if self.entries.get(key) is entry:
                    del self.entries[key]
                return False
            meta = pod["metadata"]
            phase = (pod.get("status") or {}).get("phase")
            if meta.get("deletionTimestamp"):
                if entry.deleted_uid != meta["uid"]:
                    if entry.runtime is not None:
                        await self._terminate(entry, pod)
                    if not await self._delete(pod):
                        raise RuntimeError("the API server was not told")
                    entry.deleted_uid = meta["uid"]
            elif entry.runtime is None and phase not in TERMINAL_PHASES:
                self._create_runtime(entry, pod)
            runtime = entry.runtime
            if runtime is not None and not runtime.started_containers:
                await self._prepare_and_start(entry, pod)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep the pod's worker alive; the log says what broke
            log.exception("pod %s/%s: step failed; trying again in 1 s", *key)
            asyncio.get_running_loop().call_later(1.0, entry.wake.set)
        return True

    def _take_ip(self, ports: list[int]) -> tuple[str, str, str]:
        """(pool loopback address, address the process binds, pod IP)."""
        if self.pod_network is not None:
            raise AssertionError("pods in network namespaces take their IP from the network")
        return self._take_loopback_ip(ports)

    def _take_loopback_ip(self, ports: list[int]) -> tuple[str, str, str]:
        """(pool loopback address, address the process binds, pod IP)."""
        rejected: list[str] = []
        try:
            while True:
                loopback = self.ips.take(ports)
                pod_ip = pod_ip_for(loopback)
                if not self.routed:
                    return loopback, loopback, pod_ip
                if IpPool._ports_free(pod_ip, ports):
                    return loopback, pod_ip, pod_ip
                rejected.append(loopback)
        finally:
            for address in rejected:
                self.ips.give_back(address)

    def _create_runtime(self, entry: _PodEntry, pod: Obj) -> None:
        ns, name = entry.key
        prefix: list[str] = []
        if self.pod_network is not None:
            entry.netns, pod_ip = self.pod_network.attach()
            pool_ip, host_ip = "", pod_ip
            prefix = self.pod_network.exec_prefix(entry.netns)
        else:
            pool_ip, host_ip, pod_ip = self._take_ip(container_ports(pod))
        ctx = RuntimeContext(
            pod=copy.deepcopy(pod),
            node=entry.node,
            ip=host_ip,
            time_scale=self.time_scale,
            on_change=entry.dirty.set,
            log_dir=self.pods_dir,
            extra_env={**self.extra_env, **self.node_env.get(entry.node, {}), "POD_NAMESPACE": ns},
            resolve_env_ref=lambda ref: self._resolve_env_ref(entry, ref),
            grace_cap_seconds=self.grace_cap_seconds,
        )
        entry.runtime = AgentPodRuntime(ctx, pod_ip, self.images, prefix)
        entry.uid = pod["metadata"]["uid"]
        entry.pool_ip = pool_ip
        entry.sent = None
        entry.reporter = asyncio.create_task(
            self._report(entry), name=f"node-agent-status-{ns}/{name}"
        )
        entry.dirty.set()

    async def _prepare_and_start(self, entry: _PodEntry, pod: Obj) -> None:
        runtime = entry.runtime
        assert runtime is not None
        try:
            entry.refs = await self._fetch_refs(pod)
            runtime.scratch.mkdir(parents=True, exist_ok=True)
            if can_mount():
                await self._mount_volumes(entry, pod, runtime)
            else:
                await self._identity_without_mounts(pod, runtime)
        except (
            ConfigError,
            VolumeError,
            KubeApiError,
            aiohttp.ClientError,
            OSError,
            TimeoutError,
        ) as error:
            message = error.message if isinstance(error, KubeApiError) else str(error)
            for state in runtime.containers:
                state.state, state.reason, state.message = (
                    "waiting",
                    "CreateContainerConfigError",
                    message,
                )
            runtime.changed()
            asyncio.get_running_loop().call_later(1.0, entry.wake.set)
            return
        runtime.started_containers = True
        for state in runtime.containers:
            if state.reason == "CreateContainerConfigError":
                state.reason, state.message = "ContainerCreating", ""
        await runtime.start()

    async def _mount_volumes(self, entry: _PodEntry, pod: Obj, runtime: AgentPodRuntime) -> None:
        """Write the pod's volumes and mount them where its containers say (pod_volumes).

        The ServiceAccount admission plugin put the token volume at the standard path;
        with ``KUBERNETES_SERVICE_HOST``/``PORT`` the process finds the API server as
        in-cluster clients do."""
        ns = pod["metadata"]["namespace"]

        async def request_token(account: str, spec: Obj) -> str:
            path = f"/api/v1/namespaces/{ns}/serviceaccounts/{account}/token"
            body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"}
            answer = await self.api.request("POST", path, {**body, "spec": spec})
            return str(answer["status"]["token"])

        def resolve_field(path: str) -> str | None:
            return self._resolve_env_ref(
                entry, {"fieldRef": {"fieldPath": path}, "_pod": pod, "_node": entry.node}
            )

        volumes = PodVolumes(
            pod, runtime.scratch / "volumes", self.api.get, request_token, resolve_field
        )
        await volumes.write()
        for container in pod["spec"].get("containers") or []:
            runtime.mount_prefixes[container["name"]] = mount_prefix(volumes.mounts(container))
        host, port = self._api_address_for_pods()
        runtime.ctx.extra_env["KUBERNETES_SERVICE_HOST"] = host
        runtime.ctx.extra_env["KUBERNETES_SERVICE_PORT"] = str(port)

    async def _identity_without_mounts(self, pod: Obj, runtime: AgentPodRuntime) -> None:
        """Without root (no mount namespaces): the token in a kubeconfig, no other volumes."""
        for volume in pod["spec"].get("volumes") or []:
            projected = (volume.get("projected") or {}).get("sources") or []
            is_token = any("serviceAccountToken" in source for source in projected)
            if not is_token and any(k in volume for k in ("secret", "configMap", "downwardAPI")):
                raise ConfigError(
                    f'volume "{volume["name"]}": mounting needs root (a mount namespace per '
                    "container); run the node agent as root"
                )
        kubeconfig = await self._service_account_kubeconfig(pod, runtime.scratch)
        if kubeconfig is not None:
            runtime.ctx.extra_env["KUBECONFIG"] = str(kubeconfig)

    def _api_address_for_pods(self) -> tuple[str, int]:
        """Where a pod's process reaches the API server (inside a pod network namespace,
        127.0.0.1 is the pod itself: the gateway forwarder)."""
        if self.pod_network is not None:
            return self.pod_network.gateway, API_GATEWAY_PORT
        target = urllib.parse.urlsplit(self.api.server)
        return target.hostname or "127.0.0.1", target.port or 443

    async def _fetch_refs(self, pod: Obj) -> dict[tuple[str, str], Obj | None]:
        """The Secrets and ConfigMaps the pod's env reads; ConfigError if one is missing."""
        ns = pod["metadata"]["namespace"]
        found: dict[tuple[str, str], Obj | None] = {}
        for container in pod["spec"].get("containers") or []:
            for item in container.get("env") or []:
                source = item.get("valueFrom") or {}
                for ref_kind, plural, kind in (
                    ("secretKeyRef", "secrets", "Secret"),
                    ("configMapKeyRef", "configmaps", "ConfigMap"),
                ):
                    ref = source.get(ref_kind)
                    if ref is None:
                        continue
                    key = (plural, ref.get("name", ""))
                    if key not in found:
                        path = f"/api/v1/namespaces/{ns}/{plural}/{key[1]}"
                        found[key] = await self.api.get(path)
                    obj = found[key]
                    if ref.get("optional"):
                        continue
                    if obj is None:
                        raise ConfigError(f'{kind.lower()} "{key[1]}" not found')
                    if ref.get("key") not in (obj.get("data") or {}):
                        raise ConfigError(
                            f"couldn't find key {ref.get('key')} in {kind} {ns}/{key[1]}"
                        )
        return found

    def _resolve_env_ref(self, entry: _PodEntry, ref: Obj) -> str | None:
        pod = ref["_pod"]
        meta = pod["metadata"]
        if "fieldRef" in ref:
            path = ref["fieldRef"].get("fieldPath", "")
            pod_ip = entry.runtime.pod_ip if entry.runtime else ""
            simple = {
                "metadata.name": meta["name"],
                "metadata.namespace": meta["namespace"],
                "metadata.uid": meta["uid"],
                "status.podIP": pod_ip,
                "status.podIPs": pod_ip,
                "status.hostIP": "127.0.0.1",
                "status.hostIPs": "127.0.0.1",
                "spec.nodeName": ref["_node"],
                "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
            }
            if path in simple:
                return simple[path]
            for kind in ("labels", "annotations"):
                prefix = f"metadata.{kind}['"
                if path.startswith(prefix) and path.endswith("']"):
                    return (meta.get(kind) or {}).get(path[len(prefix) : -2])
            return None
        for ref_kind, plural in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
            if ref_kind in ref:
                obj = entry.refs.get((plural, ref[ref_kind].get("name", "")))
                value = ((obj or {}).get("data") or {}).get(ref[ref_kind].get("key", ""))
                if value is not None and plural == "secrets":
                    return base64.b64decode(value).decode()
                return value
        return None

    async def _service_account_kubeconfig(self, pod: Obj, folder: Path) -> Path | None:
        """A kubeconfig with a TokenRequest token for the pod's ServiceAccount (or None)."""
        meta, spec = pod["metadata"], pod["spec"]
        if spec.get("automountServiceAccountToken") is False:
            return None
        ns = meta["namespace"]
        account = spec.get("serviceAccountName") or "default"
        path = f"/api/v1/namespaces/{ns}/serviceaccounts/{account}"
        found = await self.api.get(path)
        if found is None:
            raise ConfigError(f'serviceaccount "{account}" not found')
        if spec.get("automountServiceAccountToken") is None and (
            found.get("automountServiceAccountToken") is False
        ):
            return None
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": TOKEN_SECONDS,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        answer = await self.api.request("POST", f"{path}/token", request)
        host, port = self._api_address_for_pods()
        cluster: Obj = {"server": f"https://{host}:{port}"}
        if self.api.ca_pem:
            cluster["certificate-authority-data"] = base64.b64encode(self.api.ca_pem).decode()
        else:
            cluster["insecure-skip-tls-verify"] = True
        user = f"system:serviceaccount:{ns}:{account}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": answer["status"]["token"]}}],
            "contexts": [
                {"name": "local", "context": {"cluster": "local", "user": user, "namespace": ns}}
            ],
            "current-context": "local",
        }
        target = folder / "kubeconfig"
        target.write_text(yaml.safe_dump(config, sort_keys=False))
        target.chmod(0o600)
        return target

    async def _report(self, entry: _PodEntry) -> None:
        """Send the runtime's status when it changed, at most once per status_interval."""
        runtime = entry.runtime
        assert runtime is not None
        while True:
            await entry.dirty.wait()
            entry.dirty.clear()
            if entry.node in self._paused:
                continue  # a lost node tells nobody; resume_heartbeat sends it all again
            status = runtime.status()
            if status != entry.sent:
                try:
                    await self._patch_status(entry, status)
                    entry.sent = status
                except (KubeApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
                    if not isinstance(error, KubeApiError) or error.status not in (404, 409):
                        log.warning("pod %s/%s: status not sent: %s", *entry.key, error)
                        entry.dirty.set()  # try again after the pause
            await asyncio.sleep(self.status_interval)

    async def _patch_status(self, entry: _PodEntry, status: Obj) -> None:
        ns, name = entry.key
        await self.api.request(
            "PATCH",
            f"/api/v1/namespaces/{ns}/pods/{name}/status",
            {"metadata": {"uid": entry.uid}, "status": status},  # the UID is a precondition
            patch="merge",
        )

    async def _terminate(self, entry: _PodEntry, pod: Obj) -> None:
        """preStop hooks, SIGTERM, SIGKILL after the grace period, the final status."""
        runtime = entry.runtime
        assert runtime is not None
        loop = asyncio.get_running_loop()
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        grace = min(float(grace), self.grace_cap_seconds)
        began = loop.time()
        if runtime.started_containers:
            await self._pre_stop(runtime, grace)
        # What the hooks left of the grace period, and at least 2 s (as the kubelet gives).
        runtime.ctx.grace_cap_seconds = max(grace - (loop.time() - began), min(2.0, grace))
        await runtime.stop()
        if entry.reporter is not None:
            entry.reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await entry.reporter
            entry.reporter = None
        status = runtime.status()
        codes = []
        for item in status["containerStatuses"]:
            code = runtime.exit_code(item["name"])
            if code is None:
                continue
            codes.append(code)
            started = (item.get("state") or {}).get("running", {}).get("startedAt")
            item["state"] = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started or now_rfc3339(),
                    "finishedAt": now_rfc3339(),
                    "containerID": item["containerID"],
                }
            }
            item["ready"] = item["started"] = False
        if codes and len(codes) == len(status["containerStatuses"]):
            status["phase"] = "Succeeded" if not any(codes) else "Failed"
        with contextlib.suppress(KubeApiError, aiohttp.ClientError, OSError, TimeoutError):
            await self._patch_status(entry, status)
        self._release(entry)

    async def _pre_stop(self, runtime: AgentPodRuntime, grace: float) -> None:
        async def hook(spec: Obj, action: Obj) -> None:
            if "sleep" in action:
                await runtime.sleep(float(action["sleep"].get("seconds", 0)))
                return
            async with aiohttp.ClientSession() as session:
                ok = await runtime.check(session, spec, {**action, "timeoutSeconds": grace})
            if not ok:
                log.info("pod %s/%s: preStop hook of %s failed", *entry_key, spec["name"])

        entry_key = (runtime.namespace, runtime.pod_name)
        hooks = [
            hook(spec, (spec.get("lifecycle") or {})["preStop"])
            for name, spec in runtime.specs.items()
            if (spec.get("lifecycle") or {}).get("preStop")
            and name in runtime.processes
            and runtime.processes[name].returncode is None
        ]
        if hooks:
            # Awaited here, not through wait_for: a stop that cancels this task then
            # cancels the hooks and collects their end (no "never retrieved" gather).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*hooks, return_exceptions=True)

    async def _discard(self, entry: _PodEntry) -> None:
        """Stop a pod that is gone from the API (no hooks, no status)."""
        runtime = entry.runtime
        if entry.reporter is not None:
            entry.reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await entry.reporter
            entry.reporter = None
        if runtime is not None:
            await runtime.stop()
        self._release(entry)

    def _release(self, entry: _PodEntry) -> None:
        if entry.reporter is not None:
            entry.reporter.cancel()
            entry.reporter = None
        if entry.pool_ip:
            self.ips.give_back(entry.pool_ip)
            entry.pool_ip = ""
        if entry.netns and self.pod_network is not None:
            self.pod_network.detach(entry.netns)
            entry.netns = ""
        entry.runtime = None

    async def _delete(self, pod: Obj) -> bool:
        """The kubelet's last word on a deleted pod: remove it now (grace 0, this UID).

        False when the API server could not be told (try again)."""
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        try:
            await self.api.request(
                "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body
            )
        except KubeApiError as error:
            if error.status not in (404, 409):  # gone, or another pod of that name now
                log.warning("pod %s/%s: delete failed: %s", meta["namespace"], meta["name"], error)
                return False
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            log.warning("pod %s/%s: delete failed: %s", meta["namespace"], meta["name"], error)
            return False
        return True

    # --------------------------------------------------------------- services
    def _on_service(self, kind: str, svc: Obj) -> None:
        self._proxy_wake.set()

    def _cached(self, plural: str, namespace: str) -> list[Obj]:
        informer = {"services": self._services, "endpointslices": self._slices}.get(plural)
        if informer is None:
            return []
        return [o for (ns, _), o in informer.items.items() if ns == namespace]

    def _slice_endpoints(self, svc: Obj, service_port: Obj) -> list[tuple[str, int]]:
        slices = self._cached("endpointslices", svc["metadata"]["namespace"])
        found = endpoints_from_slices(slices, svc, service_port)
        if self.routed:
            return found
        return [(host_ip_for(ip), port) for ip, port in found]

    async def _proxy_loop(self) -> None:
        assert self.proxy is not None
        assert self._services is not None
        while True:
            await self._proxy_wake.wait()
            self._proxy_wake.clear()
            try:
                await self.proxy.sync(list(self._services.items.values()))
            except OSError as error:
                log.warning("service proxy sync failed: %s", error)

    # ------------------------------------------------------------- inspection
    def runtime(self, namespace: str, name: str) -> AgentPodRuntime:
        entry = self.entries.get((namespace, name))
        if entry is None or entry.runtime is None:
            raise LookupError(f"pod {namespace}/{name} does not run on this agent's nodes")
        return entry.runtime

    def host_ip(self, namespace: str, name: str) -> str:
        """The address the pod's processes listen on (loopback, or the pod IP if routed)."""
        return self.runtime(namespace, name).ctx.ip

    def log_path(self, namespace: str, name: str, container: str) -> Path:
        """The container's log file (kept after the pod is gone)."""
        return self.pods_dir / f"{namespace}_{name}_{container}.log"

    def pod_log(self, namespace: str, name: str, container: str | None = None) -> str:
        """What the container wrote (its first one by default), also after the pod is gone."""
        if container is None:
            spec = self.pods.get((namespace, name), {}).get("spec") or {}
            names = [c["name"] for c in spec.get("containers") or []]
            if not names:  # gone from the API: its log files are still here
                prefix = f"{namespace}_{name}_"  # names hold no "_": the rest is the container
                logs = self.pods_dir.glob(prefix + "*.log")
                names = sorted(path.name[len(prefix) : -len(".log")] for path in logs)
            if not names:
                return ""
            container = names[0]
        path = self.log_path(namespace, name, container)
        return path.read_text(errors="replace") if path.exists() else ""

    def service_url(self, namespace: str, name: str, port: int | None = None) -> str:
        """Where the proxy serves a Service (``http://127.0.1.N:P``); LookupError until then."""
        if self.proxy is None:
            raise LookupError("the service proxy is off (NodeAgent(service_proxy=False))")
        return self.proxy.url(namespace, name, port)

    def service_endpoints(self, namespace: str, name: str) -> list[str]:
        """``ip:port`` a new connection to the Service may go to now (first port)."""
        if self.proxy is None:
            raise LookupError("the service proxy is off (NodeAgent(service_proxy=False))")
        return self.proxy.endpoints(namespace, name)

    # ------------------------------------------------------------------ chaos
    def kill_pod_process(
        self, namespace: str, name: str, sig: int = signal.SIGKILL, container: str | None = None
    ) -> bool:
        """Signal a pod's container process group (SIGKILL → exit 137, reported OOMKilled)."""
        return self.runtime(namespace, name).kill(container, sig)

    async def stop_heartbeat(self, node: str) -> None:
        """The node stops renewing its Lease and posting its and its pods' status (a lost
        node); its pods' processes run on."""
        self._check_node(node)
        self._paused.add(node)

    async def resume_heartbeat(self, node: str) -> None:
        """Renew the Lease and post Ready now, and keep doing so."""
        self._check_node(node)
        self._paused.discard(node)
        self._ready_since[node] = now_rfc3339()
        await self._renew_lease(node)
        await self._post_status(node)
        for entry in self.entries.values():
            if entry.node == node:
                entry.sent = None  # what it said before may have been overwritten since
                entry.dirty.set()

    async def set_gpu_capacity(self, node: str, gpus: int) -> None:
        """Patch the node's ``nvidia.com/gpu`` capacity and allocatable (the device plugin's
        count). Pods already running stay, as with a real kubelet; new pods see the count."""
        self._check_node(node)
        self.nodes[node].allocatable[GPU] = float(gpus)
        await self.api.request(
            "PATCH",
            f"/api/v1/nodes/{node}/status",
            {"status": {"capacity": {GPU: str(gpus)}, "allocatable": {GPU: str(gpus)}}},
            patch="strategic",
        )

    def _check_node(self, node: str) -> None:
        if node not in self.nodes:
            raise LookupError(f"node {node!r} is not one of this agent's: {sorted(self.nodes)}")
