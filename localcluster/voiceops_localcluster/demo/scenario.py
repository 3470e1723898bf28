"""The demo's scenarios: speech through the front Service and GPU faults, then the report.

``Demo`` adds to ``DemoCluster`` the requests the audience sees (wav files, the
engine that answered), the chaos (GPU memory through the pod's ``/admin/faults``,
GPU capacity on the node), the scenarios that chain them and check the operator's
reaction, and the final timeline, Events and latency report.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from voiceops_contract import pod as pod_contract

from ..node_agent import KubeApiError
from .cluster import GPU_NODE, DemoCluster
from .errors import DemoError
from .facts import WavFacts, format_table, wav_facts
from .options import DemoOptions
from .report import say

Obj = dict[str, Any]

# A fault body is merged into the pod's faults; ratios against the default thresholds
# (memoryHighRatio 0.90, memoryCriticalRatio 0.97).
SIM_GPU_BYTES = 16 * 2**30
HIGH_RATIO = 0.93
CRITICAL_RATIO = 0.99
ENGINE_TIERS = {"vits": "GPU tier (vits)", "espeak": "fallback tier (espeak)"}


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


class Demo(DemoCluster):
    """One run: the cluster and operator (``DemoCluster``), the scenarios, the report."""

    def __init__(self, options: DemoOptions) -> None:
        super().__init__(options)
        self.faulted_pod: Obj | None = None

    # ------------------------------------------------------ speech and chaos
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
        address = self.pod_address(pod)
        if address is None:
            raise DemoError("inject a GPU fault", f"pod {pod['metadata']['name']} has no IP")
        url = f"http://{address}{pod_contract.PATH_FAULTS}"
        headers = {"Authorization": f"Bearer {await self.fault_token()}"}
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

    async def fault_token(self) -> str:
        """The token in the Secret the VoiceService names, read from the API server."""
        vs = self.cached("voiceservices", self.name) or {}
        ref = ((vs.get("spec") or {}).get("faultInjection") or {}).get("tokenSecretRef") or {}
        path = f"/api/v1/namespaces/{self.ns}/secrets/{ref.get('name', '')}"
        secret = await self.kube().get(path) or {}
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
        """The node's GPU goes: capacity 0 and the GPU pod deleted, as a device-plugin failure
        ends it (a real kubelet evicts nothing when capacity drops; nor does the node agent).
        The replacement cannot be scheduled; then the GPU comes back."""
        assert self.agent is not None
        say("\n=== scenario: the node loses its GPU ===")
        self.faulted_pod = None
        text = f"chaos: {GPU_NODE} loses its nvidia.com/gpu (allocatable 1 → 0)"
        say(f"\n{text}")
        self.timeline.add("action", text)
        since = self.now()
        await self.agent.set_gpu_capacity(GPU_NODE, 0)
        gone = [p["metadata"]["name"] for p in self.pods("gpu")]
        for name in gone:
            try:
                await self.kube().request("DELETE", f"/api/v1/namespaces/{self.ns}/pods/{name}")
            except KubeApiError as error:
                if error.status != 404:  # already gone is fine
                    raise DemoError("delete the GPU pod", str(error)) from None
        say(f"  deleted: {', '.join(gone) or 'none'}; the replacement cannot be scheduled")
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
        await self.agent.set_gpu_capacity(GPU_NODE, 1)
        seen = await self.wait_routed("Recovering", "both", self.options.ready_timeout)
        self.latency("GPU back → Recovering (includes the model load)", since, seen)
        serving = await self.wait_routed("Serving", "gpu")
        self.latency("Recovering → Serving", seen, serving)
        await self.speak_and_report(
            "speech after the GPU came back", "Back on the GPU.", "05-gpu-back.wav"
        )

    # --------------------------------------------------------------- report
    async def print_report(self) -> None:
        say("\n=== timeline ===")
        for e in self.timeline.entries:
            say(f"  {e.wall}  +{e.at:6.1f}s  {e.kind:8} {e.text}")
        say("\n=== Events the operator wrote ===")
        listing = await self.kube().request("GET", f"/api/v1/namespaces/{self.ns}/events")
        events = [
            ev
            for ev in listing.get("items") or []
            if (ev.get("involvedObject") or {}).get("kind") == "VoiceService"
        ]
        events.sort(key=lambda ev: int(ev["metadata"].get("resourceVersion") or 0))
        rows = [[ev.get("type"), ev.get("reason"), ev.get("message")] for ev in events]
        say(format_table(["TYPE", "REASON", "MESSAGE"], rows))
        say("\n=== decision latencies (fault → phase seen in the API) ===")
        for decision, seconds in self.timeline.latencies:
            say(f"  {seconds:6.1f}s  {decision}")
        (self.out / "timeline.json").write_text(self.timeline.to_json())

    async def run(self) -> None:
        await self.start_cluster()
        await self.apply_example()
        await self.wait_ready()
        await self.scenario_memory_pressure()
        if self.options.scenario == "all":
            await self.scenario_gpu_lost()
        await self.print_report()
        if self.options.keep_running:
            self.print_usage()
            await asyncio.Event().wait()
