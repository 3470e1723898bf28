"""How faults enter a cluster: one small Protocol, and its implementation for any cluster.

A :class:`FaultTarget` says which actions it cannot do (and why) and does the
others. :class:`ApiFaults` needs nothing but the Kubernetes API: pod deletion and
eviction, cordons, VoiceService spec patches, the operator's pods, and the service's
token-guarded ``/admin/faults`` through the API server's pod proxy. The local control
plane's target (``local.LocalFaults``) does more (node agent, NVML, processes).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from voiceops_contract import pod as pod_contract
from voiceops_localcluster.node_agent import KubeApiError, KubeClient

from . import catalogue as c
from .evaluate import Disruption
from .observe import API, Observer, pod_ready

# The fault token goes in the service's own header: through the API server's pod proxy
# ``Authorization`` is the caller's credential, which the API server removes once it has
# authenticated the caller, so a pod never sees it.
FAULT_TOKEN_HEADER = pod_contract.FAULT_TOKEN_HEADER
METRICS_API = "metrics.k8s.io/v1beta1"  # what an HPA on CPU reads (metrics-server)
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass
class Applied:
    done: str  # what the target did, for the report
    disruptions: list[Disruption] = field(default_factory=list)


class FaultTarget(Protocol):
    """Where a scenario's actions enter a cluster."""

    name: str

    def unsupported(self, action: Any) -> str | None:
        """Why this target cannot do ``action`` (None: it can)."""
        ...

    async def apply(self, action: Any) -> Applied: ...

    def scenario_leftovers(self) -> list[str]:
        """What a scenario's faults left in place after its rollback (empty: nothing)."""
        ...


def ips_of(pods: list[dict[str, Any]]) -> frozenset[str]:
    return frozenset(ip for p in pods if (ip := (p.get("status") or {}).get("podIP")))


def undo_patch(original: Any, patch: Any) -> Any:
    """The merge patch that puts back what ``patch`` changed in ``original`` (RFC 7386:
    ``None`` removes a key that was not there)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(original)
    if not isinstance(original, dict):
        return None
    undo: dict[str, Any] = {}
    for key, value in patch.items():
        if key not in original:
            undo[key] = None
        elif isinstance(value, dict) and isinstance(original[key], dict):
            undo[key] = undo_patch(original[key], value)
        else:
            undo[key] = copy.deepcopy(original[key])
    return undo


def merge_patches(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """One merge patch with the effect of ``first`` then ``second`` on the same keys, where
    ``first`` wins (it holds the older values: undoing in reverse order)."""
    out = copy.deepcopy(second)
    for key, value in first.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patches(value, out[key])
        else:
            out[key] = copy.deepcopy(value)
    return out


class ApiFaults:
    """Faults through the Kubernetes API alone: any cluster, kind included."""

    name = "api"
    NEEDS_FAULT_ENDPOINT = (c.GpuMemory, c.CudaOom, c.ClearFaults, c.CrashLoop, c.HangEngine)

    def __init__(
        self,
        api: KubeClient,
        observer: Observer,
        *,
        operator_namespace: str = "voiceops-system",
        operator_selector: str = "app.kubernetes.io/component=operator",
    ) -> None:
        self.api = api
        self.observer = observer
        self.namespace = observer.namespace
        self.vs_name = observer.name
        self.operator_namespace = operator_namespace
        self.operator_selector = operator_selector
        self.fault_token = ""
        self.fault_endpoint_problem: str | None = "not checked yet (prepare() first)"
        self.operator_problem: str | None = "not checked yet (prepare() first)"
        self.metrics_problem: str | None = "not checked yet (prepare() first)"
        self._undo: dict[str, Any] = {}
        self._cordoned: list[str] = []

    # ------------------------------------------------------------------ setup
    async def prepare(self) -> None:
        """Find out what this cluster lets us do: the fault endpoint, the operator's pods."""
        self.fault_endpoint_problem = await self._check_fault_endpoint()
        self.metrics_problem = await self._check_metrics_api()
        try:
            pods = await self._operator_pods()
        except (KubeApiError, aiohttp.ClientError, OSError) as error:
            self.operator_problem = f"cannot list the operator's pods: {error}"
        else:
            self.operator_problem = (
                None
                if pods
                else f"no operator pod in namespace {self.operator_namespace} with "
                f"labels {self.operator_selector} (--operator-namespace/--operator-selector)"
            )

    async def _check_fault_endpoint(self) -> str | None:
        spec = self.observer.voiceservice().get("spec") or {}
        injection = spec.get("faultInjection") or {}
        if not injection.get("enabled"):
            return "the VoiceService has spec.faultInjection.enabled off (no /admin/faults)"
        ref = injection.get("tokenSecretRef") or {}
        try:
            secret = await self.api.get(
                f"/api/v1/namespaces/{self.namespace}/secrets/{ref.get('name', '')}"
            )
        except KubeApiError as error:
            return f"cannot read the fault token's Secret: {error}"
        data = (secret or {}).get("data") or {}
        if ref.get("key") not in data:
            return f"no key {ref.get('key')!r} in Secret {ref.get('name')!r} (the fault token)"
        self.fault_token = base64.b64decode(data[ref["key"]]).decode()
        pods = self.observer.pod_objects("gpu", ready_only=True)
        if not pods:
            return "no ready GPU pod to check the fault endpoint on"
        status, text = await self._fault_call(pods[0], "GET", None)
        if status == 200:
            return None
        return (
            f"/admin/faults through the API server's pod proxy answered {status} "
            f"({text[:120].strip()}); the token went in {FAULT_TOKEN_HEADER}, which an older "
            "service does not read"
        )

    async def _check_metrics_api(self) -> str | None:
        try:
            found = await self.api.get(f"/apis/{METRICS_API}")
        except (KubeApiError, aiohttp.ClientError, OSError) as error:
            found, problem = None, str(error)
        else:
            problem = "not served"
        if found and found.get("resources"):
            return None
        return (
            f"no {METRICS_API} API in this cluster ({problem.strip()[:120]}): an HPA has "
            "nothing to read; install metrics-server (on kind with --kubelet-insecure-tls)"
        )

    # ------------------------------------------------------------ what it can do
    def unsupported(self, action: Any) -> str | None:
        if isinstance(action, self.NEEDS_FAULT_ENDPOINT) and self.fault_endpoint_problem:
            return self.fault_endpoint_problem
        if isinstance(action, c.OperatorProcess) and self.operator_problem:
            return self.operator_problem
        if isinstance(action, c.Autoscale) and self.metrics_problem:
            return self.metrics_problem
        if isinstance(action, c.NodeLost):
            return "stopping a node's heartbeat needs the node itself (its kubelet)"
        if isinstance(action, c.ApiServerRestart):
            return "restarting kube-apiserver needs the control plane's hosts"
        if isinstance(action, c.SlowNetwork):
            return "slowing a pod's network needs its node (tc in its network namespace)"
        if isinstance(action, c.KillJobWorker):
            return (
                "a worker killed mid-job needs spec.jobs and a Redis the runner reads (which "
                "pod holds a chunk): the local cluster runs one; elsewhere not built yet"
            )
        if isinstance(action, c.LoadSpike | c.Observe):
            return None  # the runner's own
        return None

    async def apply(self, action: Any) -> Applied:
        match action:
            case c.GpuMemory(ratio=None):
                return await self._faults_on("gpu", None, "cleared GPU memory faults")
            case c.GpuMemory(ratio=ratio):
                body = {"gpu_memory": {"used_bytes": round(ratio * 1000), "total_bytes": 1000}}
                return await self._faults_on("gpu", body, f"GPU memory {ratio:.0%}")
            case c.CudaOom(calls=calls):
                return await self._faults_on("gpu", {"oom_next_calls": calls}, f"{calls} CUDA OOMs")
            case c.HangEngine(seconds=seconds):
                return await self._faults_on(
                    "gpu", {"engine_delay_seconds": seconds}, f"engine calls hang {seconds:g}s"
                )
            case c.ClearFaults(tier=tier):
                return await self._faults_on(tier, None, f"cleared faults on {tier} pods")
            case c.KillPods(tier=tier):
                return await self.delete_pods(tier)
            case c.CrashLoop(times=times):
                return await self._crash_loop(times)
            case c.GpusUnschedulable(unschedulable=True):
                return await self._cordon_and_evict()
            case c.GpusUnschedulable(unschedulable=False):
                return await self._uncordon()
            case c.OperatorProcess(state="killed"):
                return await self._delete_operator()
            case c.OperatorProcess(state="running"):
                return await self._operator_running()
            case c.PatchSpec(patch=patch):
                return await self.patch_spec(patch)
            case c.RestoreSpec():
                return await self.restore_spec()
            case c.Autoscale(max_replicas=most, target_cpu_percent=percent):
                spec = self.observer.voiceservice().get("spec") or {}
                return await self.patch_spec(
                    {"autoscaling": {"enabled": True, "metric": "cpu",
                                     "minReplicas": int(spec.get("replicas") or 1),
                                     "maxReplicas": most,
                                     "targetCPUUtilizationPercentage": percent}}
                )  # fmt: skip
        raise NotImplementedError(f"{self.name} target: {self.unsupported(action) or action}")

    def scenario_leftovers(self) -> list[str]:
        found = []
        if self._cordoned:
            found.append(f"nodes still cordoned: {', '.join(self._cordoned)}")
        if self._undo:
            found.append(f"spec patches not restored: {self._undo}")
        return found

    # ------------------------------------------------------------------ pods
    async def delete_pods(self, tier: str) -> Applied:
        """Delete the tier's ready pods at once (grace 0: the kubelet SIGKILLs them)."""
        pods = self.observer.pod_objects(tier, ready_only=True)
        at = time.monotonic()
        for pod in pods:
            await self._delete_pod(pod, grace=0)
        names = ", ".join(p["metadata"]["name"] for p in pods) or "none"
        return Applied(
            f"deleted {tier} pods with grace 0: {names}", [Disruption(at, pod_ips=ips_of(pods))]
        )

    async def _delete_pod(self, pod: dict[str, Any], grace: int | None = None) -> None:
        meta = pod["metadata"]
        body = None if grace is None else {"gracePeriodSeconds": grace}
        try:
            await self.api.request(
                "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body
            )
        except KubeApiError as error:
            if error.status != 404:
                raise

    async def evict(self, pod: dict[str, Any]) -> None:
        """The Eviction API (what a drain does: PodDisruptionBudgets apply)."""
        meta = pod["metadata"]
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        }
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/eviction"
        deadline = time.monotonic() + 60
        while True:
            try:
                await self.api.request("POST", path, body)
                return
            except KubeApiError as error:
                if error.status == 404:
                    return
                # 429: a PodDisruptionBudget forbids it now; a drain retries.
                if error.status != 429 or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.5)

    async def _crash_loop(self, times: int) -> Applied:
        disruptions = []
        for n in range(times):
            pod = await self._wait_for(
                lambda: self.observer.pod_objects("gpu", ready_only=True), 300, "a ready GPU pod"
            )
            disruptions.append(Disruption(time.monotonic(), pod_ips=ips_of(pod)))
            await self._fault_call(pod[0], "POST", {"crash": True})
            await self._wait_for(
                lambda name=pod[0]["metadata"]["name"]: (
                    not any(  # type: ignore[misc]
                        p["metadata"]["name"] == name
                        for p in self.observer.pod_objects("gpu", True)
                    )
                ),
                30,
                f"crash {n + 1}: the pod not ready",
            )
        return Applied(f"crashed the GPU container {times} times", disruptions)

    async def _cordon_and_evict(self) -> Applied:
        """Cordon every node with GPUs to give (none: the nodes the GPU pods run on, as on
        a cluster whose GPU tier runs on CPU), then evict the GPU pods."""
        listing = await self.api.request("GET", "/api/v1/nodes")
        nodes = sorted(
            n["metadata"]["name"]
            for n in listing.get("items") or []
            if float(((n.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, 0)) > 0
        )
        pods = self.observer.pod_objects("gpu")
        if not nodes:
            nodes = sorted({p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName")})
        for node in nodes:
            await self.api.request(
                "PATCH", f"/api/v1/nodes/{node}", {"spec": {"unschedulable": True}}, patch="merge"
            )
        self._cordoned = nodes
        for pod in pods:
            await self.evict(pod)
        return Applied(f"cordoned {', '.join(nodes) or 'no node'}; evicted {len(pods)} GPU pod(s)")

    async def _uncordon(self) -> Applied:
        for node in self._cordoned:
            await self.api.request(
                "PATCH", f"/api/v1/nodes/{node}", {"spec": {"unschedulable": False}}, patch="merge"
            )
        done = f"uncordoned {', '.join(self._cordoned) or 'no node'}"
        self._cordoned = []
        return Applied(done)

    # --------------------------------------------------------------- operator
    async def _operator_pods(self) -> list[dict[str, Any]]:
        listing = await self.api.request(
            "GET",
            f"/api/v1/namespaces/{self.operator_namespace}/pods",
            params={"labelSelector": self.operator_selector},
        )
        return [p for p in listing.get("items") or [] if not p["metadata"].get("deletionTimestamp")]

    async def _delete_operator(self) -> Applied:
        pods = await self._operator_pods()
        for pod in pods:
            await self._delete_pod(pod, grace=0)
        return Applied(f"deleted operator pod(s) {', '.join(p['metadata']['name'] for p in pods)}")

    async def _operator_running(self) -> Applied:
        deadline = time.monotonic() + 180
        while True:
            pods = [p for p in await self._operator_pods() if pod_ready(p)]
            if pods:
                return Applied(f"operator pod {pods[0]['metadata']['name']} ready")
            if time.monotonic() > deadline:
                raise TimeoutError("no ready operator pod within 180s")
            await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ spec
    async def patch_spec(self, patch: dict[str, Any]) -> Applied:
        spec = self.observer.voiceservice().get("spec") or {}
        # Older values win: a second patch of the same field is undone to the first value.
        self._undo = merge_patches(self._undo, undo_patch(spec, patch))
        await self._patch_voiceservice(patch)
        return Applied(f"patched spec {patch}")

    async def restore_spec(self) -> Applied:
        undo, self._undo = self._undo, {}
        if undo:
            await self._patch_voiceservice(undo)
        return Applied(f"restored spec {undo}" if undo else "spec unchanged")

    async def _patch_voiceservice(self, spec_patch: dict[str, Any]) -> None:
        await self.api.request(
            "PATCH",
            f"{API}/namespaces/{self.namespace}/voiceservices/{self.vs_name}",
            {"spec": spec_patch},
            patch="merge",
        )

    # ---------------------------------------------------------- fault endpoint
    async def _faults_on(self, tier: str, body: dict[str, Any] | None, done: str) -> Applied:
        """Inject into the tier's ready pods; clear (``body`` None) on every pod of the tier
        that has an address: an unready pod may hold the fault that made it unready."""
        if body is None:
            pods = [
                p for p in self.observer.pod_objects(tier) if (p.get("status") or {}).get("podIP")
            ]
        else:
            pods = self.observer.pod_objects(tier, ready_only=True)
        if not pods:
            raise RuntimeError(f"no {tier} pod to inject into ({done})")
        reached = []
        for pod in pods:
            status, text = await self._fault_call(pod, "DELETE" if body is None else "POST", body)
            if status == 200:
                reached.append(pod["metadata"]["name"])
            elif body is not None or status != 0:  # a starting pod refuses: nothing to clear
                raise RuntimeError(f"{pod['metadata']['name']}: /admin/faults {status}: {text}")
        return Applied(f"{done} on {', '.join(reached) or 'no pod (none listening)'}")

    async def _fault_call(
        self, pod: dict[str, Any], method: str, body: dict[str, Any] | None
    ) -> tuple[int, str]:
        meta = pod["metadata"]
        path = (
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}:"
            f"{pod_contract.DEFAULT_PORT}/proxy{pod_contract.PATH_FAULTS}"
        )
        headers = {FAULT_TOKEN_HEADER: self.fault_token}
        if not self.api.token:  # client certificates: Authorization is free to carry it
            headers["Authorization"] = f"Bearer {self.fault_token}"
        try:
            async with self.api.session.request(
                method,
                self.api.server + path,
                json=body,
                headers=headers,
                ssl=self.api.ssl,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            return 0, repr(error)

    @staticmethod
    async def _wait_for(found: Any, within: float, what: str) -> Any:
        deadline = time.monotonic() + within
        while not (value := found()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {within:g}s")
            await asyncio.sleep(0.05)
        return value
