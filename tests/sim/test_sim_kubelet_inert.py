"""The simulated kubelet in inert mode: deployment controller, scheduler, HPA, chaos."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sim_objects import deployment
from voiceops_sim.apiserver import KubeApiEmulator
from voiceops_sim.kubelet import KubeletConfig, SimulatedKubelet, parse_node

GPU_LIMITS = {"limits": {"nvidia.com/gpu": 1}}


@pytest.fixture
async def kubelet(emulator: KubeApiEmulator) -> AsyncIterator[SimulatedKubelet]:
    config = KubeletConfig(
        nodes=[parse_node("sim-gpu-0:1:8"), parse_node("sim-cpu-0:0:8")],
        pod_mode="inert",
        inert_ready_delay=0.05,
        time_scale=0.01,
        resync_seconds=0.2,
    )
    async with SimulatedKubelet(emulator, config) as running:
        yield running


def _status(emulator: KubeApiEmulator, name: str, namespace: str) -> dict:
    return (emulator.get("deployments", name, namespace) or {}).get("status") or {}


def _pods(emulator: KubeApiEmulator, namespace: str, app: str) -> list[dict]:
    return emulator.list("pods", namespace, label_selector=f"app={app}")


def _gpu_deployment(name: str, replicas: int) -> dict:
    body = deployment(name, replicas=replicas)
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = GPU_LIMITS
    return body


async def test_deployment_gets_ready_pods_and_status(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    created = emulator.create(
        {**deployment("web", replicas=3), "metadata": {"name": "web", "namespace": namespace}}
    )
    await emulator.wait_for(lambda: _status(emulator, "web", namespace).get("readyReplicas") == 3)
    status = _status(emulator, "web", namespace)
    assert status["replicas"] == status["availableReplicas"] == status["updatedReplicas"] == 3
    assert "unavailableReplicas" not in status  # zero counts are omitted, as by the API server
    assert status["observedGeneration"] == 1
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    pods = _pods(emulator, namespace, "web")
    assert len(pods) == 3
    pod = pods[0]
    assert pod["metadata"]["name"].startswith("web-")
    assert pod["metadata"]["labels"]["pod-template-hash"] in pod["metadata"]["name"]
    assert pod["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["podIP"].startswith("127.0.0.")
    assert len({p["status"]["podIP"] for p in pods}) == 3
    conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conds == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    container = pod["status"]["containerStatuses"][0]
    assert container["ready"] is True
    assert "running" in container["state"]


async def test_scaling_and_template_rollout(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    emulator.create(
        {**deployment("web", replicas=2), "metadata": {"name": "web", "namespace": namespace}}
    )
    await emulator.wait_for(lambda: _status(emulator, "web", namespace).get("readyReplicas") == 2)
    emulator.patch("deployments", "web", namespace, {"spec": {"replicas": 1}})
    await emulator.wait_for(lambda: len(_pods(emulator, namespace, "web")) == 1)
    old_hash = _pods(emulator, namespace, "web")[0]["metadata"]["labels"]["pod-template-hash"]
    emulator.patch(
        "deployments",
        "web",
        namespace,
        {"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}},
    )

    def rolled() -> bool:
        pods = _pods(emulator, namespace, "web")
        status = _status(emulator, "web", namespace)
        return (
            len(pods) == 1
            and pods[0]["metadata"]["labels"]["pod-template-hash"] != old_hash
            and status.get("observedGeneration") == 3
            and status.get("readyReplicas") == 1
        )

    await emulator.wait_for(rolled)
    emulator.patch("deployments", "web", namespace, {"spec": {"replicas": 0}})
    await emulator.wait_for(lambda: not _pods(emulator, namespace, "web"))
    await emulator.wait_for(lambda: "replicas" not in _status(emulator, "web", namespace))


async def test_insufficient_gpus_leave_a_pod_unschedulable(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    emulator.create(
        {**_gpu_deployment("gpu", 2), "metadata": {"name": "gpu", "namespace": namespace}}
    )

    def split() -> list[dict] | None:
        pods = _pods(emulator, namespace, "gpu")
        pending = [
            p
            for p in pods
            if p.get("status", {}).get("phase") == "Pending" and p["status"].get("conditions")
        ]
        running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        return pending if len(pods) == 2 and len(pending) == 1 and len(running) == 1 else None

    pending = (await emulator.wait_for(split))[0]
    condition = pending["status"]["conditions"][0]
    assert condition["type"] == "PodScheduled"
    assert condition["status"] == "False"
    assert condition["reason"] == "Unschedulable"
    assert condition["message"] == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    running = [p for p in _pods(emulator, namespace, "gpu") if p["spec"].get("nodeName")]
    assert running[0]["spec"]["nodeName"] == "sim-gpu-0"
    events = emulator.list("events", namespace, field_selector="reason=FailedScheduling")
    assert events
    assert events[0]["involvedObject"]["name"] == pending["metadata"]["name"]
    status = await emulator.wait_for(
        lambda: (
            _status(emulator, "gpu", namespace).get("readyReplicas") == 1
            and _status(emulator, "gpu", namespace)
        )
    )
    assert status["unavailableReplicas"] == 1


async def test_gpus_gone_evicts_then_recovers(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    emulator.create(
        {**_gpu_deployment("gpu", 1), "metadata": {"name": "gpu", "namespace": namespace}}
    )
    await emulator.wait_for(lambda: _status(emulator, "gpu", namespace).get("readyReplicas") == 1)
    first = _pods(emulator, namespace, "gpu")[0]["metadata"]["name"]
    evicted = await kubelet.set_gpu_capacity("sim-gpu-0", 0)
    assert evicted == [first]
    node = emulator.get("nodes", "sim-gpu-0")
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "0"

    def unschedulable() -> bool:
        pods = _pods(emulator, namespace, "gpu")
        return (
            len(pods) == 1
            and pods[0]["metadata"]["name"] != first
            and any(
                c.get("reason") == "Unschedulable" for c in pods[0]["status"].get("conditions", [])
            )
        )

    await emulator.wait_for(unschedulable)
    assert "readyReplicas" not in _status(emulator, "gpu", namespace)
    await kubelet.set_gpu_capacity("sim-gpu-0", 1)
    await emulator.wait_for(lambda: _status(emulator, "gpu", namespace).get("readyReplicas") == 1)


async def test_node_selector_is_honoured(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    body = deployment("picky")
    body["spec"]["template"]["spec"]["nodeSelector"] = {"voiceops.io/sim-gpu": "true"}
    emulator.create({**body, "metadata": {"name": "picky", "namespace": namespace}})
    await emulator.wait_for(lambda: _status(emulator, "picky", namespace).get("readyReplicas"))
    assert _pods(emulator, namespace, "picky")[0]["spec"]["nodeName"] == "sim-gpu-0"
    body = deployment("nowhere")
    body["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}
    emulator.create({**body, "metadata": {"name": "nowhere", "namespace": namespace}})

    def message() -> str | None:
        pods = _pods(emulator, namespace, "nowhere")
        conds = pods[0].get("status", {}).get("conditions", []) if pods else []
        return conds[0].get("message") if conds and conds[0].get("status") == "False" else None

    assert await emulator.wait_for(message) == (
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    )


async def test_hpa_keeps_replicas_within_bounds(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    emulator.create(
        {**deployment("web", replicas=1), "metadata": {"name": "web", "namespace": namespace}}
    )
    emulator.create(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2,
                "maxReplicas": 4,
            },
        }
    )
    await emulator.wait_for(lambda: _status(emulator, "web", namespace).get("readyReplicas") == 2)
    assert emulator.get("deployments", "web", namespace)["spec"]["replicas"] == 2
    hpa = await emulator.wait_for(
        lambda: (
            (emulator.get("hpa", "web", namespace) or {}).get("status", {}).get("currentReplicas")
            == 2
            and emulator.get("hpa", "web", namespace)
        )
    )
    assert hpa["status"]["desiredReplicas"] == 2


async def test_crash_restarts_then_crash_loop_back_off(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    emulator.create({**deployment("web"), "metadata": {"name": "web", "namespace": namespace}})
    await emulator.wait_for(lambda: _status(emulator, "web", namespace).get("readyReplicas") == 1)
    name = _pods(emulator, namespace, "web")[0]["metadata"]["name"]

    def container() -> dict:
        pod = emulator.get("pods", name, namespace) or {}
        return (pod.get("status", {}).get("containerStatuses") or [{}])[0]

    kubelet.crash_pod(namespace, name, exit_code=137)
    await emulator.wait_for(
        lambda: container().get("restartCount") == 1 and container().get("ready")
    )
    assert container()["lastState"]["terminated"]["reason"] == "OOMKilled"
    kubelet.config.time_scale = 1.0  # make the next back-off (10 s) long enough to observe
    kubelet.runtime(namespace, name).ctx.time_scale = 1.0
    kubelet.crash_pod(namespace, name, exit_code=1)
    await emulator.wait_for(
        lambda: container().get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"
    )
    assert container()["restartCount"] == 2
    assert container()["lastState"]["terminated"]["exitCode"] == 1
    assert container()["lastState"]["terminated"]["reason"] == "Error"
    assert "back-off 10s" in container()["state"]["waiting"]["message"]
    conditions = emulator.get("pods", name, namespace)["status"]["conditions"]
    ready = next(c for c in conditions if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "ContainersNotReady"


async def test_deleting_the_deployment_removes_pods(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    emulator.create(
        {**deployment("web", replicas=2), "metadata": {"name": "web", "namespace": namespace}}
    )
    await emulator.wait_for(lambda: _status(emulator, "web", namespace).get("readyReplicas") == 2)
    emulator.delete("deployments", "web", namespace)
    assert _pods(emulator, namespace, "web") == []
    await emulator.wait_for(lambda: not kubelet.runtimes)


async def test_typed_client_reads_everything_the_kubelet_writes(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str, api_client: object
) -> None:
    from kubernetes_asyncio import client

    emulator.create(
        {**_gpu_deployment("gpu", 2), "metadata": {"name": "gpu", "namespace": namespace}}
    )
    emulator.create(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "gpu", "namespace": namespace},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gpu"},
                "minReplicas": 2,
                "maxReplicas": 3,
            },
        }
    )
    await emulator.wait_for(lambda: _status(emulator, "gpu", namespace).get("readyReplicas") == 1)
    await emulator.wait_for(lambda: (emulator.get("hpa", "gpu", namespace) or {}).get("status"))
    core = client.CoreV1Api(api_client)
    pods = (await core.list_namespaced_pod(namespace)).items
    assert sorted(p.status.phase for p in pods) == ["Pending", "Running"]
    assert (await core.list_node()).items[0].status.node_info.kubelet_version
    events = (await core.list_namespaced_event(namespace)).items
    assert {"Scheduled", "FailedScheduling"} <= {e.reason for e in events}
    deployment = await client.AppsV1Api(api_client).read_namespaced_deployment("gpu", namespace)
    assert {c.type for c in deployment.status.conditions} == {"Available", "Progressing"}
    hpa = await client.AutoscalingV2Api(api_client).read_namespaced_horizontal_pod_autoscaler(
        "gpu", namespace
    )
    assert hpa.status.desired_replicas == 2


async def test_make_unschedulable_and_back(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    emulator.create(
        {**_gpu_deployment("gpu", 1), "metadata": {"name": "gpu", "namespace": namespace}}
    )
    await emulator.wait_for(lambda: _status(emulator, "gpu", namespace).get("readyReplicas") == 1)
    name = _pods(emulator, namespace, "gpu")[0]["metadata"]["name"]
    await kubelet.make_unschedulable(namespace, name)

    def pending() -> dict | None:
        pod = emulator.get("pods", name, namespace) or {}
        conditions = (pod.get("status") or {}).get("conditions") or []
        held = pod.get("status", {}).get("phase") == "Pending" and any(
            c.get("reason") == "Unschedulable" for c in conditions
        )
        return pod if held and not pod["spec"].get("nodeName") else None

    pod = await emulator.wait_for(pending)
    assert "Insufficient nvidia.com/gpu" in pod["status"]["conditions"][0]["message"]
    await emulator.wait_for(lambda: "readyReplicas" not in _status(emulator, "gpu", namespace))
    kubelet.allow_scheduling(namespace, name)
    await emulator.wait_for(lambda: _status(emulator, "gpu", namespace).get("readyReplicas") == 1)
    assert (emulator.get("pods", name, namespace) or {})["spec"]["nodeName"] == "sim-gpu-0"


async def test_cordoned_node_takes_no_new_pods(
    emulator: KubeApiEmulator, kubelet: SimulatedKubelet, namespace: str
) -> None:
    kubelet.cordon("sim-gpu-0")
    emulator.create(
        {**_gpu_deployment("gpu", 1), "metadata": {"name": "gpu", "namespace": namespace}}
    )

    def message() -> str | None:
        pods = _pods(emulator, namespace, "gpu")
        conds = pods[0].get("status", {}).get("conditions", []) if pods else []
        return conds[0].get("message") if conds and conds[0].get("status") == "False" else None

    assert await emulator.wait_for(message) == (
        "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) were unschedulable."
    )
    assert emulator.get("nodes", "sim-gpu-0")["spec"]["unschedulable"] is True
    kubelet.cordon("sim-gpu-0", False)
    await emulator.wait_for(lambda: _status(emulator, "gpu", namespace).get("readyReplicas") == 1)
