"""One demo run's cluster (a real control plane, test-double nodes) and the real operator.

``DemoCluster`` finds (or builds) the Kubernetes binaries; starts etcd,
kube-apiserver, kube-controller-manager and kube-scheduler (``ControlPlane``),
the node agent (the kubelet and kube-proxy test double: two nodes, pods as local
processes) and the operator process; applies the CRD and the example with the
real kubectl (server-side apply); reads everything back from the API server
through watches (``Informer``); waits for states, failing the step on a deadline,
an operator exit or a control-plane component's death; and stops it all.
``scenario.Demo`` builds the scenarios on it.

The pod network: as root, pods run in network namespaces with real addresses
(``pod_network``), and the operator scrapes and notifies them at ``status.podIP``
as on a cluster. Without root, pods listen on loopback addresses whose
``status.podIP`` twins nothing routes; the operator then reads the pods' metrics
through ``prometheus.PrometheusStandIn`` and sends no routing notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from voiceops_contract import pod as pod_contract

from .. import kube_binaries, pod_network
from ..control_plane import ControlPlane, ControlPlaneError
from ..node_agent import Informer, KubeApiError, KubeClient, NodeAgent, host_ip_for
from ..operator_process import OperatorProcess
from .errors import DemoError
from .facts import container_port, describe, format_table, pod_ready, pod_state
from .options import CRD_FILE, KUBECTL, REPO, DemoOptions
from .prometheus import PrometheusStandIn
from .report import ClusterWatcher, Timeline, say

Obj = dict[str, Any]

GPU_NODE = "local-gpu-0"
CPU_NODE = "local-cpu-0"
NODES = (f"{GPU_NODE}:1:8", f"{CPU_NODE}:0:8")
TIER_LABEL = "voiceops.io/tier"
INSTANCE_LABEL = "app.kubernetes.io/instance"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
# With loopback pods the subnet only names a (never used) gateway in the API server's
# certificate; fixing it spares ControlPlane's search for a free one (which needs `ip`).
LOOPBACK_POD_CIDR = ipaddress.IPv4Network("10.251.0.0/24")
POLL_SECONDS = 0.02
API_SECONDS = 10.0  # one API request of the demo's own (diagnostics must not hang)


def kubectl_binary() -> Path | None:
    """The repository's pinned kubectl (``make tools``), else one on the PATH."""
    if os.access(KUBECTL, os.X_OK):
        return KUBECTL
    found = shutil.which("kubectl")
    return Path(found) if found else None


class DemoCluster:
    """One run's cluster and operator: start, stop, apply, wait for and read state."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.out = options.output.resolve()
        self.timeline = Timeline()
        self.documents = [d for d in yaml.safe_load_all(options.example.read_text()) if d]
        vs_doc = next(d for d in self.documents if d["kind"] == "VoiceService")
        self.ns: str = vs_doc["metadata"].get("namespace", "default")
        self.name: str = vs_doc["metadata"]["name"]
        self.kubeconfig = self.out / "kubeconfig"
        self.kubectl: Path | None = None
        self.pods_in_namespaces = False
        self.plane: ControlPlane | None = None
        self._plane_start: asyncio.Future[None] | None = None
        self.api: KubeClient | None = None
        self.agent: NodeAgent | None = None
        self.prometheus: PrometheusStandIn | None = None
        self.operator: OperatorProcess | None = None
        self.watcher = ClusterWatcher(self.name, self.timeline)
        self.informers: dict[str, Informer] = {}
        self._informer_tasks: list[asyncio.Task[None]] = []
        self.picks = 0  # round robin over endpoints when the Service proxy is unavailable

    # ------------------------------------------------------------ lifecycle
    async def start_cluster(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        binaries = await self._kube_binaries()
        self.kubectl = kubectl_binary()
        if self.kubectl is None:
            raise DemoError(
                "find kubectl",
                f"no kubectl at {KUBECTL} nor on the PATH: run `make tools` (it installs "
                "a pinned kubectl into .tools/bin)",
            )
        self.pods_in_namespaces = self._choose_pod_network()
        folder = self.out / "control-plane"
        if self.pods_in_namespaces:
            self.plane = ControlPlane(folder, binaries)  # it finds a free pod subnet
        else:
            self.plane = ControlPlane(folder, binaries, pod_cidr=LOOPBACK_POD_CIDR)
        say(
            "starting the control plane (real): etcd, kube-apiserver, "
            f"kube-controller-manager, kube-scheduler from {binaries.folder}"
        )
        # plane.start() blocks; a Ctrl-C meanwhile must not stop it halfway, so stop()
        # waits for this future before stopping what it started.
        self._plane_start = asyncio.ensure_future(asyncio.to_thread(self.plane.start))
        try:
            await asyncio.shield(self._plane_start)
        except ControlPlaneError as error:
            raise DemoError("start the control plane", str(error)) from None
        say(
            f"control plane healthy in {self.plane.seconds_to_healthy:.1f}s at "
            f"{self.plane.server}; logs in {self.plane.folder / 'logs'}"
        )
        shutil.copyfile(self.plane.admin_kubeconfig, self.kubeconfig)
        self.api = KubeClient.from_kubeconfig(self.plane.admin_kubeconfig)

        await self.kubectl_apply(CRD_FILE, "apply the VoiceService CRD")
        await self._wait_crd_established()
        await self._start_node_agent()
        await self._start_informers()
        await self._start_operator()
        self.timeline.add("action", "cluster and operator up")

    async def _kube_binaries(self) -> kube_binaries.Binaries:
        try:
            found = kube_binaries.find()
            if found is None:
                say(
                    f"building the Kubernetes binaries once into {kube_binaries.build_folder()} "
                    "(Go; about 5 minutes on 2 cores; `make kube-binaries` does the same) ..."
                )
                found = await asyncio.to_thread(kube_binaries.build)
        except kube_binaries.BinariesError as error:
            raise DemoError(
                "find the Kubernetes binaries",
                f"{error}\n  install Go >= {'.'.join(map(str, kube_binaries.MIN_GO))} "
                "(https://go.dev/dl/) and run `make kube-binaries`, or set "
                f"{kube_binaries.ENV_BIN_DIR} to a folder with "
                f"{', '.join(kube_binaries.COMPONENTS)}",
            ) from None
        return found

    def _choose_pod_network(self) -> bool:
        """True: pods in network namespaces (real addresses); False: loopback addresses."""
        choice = self.options.pod_network
        if choice == "loopback":
            say("pod network: loopback addresses (--pod-network loopback)")
            return False
        reason = pod_network.available()
        if reason is None:
            say("pod network: a network namespace and a real address per pod")
            return True
        if choice == "namespaces":
            raise DemoError("set up the pod network", f"{reason} (try --pod-network loopback)")
        say(f"pod network: loopback addresses ({reason})")
        return False

    async def _wait_crd_established(self) -> None:
        crd_name = yaml.safe_load(CRD_FILE.read_text())["metadata"]["name"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.check_alive("VoiceService CRD Established")
            found = await self.kube().get(f"{CRD_PATH}/{crd_name}") or {}
            conditions = (found.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return
            await asyncio.sleep(0.1)
        raise DemoError("VoiceService CRD Established", f"{crd_name} not Established in 30s")

    async def _start_node_agent(self) -> None:
        assert self.plane is not None
        work_dir = self.out / "node-agent"
        shutil.rmtree(work_dir, ignore_errors=True)  # an earlier run's pod logs
        network = pod_network.NamespacePodNetwork(self.plane.pod_cidr)
        agent = NodeAgent(
            self.plane.admin_kubeconfig,
            list(NODES),
            work_dir,
            pod_network=network if self.pods_in_namespaces else None,
            extra_env={
                "VOICEOPS_GPU_POLL_INTERVAL_SECONDS": "0.2",
                "VOICEOPS_LOG_LEVEL": "warning",
            },
        )
        try:
            await agent.start()  # on failure it stops what it started
        except (KubeApiError, OSError, TimeoutError, pod_network.PodNetworkError) as error:
            raise DemoError("start the node agent", f"{type(error).__name__}: {error}") from None
        self.agent = agent
        say(
            f"nodes (node agent, a kubelet/kube-proxy test double): {GPU_NODE} "
            f"(1 nvidia.com/gpu, 8 CPU), {CPU_NODE} (8 CPU); pod logs in {work_dir / 'pods'}"
        )

    async def _start_informers(self) -> None:
        """Watches of everything the demo reads: the API server is the only source."""
        api, ns = self.kube(), self.ns

        def ignore(kind: str, obj: Obj) -> None:
            return None

        self.informers = {
            "voiceservices": Informer(
                api,
                f"/apis/voiceops.io/v1alpha1/namespaces/{ns}/voiceservices",
                self.watcher.on_voiceservice,
            ),
            "events": Informer(api, f"/api/v1/namespaces/{ns}/events", self.watcher.on_event),
            "pods": Informer(api, f"/api/v1/namespaces/{ns}/pods", ignore),
            "services": Informer(api, f"/api/v1/namespaces/{ns}/services", ignore),
            "deployments": Informer(api, f"/apis/apps/v1/namespaces/{ns}/deployments", ignore),
        }
        self._informer_tasks = [
            asyncio.create_task(i.run(), name=f"demo-watch-{plural}")
            for plural, i in self.informers.items()
        ]
        await self.wait(
            "watches of the namespace listed",
            lambda: all(i.synced.is_set() for i in self.informers.values()),
            30,
        )

    async def _start_operator(self) -> None:
        assert self.plane is not None
        settings: dict[str, Any] = {}
        if not self.pods_in_namespaces:
            self.prometheus = PrometheusStandIn(self.listed_pods, self.pod_address)
            settings["prometheus_url"] = await self.prometheus.start()
            settings["routing_key"] = ""  # notices would go to unroutable pod IPs
            say(
                f"Prometheus stand-in at {self.prometheus.url}: the operator's metrics "
                "queries, answered by scraping the pods at their loopback addresses"
            )
        log_path = self.out / "operator.log"
        log_path.unlink(missing_ok=True)
        self.operator = OperatorProcess(
            self.plane.admin_kubeconfig,
            log_path,
            namespaces=[self.ns],
            scrape_interval_seconds=0.5,
            scrape_timeout_seconds=1,
            **settings,
        )
        await self.operator.start()
        say(f"operator (real): voiceops-operator run --namespace {self.ns} (log {log_path})")

    async def stop(self) -> None:
        """Stop everything this run started, whatever state it is in; safe to call twice."""
        for task in self._informer_tasks:
            task.cancel()
        await asyncio.gather(*self._informer_tasks, return_exceptions=True)
        self._informer_tasks = []
        if self.operator is not None:
            await self.operator.stop()
        if self.agent is not None:
            await self.agent.stop()  # every pod process, the Service proxy, the pod network
            self.agent = None
        if self.prometheus is not None:
            await self.prometheus.stop()
            self.prometheus = None
        if self.api is not None:
            await self.api.close()
        if self._plane_start is not None:
            await asyncio.wait([self._plane_start])  # a start still running in its thread
            if not self._plane_start.cancelled():
                self._plane_start.exception()  # seen (start_cluster reported it)
            self._plane_start = None
        if self.plane is not None:
            await asyncio.to_thread(self.plane.stop)

    # -------------------------------------------------------------- helpers
    def kube(self) -> KubeClient:
        if self.api is None:
            raise RuntimeError("the control plane is not started")
        return self.api

    def check_alive(self, step: str) -> None:
        """DemoError naming ``step`` when the operator or a control-plane component died."""
        if self.operator is not None and self.operator.exited() is not None:
            raise DemoError(step, f"the operator exited with code {self.operator.exited()}")
        dead = self.plane.dead() if self.plane is not None else []
        if dead:
            raise DemoError(step, "a control-plane component died: " + "\n".join(dead))

    async def wait(self, step: str, predicate: Callable[[], Any], within: float) -> Any:
        """Poll ``predicate`` (it reads the watches' caches) until it is truthy.

        DemoError naming ``step`` on the deadline, an operator exit or a dead
        control-plane component."""
        deadline = time.monotonic() + within
        while True:
            self.check_alive(step)
            found = predicate()
            if found:
                return found
            if time.monotonic() >= deadline:
                raise DemoError(step, f"not reached within {within:.0f}s")
            await asyncio.sleep(POLL_SECONDS)

    def cached(self, plural: str, name: str) -> Obj | None:
        informer = self.informers.get(plural)
        return None if informer is None else informer.items.get((self.ns, name))

    def status(self) -> Obj:
        return (self.cached("voiceservices", self.name) or {}).get("status") or {}

    def front_tier(self) -> str:
        svc = self.cached("services", self.name) or {}
        return str(((svc.get("spec") or {}).get("selector") or {}).get(TIER_LABEL, "both"))

    def listed_pods(self) -> list[Obj]:
        informer = self.informers.get("pods")
        return [] if informer is None else list(informer.items.values())

    def pods(self, tier: str | None = None) -> list[Obj]:
        found = []
        for pod in self.listed_pods():
            labels = pod["metadata"].get("labels") or {}
            if labels.get(INSTANCE_LABEL) != self.name:
                continue
            if tier and labels.get(TIER_LABEL) != tier:
                continue
            found.append(pod)
        return sorted(found, key=lambda p: p["metadata"].get("creationTimestamp") or "")

    def ready_gpu_pod(self) -> Obj | None:
        return next(
            (
                p
                for p in self.pods("gpu")
                if pod_ready(p) and not p["metadata"].get("deletionTimestamp")
            ),
            None,
        )

    def pod_address(self, pod: Obj) -> str | None:
        """Where this machine reaches the pod's serving port: its real IP, or its loopback."""
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            return None
        host = host_ip_for(ip)  # the loopback twin of a 10.244/14 address, else the IP
        if self.agent is not None:
            with contextlib.suppress(LookupError):
                host = self.agent.host_ip(pod["metadata"]["namespace"], pod["metadata"]["name"])
        return f"{host}:{container_port(pod)}"

    def fallback_replicas(self) -> int:
        dep = self.cached("deployments", f"{self.name}-fallback") or {}
        return int((dep.get("spec") or {}).get("replicas") or 0)

    def routed(self, phase: str, tier: str) -> Callable[[], bool]:
        return lambda: self.status().get("phase") == phase and self.front_tier() == tier

    def endpoints_follow(self, tier: str) -> bool:
        """The Service proxy's endpoints for the front Service are all pods of ``tier``.

        The EndpointSlice controller rewrites the slices a moment after the operator
        changes the selector; until then new connections may still reach the old tier."""
        endpoints = self.front_endpoints()
        if tier == "both":
            return bool(endpoints)
        addresses = {self.pod_address(p) for p in self.pods(tier)}
        return bool(endpoints) and all(e in addresses for e in endpoints)

    async def wait_routed(self, phase: str, tier: str, within: float | None = None) -> float:
        """Wait for ``phase`` with the front Service on ``tier`` and its endpoints following;
        returns when the watch first showed the phase (seconds since the start)."""
        step = f"{phase} with the front Service on {tier}"
        deadline = within or self.options.transition_timeout
        await self.wait(step, self.routed(phase, tier), deadline)
        entry = self.timeline.last_phase_entry(phase)
        seen = entry.at if entry else self.now()
        await self.wait(
            f"{step}: its endpoints only on {tier} pods",
            lambda: self.routed(phase, tier)() and self.endpoints_follow(tier),
            deadline,
        )
        return seen

    def latency(self, decision: str, since: float, seen: float) -> None:
        self.timeline.latencies.append((decision, round(seen - since, 2)))
        say(f"  decision latency: {decision}: {seen - since:.1f}s")

    def now(self) -> float:
        return time.monotonic() - self.timeline.started

    # ---------------------------------------------------------------- steps
    async def kubectl_apply(self, path: Path, step: str) -> None:
        """``kubectl apply --server-side -f path`` against the control plane; prints its output."""
        assert self.kubectl is not None
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        say(f"\n$ kubectl apply --server-side -f {shown}")
        proc = await asyncio.create_subprocess_exec(
            str(self.kubectl),
            "--kubeconfig",
            str(self.kubeconfig),
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), 60)
        except BaseException:  # a deadline or Ctrl-C: leave no kubectl behind
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        text = output.decode(errors="replace").rstrip()
        if proc.returncode != 0:
            raise DemoError(step, f"kubectl exited with code {proc.returncode}:\n{text}")
        say(text)

    async def apply_example(self) -> None:
        await self.kubectl_apply(self.options.example, f"apply {self.options.example.name}")
        self.timeline.add("action", f"applied {self.options.example.name}")

    async def owned_objects_table(self) -> str:
        rows = []
        selector = {"labelSelector": f"{INSTANCE_LABEL}={self.name}"}
        for path, plural, kind in (
            ("/apis/apps/v1", "deployments", "deployment.apps"),
            ("/api/v1", "services", "service"),
            ("/apis/autoscaling/v2", "horizontalpodautoscalers", "horizontalpodautoscaler"),
            ("/apis/policy/v1", "poddisruptionbudgets", "poddisruptionbudget.policy"),
            ("/apis/networking.k8s.io/v1", "networkpolicies", "networkpolicy.networking.k8s.io"),
        ):
            listing = await self.kube().request(
                "GET", f"{path}/namespaces/{self.ns}/{plural}", params=selector, seconds=API_SECONDS
            )
            for obj in listing.get("items") or []:
                rows.append([f"{kind}/{obj['metadata']['name']}", describe(plural, obj)])
        for pod in self.pods():
            node = (pod.get("spec") or {}).get("nodeName") or "<none>"
            ip = (pod.get("status") or {}).get("podIP") or "<none>"
            ready = "ready" if pod_ready(pod) else "not ready"
            rows.append(
                [f"pod/{pod['metadata']['name']}", f"{pod_state(pod)}  {ready}  {ip}  {node}"]
            )
        return format_table(["NAME", "DETAILS"], rows)

    async def wait_ready(self) -> None:
        say("\nwaiting for the VoiceService to be Serving (the vits model loads on CPU) ...")
        await self.wait(
            "operator created the tiers",
            lambda: (
                self.cached("deployments", f"{self.name}-gpu")
                and self.cached("services", self.name)
            ),
            30,
        )
        await self.wait(
            "Serving with a ready GPU pod behind the front Service",
            lambda: (
                self.status().get("phase") == "Serving"
                and self.front_tier() == "gpu"
                and self.ready_gpu_pod() is not None
                and self.endpoints_follow("gpu")
            ),
            self.options.ready_timeout,
        )
        say(f"\nwhat the API server lists with {INSTANCE_LABEL}={self.name}:")
        say(await self.owned_objects_table())

    def front_endpoints(self) -> list[str]:
        if self.agent is None:
            return []
        try:
            return self.agent.service_endpoints(self.ns, self.name)
        except LookupError:
            return []

    def front_url(self) -> str:
        if self.agent is None:
            raise LookupError("the node agent is not running")
        return self.agent.service_url(self.ns, self.name)

    def front_base_url(self) -> str | None:
        """The front Service's proxy address; else one of its endpoints, as kube-proxy picks.

        The proxy's loopback address can be taken by another local cluster on the
        same machine (parallel tests); the Service's EndpointSlices still say where to go.
        """
        with contextlib.suppress(LookupError):
            return self.front_url()
        endpoints = self.front_endpoints()
        if not endpoints:
            return None
        self.picks += 1
        return f"http://{endpoints[self.picks % len(endpoints)]}"

    # --------------------------------------------------------------- report
    async def diagnostics(self) -> str:
        """Last status, pods, a dead control-plane component and log tails, for a failed step."""
        status = self.status()
        lines = [
            f"last VoiceService status: phase={status.get('phase')} "
            f"activeTier={status.get('activeTier')} ready={status.get('ready')} "
            f"front Service on: {self.front_tier()}",
        ]
        for cond in status.get("conditions") or []:
            lines.append(
                f"  condition {cond.get('type')}={cond.get('status')} "
                f"{cond.get('reason')}: {cond.get('message')}"
            )
        if self.plane is not None:
            for dead in self.plane.dead():
                lines.append(f"--- control-plane component died: {dead}")
        if self.api is not None:
            try:
                lines.append(await self.owned_objects_table())
            except (KubeApiError, OSError, TimeoutError) as error:
                lines.append(f"(objects not listed: {type(error).__name__}: {error})")
        if self.agent is not None:
            for pod in self.pods("gpu")[-1:] or self.pods()[-1:]:
                log = self.agent.pod_log(self.ns, pod["metadata"]["name"]) or ""
                tail = "\n".join(log.splitlines()[-20:])
                lines.append(f"--- tail of pod {pod['metadata']['name']} log ---\n{tail}")
        if self.operator is not None:
            lines.append(f"--- tail of {self.operator.log_path} ---\n{self.operator.log_tail()}")
        return "\n".join(lines)

    def print_usage(self) -> None:
        say("\n=== the cluster keeps running (Ctrl-C stops it) ===")
        say(f"kubeconfig: {self.kubeconfig}")
        say(f"  {self.kubectl or 'kubectl'} --kubeconfig {self.kubeconfig} get voiceservices,all")
        with contextlib.suppress(LookupError):
            say(f"front Service {self.ns}/{self.name}: {self.front_url()}")
            say(
                f"  curl -s {self.front_url()}{pod_contract.PATH_SPEECH} "
                "-H 'Content-Type: application/json' "
                '-d \'{"model": "tts-1", "input": "Hello"}\' -o hello.wav'
            )
        say(f"pod logs: {self.out / 'node-agent' / 'pods'}")
        say(f"operator log: {self.out / 'operator.log'}")
        if self.plane is not None:
            say(f"control-plane logs: {self.plane.folder / 'logs'}")
