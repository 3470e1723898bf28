"""One demo run's simulated cluster and the real operator, and how the demo reads it.

``DemoCluster`` starts and stops the API emulator, the simulated kubelet, the
cluster view and the operator process; applies the example as ``kubectl apply``
does; waits for states (failing the step on a deadline or an operator exit);
and reads the VoiceService, its pods and its front Service. ``scenario.Demo``
builds the scenarios on it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import yaml
from voiceops_contract import pod as pod_contract

from ..apiserver import KubeApiEmulator, load_yaml_documents
from ..kubelet import KubeletConfig, SimulatedKubelet, parse_node
from ..operator_process import OperatorProcess
from .errors import DemoError
from .facts import describe, format_table, pod_ready, pod_state, secret_data
from .options import CRD_FILE, REPO, DemoOptions
from .report import ClusterWatcher, Timeline, say

Obj = dict[str, Any]

GPU_NODE = "sim-gpu-0"
CPU_NODE = "sim-cpu-0"
TIER_LABEL = "voiceops.io/tier"
INSTANCE_LABEL = "app.kubernetes.io/instance"
FIELD_MANAGER = "kubectl"


class DemoCluster:
    """One run's simulated cluster and operator: start, stop, apply, wait for and read state."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.out = options.output.resolve()
        self.timeline = Timeline()
        self.documents = [secret_data(d) for d in load_yaml_documents(options.example)]
        vs_doc = next(d for d in self.documents if d["kind"] == "VoiceService")
        self.ns: str = vs_doc["metadata"].get("namespace", "default")
        self.name: str = vs_doc["metadata"]["name"]
        self.emu = KubeApiEmulator(crd_files=[CRD_FILE])
        self.kubelet: SimulatedKubelet | None = None
        self.operator: OperatorProcess | None = None
        self.watcher: ClusterWatcher | None = None
        self.kubeconfig = self.out / "kubeconfig"
        self.picks = 0  # round robin over endpoints when the Service proxy is unavailable

    # ------------------------------------------------------------ lifecycle
    async def start_cluster(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        await self.emu.start()
        self.emu.ensure_namespace(self.ns)
        self.kubelet = SimulatedKubelet(
            self.emu,
            KubeletConfig(
                nodes=[parse_node(f"{GPU_NODE}:1:8"), parse_node(f"{CPU_NODE}:0:8")],
                pod_mode="process",
                time_scale=0.5,
                log_dir=str(self.out / "pod-logs"),
                resync_seconds=0.2,
                extra_env={
                    "VOICEOPS_GPU_POLL_INTERVAL_SECONDS": "0.2",
                    "VOICEOPS_LOG_LEVEL": "warning",
                },
            ),
        )
        await self.kubelet.start()
        self.emu.write_kubeconfig(self.kubeconfig, namespace=self.ns)
        self.watcher = ClusterWatcher(self.emu, self.ns, self.name, self.timeline)
        self.watcher.start()
        say(f"API emulator (test double) at {self.emu.url}; kubeconfig {self.kubeconfig}")
        say(f"simulated nodes: {GPU_NODE} (1 nvidia.com/gpu, 8 CPU), {CPU_NODE} (8 CPU)")
        self.operator = OperatorProcess(
            self.kubeconfig,
            self.out / "operator.log",
            namespaces=[self.ns],
            scrape_interval_seconds=0.5,
            scrape_timeout_seconds=1,
        )
        await self.operator.start()
        say(f"operator: voiceops-operator run --namespace {self.ns} (log {self.operator.log_path})")
        await self.wait(
            "operator watching VoiceServices",
            lambda: self.emu.open_watches("voiceservices") > 0,
            30,
        )
        self.timeline.add("action", "cluster and operator up")

    async def stop(self) -> None:
        """Stop everything this run started, whatever state it is in."""
        if self.watcher is not None:
            self.watcher.stop()
        if self.operator is not None:
            await self.operator.stop()
        if self.kubelet is not None:
            await self.kubelet.stop()
        await self.emu.stop()

    # -------------------------------------------------------------- helpers
    async def wait(self, step: str, predicate: Callable[[], Any], within: float) -> Any:
        """Wait for ``predicate``; DemoError naming ``step`` on timeout or operator exit."""

        def check() -> Any:
            if self.operator is not None and self.operator.exited() is not None:
                raise DemoError(step, f"the operator exited with code {self.operator.exited()}")
            return predicate()

        try:
            return await self.emu.wait_for(check, within, step)
        except TimeoutError:
            raise DemoError(step, f"not reached within {within:.0f}s") from None

    def status(self) -> Obj:
        return (self.emu.get("voiceservices", self.name, self.ns) or {}).get("status") or {}

    def front_tier(self) -> str:
        svc = self.emu.get("services", self.name, self.ns) or {}
        return str(((svc.get("spec") or {}).get("selector") or {}).get(TIER_LABEL, "both"))

    def pods(self, tier: str | None = None) -> list[Obj]:
        selector = f"{INSTANCE_LABEL}={self.name}"
        if tier:
            selector += f",{TIER_LABEL}={tier}"
        return self.emu.list("pods", self.ns, label_selector=selector)

    def ready_gpu_pod(self) -> Obj | None:
        return next((p for p in self.pods("gpu") if pod_ready(p)), None)

    def fallback_replicas(self) -> int:
        dep = self.emu.get("deployments", f"{self.name}-fallback", self.ns) or {}
        return int((dep.get("spec") or {}).get("replicas") or 0)

    def routed(self, phase: str, tier: str) -> Callable[[], bool]:
        return lambda: self.status().get("phase") == phase and self.front_tier() == tier

    async def wait_routed(self, phase: str, tier: str, within: float | None = None) -> float:
        """Wait for ``phase`` with the front Service on ``tier``; returns when it was seen."""
        await self.wait(
            f"{phase} with the front Service on {tier}",
            self.routed(phase, tier),
            within or self.options.transition_timeout,
        )
        entry = self.timeline.last_phase_entry(phase)
        return entry.at if entry else time.monotonic() - self.timeline.started

    def latency(self, decision: str, since: float, seen: float) -> None:
        self.timeline.latencies.append((decision, round(seen - since, 2)))
        say(f"  decision latency: {decision}: {seen - since:.1f}s")

    def now(self) -> float:
        return time.monotonic() - self.timeline.started

    # ---------------------------------------------------------------- steps
    async def apply_example(self) -> None:
        """``kubectl apply -f examples/local.yaml``: server-side apply over HTTP."""
        say(f"\n$ kubectl apply -f {self.options.example.relative_to(REPO)}")
        headers = {
            "Authorization": f"Bearer {self.emu.token or 'voiceops-sim-token'}",
            "Content-Type": "application/apply-patch+yaml",
        }
        async with aiohttp.ClientSession(headers=headers) as session:
            for doc in self.documents:
                rt = self.emu.store.resolve_kind(doc["apiVersion"], doc["kind"])
                prefix = "/api/v1" if doc["apiVersion"] == "v1" else f"/apis/{doc['apiVersion']}"
                ns = doc["metadata"].get("namespace", self.ns)
                scope = f"/namespaces/{ns}" if rt.namespaced else ""
                url = f"{self.emu.url}{prefix}{scope}/{rt.plural}/{doc['metadata']['name']}"
                params = {"fieldManager": FIELD_MANAGER, "force": "true"}
                async with session.patch(url, data=yaml.safe_dump(doc), params=params) as resp:
                    if resp.status >= 300:
                        raise DemoError(
                            f"apply {doc['kind']}/{doc['metadata']['name']}",
                            f"HTTP {resp.status}: {await resp.text()}",
                        )
                say(f"{rt.plural.removesuffix('s')}/{doc['metadata']['name']} applied")
        self.timeline.add("action", f"applied {self.options.example.name}")

    def owned_objects_table(self) -> str:
        rows = []
        for plural, kind in (
            ("deployments", "deployment.apps"),
            ("services", "service"),
            ("horizontalpodautoscalers", "horizontalpodautoscaler.autoscaling"),
            ("poddisruptionbudgets", "poddisruptionbudget.policy"),
            ("networkpolicies", "networkpolicy.networking.k8s.io"),
        ):
            for obj in self.emu.list(
                plural, self.ns, label_selector=f"{INSTANCE_LABEL}={self.name}"
            ):
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
                self.emu.get("deployments", f"{self.name}-gpu", self.ns)
                and self.emu.get("services", self.name, self.ns)
            ),
            30,
        )
        await self.wait(
            "Serving with a ready GPU pod behind the front Service",
            lambda: (
                self.status().get("phase") == "Serving"
                and self.front_tier() == "gpu"
                and self.ready_gpu_pod() is not None
                and self.front_endpoints()
            ),
            self.options.ready_timeout,
        )
        say(f"\n$ kubectl get all -l {INSTANCE_LABEL}={self.name}")
        say(self.owned_objects_table())

    def front_endpoints(self) -> list[str]:
        assert self.kubelet is not None
        try:
            return self.kubelet.service_endpoints(self.ns, self.name)
        except LookupError:
            return []

    def front_url(self) -> str:
        assert self.kubelet is not None
        return self.kubelet.service_url(self.ns, self.name)

    def front_base_url(self) -> str | None:
        """The front Service's proxy address; else one of its endpoints, as kube-proxy picks.

        The proxy's loopback address can be taken by another simulated cluster on the
        same machine (parallel tests); the Service's selector still says where to go.
        """
        with contextlib.suppress(LookupError):
            return self.front_url()
        endpoints = self.front_endpoints()
        if not endpoints:
            return None
        self.picks += 1
        return f"http://{endpoints[self.picks % len(endpoints)]}"

    # --------------------------------------------------------------- report
    def diagnostics(self) -> str:
        """Last status, pods and the relevant log tails, for a failed step."""
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
        with contextlib.suppress(Exception):
            lines.append(self.owned_objects_table())
        if self.kubelet is not None:
            for pod in self.pods("gpu")[:1] or self.pods()[:1]:
                log = self.kubelet.pod_log(self.ns, pod["metadata"]["name"]) or ""
                tail = "\n".join(log.splitlines()[-20:])
                lines.append(f"--- tail of pod {pod['metadata']['name']} log ---\n{tail}")
        if self.operator is not None:
            lines.append(f"--- tail of {self.operator.log_path} ---\n{self.operator.log_tail()}")
        return "\n".join(lines)

    def print_usage(self) -> None:
        say("\n=== the cluster keeps running (Ctrl-C stops it) ===")
        say(f"kubeconfig: {self.kubeconfig}")
        say(f"  kubectl --kubeconfig {self.kubeconfig} get voiceservices,all")
        say("  (kubectl: `make tools` puts one in .tools/bin/)")
        with contextlib.suppress(LookupError):
            say(f"front Service {self.ns}/{self.name}: {self.front_url()}")
            say(
                f"  curl -s {self.front_url()}{pod_contract.PATH_SPEECH} "
                "-H 'Content-Type: application/json' "
                '-d \'{"model": "tts-1", "input": "Hello"}\' -o hello.wav'
            )
        say(f"pod logs: {self.out / 'pod-logs'}; operator log: {self.out / 'operator.log'}")
