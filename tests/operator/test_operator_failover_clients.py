"""Failover that real clients follow: keep-alive pools, the advertised voice, empty tiers.

Real: the Kubernetes control plane (etcd, kube-apiserver, controller manager,
scheduler), the operator process, ``voiceops-service`` processes for both tiers (VITS
with the bundled joe voice on the GPU tier, on CPU here; espeak on the fallback tier),
the official ``openai`` client with its defaults (keep-alive pool, two retries) and a
plain client that opens a connection per request, all through the front Service.
Test double: the node agent (kubelet and kube-proxy), whose pods have real addresses
in network namespaces and whose Service proxy routes by EndpointSlices and keeps an
established connection on its backend, as kube-proxy does
(``voiceops_localcluster.failover_cluster``; needs root for the network namespaces).

Each test failed before its fix: keep-alive clients stayed on the tier traffic had
left; the fallback refused the advertised model and voice; a dead GPU pod waited a
window with a ready fallback pod unused; a lost fallback pod left the front Service
empty while a ready GPU pod went unused.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from voiceops_localcluster.failover_cluster import HEALTHY_GPU, failover_cluster
from voiceops_localcluster.traffic import RequestRecord, Traffic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def answered_by(traffic: Traffic, client: str, engine: str, after: float, n: int = 4) -> None:
    """Wait until ``client``'s last ``n`` answers, all started after ``after``, came from
    ``engine`` (a keep-alive client that never moves never gets there)."""

    def done() -> bool:
        recent = traffic.of(client, since=after)[-n:]
        return len(recent) == n and all(r.ok and r.engine == engine for r in recent)

    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, _summary(traffic.of(client, since=after)[-8:])
        await asyncio.sleep(0.05)


def _summary(records: list[RequestRecord]) -> str:
    return "; ".join(f"{r.status} {r.engine} {r.voice} {r.error[:80]}" for r in records)


async def test_keep_alive_clients_follow_a_failover_and_come_back(tmp_path: Path) -> None:
    async with failover_cluster(tmp_path, 1) as cluster:
        traffic = Traffic(cluster.front_url)
        model, voice = await traffic.discover()
        assert (model, voice) == ("vits", "en_US-joe-medium")  # what the service advertises
        traffic.start()
        try:
            await answered_by(traffic, "openai", "vits", after=0)
            await cluster.gpu_memory(0.99)
            switched = await cluster.routed("FailedOver", "fallback")
            # The keep-alive pool leaves the GPU tier; the fallback speaks the advertised voice.
            await answered_by(traffic, "openai", "espeak", after=switched)
            await answered_by(traffic, "plain", "espeak", after=switched)
            spoken = {r.voice for r in traffic.of("openai", since=switched) if r.engine == "espeak"}
            assert spoken
            assert "" not in spoken

            await cluster.gpu_memory(None)
            back = await cluster.routed("Serving", "gpu")
            await answered_by(traffic, "openai", "vits", after=back)
            await answered_by(traffic, "plain", "vits", after=back)
        finally:
            await traffic.stop()
        assert not traffic.failures(), _summary(traffic.failures())


async def test_a_killed_gpu_pod_fails_over_at_once(tmp_path: Path) -> None:
    # A window far longer than the test waits: only the fact path can fail over in time.
    async with failover_cluster(tmp_path, 60) as cluster:
        traffic = Traffic(cluster.front_url)
        await traffic.discover()
        traffic.start()
        try:
            await answered_by(traffic, "openai", "vits", after=0)
            killed = time.monotonic()
            assert cluster.kill(cluster.ready_pods("gpu")[0])
            await cluster.routed("FailedOver", "fallback", within=15)

            # The endpoints follow the selector once the EndpointSlice controller has
            # rewritten the front Service's slices.
            def fallback_endpoints() -> bool:
                wanted = {f"{p['status']['podIP']}:8000" for p in cluster.ready_pods("fallback")}
                found = cluster.front_endpoints()
                return bool(found) and set(found) == wanted

            switched = await cluster.until(
                fallback_endpoints, 15, "the front Service's endpoints on the fallback tier"
            )
            last = cluster.status()["lastTransition"]
            assert last["reason"] == "NoReadyGPUPods"
            assert "at once" in last["message"]
            await answered_by(traffic, "openai", "espeak", after=killed)
        finally:
            await traffic.stop()
        assert not traffic.failures("openai"), _summary(traffic.failures("openai"))
        # The plain client (no retries) loses what was in flight on the dead pod and what
        # it sent before traffic moved (bench/failover_clients.py measures it); nothing it
        # sends once the front Service's endpoints are the fallback tier's fails.
        late = [r for r in traffic.failures("plain") if r.started >= switched]
        assert not late, _summary(late)


async def test_a_lost_fallback_while_failed_over_sends_traffic_to_the_gpu_tier(
    tmp_path: Path,
) -> None:
    async with failover_cluster(tmp_path, 1) as cluster:
        await cluster.gpu_memory(0.99)
        await cluster.routed("FailedOver", "fallback")
        traffic = Traffic(cluster.front_url)
        await traffic.discover()
        traffic.start()
        try:
            await answered_by(traffic, "openai", "espeak", after=0)
            for pod in cluster.ready_pods("fallback"):
                assert cluster.kill(pod)
            killed = time.monotonic()
            # Under pressure, but ready: the GPU tier serves rather than nothing.
            await cluster.routed("Degraded", "both", within=15)
            assert cluster.status()["lastTransition"]["reason"] == "NoReadyFallbackPods"

            def gpu_answered() -> bool:
                return any(r.ok and r.engine == "vits" for r in traffic.of("openai", since=killed))

            await cluster.until(gpu_answered, 30, "an answer from the GPU tier")
        finally:
            await traffic.stop()
        assert not traffic.failures("openai"), _summary(traffic.failures("openai"))


async def test_an_xid_on_the_gpu_fails_over_at_once_and_replaces_the_pod(tmp_path: Path) -> None:
    # The GPU node's pods read a fake NVML library; XID 79 enters where a real one would.
    # A 10 s window: traffic moving within 5 s can only be the fault acted on at once.
    async with failover_cluster(tmp_path, 10) as cluster:
        traffic = Traffic(cluster.front_url)
        await traffic.discover()
        traffic.start()
        try:
            await answered_by(traffic, "openai", "vits", after=0)
            (faulty,) = cluster.ready_pods("gpu")
            injected = time.monotonic()
            cluster.write_nvml(HEALTHY_GPU + "gpu0.xids=79\n")
            await cluster.routed("FailedOver", "fallback", within=5)
            assert cluster.status()["lastTransition"]["reason"] == "GPUHardwareFault"
            await answered_by(traffic, "openai", "espeak", after=injected)

            def replaced() -> bool:
                uids = [p["metadata"]["uid"] for p in cluster.ready_pods("gpu")]
                return bool(uids) and faulty["metadata"]["uid"] not in uids

            await cluster.until(replaced, 120, "a new GPU pod in place of the faulty one")
            # Fail-back follows the usual rules: healthy for the window, then recoverAfter.
            back = await cluster.routed("Serving", "gpu", within=120)
            await answered_by(traffic, "openai", "vits", after=back)
        finally:
            await traffic.stop()
        events = await cluster.api.request("GET", f"/api/v1/namespaces/{cluster.namespace}/events")
        (event,) = [e for e in events["items"] if e.get("reason") == "GPUHardwareFault"
                    and e.get("action") == "ReplacePod"]  # fmt: skip
        name = faulty["metadata"]["name"]
        assert f"replacing pod {name} on node local-gpu-0: GPU 0 (GPU-0f0f" in event["message"]
        assert "xid_79" in event["message"]
        assert not traffic.failures("openai"), _summary(traffic.failures("openai"))
