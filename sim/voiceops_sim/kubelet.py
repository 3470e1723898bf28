"""SimulatedKubelet: deployment controller + scheduler + kubelet against the emulator (TEST DOUBLE).

It runs in the emulator's process and event loop and reads/writes the
emulator's store directly (every write is a normal committed change, so API
clients see the usual watch events). What it does:

* Deployment controller: pods owned directly by the Deployment (no
  ReplicaSets; see :mod:`voiceops_sim.deployments`), scaling, rolling
  updates, Deployment status with Available/Progressing conditions.
* HPA controller (no metrics API): keeps the target's replicas within
  ``[minReplicas, maxReplicas]`` — what the real HPA does before it looks at
  metrics — and writes the HPA status.
* Scheduler over simulated nodes (:mod:`voiceops_sim.scheduling`): GPU/CPU
  requests, nodeSelector, taints; Unschedulable pods stay Pending with the
  scheduler's condition and a FailedScheduling Event.
* Kubelet: ``inert`` pods (Running/Ready after a short delay, podIP
  127.0.0.x) or ``process`` pods (the container runs as a local process on a
  unique loopback IP with probes, restarts and CrashLoopBackOff; see
  :mod:`voiceops_sim.pod_runtime`).

Not emulated: graceful pod termination (a deleted pod disappears at once;
its process gets SIGTERM then SIGKILL), Endpoints, kube-proxy, init
containers, volumes, resource limits enforcement.

Chaos API: :meth:`SimulatedKubelet.set_gpu_capacity`, :meth:`kill_pod_process`,
:meth:`crash_pod`, :meth:`make_unschedulable`, :meth:`allow_scheduling`,
:meth:`cordon`, :meth:`set_pod_ready`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import logging
import random
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import deployments as deploy_logic
from .apiserver import KubeApiEmulator
from .errors import ApiError
from .pod_runtime import (
    InertPodRuntime,
    PodRuntime,
    ProcessPodRuntime,
    RuntimeContext,
    now_rfc3339,
)
from .scheduling import GPU, SimNode, node_usage, parse_node, pod_requests, schedule
from .service_proxy import ServiceProxy
from .store import Obj, WatchEvent, WatchFilter

log = logging.getLogger(__name__)

__all__ = ["KubeletConfig", "SimNode", "SimulatedKubelet", "parse_node"]

_WATCHED = {
    ("apps", "deployments"),
    ("", "pods"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("", "nodes"),
    ("", "services"),
}


def default_image_commands() -> dict[str, list[str]]:
    """Images whose name contains the key run this command (the venv's entry points)."""
    return {"voiceops/service": [str(Path(sys.executable).parent / "voiceops-service")]}


def default_nodes() -> list[SimNode]:
    return [parse_node("sim-gpu-0:1:8"), parse_node("sim-cpu-0:0:8")]


@dataclass
class KubeletConfig:
    """Settings of the simulated cluster's controllers and nodes."""

    nodes: list[SimNode] = field(default_factory=default_nodes)
    pod_mode: Literal["inert", "process"] = "inert"
    inert_ready_delay: float = 0.2
    # Multiplies probe periods/delays, restart back-off, grace periods, progress deadlines.
    time_scale: float = 1.0
    image_commands: dict[str, list[str]] = field(default_factory=default_image_commands)
    extra_env: dict[str, str] = field(default_factory=dict)
    log_dir: str | None = None
    resync_seconds: float = 1.0
    hpa_controller: bool = True
    grace_cap_seconds: float = 5.0
    # Serve each Service on a loopback address (kube-proxy stand-in); None: in process mode.
    service_proxy: bool | None = None

    def __post_init__(self) -> None:
        if self.pod_mode not in ("inert", "process"):
            raise ValueError(f"pod_mode: must be 'inert' or 'process', not {self.pod_mode!r}")
        if self.time_scale <= 0:
            raise ValueError("time_scale: must be > 0")
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"nodes: duplicate node names in {names}")


class IpPool:
    """Loopback pod IPs: 127.0.0.2-250 first, then 127.2.0.1-127.2.255.254 (Linux routes
    all of 127/8 to lo, so processes can bind any of them).

    The pool starts at a random offset and skips addresses whose container ports are
    taken, so two simulated clusters on one machine (parallel test workers) rarely meet.
    """

    def __init__(self) -> None:
        first = [f"127.0.0.{n}" for n in range(2, 251)]
        start = random.randrange(len(first))
        self.free = first[start:] + first[:start]
        self.more = (f"127.2.{n // 256}.{n % 256}" for n in range(1, 65535) if n % 256)
        self.used: set[str] = set()

    @staticmethod
    def _ports_free(ip: str, ports: list[int]) -> bool:
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((ip, port))
                except OSError:
                    return False
        return True

    def take(self, ports: list[int] | None = None) -> str:
        for ip in list(self.free):
            if self._ports_free(ip, ports or []):
                self.free.remove(ip)
                self.used.add(ip)
                return ip
        for ip in self.more:
            if self._ports_free(ip, ports or []):
                self.used.add(ip)
                return ip
        raise RuntimeError(f"no free pod IPs left in 127.0.0.2-250 and 127.2/16 for ports {ports}")

    def give_back(self, ip: str) -> None:
        if ip in self.used:
            self.used.discard(ip)
            self.free.append(ip)  # reused last: a new pod rarely gets a just-freed IP


class SimulatedKubelet:
    """Controllers, scheduler and kubelet of a simulated cluster (see the module docstring)."""

    def __init__(self, emulator: KubeApiEmulator, config: KubeletConfig | None = None) -> None:
        self.emu = emulator
        self.store = emulator.store
        self.config = config or KubeletConfig()
        self.nodes = {n.name: n for n in self.config.nodes}
        self.runtimes: dict[tuple[str, str], PodRuntime] = {}
        self.pod_uids: dict[tuple[str, str], str] = {}
        self.ips = IpPool()
        self.forced_unschedulable: dict[tuple[str, str], str] = {}
        self.failed_scheduling: dict[tuple[str, str], str] = {}
        self.progress_marks: dict[str, tuple[str, float]] = {}
        self._wake = asyncio.Event()
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.log_dir = Path(".")
        self.passes = 0
        enabled = self.config.service_proxy
        if enabled is None:
            enabled = self.config.pod_mode == "process"
        self.proxy: ServiceProxy | None = ServiceProxy(self._objects) if enabled else None

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self.config.log_dir:
            self.log_dir = Path(self.config.log_dir)
            self.log_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="voiceops-sim-pods-")
            self.log_dir = Path(self._tmp.name)
        for node in self.nodes.values():
            self._publish_node(node)
        self._unsubscribe = self.emu.subscribe(self._on_change)
        self.emu.pod_log_provider = self.pod_log
        self._task = asyncio.create_task(self._run(), name="simulated-kubelet")

    async def stop(self) -> None:
        """Stop the loops and every pod process (no leaks)."""
        self._stopped = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(r.stop() for r in self.runtimes.values()), return_exceptions=True)
        if self.proxy is not None:
            await self.proxy.close()
        self.runtimes.clear()
        if self.emu.pod_log_provider == self.pod_log:
            self.emu.pod_log_provider = None
        if self._tmp is not None:
            self._tmp.cleanup()

    async def __aenter__(self) -> SimulatedKubelet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _on_change(self, event: WatchEvent) -> None:
        if event.resource.key in _WATCHED:
            self._wake.set()

    async def _run(self) -> None:
        while not self._stopped:
            self._wake.clear()
            try:
                await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the simulated cluster alive; the log says what broke
                log.exception("simulated kubelet pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.resync_seconds)
            await asyncio.sleep(0.01)  # coalesce bursts of changes into one pass

    async def reconcile_once(self) -> None:
        """One level-triggered pass over HPAs, Deployments, scheduling and pods."""
        self.passes += 1
        if self.config.hpa_controller:
            self._reconcile_hpas()
        self._reconcile_deployments()
        self._schedule_pending()
        await self._sync_runtimes()
        if self.proxy is not None:
            await self.proxy.sync(self.store.list(self._type("services")))

    # ---------------------------------------------------------------- helpers
    def _type(self, plural: str, group: str = "") -> Any:
        return self.store.types[(group, plural)]

    def _objects(self, plural: str, namespace: str) -> list[Obj]:
        return self.store.list(self._type(plural), WatchFilter(namespace=namespace))

    def _pods(self) -> list[Obj]:
        return self.store.list(self._type("pods"))

    def _write_status(self, plural: str, group: str, obj: Obj, status: Obj) -> None:
        if obj.get("status") == status:
            return
        meta = obj["metadata"]
        with contextlib.suppress(ApiError):  # gone meanwhile: nothing to report
            self.store.replace_with(
                self._type(plural, group),
                meta.get("namespace"),
                meta["name"],
                lambda live: {**live, "status": status},
                subresource="status",
            )

    def _event(
        self, obj: Obj, reason: str, message: str, kind: str = "Normal", component: str = "kubelet"
    ) -> None:
        meta = obj["metadata"]
        now = now_rfc3339()
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        with contextlib.suppress(ApiError):
            self.store.create(self._type("events"), meta["namespace"], body)

    def _publish_node(self, node: SimNode) -> None:
        self.emu.put_object(node.as_object())

    # ------------------------------------------------------------------- HPA
    def _reconcile_hpas(self) -> None:
        for hpa in self.store.list(self._type("horizontalpodautoscalers", "autoscaling")):
            spec = hpa.get("spec") or {}
            ref = spec.get("scaleTargetRef") or {}
            if ref.get("kind") != "Deployment":
                continue
            ns = hpa["metadata"]["namespace"]
            target = self.store.find(self._type("deployments", "apps"), ns, ref.get("name", ""))
            if target is None:
                continue
            current = int(target["spec"].get("replicas", 1))
            low, high = int(spec.get("minReplicas", 1)), int(spec.get("maxReplicas", 1))
            desired = min(max(current, low), high)
            if desired != current and current != 0:
                with contextlib.suppress(ApiError):
                    self.store.replace_with(
                        self._type("deployments", "apps"),
                        ns,
                        ref["name"],
                        lambda d, n=desired: {**d, "spec": {**d["spec"], "replicas": n}},
                    )
                bound = "below Spec.MinReplicas" if desired > current else "above Spec.MaxReplicas"
                self._event(
                    hpa,
                    "SuccessfulRescale",
                    f"New size: {desired}; reason: Current number of replicas {bound}",
                    component="horizontal-pod-autoscaler",
                )
            limited = desired in (low, high)
            status = {
                "currentReplicas": (target.get("status") or {}).get("replicas", 0),
                "desiredReplicas": desired,
                "conditions": [
                    {
                        "type": "AbleToScale",
                        "status": "True",
                        "reason": "ReadyForNewScale",
                        "message": "the simulated HPA controller can scale the target",
                    },
                    {
                        "type": "ScalingActive",
                        "status": "False",
                        "reason": "FailedGetPodsMetric",
                        "message": "the simulated cluster has no metrics API; replicas are only "
                        "kept within [minReplicas, maxReplicas]",
                    },
                    {
                        "type": "ScalingLimited",
                        "status": "True" if limited else "False",
                        "reason": "TooFewReplicas"
                        if desired == low
                        else "TooManyReplicas"
                        if desired == high
                        else "DesiredWithinRange",
                        "message": "the desired replica count is at a bound"
                        if limited
                        else "the desired count is within the acceptable range",
                    },
                ],
            }
            old = {k: v for k, v in (hpa.get("status") or {}).items()}
            for cond in old.get("conditions") or []:
                cond.pop("lastTransitionTime", None)
            if old != status:
                now = now_rfc3339()
                status["conditions"] = [
                    {**c, "lastTransitionTime": now} for c in status["conditions"]
                ]
                self._write_status("horizontalpodautoscalers", "autoscaling", hpa, status)

    # ------------------------------------------------------------ deployments
    def _reconcile_deployments(self) -> None:
        pods_by_owner: dict[str, list[Obj]] = {}
        for pod in self._pods():
            for ref in pod["metadata"].get("ownerReferences") or []:
                if ref.get("kind") == "Deployment" and ref.get("controller"):
                    pods_by_owner.setdefault(ref["uid"], []).append(pod)
        for dep in self.store.list(self._type("deployments", "apps")):
            if dep["metadata"].get("deletionTimestamp"):
                continue
            self._reconcile_deployment(dep, pods_by_owner.get(dep["metadata"]["uid"], []))

    def _reconcile_deployment(self, dep: Obj, pods: list[Obj]) -> None:
        meta = dep["metadata"]
        ns = meta["namespace"]
        if dep["spec"].get("paused"):
            return
        plan = deploy_logic.plan_pods(dep, pods)
        pod_hash = deploy_logic.template_hash(dep["spec"]["template"])
        pod_type = self._type("pods")
        deleted = set()
        for pod in plan.delete:
            with contextlib.suppress(ApiError):
                self.store.delete(pod_type, ns, pod["metadata"]["name"])
                deleted.add(pod["metadata"]["name"])
        fresh = [p for p in pods if p["metadata"]["name"] not in deleted]
        for _ in range(plan.create):
            for _attempt in range(5):  # name collisions are possible, if unlikely
                try:
                    fresh.append(
                        self.store.create(pod_type, ns, deploy_logic.new_pod(dep, pod_hash))
                    )
                    break
                except ApiError as error:
                    if error.code != 409:
                        self._event(
                            dep,
                            "FailedCreate",
                            f"Error creating: {error.message}",
                            "Warning",
                            component="deployment-controller",
                        )
                        break
        status = deploy_logic.deployment_status(
            dep, fresh, now_rfc3339(), deadline_exceeded=self._deadline_exceeded(dep, fresh)
        )
        self._write_status("deployments", "apps", dep, status)

    def _deadline_exceeded(self, dep: Obj, pods: list[Obj]) -> bool:
        """No progress (ready/updated counts unchanged) for progressDeadlineSeconds."""
        uid = dep["metadata"]["uid"]
        ready = sum(1 for p in pods if deploy_logic.pod_is_ready(p))
        mark = f"{dep['metadata'].get('generation')}/{len(pods)}/{ready}"
        now = time.monotonic()
        before = self.progress_marks.get(uid)
        if before is None or before[0] != mark:
            self.progress_marks[uid] = (mark, now)
            return False
        limit = float(dep["spec"].get("progressDeadlineSeconds", 600)) * self.config.time_scale
        return now - before[1] > limit

    # -------------------------------------------------------------- scheduler
    def _schedule_pending(self) -> None:
        pods = self._pods()
        usage = node_usage(pods)
        pending = sorted(
            (
                p
                for p in pods
                if not (p.get("spec") or {}).get("nodeName")
                and not p["metadata"].get("deletionTimestamp")
            ),
            key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]),
        )
        nodes = list(self.nodes.values())
        for pod in pending:
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            forced = self.forced_unschedulable.get(key)
            node, message = (None, forced) if forced else schedule(pod, nodes, usage)
            if node is None:
                self._mark_unschedulable(pod, message)
                continue
            usage.setdefault(node, Counter()).update(pod_requests(pod))
            self._bind(pod, node)

    def _mark_unschedulable(self, pod: Obj, message: str) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        previous = next(
            (
                c
                for c in (pod.get("status") or {}).get("conditions") or []
                if c.get("type") == "PodScheduled"
            ),
            None,
        )
        since = (
            previous.get("lastTransitionTime")
            if previous and previous.get("status") == "False"
            else now_rfc3339()
        )
        status = {
            "phase": "Pending",
            "qosClass": (pod.get("status") or {}).get("qosClass", "BestEffort"),
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": None,
                    "lastTransitionTime": since,
                }
            ],
        }
        self._write_status("pods", "", pod, status)
        if self.failed_scheduling.get(key) != message:
            self.failed_scheduling[key] = message
            self._event(pod, "FailedScheduling", message, "Warning", component="default-scheduler")

    def _bind(self, pod: Obj, node: str) -> None:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        self.failed_scheduling.pop((ns, name), None)
        with contextlib.suppress(ApiError):
            bound = self.store.replace_with(
                self._type("pods"),
                ns,
                name,
                lambda p: {**p, "spec": {**p["spec"], "nodeName": node}},
            )
            status = {
                "phase": "Pending",
                "qosClass": (bound.get("status") or {}).get("qosClass", "BestEffort"),
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "True",
                        "lastProbeTime": None,
                        "lastTransitionTime": now_rfc3339(),
                    }
                ],
            }
            self._write_status("pods", "", bound, status)
            self._event(
                bound,
                "Scheduled",
                f"Successfully assigned {ns}/{name} to {node}",
                component="default-scheduler",
            )

    # ---------------------------------------------------------------- kubelet
    async def _sync_runtimes(self) -> None:
        live: dict[tuple[str, str], Obj] = {}
        for pod in self._pods():
            node = (pod.get("spec") or {}).get("nodeName")
            if node in self.nodes:
                live[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = pod
        for key in [
            k
            for k in self.runtimes
            if k not in live or live[k]["metadata"]["uid"] != self.pod_uids.get(k)
        ]:
            await self._stop_runtime(key)
        for key, pod in live.items():
            if key not in self.runtimes:
                try:
                    self._start_runtime(key, pod)
                except RuntimeError as exc:  # out of addresses: this pod waits, others go on
                    log.error("cannot start pod %s/%s: %s", key[0], key[1], exc)
        for key, runtime in self.runtimes.items():
            pod = live.get(key)
            if pod is not None:
                self._write_status("pods", "", pod, runtime.status())

    def _start_runtime(self, key: tuple[str, str], pod: Obj) -> None:
        ctx = RuntimeContext(
            pod=copy.deepcopy(pod),
            node=pod["spec"]["nodeName"],
            ip=self.ips.take(_container_ports(pod) if self.config.pod_mode == "process" else []),
            time_scale=self.config.time_scale,
            on_change=self._wake.set,
            log_dir=self.log_dir,
            image_commands=self.config.image_commands,
            extra_env=self.config.extra_env,
            resolve_env_ref=self._resolve_env_ref,
            grace_cap_seconds=self.config.grace_cap_seconds,
            inert_ready_delay=self.config.inert_ready_delay,
        )
        runtime: PodRuntime = (
            ProcessPodRuntime(ctx) if self.config.pod_mode == "process" else InertPodRuntime(ctx)
        )
        self.runtimes[key] = runtime
        self.pod_uids[key] = pod["metadata"]["uid"]
        task = asyncio.ensure_future(runtime.start())
        task.add_done_callback(
            lambda t: (
                t.exception()
                and log.error("pod %s/%s failed to start: %s", key[0], key[1], t.exception())
            )
        )

    async def _stop_runtime(self, key: tuple[str, str]) -> None:
        runtime = self.runtimes[key]
        await runtime.stop()  # still listed while stopping: stop() finishes it if cancelled
        self.runtimes.pop(key, None)
        self.pod_uids.pop(key, None)
        self.ips.give_back(runtime.ctx.ip)

    def _resolve_env_ref(self, ref: Obj) -> str | None:
        pod = ref["_pod"]
        if "fieldRef" in ref:
            path = ref["fieldRef"].get("fieldPath", "")
            simple = {
                "metadata.name": pod["metadata"]["name"],
                "metadata.namespace": pod["metadata"]["namespace"],
                "metadata.uid": pod["metadata"]["uid"],
                "status.podIP": ref["_ip"],
                "status.hostIP": "127.0.0.1",
                "spec.nodeName": ref["_node"],
                "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
            }
            if path in simple:
                return simple[path]
            for kind in ("labels", "annotations"):
                prefix = f"metadata.{kind}['"
                if path.startswith(prefix) and path.endswith("']"):
                    return (pod["metadata"].get(kind) or {}).get(path[len(prefix) : -2])
            return None
        for ref_kind, plural in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
            if ref_kind in ref:
                found = self.store.find(
                    self._type(plural), pod["metadata"]["namespace"], ref[ref_kind].get("name", "")
                )
                data = (found or {}).get("data") or {}
                value = data.get(ref[ref_kind].get("key", ""))
                if value is not None and plural == "secrets":
                    return base64.b64decode(value).decode()
                return value
        return None

    # ------------------------------------------------------------- inspection
    def runtime(self, namespace: str, name: str) -> PodRuntime:
        try:
            return self.runtimes[(namespace, name)]
        except KeyError:
            raise LookupError(
                f"pod {namespace}/{name} is not running on a simulated node"
            ) from None

    def pod_ip(self, namespace: str, name: str) -> str:
        return self.runtime(namespace, name).ctx.ip

    def pod_log(self, namespace: str, name: str, container: str | None = None) -> str | None:
        """The pod's log (what ``kubectl logs`` shows); None for inert pods."""
        runtime = self.runtimes.get((namespace, name))
        if not isinstance(runtime, ProcessPodRuntime):
            return None
        container = container or runtime.containers[0].name
        path = runtime.log_path(container)
        return path.read_text(errors="replace") if path.exists() else ""

    def service_url(self, namespace: str, name: str, port: int | None = None) -> str:
        """Where the simulated kube-proxy serves a Service (``http://127.0.1.N:P``)."""
        if self.proxy is None:
            raise LookupError("the service proxy is off (KubeletConfig.service_proxy)")
        return self.proxy.url(namespace, name, port)

    def service_endpoints(self, namespace: str, name: str) -> list[str]:
        """``ip:port`` of the Ready pods a Service routes to right now."""
        if self.proxy is None:
            raise LookupError("the service proxy is off (KubeletConfig.service_proxy)")
        return self.proxy.endpoints(namespace, name)

    # ------------------------------------------------------------------ chaos
    async def set_gpu_capacity(self, node: str, gpus: int) -> list[str]:
        """Set a node's allocatable GPUs; GPU pods that no longer fit are evicted. Returns them."""
        sim = self.nodes[node]
        sim.allocatable[GPU] = float(gpus)
        self._publish_node(sim)
        on_node = [
            p
            for p in self._pods()
            if (p.get("spec") or {}).get("nodeName") == node and pod_requests(p).get(GPU, 0) > 0
        ]
        used = sum(pod_requests(p)[GPU] for p in on_node)
        evicted = []
        for pod in sorted(
            on_node, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True
        ):
            if used <= gpus:
                break
            used -= pod_requests(pod)[GPU]
            self._event(
                pod,
                "Evicted",
                f"The node {node} no longer has the nvidia.com/gpu this pod was using.",
                "Warning",
            )
            with contextlib.suppress(ApiError):
                self.store.delete(
                    self._type("pods"), pod["metadata"]["namespace"], pod["metadata"]["name"]
                )
            evicted.append(pod["metadata"]["name"])
        self._wake.set()
        await self._sync_runtimes()
        return evicted

    def cordon(self, node: str, unschedulable: bool = True) -> None:
        self.nodes[node].unschedulable = unschedulable
        self._publish_node(self.nodes[node])
        self._wake.set()

    def kill_pod_process(
        self, namespace: str, name: str, container: str | None = None, sig: int = signal.SIGKILL
    ) -> bool:
        """Signal a process pod's container (SIGKILL → exit 137, reported as OOMKilled)."""
        runtime = self.runtime(namespace, name)
        if not isinstance(runtime, ProcessPodRuntime):
            raise TypeError("kill_pod_process needs process mode; use crash_pod for inert pods")
        return runtime.kill(container, sig)

    def crash_pod(
        self, namespace: str, name: str, exit_code: int = 1, container: str | None = None
    ) -> None:
        """Make a pod's container exit with ``exit_code`` (inert: simulated; process: signal)."""
        runtime = self.runtime(namespace, name)
        if isinstance(runtime, InertPodRuntime):
            runtime.crash(exit_code, container)
        elif isinstance(runtime, ProcessPodRuntime):
            runtime.kill(container, signal.SIGKILL if exit_code == 137 else signal.SIGTERM)

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> None:
        """Force an inert pod's readiness (process pods answer their own probes)."""
        runtime = self.runtime(namespace, name)
        if not isinstance(runtime, InertPodRuntime):
            raise TypeError("set_pod_ready needs an inert pod")
        runtime.set_ready(ready)

    async def make_unschedulable(
        self, namespace: str, name: str, message: str | None = None
    ) -> None:
        """Stop a pod and hold it Pending/Unschedulable (``allow_scheduling`` undoes it)."""
        count = len(self.nodes)
        text = message or f"0/{count} nodes are available: {count} Insufficient {GPU}."
        self.forced_unschedulable[(namespace, name)] = text
        with contextlib.suppress(ApiError):
            self.store.replace_with(
                self._type("pods"),
                namespace,
                name,
                lambda p: {**p, "spec": {k: v for k, v in p["spec"].items() if k != "nodeName"}},
            )
        await self._sync_runtimes()
        self._schedule_pending()

    def allow_scheduling(self, namespace: str, name: str) -> None:
        self.forced_unschedulable.pop((namespace, name), None)
        self._wake.set()


def _container_ports(pod: Obj) -> list[int]:
    return [
        int(port["containerPort"])
        for container in (pod.get("spec") or {}).get("containers") or []
        for port in container.get("ports") or []
        if isinstance(port.get("containerPort"), int)
    ]
