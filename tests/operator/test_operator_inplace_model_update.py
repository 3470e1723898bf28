"""InPlace model updates: the operator swaps the model inside 3 running GPU pods, under load.

Real: the Kubernetes control plane, the operator process, ``voiceops-service`` processes
(VITS on the GPU tier, on CPU here; espeak on the fallback tier), both kinds of client
through the front Service. Test double: the node agent (kubelet and kube-proxy; pods in
network namespaces of their own, so it needs root), as in the failover tests.

Model versions come from the bundled joe voice (``testsupport.model_versions``), in a
folder outside /tmp: a pod's /tmp is its own emptyDir.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from testsupport.model_versions import file_uri, nan_weights, reexported
from voiceops_contract import pod as contract
from voiceops_localcluster.failover_cluster import NAME, FailoverCluster, failover_cluster
from voiceops_localcluster.traffic import Traffic
from voiceops_operator.routing_notices import sign_model_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

GPU_PODS = 3
UPDATE_WITHIN = 180.0


@pytest.fixture
def versions() -> Iterator[dict[str, Path]]:
    root = Path(tempfile.mkdtemp(prefix="voiceops-models-", dir="/var/tmp"))
    try:
        yield {
            "v1": reexported(root / "v1"),
            "v2": reexported(root / "v2", length_scale=1.1),
            "v3": reexported(root / "v3", length_scale=0.9),
            "v4": reexported(root / "v4", length_scale=1.2),
            "nan": nan_weights(root / "nan"),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def model_of(versions: dict[str, Path], version: str) -> dict[str, Any]:
    return {"uri": file_uri(versions[version]), "version": version}


async def set_model(cluster: FailoverCluster, model: dict[str, Any]) -> None:
    path = f"/apis/voiceops.io/v1alpha1/namespaces/{cluster.namespace}/voiceservices/{NAME}"
    await cluster.api.request("PATCH", path, {"spec": {"model": model}}, patch="merge")


def model_status(cluster: FailoverCluster) -> dict[str, Any]:
    return cluster.status().get("model") or {}


def updated_to(cluster: FailoverCluster, version: str) -> bool:
    status = model_status(cluster)
    return (
        status.get("state") == "Updated" and (status.get("current") or {}).get("version") == version
    )


async def reach_state(cluster: FailoverCluster, state: str, what: str) -> None:
    await cluster.until(lambda: model_status(cluster).get("state") == state, UPDATE_WITHIN, what)


def condition(cluster: FailoverCluster, kind: str) -> dict[str, Any]:
    conditions = cluster.status().get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


def gpu_pods(cluster: FailoverCluster) -> dict[str, tuple[str, int]]:
    """Ready GPU pods: name → (uid, restarts)."""
    found = {}
    for pod in cluster.ready_pods("gpu"):
        restarts = sum(
            int(c.get("restartCount") or 0) for c in pod["status"].get("containerStatuses") or []
        )
        found[pod["metadata"]["name"]] = (pod["metadata"]["uid"], restarts)
    return found


async def served_versions(cluster: FailoverCluster) -> dict[str, str]:
    """What each ready GPU pod says it serves (``/v1/models?versions=true``)."""
    found = {}
    async with aiohttp.ClientSession() as session:
        for pod in cluster.ready_pods("gpu"):
            url = f"http://{pod['status']['podIP']}:8000/v1/models?versions=true"
            async with session.get(url) as response:
                body = await response.json()
            found[pod["metadata"]["name"]] = body["versions"]["active"]["version"]
    return found


async def a_pod_is_swapping(cluster: FailoverCluster) -> bool:
    """Some GPU pod is loading, validating or swapping a version right now (asked as the
    operator asks: a command signed with its key)."""
    key = Ed25519PrivateKey.from_private_bytes(
        base64.b64decode(cluster.operator.settings["routing_key"])
    )
    async with aiohttp.ClientSession() as session:
        for pod in cluster.ready_pods("gpu"):
            name = pod["metadata"]["name"]
            token = sign_model_command(key, name, time.time())
            url = f"http://{pod['status']['podIP']}:8000{contract.PATH_MODELS_ADMIN}"
            async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as answer:
                if (await answer.json()).get("swapping"):
                    return True
    return False


async def config_map_version(cluster: FailoverCluster) -> str:
    path = f"/api/v1/namespaces/{cluster.namespace}/configmaps/{NAME}-model"
    found = await cluster.api.get(path) or {}
    return str((found.get("data") or {}).get("modelVersion", ""))


async def gpu_generation(cluster: FailoverCluster) -> int:
    path = f"/apis/apps/v1/namespaces/{cluster.namespace}/deployments/{NAME}-gpu"
    found = await cluster.api.get(path) or {}
    return int(found["metadata"]["generation"])


async def event_reasons(cluster: FailoverCluster) -> list[str]:
    found = await cluster.api.get(f"/api/v1/namespaces/{cluster.namespace}/events") or {}
    return [e.get("reason", "") for e in found.get("items") or []]


async def test_in_place_updates_swap_pods_roll_back_survive_a_restart_and_roll_without_memory(
    tmp_path: Path, versions: dict[str, Path]
) -> None:
    spec = {
        "autoscaling": {"minReplicas": GPU_PODS, "maxReplicas": GPU_PODS},
        "model": {**model_of(versions, "v1"), "updateStrategy": "InPlace"},
    }
    nodes = ("local-gpu-0:4:8", "local-cpu-0:0:16")
    async with failover_cluster(
        tmp_path, 5, spec=spec, nodes=nodes, model_update_interval_seconds=0.5
    ) as cluster:
        await cluster.until(
            lambda: len(cluster.ready_pods("gpu")) == GPU_PODS, 180, "3 ready GPU pods"
        )
        await cluster.until(lambda: updated_to(cluster, "v1"), 30, "v1 recorded as current")
        pods_before = gpu_pods(cluster)
        generation = await gpu_generation(cluster)
        traffic = Traffic(cluster.front_url, plain_interval_seconds=0.2)
        await traffic.discover()
        traffic.start()
        try:
            # 1. v1 → v2 in place, under load.
            began = time.monotonic()
            await set_model(cluster, model_of(versions, "v2"))
            await cluster.until(lambda: updated_to(cluster, "v2"), UPDATE_WITHIN, "v2 everywhere")
            took = time.monotonic() - began
            assert set((await served_versions(cluster)).values()) == {"v2"}
            assert gpu_pods(cluster) == pods_before, "a pod restarted or was replaced"
            assert await gpu_generation(cluster) == generation, "the pod template changed"
            assert await config_map_version(cluster) == "v2"
            assert condition(cluster, "ModelUpdated")["status"] == "True"
            reasons = await event_reasons(cluster)
            assert reasons.count("ModelSwapped") == GPU_PODS
            assert "ModelUpdated" in reasons

            # 2. A model that speaks NaN: the first pod refuses it, nothing else changes.
            await set_model(cluster, model_of(versions, "nan"))
            await reach_state(cluster, "Failed", "the bad model refused and rolled back")
            failed = condition(cluster, "ModelUpdated")
            assert (failed["status"], failed["reason"]) == ("False", "ModelValidationFailed")
            assert model_status(cluster)["current"]["version"] == "v2"
            assert set((await served_versions(cluster)).values()) == {"v2"}
            assert await config_map_version(cluster) == "v2"  # never reached a pod's start
            assert gpu_pods(cluster) == pods_before

            # 3. The operator is SIGKILLed while a pod swaps; the one started after it
            # finishes the update.
            await set_model(cluster, model_of(versions, "v3"))
            deadline = time.monotonic() + UPDATE_WITHIN
            while not await a_pod_is_swapping(cluster):
                assert time.monotonic() < deadline, "no pod ever swapping to v3"
                await asyncio.sleep(0.02)
            await cluster.operator.kill()
            await cluster.operator.start()
            await cluster.until(lambda: updated_to(cluster, "v3"), UPDATE_WITHIN, "v3 everywhere")
            assert set((await served_versions(cluster)).values()) == {"v3"}
            assert gpu_pods(cluster) == pods_before
            assert await gpu_generation(cluster) == generation

            # A pod started after an InPlace update comes up with the new version, and
            # nothing else restarts.
            gone = sorted(pods_before)[0]
            await cluster.api.request(
                "DELETE", f"/api/v1/namespaces/{cluster.namespace}/pods/{gone}"
            )
            await cluster.until(
                lambda: gone not in gpu_pods(cluster) and len(gpu_pods(cluster)) == GPU_PODS,
                UPDATE_WITHIN,
                "a replacement GPU pod ready",
            )
            assert set((await served_versions(cluster)).values()) == {"v3"}
            kept = {name: pods_before[name] for name in pods_before if name != gone}
            assert {name: gpu_pods(cluster)[name] for name in kept} == kept
            assert await gpu_generation(cluster) == generation
            pods_before = gpu_pods(cluster)

            # 4. GPUs with no room for a second model: the update becomes a Rolling one.
            # Half of a 1000-byte GPU in use: healthy for the failover policy, but no
            # room for the candidate's weights beside the active ones.
            for pod in cluster.ready_pods("gpu"):
                await cluster.set_faults(
                    pod, {"gpu_memory": {"used_bytes": 500, "total_bytes": 1000}}
                )
            await set_model(cluster, model_of(versions, "v4"))
            await reach_state(cluster, "Rolling", "the refusal turned into a roll")
            rolling = condition(cluster, "ModelUpdated")
            assert rolling["reason"] == "InPlaceRefusedMemory", rolling
            await cluster.until(lambda: updated_to(cluster, "v4"), UPDATE_WITHIN, "v4 everywhere")
            assert set((await served_versions(cluster)).values()) == {"v4"}
            replaced = gpu_pods(cluster)
            assert not set(replaced) & set(pods_before), "the roll replaced every pod"
            assert "InPlaceRefusedMemory" in await event_reasons(cluster)
        finally:
            await traffic.stop()
        failures = traffic.failures()
        assert not failures, [(r.client, r.status, r.error[:120]) for r in failures[:5]]
        answered = {r.model_version for r in traffic.records if r.engine == "vits"}
        assert {"v1", "v2", "v3", "v4"} <= answered
        assert "nan" not in answered
        print(f"InPlace update of {GPU_PODS} pods: {took:.1f}s, {len(traffic.records)} requests")
