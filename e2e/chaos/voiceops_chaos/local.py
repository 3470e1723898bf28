"""The local cluster for chaos runs, and the faults only it can do.

The cluster is ``voiceops_localcluster``'s: real etcd, kube-apiserver, controller manager and
scheduler (``ControlPlane``), the real operator process, and node-agent nodes whose
pods are ``voiceops-service`` processes in network namespaces of their own (needs
root). Different from ``failover_cluster`` in what chaos needs:

* two GPU nodes (one GPU each, tainted ``nvidia.com/gpu``) and a CPU node: a rolling
  update's surge pod and a lost node's replacement have somewhere to go;
* each GPU node has its own fake NVML state file, so GPU faults enter through NVML,
  on the node whose GPU has them;
* the control plane runs metrics-server (``ControlPlane(metrics_server=True)``), so
  ``load-spike`` turns the HPAs on and sees the GPU tier scale on CPU;
* the VoiceService otherwise has autoscaling off (one GPU pod: each scenario knows
  which pod its fault hits), a short queue (a spike past capacity meets 429s) and a
  liveness probe that restarts a hung engine in seconds.

:class:`LocalFaults` does what the node agent, NVML, the processes and ``tc`` allow,
and the rest as :class:`~voiceops_chaos.targets.ApiFaults` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis
from voiceops_contract import pod as pod_contract
from voiceops_localcluster import pod_network
from voiceops_localcluster.control_plane import ControlPlane
from voiceops_localcluster.failover_cluster import (
    HEALTHY_GPU,
    NAME,
    apply_crd,
    build_fake_nvml,
    namespace_with_fault_token,
    two_tier_voiceservice,
)
from voiceops_localcluster.node_agent import KubeClient, NodeAgent, parse_node
from voiceops_localcluster.operator_process import OperatorProcess
from voiceops_localcluster.redis_server import RedisServer, RedisServerMissingError

from . import catalogue as c
from .evaluate import Disruption
from .observe import Observer
from .targets import ApiFaults, Applied, ips_of

GPU_NODES = ("local-gpu-0", "local-gpu-1")
CPU_NODE = "local-cpu-0"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GPU_MEMORY_TOTAL = 150_000_000_000  # HEALTHY_GPU's gpu0.memory_total
WINDOW_SECONDS = 2
# Long-text jobs (worker-killed-mid-job): a chunk held by a dead pod is retaken this soon.
JOBS_VISIBILITY_SECONDS = 3
JOB_SENTENCES = (
    "The chapter goes on, sentence after sentence, longer than any one request may be.",
    "Every chunk is committed to Redis as soon as a pod has made it.",
    "A pod that dies costs only the chunk it was making.",
)


def chaos_voiceservice(namespace: str, window_seconds: int, redis_url: str = "") -> dict[str, Any]:
    """The two-tier VoiceService of ``failover_cluster``, tuned for chaos (module docstring);
    long-text jobs on when a Redis is given."""
    body = two_tier_voiceservice(namespace, window_seconds)
    spec = body["spec"]
    if redis_url:
        spec["jobs"] = {"enabled": True, "redisUrl": redis_url}
    spec["gpu"] = {
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    }
    spec["autoscaling"] = {"enabled": False}
    spec["replicas"] = 1
    # Model changes swap the model inside the running GPU pods (docs/hot-swap.md).
    spec["model"]["updateStrategy"] = "InPlace"
    spec["serving"]["maxQueue"] = 8
    # The service fails /healthz after 10 s without engine progress; three misses 3 s
    # apart restart it. A 3 s timeout keeps a busy 2-core machine from restarting a
    # pod that is only slow to answer.
    spec["probes"]["liveness"] = {"periodSeconds": 3, "timeoutSeconds": 3, "failureThreshold": 3}
    return body


def nvml_state(memory_ratio: float | None) -> str:
    """A healthy GPU's NVML state with ``memory_ratio`` of its memory in use."""
    if memory_ratio is None:
        return HEALTHY_GPU
    used = round(GPU_MEMORY_TOTAL * memory_ratio)
    return HEALTHY_GPU.replace("gpu0.memory_used=15000000000", f"gpu0.memory_used={used}")


@dataclass
class LocalCluster:
    plane: ControlPlane
    agent: NodeAgent
    operator: OperatorProcess
    network: pod_network.NamespacePodNetwork
    api: KubeClient
    namespace: str
    nvml_states: dict[str, Path]
    redis: RedisServer | None = None  # None: redis-server missing, no job scenarios
    name: str = NAME
    window_seconds: int = WINDOW_SECONDS
    # What the teardown found left behind (filled on exit).
    leftovers: list[str] = field(default_factory=list)

    def front_url(self) -> str:
        return self.agent.service_url(self.namespace, self.name)

    def write_nvml(self, node: str, state: str) -> None:
        """Replace the node's NVML state whole (by rename: the library re-reads it)."""
        path = self.nvml_states[node]
        partial = path.with_suffix(".partial")
        partial.write_text(state)
        partial.replace(path)


@contextlib.asynccontextmanager
async def local_cluster(
    work_dir: Path, window_seconds: int = WINDOW_SECONDS
) -> AsyncIterator[LocalCluster]:
    """The control plane, nodes, the operator and the VoiceService, Serving."""
    reason = pod_network.available()
    if reason is not None:
        raise RuntimeError(reason)
    # Processes of ours that predate this cluster (a test session's own control plane)
    # are not its leftovers.
    earlier = {pid for pid, _ in child_processes(os.getpid())}
    nvml_dir = await build_fake_nvml(work_dir)
    states = {node: work_dir / f"nvml-{node}" for node in GPU_NODES}
    for path in states.values():
        path.write_text(HEALTHY_GPU)
    plane = ControlPlane(work_dir / "plane", metrics_server=True)
    await asyncio.to_thread(plane.start)
    network = pod_network.NamespacePodNetwork(plane.pod_cidr)
    api = KubeClient.from_kubeconfig(plane.admin_kubeconfig, work_dir / "credentials")
    agent: NodeAgent | None = None
    operator: OperatorProcess | None = None
    cluster: LocalCluster | None = None
    redis: RedisServer | None = None
    try:
        await apply_crd(api)
        nodes = []
        for name in GPU_NODES:
            node = parse_node(f"{name}:1:8")
            node.taints.append(dict(GPU_TAINT))
            nodes.append(node)
        nodes.append(parse_node(f"{CPU_NODE}:0:16"))
        agent = NodeAgent(
            plane.admin_kubeconfig,
            nodes,
            work_dir / "agent",
            pod_network=network,
            node_env={
                node: {"LD_LIBRARY_PATH": str(nvml_dir), "VOICEOPS_FAKE_NVML_STATE": str(path)}
                for node, path in states.items()
            },
            extra_env={
                "VOICEOPS_GPU_POLL_INTERVAL_SECONDS": "0.2",
                "VOICEOPS_LOG_LEVEL": "warning",
                # A CUDA OOM storm's degraded mode ends 10 s after the last OOM (60 s by
                # default): the scenario recovers within minutes, not hours of runs.
                "VOICEOPS_OOM_RECOVER_QUIET_SECONDS": "10",
                "VOICEOPS_JOBS_VISIBILITY_TIMEOUT_SECONDS": str(JOBS_VISIBILITY_SECONDS),
            },
        )
        await agent.start()
        # The pods reach the root namespace at the bridge's gateway address.
        with contextlib.suppress(RedisServerMissingError):
            redis = RedisServer(work_dir / "redis", host=network.gateway)
            await asyncio.to_thread(redis.start)
        namespace = await namespace_with_fault_token(api, "chaos")
        operator = OperatorProcess(
            plane.admin_kubeconfig,
            work_dir / "operator.log",
            namespaces=[namespace],
            scrape_interval_seconds=0.5,
            scrape_timeout_seconds=1,
        )
        await operator.start()
        await api.request(
            "POST",
            f"/apis/voiceops.io/v1alpha1/namespaces/{namespace}/voiceservices",
            chaos_voiceservice(namespace, window_seconds, redis.url if redis else ""),
        )
        cluster = LocalCluster(
            plane,
            agent,
            operator,
            network,
            api,
            namespace,
            states,
            redis=redis,
            window_seconds=window_seconds,
        )
        yield cluster
    finally:
        if operator is not None:
            await operator.stop()
        if agent is not None:
            await agent.stop()
        if redis is not None:
            await asyncio.to_thread(redis.stop)
        await api.close()
        api_port = plane.api_port
        await asyncio.to_thread(plane.stop)
        found = await asyncio.to_thread(teardown_leftovers, network.tag, api_port, earlier)
        if cluster is not None:
            cluster.leftovers = found


def child_processes(parent: int) -> list[tuple[int, str]]:
    """(pid, command) of every living descendant of ``parent``, from /proc."""
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # a zombie holds no resources; its parent reaps it
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        commands[int(entry.name)] = command
    found: list[tuple[int, str]] = []
    todo = list(children.get(parent, []))
    while todo:
        pid = todo.pop()
        found.append((pid, commands.get(pid, "")))
        todo.extend(children.get(pid, []))
    return found


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def teardown_leftovers(tag: str, api_port: int, earlier: Set[int] = frozenset()) -> list[str]:
    """What a stopped local cluster left: processes (but ``earlier`` ones), network
    namespaces, links, its port."""
    found = []
    spaces, links = pod_network.leftovers(tag)
    found += [f"network namespace {n}" for n in spaces] + [f"link {n}" for n in links]
    found += [
        f"process {pid}: {cmd[:120]}"
        for pid, cmd in child_processes(os.getpid())
        if pid not in earlier
    ]
    if api_port and port_open(api_port):
        found.append(f"port 127.0.0.1:{api_port} (the API server's) still open")
    return found


# ------------------------------------------------------------------------------ faults
class LocalFaults(ApiFaults):
    """Faults as they come on real hardware, where this machine can make them."""

    name = "local"

    def __init__(self, cluster: LocalCluster, observer: Observer) -> None:
        super().__init__(cluster.api, observer)
        self.cluster = cluster
        self._lost_nodes: list[str] = []
        self._delayed: dict[str, str] = {}  # netns -> interface with a netem qdisc
        self.netem_problem: str | None = "not checked yet (prepare() first)"

    async def prepare(self) -> None:
        await super().prepare()
        self.operator_problem = None  # the operator is our child process here
        self.netem_problem = await asyncio.to_thread(netem_problem, self.cluster.network.tag)

    def unsupported(self, action: Any) -> str | None:
        if isinstance(action, c.SlowNetwork):
            return self.netem_problem if action.delay_ms else None
        if isinstance(action, c.NodeLost | c.ApiServerRestart):
            return None
        if isinstance(action, c.KillJobWorker):
            if self.cluster.redis is None:
                return "redis-server is not installed (apt-get install -y redis-server)"
            return None
        return super().unsupported(action)

    async def apply(self, action: Any) -> Applied:
        match action:
            case c.GpuMemory(ratio=ratio):
                return self._gpu_memory(ratio)
            case c.KillPods(tier=tier):
                return self._kill(tier)
            case c.KillJobWorker():
                return await self._kill_job_worker(action)
            case c.CrashLoop(times=times):
                return await self._crash_loop_local(times)
            case c.GpusUnschedulable(unschedulable=unschedulable):
                return await self._gpu_capacity(0 if unschedulable else 1)
            case c.NodeLost(lost=lost):
                return await self._node_lost(lost)
            case c.OperatorProcess(state=state):
                return await self._operator(state)
            case c.ApiServerRestart():
                return await asyncio.to_thread(self._restart_apiserver)
            case c.SlowNetwork(tier=tier, delay_ms=delay_ms, rate_kbit=rate_kbit):
                return await asyncio.to_thread(self._slow_network, tier, delay_ms, rate_kbit)
        return await super().apply(action)

    # -------------------------------------------------------------- GPU (NVML)
    def _gpu_memory(self, ratio: float | None) -> Applied:
        nodes = sorted(
            {
                p["spec"]["nodeName"]
                for p in self.observer.pod_objects("gpu")
                if p["spec"].get("nodeName")
            }
        )
        if ratio is None:
            nodes = list(self.cluster.nvml_states)
        for node in nodes:
            self.cluster.write_nvml(node, nvml_state(ratio))
        what = "healthy" if ratio is None else f"{ratio:.0%} memory used"
        return Applied(f"NVML on {', '.join(nodes)}: {what}")

    async def _gpu_capacity(self, gpus: int) -> Applied:
        for node in GPU_NODES:
            await self.cluster.agent.set_gpu_capacity(node, gpus)
        done = f"nvidia.com/gpu capacity {gpus} on {', '.join(GPU_NODES)}"
        if gpus == 0:
            pods = self.observer.pod_objects("gpu")
            for pod in pods:
                await self.evict(pod)
            done += f"; evicted {len(pods)} GPU pod(s)"
        return Applied(done)

    # ------------------------------------------------------------ processes
    def _kill(self, tier: str) -> Applied:
        pods = self.observer.pod_objects(tier, ready_only=True)
        at = time.monotonic()
        killed = [
            p["metadata"]["name"]
            for p in pods
            if self.cluster.agent.kill_pod_process(self.namespace, p["metadata"]["name"])
        ]
        return Applied(
            f"SIGKILL to {tier} pods: {', '.join(killed) or 'none'}",
            [Disruption(at, pod_ips=ips_of(pods))],
        )

    async def _kill_job_worker(self, action: c.KillJobWorker) -> Applied:
        """Start a job through the front Service, SIGKILL the ``tier`` pods once one holds a
        chunk of it (read from the consumer group), then wait for the job to succeed."""
        assert self.cluster.redis is not None
        store = redis_client(self.cluster.redis.url)
        base = self.cluster.front_url()
        text = " ".join(JOB_SENTENCES[n % len(JOB_SENTENCES)] for n in range(action.chars))
        text = text[: action.chars].rsplit(" ", 1)[0] + "."
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                async with http.post(f"{base}{pod_contract.PATH_JOBS}", json={"input": text}) as r:
                    if r.status != 202:
                        raise RuntimeError(
                            f"POST {pod_contract.PATH_JOBS}: {r.status} {await r.text()}"
                        )
                    job_id = (await r.json())["id"]
                names = [p["metadata"]["name"] for p in self.observer.pod_objects(action.tier)]

                def holding() -> bool:
                    summary = store.xpending(
                        f"voiceops:{self.namespace}/{self.cluster.name}:chunks", "workers"
                    )
                    held = {
                        row["name"].decode(): row["pending"] for row in summary["consumers"] or []
                    }
                    prefixes = tuple(f"{name}-" for name in names)
                    return any(n > 0 and who.startswith(prefixes) for who, n in held.items())

                await poll(lambda: asyncio.to_thread(holding), 120, "a pod holding a chunk")
                killed = self._kill(action.tier)
                job = await poll(
                    lambda: self._job_ended(http, base, job_id), action.job_within, "the job's end"
                )
        finally:
            store.close()
        if job["state"] != "succeeded":
            raise RuntimeError(f"job {job_id} ended {job['state']}: {job.get('error')}")
        indices = [m["index"] for m in job["made_by"]]
        if indices != list(range(job["chunks"]["total"])):
            raise RuntimeError(f"job {job_id}: chunks not each made once: {indices}")
        engines = ", ".join(f"{n} by {e}" for e, n in sorted(job["engines"].items()))
        return Applied(
            f"{killed.done} while it made a chunk of job {job_id}; the job succeeded: "
            f"{job['chunks']['total']} chunks ({engines}), {job['audio_seconds']:.0f} s of audio",
            killed.disruptions,
        )

    @staticmethod
    async def _job_ended(
        http: aiohttp.ClientSession, base: str, job_id: str
    ) -> dict[str, Any] | None:
        try:
            async with http.get(f"{base}{pod_contract.PATH_JOBS}/{job_id}") as response:
                if response.status != 200:
                    return None  # a dead pod behind the Service, or Redis away for a moment
                job = await response.json()
        except (aiohttp.ClientError, TimeoutError):
            return None
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    async def _crash_loop_local(self, times: int) -> Applied:
        """SIGKILL the GPU container each time it runs again, ``times`` times."""
        (pod,) = self.observer.pod_objects("gpu", ready_only=True)[:1] or [None]
        if pod is None:
            raise RuntimeError("no ready GPU pod to crash")
        name = pod["metadata"]["name"]
        disruptions = []
        for n in range(times):
            if n:
                await self._wait_for(
                    lambda restarts=n: self._running_since(name, restarts), 120, f"restart {n}"
                )
            disruptions.append(Disruption(time.monotonic(), pod_ips=ips_of([pod])))
            self.cluster.agent.kill_pod_process(self.namespace, name)
        return Applied(f"SIGKILL to {name} {times} times, each time it ran again", disruptions)

    def _running_since(self, name: str, restarts: int) -> bool:
        for pod in self.observer.pod_objects("gpu"):
            if pod["metadata"]["name"] != name:
                continue
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                if int(status.get("restartCount") or 0) >= restarts and "running" in (
                    status.get("state") or {}
                ):
                    return True
        return False

    async def _operator(self, state: str) -> Applied:
        operator = self.cluster.operator
        if state == "killed":
            if operator.proc is not None and operator.proc.returncode is None:
                operator.proc.send_signal(signal.SIGKILL)
                await operator.proc.wait()
            return Applied("SIGKILL to the operator process")
        if not operator.alive():
            await operator.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                await operator.metrics()
                return Applied("operator process running and answering /metrics")
            except (aiohttp.ClientError, OSError) as error:
                if time.monotonic() > deadline or not operator.alive():
                    raise RuntimeError(
                        "the operator did not come up:\n" + operator.log_tail()
                    ) from error
                await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ nodes
    async def _node_lost(self, lost: bool) -> Applied:
        if lost:
            pods = self.observer.pod_objects("gpu", ready_only=True)
            self._lost_nodes = sorted({p["spec"]["nodeName"] for p in pods})
            for node in self._lost_nodes:
                await self.cluster.agent.stop_heartbeat(node)
            return Applied(f"heartbeat stopped: {', '.join(self._lost_nodes)}")
        nodes, self._lost_nodes = self._lost_nodes, []
        for node in nodes:
            await self.cluster.agent.resume_heartbeat(node)
        return Applied(f"heartbeat resumed: {', '.join(nodes)}")

    # ------------------------------------------------------------ API server
    def _restart_apiserver(self) -> Applied:
        """Stop kube-apiserver and start it again with the same arguments, port and log.

        SIGKILL after 2 s: its graceful shutdown waits for open watches (15 s here), an
        outage that outlasts this cluster's 6 s node-monitor grace (40 s on a real one)
        and turns every node NotReady; the node agent says its pods' readiness again
        once the node lifecycle controller has turned it off, as a kubelet does.
        """
        began = time.monotonic()
        down = self.cluster.plane.restart("kube-apiserver", grace_seconds=2)
        return Applied(
            f"kube-apiserver restarted (stopped in {down:.1f}s, healthy again "
            f"{time.monotonic() - began:.1f}s after the stop began)"
        )

    # --------------------------------------------------------------- network
    def _slow_network(self, tier: str, delay_ms: int, rate_kbit: int) -> Applied:
        """A root qdisc on the pods' interface, inside each pod's network namespace: netem
        for a delay (with its own rate limit), tbf for a rate alone; none: removed."""
        if not delay_ms and not rate_kbit:
            for netns, interface in self._delayed.items():
                subprocess.run(
                    ["ip", "netns", "exec", netns, "tc", "qdisc", "del", "dev", interface, "root"],
                    capture_output=True,
                    check=False,
                )
            done = f"qdisc removed in {', '.join(self._delayed) or 'no pod'}"
            self._delayed = {}
            return Applied(done)
        if delay_ms:
            qdisc = ["netem", "delay", f"{delay_ms}ms"]
            qdisc += ["rate", f"{rate_kbit}kbit"] if rate_kbit else []
        else:  # a second of queue, then drops: TCP slows to the rate
            qdisc = ["tbf", "rate", f"{rate_kbit}kbit", "burst", "32kbit", "latency", "1s"]
        names = []
        for pod in self.observer.pod_objects(tier):
            entry = self.cluster.agent.entries.get((self.namespace, pod["metadata"]["name"]))
            if entry is None or not entry.netns:
                continue
            interface = pod_interface(entry.netns)
            command = ["ip", "netns", "exec", entry.netns, "tc", "qdisc", "replace", "dev",
                       interface, "root", *qdisc]  # fmt: skip
            ran = subprocess.run(command, capture_output=True, text=True, check=False)
            if ran.returncode != 0:
                raise RuntimeError(f"{' '.join(command)}: {ran.stderr.strip()}")
            self._delayed[entry.netns] = interface
            names.append(pod["metadata"]["name"])
        return Applied(f"{' '.join(qdisc)} on {', '.join(names) or 'no pod'}")

    # ----------------------------------------------------- the fault endpoint
    async def _fault_call(
        self, pod: dict[str, Any], method: str, body: dict[str, Any] | None
    ) -> tuple[int, str]:
        """Straight to the pod's address (this machine routes to the pod network)."""
        url = (
            f"http://{pod['status']['podIP']}:{pod_contract.DEFAULT_PORT}{pod_contract.PATH_FAULTS}"
        )
        headers = {"Authorization": f"Bearer {self.fault_token}"}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.request(method, url, json=body, headers=headers) as response,
            ):
                return response.status, await response.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            return 0, repr(error)

    # ------------------------------------------------------------- leftovers
    def scenario_leftovers(self) -> list[str]:
        """Faults this target still holds, network namespaces without a pod, processes of
        pods the agent no longer runs."""
        found = super().scenario_leftovers()
        if self._lost_nodes:
            found.append(f"heartbeat still stopped on {', '.join(self._lost_nodes)}")
        if self._delayed:
            found.append(f"a slow-network qdisc still on {', '.join(self._delayed)}")
        if not self.cluster.operator.alive():
            found.append("the operator process is not running")
        attached = set(self.cluster.network.attached)
        spaces, _ = pod_network.leftovers(self.cluster.network.tag)
        in_use = {e.netns for e in self.cluster.agent.entries.values() if e.netns}
        found += [f"network namespace {n} (no pod)" for n in sorted(set(spaces) - in_use)]
        found += [f"network namespace {n} detached but present" for n in sorted(in_use - attached)]
        running = {
            proc.pid
            for entry in self.cluster.agent.entries.values()
            if entry.runtime is not None
            for proc in entry.runtime.processes.values()
            if proc.returncode is None
        }
        for pid, command in child_processes(os.getpid()):
            if (
                "voiceops-service" in command
                and pid not in running
                and not _is_descendant(pid, running)
            ):
                found.append(f"process {pid} ({command[:80]}) of no pod")
        return found


def _is_descendant(pid: int, ancestors: set[int]) -> bool:
    """``pid`` runs under one of ``ancestors`` (a pod's process group: ip netns exec → service)."""
    seen = 0
    while pid > 1 and seen < 64:
        if pid in ancestors:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        seen += 1
    return False


def netem_problem(tag: str) -> str | None:
    """None when tc netem works in a network namespace here, else why not (a kernel
    without sch_netem, as in some containers)."""
    netns, outer, inner = f"{tag}-nq", f"{tag}nqh", f"{tag}nqc"
    try:
        subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True)
        subprocess.run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner],
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run(["ip", "link", "set", inner, "netns", netns], check=True,
                       capture_output=True)  # fmt: skip
        tried = subprocess.run(
            ["ip", "netns", "exec", netns, "tc", "qdisc", "add", "dev", inner, "root", "netem",
             "delay", "1ms"], capture_output=True, text=True, check=False,
        )  # fmt: skip
        if tried.returncode != 0:
            return f"tc netem is not available here: {tried.stderr.strip()}"
        return None
    except (subprocess.CalledProcessError, OSError) as error:
        return f"cannot try tc netem: {error}"
    finally:
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", outer], capture_output=True, check=False)


def pod_interface(netns: str) -> str:
    """The pod's end of its veth pair (the namespace's one interface besides lo)."""
    shown = subprocess.run(
        ["ip", "-n", netns, "-o", "link", "show"], capture_output=True, text=True, check=True
    )
    for line in shown.stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name != "lo":
            return name
    raise RuntimeError(f"no interface besides lo in network namespace {netns}")


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


async def poll(found: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
    """``await found()`` until it is truthy; TimeoutError naming ``what`` after ``within``."""
    deadline = time.monotonic() + within
    while not (value := await found()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {within:g}s")
        await asyncio.sleep(0.05)
    return value
