"""``make demo``: the whole product on a local simulated cluster (no Docker, no GPU).

Real: the ``voiceops-operator run`` process, the ``voiceops-service`` processes of
both tiers (vits on CPU for the GPU tier, espeak for the fallback tier), every
HTTP call. Test doubles (``voiceops_sim``): the Kubernetes API emulator, the
simulated kubelet (scheduler, Deployment controller, process pods on loopback
IPs, probes) and its Service proxy (kube-proxy stand-in). The "GPU" is a
simulated ``nvidia.com/gpu`` on a simulated node; GPU memory pressure comes in
through the service's token-guarded ``/admin/faults``, so the operator sees it
the way it would on a real GPU: in the pod's ``/metrics``.

Usage: ``python -m voiceops_sim.demo [--scenario basic|all] [--output DIR] [--keep-running]``.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import io
import json
import logging
import math
import signal
import sys
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from voiceops_contract import pod as pod_contract

from .apiserver import KubeApiEmulator, load_yaml_documents
from .kubelet import KubeletConfig, SimulatedKubelet, parse_node
from .operator_process import OperatorProcess
from .store import WatchEvent
from .tables import json_path

Obj = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "voiceservice.yaml"
EXAMPLE_FILE = REPO / "examples" / "local.yaml"
GPU_NODE = "sim-gpu-0"
CPU_NODE = "sim-cpu-0"
TIER_LABEL = "voiceops.io/tier"
INSTANCE_LABEL = "app.kubernetes.io/instance"
FIELD_MANAGER = "kubectl"
# A fault body is merged into the pod's faults; ratios against the default thresholds
# (memoryHighRatio 0.90, memoryCriticalRatio 0.97).
SIM_GPU_BYTES = 16 * 2**30
HIGH_RATIO = 0.93
CRITICAL_RATIO = 0.99
COLUMN_WIDTHS = {"Ready": 18, "Phase": 10, "Tier": 8, "GPU-Mem": 7}
ENGINE_TIERS = {"vits": "GPU tier (vits)", "espeak": "fallback tier (espeak)"}


class DemoError(Exception):
    """A step missed its deadline or failed; ``step`` names it."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step, self.detail = step, message


# ----------------------------------------------------------------- options


@dataclass(frozen=True)
class DemoOptions:
    """What the command line asked for, and the step deadlines (seconds)."""

    scenario: str = "basic"
    output: Path = Path("demo-output")
    keep_running: bool = False
    ready_timeout: float = 120.0
    transition_timeout: float = 40.0
    request_timeout: float = 30.0
    example: Path = EXAMPLE_FILE


def parse_args(argv: Sequence[str] | None = None) -> DemoOptions:
    parser = argparse.ArgumentParser(
        prog="python -m voiceops_sim.demo",
        description=(
            "Run voiceops end to end on a local SIMULATED cluster: API emulator, simulated "
            "kubelet, the real operator and real TTS service processes, then inject GPU faults."
        ),
    )
    parser.add_argument(
        "--scenario",
        choices=["basic", "all"],
        default="basic",
        help="basic: GPU memory pressure; all: also GPU capacity lost and restored",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("demo-output"), help="wav files, logs, timeline.json"
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the cluster up at the end and print how to use it (Ctrl-C stops it)",
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=120.0, help="seconds to wait for Serving"
    )
    args = parser.parse_args(argv)
    if args.ready_timeout <= 0:
        parser.error("--ready-timeout: must be > 0")
    return DemoOptions(
        scenario=args.scenario,
        output=args.output,
        keep_running=args.keep_running,
        ready_timeout=args.ready_timeout,
    )


# ------------------------------------------------------------ pure helpers


@dataclass(frozen=True)
class WavFacts:
    seconds: float
    sample_rate: int
    rms: float  # of int16 samples, 0..32767


def wav_facts(data: bytes) -> WavFacts:
    """Duration and loudness of a 16-bit mono/stereo WAV; ValueError if it is not one."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            if wav.getsampwidth() != 2:
                raise ValueError(f"expected 16-bit samples, got {8 * wav.getsampwidth()}-bit")
            frames = wav.readframes(wav.getnframes())
            rate = wav.getframerate()
            count = wav.getnframes()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a WAV file: {exc}") from None
    samples = array.array("h")
    samples.frombytes(frames[: len(frames) - len(frames) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    rms = math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0
    return WavFacts(seconds=count / rate if rate else 0.0, sample_rate=rate, rms=rms)


def secret_data(obj: Obj) -> Obj:
    """Fold ``stringData`` into base64 ``data`` as the API server does (the emulator does not)."""
    string_data = obj.get("stringData")
    if obj.get("kind") != "Secret" or not string_data:
        return obj
    folded = {k: base64.b64encode(str(v).encode()).decode() for k, v in string_data.items()}
    return {
        **{k: v for k, v in obj.items() if k != "stringData"},
        "data": {**(obj.get("data") or {}), **folded},
    }


def pod_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_state(pod: Obj) -> str:
    """A ``kubectl get pods`` STATUS-like word."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return str(waiting["reason"])
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return str(cond.get("reason") or "Pending")
    return str(status.get("phase") or "Pending")


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


# ---------------------------------------------------------------- timeline


@dataclass
class TimelineEntry:
    at: float  # seconds since the demo started
    wall: str  # UTC clock time
    kind: str  # phase | event | action | request
    text: str
    phase: str = ""


@dataclass
class Timeline:
    """Everything that happened, with timestamps; written to ``timeline.json``."""

    started: float = field(default_factory=time.monotonic)
    entries: list[TimelineEntry] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)

    def add(self, kind: str, text: str, phase: str = "") -> TimelineEntry:
        entry = TimelineEntry(
            at=round(time.monotonic() - self.started, 3),
            wall=time.strftime("%H:%M:%S", time.gmtime()),
            kind=kind,
            text=text,
            phase=phase,
        )
        self.entries.append(entry)
        return entry

    def last_phase_entry(self, phase: str) -> TimelineEntry | None:
        return next((e for e in reversed(self.entries) if e.phase == phase), None)

    def phases(self) -> list[str]:
        return [e.phase for e in self.entries if e.kind == "phase"]

    def to_json(self) -> str:
        return json.dumps(
            {
                "entries": [asdict(e) for e in self.entries],
                "phases": self.phases(),
                "latencies": [{"decision": d, "seconds": s} for d, s in self.latencies],
            },
            indent=2,
        )


def say(text: str = "") -> None:
    print(text, flush=True)


# ------------------------------------------------------------ the watcher


class ClusterWatcher:
    """Prints the VoiceService's printer-column view and new Events as they change."""

    def __init__(self, emu: KubeApiEmulator, ns: str, name: str, timeline: Timeline) -> None:
        self.emu, self.ns, self.name, self.timeline = emu, ns, name, timeline
        crd = load_yaml_documents(CRD_FILE)[0]
        version = next(v for v in crd["spec"]["versions"] if v.get("served"))
        self.columns = [
            c for c in version.get("additionalPrinterColumns") or [] if c.get("type") != "date"
        ]
        self.last_row: tuple[str, ...] | None = None
        self.last_phase = ""
        self.seen_events: set[str] = set()
        self.header_printed = False
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self.emu.subscribe(self._on_change)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def row(self, vs: Obj) -> tuple[str, ...]:
        values = []
        for column in self.columns:
            value = json_path(vs, column["jsonPath"])
            if column.get("type") == "number" and isinstance(value, int | float):
                value = f"{value:.2f}"
            values.append("" if value is None else str(value))
        return tuple(values)

    def _on_change(self, event: WatchEvent) -> None:
        # Called synchronously on every committed change: cheap checks only.
        vs = self.emu.get("voiceservices", self.name, self.ns)
        if vs is not None:
            row = self.row(vs)
            if row != self.last_row and any(row):
                self.last_row = row
                self._print_row(row)
            phase = ((vs.get("status") or {}).get("phase")) or ""
            if phase and phase != self.last_phase:
                self.last_phase = phase
                tier = (vs.get("status") or {}).get("activeTier") or "?"
                self.timeline.add("phase", f"phase {phase} (traffic → {tier})", phase=phase)
        for ev in self.emu.list("events", self.ns):
            uid = ev["metadata"].get("uid") or ev["metadata"]["name"]
            if uid in self.seen_events:
                continue
            self.seen_events.add(uid)
            about = ev.get("involvedObject") or {}
            who = f"{about.get('kind')}/{about.get('name')}"
            text = f"Event {ev.get('type')} {ev.get('reason')} on {who}: {ev.get('message')}"
            self.timeline.add("event", text)
            say(f"  {self._stamp()}  {text}")

    def _print_row(self, row: tuple[str, ...]) -> None:
        cells = [self.name, *row]
        widths = [max(len(self.name), 4), *(COLUMN_WIDTHS.get(c["name"], 10) for c in self.columns)]
        if not self.header_printed:
            self.header_printed = True
            names = ["NAME", *(c["name"].upper() for c in self.columns)]
            say(f"  {'':10}  " + _row(names, widths))
        say(f"  {self._stamp()}  " + _row(cells, widths))

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.timeline.started:7.1f}s]"


# -------------------------------------------------------- operator process


# ------------------------------------------------------------------- demo


@dataclass(frozen=True)
class SpeechResult:
    engine: str
    via: str  # the address the request went to
    facts: WavFacts
    wall_seconds: float
    path: Path | None

    @property
    def rtf(self) -> float:
        return self.wall_seconds / self.facts.seconds if self.facts.seconds else float("inf")


class Demo:
    """One run: the simulated cluster, the operator, the scenarios and the cleanup."""

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
        self.faulted_pod: Obj | None = None
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

    async def speak(self, step: str, text: str, filename: str | None) -> SpeechResult:
        """One speech request through the front Service (retried while it has no endpoints)."""
        deadline = time.monotonic() + self.options.request_timeout
        body = {"model": "tts-1", "input": text, "response_format": "wav"}
        last_error = "no attempt"
        while time.monotonic() < deadline:
            base = self.front_base_url()
            if base is None:
                last_error = f"the front Service {self.ns}/{self.name} has no ready endpoint"
                await asyncio.sleep(0.2)
                continue
            url = base + pod_contract.PATH_SPEECH
            # A fresh connection per request: the proxy picks an endpoint per connection.
            connector = aiohttp.TCPConnector(force_close=True)
            timeout = aiohttp.ClientTimeout(total=max(1.0, deadline - time.monotonic()))
            started = time.monotonic()
            try:
                async with (
                    aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                    session.post(url, json=body) as resp,
                ):
                    data = await resp.read()
                    if resp.status != 200:
                        last_error = f"HTTP {resp.status}: {data[:300]!r}"
                        await asyncio.sleep(0.3)
                        continue
                    engine = resp.headers.get("X-Voiceops-Engine", "?")
            except (aiohttp.ClientError, TimeoutError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.2)
                continue
            wall = time.monotonic() - started
            try:
                facts = wav_facts(data)
            except ValueError as exc:
                raise DemoError(step, f"the answer is not audio: {exc}") from None
            path = None
            if filename:
                path = self.out / filename
                path.write_bytes(data)
            return SpeechResult(engine, base, facts, wall, path)
        raise DemoError(step, f"no speech within {self.options.request_timeout:.0f}s: {last_error}")

    async def speak_and_report(self, step: str, text: str, filename: str) -> SpeechResult:
        say(
            f"\n$ curl http://{self.name}.{self.ns}:8000{pod_contract.PATH_SPEECH} "
            f'-d \'{{"model": "tts-1", "input": "{text}"}}\''
        )
        say(f"  front Service selects: {self.front_tier()}; endpoints {self.front_endpoints()}")
        result = await self.speak(step, text, filename)
        tier = ENGINE_TIERS.get(result.engine, result.engine)
        say(
            f"  -> {result.path.relative_to(self.out.parent) if result.path else '-'}: "
            f"{result.facts.seconds:.2f}s of audio at {result.facts.sample_rate} Hz in "
            f"{result.wall_seconds:.2f}s (RTF {result.rtf:.3f}), answered by the {tier} "
            f"via {result.via}"
        )
        self.timeline.add("request", f"{filename}: answered by the {tier}")
        return result

    async def set_gpu_memory(self, ratio: float | None) -> None:
        """POST/DELETE the GPU pod's ``/admin/faults`` (token from the Secret the spec names)."""
        pod = self.faulted_pod or self.ready_gpu_pod()
        if pod is None:
            raise DemoError("inject a GPU fault", "no ready GPU pod")
        self.faulted_pod = pod
        url = f"http://{pod['status']['podIP']}:{container_port(pod)}{pod_contract.PATH_FAULTS}"
        headers = {"Authorization": f"Bearer {self.fault_token()}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            if ratio is None:
                request = session.delete(url, headers=headers)
                what = "cleared the faults of"
            else:
                memory = {"used_bytes": int(SIM_GPU_BYTES * ratio), "total_bytes": SIM_GPU_BYTES}
                request = session.post(url, json={"gpu_memory": memory}, headers=headers)
                what = f"GPU memory {ratio:.0%} used on"
            async with request as resp:
                if resp.status != 200:
                    raise DemoError(
                        "inject a GPU fault", f"{url}: HTTP {resp.status}: {await resp.text()}"
                    )
        text = f"chaos: {what} pod {pod['metadata']['name']}"
        say(f"\n{text}")
        self.timeline.add("action", text)

    def fault_token(self) -> str:
        vs = self.emu.get("voiceservices", self.name, self.ns) or {}
        ref = ((vs.get("spec") or {}).get("faultInjection") or {}).get("tokenSecretRef") or {}
        secret = self.emu.get("secrets", ref.get("name", ""), self.ns) or {}
        encoded = (secret.get("data") or {}).get(ref.get("key", ""), "")
        if not encoded:
            raise DemoError("read the fault token", f"Secret {ref.get('name')!r} has no token")
        return base64.b64decode(encoded).decode()

    # ------------------------------------------------------------ scenarios
    async def scenario_memory_pressure(self) -> None:
        say("\n=== scenario: GPU memory pressure ===")
        await self.speak_and_report(
            "speech on the GPU tier", "Hello from the GPU tier.", "01-gpu-tier.wav"
        )

        since = self.now()
        await self.set_gpu_memory(HIGH_RATIO)
        seen = await self.wait_routed("Degraded", "both")
        self.latency("memory high → Degraded", since, seen)
        await self.wait("fallback tier scaled up", lambda: self.fallback_replicas() >= 2, 20)
        say(f"  fallback Deployment scaled to {self.fallback_replicas()} replicas")
        engines = [
            (await self.speak("speech while Degraded", "Both tiers serve.", None)).engine
            for _ in range(4)
        ]
        say(f"  4 requests while Degraded answered by: {', '.join(engines)}")

        since = self.now()
        await self.set_gpu_memory(CRITICAL_RATIO)
        seen = await self.wait_routed("FailedOver", "fallback")
        self.latency("memory critical → FailedOver", since, seen)
        result = await self.speak_and_report(
            "speech while failed over", "The fallback tier answers now.", "02-failed-over.wav"
        )
        if result.engine != "espeak":
            raise DemoError("speech while failed over", f"answered by {result.engine}, not espeak")

        since = self.now()
        await self.set_gpu_memory(None)
        seen = await self.wait_routed("Recovering", "both")
        self.latency("faults cleared → Recovering", since, seen)
        serving = await self.wait_routed("Serving", "gpu")
        self.latency("faults cleared → Serving (healthy for recoverAfterSeconds)", since, serving)
        result = await self.speak_and_report(
            "speech after recovery", "The GPU tier is back.", "03-recovered.wav"
        )
        if result.engine != "vits":
            raise DemoError("speech after recovery", f"answered by {result.engine}, not vits")

    async def scenario_gpu_lost(self) -> None:
        assert self.kubelet is not None
        say("\n=== scenario: the node loses its GPU ===")
        self.faulted_pod = None
        text = f"chaos: {GPU_NODE} loses its nvidia.com/gpu (allocatable 1 → 0)"
        say(f"\n{text}")
        self.timeline.add("action", text)
        since = self.now()
        evicted = await self.kubelet.set_gpu_capacity(GPU_NODE, 0)
        say(f"  evicted: {', '.join(evicted) or 'none'}; the replacement cannot be scheduled")
        seen = await self.wait_routed("FailedOver", "fallback")
        self.latency("GPU removed → FailedOver", since, seen)
        last = self.status().get("lastTransition") or {}
        say(f"  operator's reason: {last.get('reason')}: {last.get('message')}")
        await self.speak_and_report(
            "speech without a GPU", "No GPU, still speaking.", "04-gpu-lost.wav"
        )

        text = f"chaos: {GPU_NODE} has 1 nvidia.com/gpu again"
        say(f"\n{text}")
        self.timeline.add("action", text)
        since = self.now()
        await self.kubelet.set_gpu_capacity(GPU_NODE, 1)
        seen = await self.wait_routed("Recovering", "both", self.options.ready_timeout)
        self.latency("GPU back → Recovering (includes the model load)", since, seen)
        serving = await self.wait_routed("Serving", "gpu")
        self.latency("Recovering → Serving", seen, serving)
        await self.speak_and_report(
            "speech after the GPU came back", "Back on the GPU.", "05-gpu-back.wav"
        )

    # --------------------------------------------------------------- report
    def print_report(self) -> None:
        say("\n=== timeline ===")
        for e in self.timeline.entries:
            say(f"  {e.wall}  +{e.at:6.1f}s  {e.kind:8} {e.text}")
        say("\n=== Events the operator wrote ===")
        events = [
            ev
            for ev in self.emu.list("events", self.ns)
            if (ev.get("involvedObject") or {}).get("kind") == "VoiceService"
        ]
        events.sort(key=lambda ev: int(ev["metadata"].get("resourceVersion") or 0))
        rows = [[ev.get("type"), ev.get("reason"), ev.get("message")] for ev in events]
        say(format_table(["TYPE", "REASON", "MESSAGE"], rows))
        say("\n=== decision latencies (fault → phase seen in the API) ===")
        for decision, seconds in self.timeline.latencies:
            say(f"  {seconds:6.1f}s  {decision}")
        (self.out / "timeline.json").write_text(self.timeline.to_json())

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

    async def run(self) -> None:
        await self.start_cluster()
        await self.apply_example()
        await self.wait_ready()
        await self.scenario_memory_pressure()
        if self.options.scenario == "all":
            await self.scenario_gpu_lost()
        self.print_report()
        if self.options.keep_running:
            self.print_usage()
            await asyncio.Event().wait()


def container_port(pod: Obj, name: str = "http") -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name:
                return int(port["containerPort"])
    return pod_contract.DEFAULT_PORT


def describe(plural: str, obj: Obj) -> str:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if plural == "deployments":
        return f"ready {status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}"
    if plural == "services":
        selector = ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items())
        ports = ",".join(str(p.get("port")) for p in spec.get("ports") or [])
        return f"port {ports}  selector {selector}"
    if plural == "horizontalpodautoscalers":
        return f"min {spec.get('minReplicas')} max {spec.get('maxReplicas')}"
    if plural == "poddisruptionbudgets":
        return "  ".join(f"{k} {spec[k]}" for k in ("minAvailable", "maxUnavailable") if k in spec)
    if plural == "networkpolicies":
        ports = ",".join(
            f"{p.get('port')}/{p.get('protocol', 'TCP')}"
            for rule in spec.get("ingress") or []
            for p in rule.get("ports") or []
        )
        sources = sum(len(rule.get("from") or []) for rule in spec.get("ingress") or [])
        egress = [r for r in spec.get("egress") or [] if isinstance(r, dict)]
        origin = f"{sources} peers" if sources else "any source"
        return f"ingress {ports} from {origin}  egress {'any' if {} in egress else 'DNS only'}"
    return ""


async def run_demo(options: DemoOptions) -> int:
    """Run the demo; 0 on success, 1 on a failed step, 130 when interrupted."""
    demo = Demo(options)
    started = time.monotonic()
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        if interrupted:  # a second Ctrl-C must not cut the cleanup short
            say("still stopping the cluster ...")
            return
        interrupted = True
        if task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    code = 0
    try:
        await demo.run()
        say(f"\ndemo passed in {time.monotonic() - started:.0f}s; output in {demo.out}")
    except DemoError as exc:
        say(f"\nDEMO FAILED at step '{exc.step}': {exc.detail}")
        say(demo.diagnostics())
        code = 1
    except asyncio.CancelledError:
        if not interrupted:
            raise
        say("\ninterrupted: stopping the cluster")
        code = 130
    finally:
        await demo.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        say("stopped: operator, pods, service proxy and API emulator")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    # Library logs (emulator, kubelet, proxy) go to a file; the terminal shows the story.
    options.output.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=options.output / "demo.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(run_demo(options))


if __name__ == "__main__":
    sys.exit(main())
