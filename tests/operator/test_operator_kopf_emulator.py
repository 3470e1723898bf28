"""The real operator process (kopf, `voiceops-operator run`) against the API emulator.

The emulator (voiceops_sim, a test double of kube-apiserver over HTTP) stores
objects, serves watches and garbage-collects by ownerReferences; nothing runs
pods, so Deployment status is written by the test where a test needs it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from operator_helpers import manifest
from operator_process import OperatorProcess, start_emulator
from prometheus_client.parser import text_string_to_metric_families
from voiceops_operator import build, diff
from voiceops_operator.opmetrics import RECONCILE_DURATION_SECONDS
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import parse_status, parse_voiceservice
from voiceops_sim.apiserver import KubeApiEmulator

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

RESYNC_SECONDS = 1.0
CHILD_RESOURCES = (
    "deployments",
    "services",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
    "networkpolicies",
)
MANAGED = "app.kubernetes.io/managed-by=voiceops-operator"
DEADLINE = 20.0
RESYNC_DONE = "Timer 'register.<locals>.resync' succeeded"


class Cluster:
    def __init__(self, emulator: KubeApiEmulator, operator: OperatorProcess) -> None:
        self.emu = emulator
        self.operator = operator

    def namespace(self) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.emu.ensure_namespace(name)
        return name

    def children(self, ns: str) -> dict[tuple[str, str], dict[str, Any]]:
        found = {}
        for resource in CHILD_RESOURCES:
            for obj in self.emu.list(resource, ns, label_selector=MANAGED):
                found[(obj["kind"], obj["metadata"]["name"])] = obj
        return found

    def vs(self, ns: str, name: str = "tts") -> dict[str, Any] | None:
        return self.emu.get("voiceservices", name, ns)

    async def wait(self, predicate: Any, message: str, deadline: float = DEADLINE) -> Any:
        try:
            return await self.emu.wait_for(predicate, timeout=deadline, message=message)
        except TimeoutError:
            tail = self.operator.log()[-3000:]
            raise AssertionError(f"{message}\n--- operator log tail ---\n{tail}") from None

    def desired(self, ns: str, name: str = "tts") -> list[dict[str, Any]]:
        body = self.vs(ns, name)
        assert body is not None
        vs = parse_voiceservice(body)
        routing = build.routing_from_status(parse_status(body.get("status")), vs.spec)
        # The operator's own routing key: its public half is in every pod template.
        key = self.operator.settings["routing_key"]
        return build.build_all(vs, routing, OperatorSettings(_env_file=None, routing_key=key))

    def in_sync(self, ns: str, name: str = "tts") -> bool:
        """Children are exactly the desired set, each matching on the owned fields."""
        desired = self.desired(ns, name)
        actual = self.children(ns)
        if set(actual) != {(o["kind"], o["metadata"]["name"]) for o in desired}:
            return False
        targets = build.hpa_targets(desired)
        return all(
            diff.matches(
                diff.owned_view(o, replicas_owned=o["metadata"]["name"] not in targets),
                actual[(o["kind"], o["metadata"]["name"])],
            )
            for o in desired
        )

    def settled(self, ns: str, name: str = "tts") -> bool:
        body = self.vs(ns, name)
        status = (body or {}).get("status") or {}
        generation = (body or {}).get("metadata", {}).get("generation")
        return status.get("observedGeneration") == generation and self.in_sync(ns, name)

    def events(self, ns: str, reason: str) -> list[dict[str, Any]]:
        return [e for e in self.emu.list("events", ns) if e.get("reason") == reason]

    def vs_reads(self, since: float, ns: str) -> int:
        """GETs of VoiceServices in ``ns``: every timer-driven (or drift) reconcile makes one."""
        return sum(
            1
            for r in self.emu.requests
            if r.time >= since
            and r.verb == "get"
            and r.resource == "voiceservices"
            and r.namespace == ns
        )

    async def reconciles(self, ns: str, count: int) -> None:
        """Wait until the operator has re-read the object ``count`` more times."""
        since = time.time()
        await self.wait(
            lambda: self.vs_reads(since, ns) >= count, f"fewer than {count} reconciles of {ns}"
        )

    async def healing_passes(self, at_least: int, deadline: float = DEADLINE) -> float:
        """Wait until this operator process has made ``at_least`` healing passes."""
        name = f"{RECONCILE_DURATION_SECONDS}_count"
        stop_at = time.monotonic() + deadline
        passes = 0.0
        while time.monotonic() < stop_at:
            page = await self.operator.metrics()
            passes = sum(
                sample.value
                for family in text_string_to_metric_families(page)
                for sample in family.samples
                if sample.name == name and sample.labels.get("loop") == "healing"
            )
            if passes >= at_least:
                return passes
            await asyncio.sleep(0.05)  # poll interval, bounded by the deadline
        tail = self.operator.log()[-3000:]
        raise AssertionError(f"{passes} healing passes, wanted {at_least}\n{tail}")

    def pod_lists(self, since: float, ns: str) -> int:
        """Pod lists in ``ns`` (the healing loop lists its pods on every pass)."""
        return sum(
            1
            for r in self.emu.requests
            if r.time >= since and r.verb == "list" and r.resource == "pods" and r.namespace == ns
        )

    def writes(self, since: float, ns: str) -> list[tuple[str, str, str, str]]:
        return [
            (r.verb, r.resource, r.name, r.subresource)
            for r in self.emu.write_requests(since)
            if r.namespace == ns
        ]


async def _cluster(
    tmp_path_factory: pytest.TempPathFactory, self_healing: str
) -> AsyncIterator[Cluster]:
    emulator = await start_emulator()
    workdir: Path = tmp_path_factory.mktemp("operator")
    kubeconfig = emulator.write_kubeconfig(workdir / "kubeconfig")
    operator = OperatorProcess(
        kubeconfig,
        workdir / "operator.log",
        resync_interval_seconds=RESYNC_SECONDS,
        self_healing=self_healing,
        scrape_interval_seconds=RESYNC_SECONDS,
    )
    await operator.start()
    try:
        yield Cluster(emulator, operator)
    finally:
        await operator.stop()
        await emulator.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """The spec reconcile alone (these tests play the healing loop's part by hand)."""
    async for c in _cluster(
        tmp_path_factory, os.environ.get("VOICEOPS_TEST_SELF_HEALING", "false")
    ):
        yield c


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def healing_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """The operator as shipped: spec reconcile and self-healing loop both writing status."""
    async for c in _cluster(tmp_path_factory, "true"):
        yield c


async def create(cluster: Cluster, ns: str, spec: dict[str, Any], name: str = "tts") -> None:
    body = manifest(spec, name=name)
    body["metadata"]["namespace"] = ns
    cluster.emu.create(body)
    await cluster.wait(lambda: cluster.settled(ns, name), f"{ns}/{name} never settled")


async def test_create_builds_every_child_with_the_right_content(cluster: Cluster) -> None:
    ns = cluster.namespace()
    await create(cluster, ns, {"autoscaling": {"metric": "inFlight"}})
    children = cluster.children(ns)
    assert set(children) == {
        ("Deployment", "tts-gpu"),
        ("Deployment", "tts-fallback"),
        ("Service", "tts"),
        ("Service", "tts-gpu"),
        ("Service", "tts-fallback"),
        ("HorizontalPodAutoscaler", "tts-gpu"),
        ("HorizontalPodAutoscaler", "tts-fallback"),
        ("PodDisruptionBudget", "tts-gpu"),
        ("PodDisruptionBudget", "tts-fallback"),
        ("NetworkPolicy", "tts"),
    }
    uid = cluster.vs(ns)["metadata"]["uid"]  # type: ignore[index]
    for obj in children.values():
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["uid"] == uid
        assert owner["controller"] is True
    gpu = children[("Deployment", "tts-gpu")]["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    hpa = children[("HorizontalPodAutoscaler", "tts-gpu")]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "voiceops_requests_in_flight"
    assert children[("Service", "tts")]["spec"]["selector"]["voiceops.io/tier"] == "gpu"
    status = cluster.vs(ns)["status"]  # type: ignore[index]
    assert status["ready"] == "gpu 0/1 · cpu 0/1"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoReadyReplicas")
    assert cluster.events(ns, "Created")


async def test_status_turns_ready_when_the_serving_tier_has_ready_pods(cluster: Cluster) -> None:
    ns = cluster.namespace()
    await create(cluster, ns, {})
    # Nothing runs pods here: play the Deployment controller for the fallback tier only.
    cluster.emu.patch(
        "deployments",
        "tts-fallback",
        ns,
        {"status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}},
        subresource="status",
    )
    await cluster.wait(
        lambda: cluster.vs(ns)["status"].get("ready") == "gpu 0/1 · cpu 1/1",  # type: ignore[index]
        "fallback readiness never reached status",
    )
    status = cluster.vs(ns)["status"]  # type: ignore[index]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False", "the GPU tier serves; fallback pods do not make it Ready"
    cluster.emu.patch(
        "deployments",
        "tts-gpu",
        ns,
        {
            "status": {
                "replicas": 1,
                "readyReplicas": 1,
                "updatedReplicas": 1,
                "observedGeneration": 1,
            }
        },
        subresource="status",
    )

    def ready_now() -> bool:
        conditions = cluster.vs(ns)["status"]["conditions"]  # type: ignore[index]
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    await cluster.wait(ready_now, "Ready never turned True")
    status = cluster.vs(ns)["status"]  # type: ignore[index]
    assert status["gpu"]["readyReplicas"] == 1
    assert status["phase"] == "Serving"
    await cluster.wait(lambda: cluster.events(ns, "Ready"), "no Ready event")


async def test_spec_updates_roll_through_including_removals(cluster: Cluster) -> None:
    ns = cluster.namespace()
    await create(cluster, ns, {})
    cluster.emu.patch("voiceservices", "tts", ns, {"spec": {"serving": {"maxConcurrency": 16}}})
    await cluster.wait(lambda: cluster.settled(ns), "maxConcurrency never rolled out")
    container = cluster.children(ns)[("Deployment", "tts-gpu")]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert {"name": "VOICEOPS_MAX_CONCURRENCY", "value": "16"} in container["env"]

    cluster.emu.patch(
        "voiceservices", "tts", ns, {"spec": {"autoscaling": {"enabled": False}, "replicas": 3}}
    )
    await cluster.wait(lambda: cluster.settled(ns), "autoscaling off never applied")
    children = cluster.children(ns)
    assert not [k for k in children if k[0] == "HorizontalPodAutoscaler"]
    assert children[("Deployment", "tts-gpu")]["spec"]["replicas"] == 3

    cluster.emu.patch("voiceservices", "tts", ns, {"spec": {"fallback": {"enabled": False}}})
    await cluster.wait(lambda: cluster.settled(ns), "fallback off never applied")
    assert not [k for k in cluster.children(ns) if k[1].endswith("-fallback")]
    assert cluster.events(ns, "Deleted")


async def test_network_policy_follows_the_spec_and_goes_when_disabled(cluster: Cluster) -> None:
    ns = cluster.namespace()
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}]
    await create(cluster, ns, {"networkPolicy": {"allowFrom": peers}})
    policy = cluster.children(ns)[("NetworkPolicy", "tts")]
    assert policy["spec"]["ingress"][0]["from"] == peers
    assert policy["spec"]["egress"][0]["ports"][0]["port"] == 53

    # Back to any source with unrestricted egress: the stale `from` and DNS ports must go.
    cluster.emu.patch(
        "voiceservices",
        "tts",
        ns,
        {"spec": {"networkPolicy": {"allowFrom": [], "allowEgress": True}}},
    )
    await cluster.wait(lambda: cluster.settled(ns), "networkPolicy change never applied")
    policy = cluster.children(ns)[("NetworkPolicy", "tts")]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 8000, "protocol": "TCP"}]}]
    assert policy["spec"]["egress"] == [{}]

    cluster.emu.delete("networkpolicies", "tts", ns)
    await cluster.wait(lambda: cluster.settled(ns), "hand-deleted NetworkPolicy never came back")

    cluster.emu.patch("voiceservices", "tts", ns, {"spec": {"networkPolicy": {"enabled": False}}})
    await cluster.wait(lambda: cluster.settled(ns), "networkPolicy off never applied")
    children = cluster.children(ns)
    assert not [k for k in children if k[0] == "NetworkPolicy"]
    assert ("Deployment", "tts-gpu") in children
    await cluster.wait(
        lambda: any(
            e.get("message") == "deleted NetworkPolicy tts" for e in cluster.events(ns, "Deleted")
        ),
        "no Deleted event for the NetworkPolicy",
    )


async def test_hand_deleted_and_hand_edited_children_are_restored(cluster: Cluster) -> None:
    ns = cluster.namespace()
    await create(cluster, ns, {})
    old_uid = cluster.children(ns)[("Deployment", "tts-gpu")]["metadata"]["uid"]
    cluster.emu.delete("deployments", "tts-gpu", ns)
    await cluster.wait(
        lambda: (
            ("Deployment", "tts-gpu") in cluster.children(ns)
            and cluster.children(ns)[("Deployment", "tts-gpu")]["metadata"]["uid"] != old_uid
        ),
        "deleted Deployment never came back",
    )
    cluster.emu.patch("services", "tts", ns, {"spec": {"selector": {"voiceops.io/tier": "x"}}})
    cluster.emu.patch(
        "deployments",
        "tts-fallback",
        ns,
        {"spec": {"template": {"spec": {"nodeSelector": {"hand": "edited"}}}}},
    )
    cluster.emu.delete("poddisruptionbudgets", "tts-gpu", ns)
    await cluster.wait(lambda: cluster.settled(ns), "hand edits never repaired")
    fallback_pod = cluster.children(ns)[("Deployment", "tts-fallback")]["spec"]["template"]
    assert "nodeSelector" not in fallback_pod["spec"] or not fallback_pod["spec"]["nodeSelector"]
    assert cluster.children(ns)[("Service", "tts")]["spec"]["selector"]["voiceops.io/tier"] == "gpu"


async def test_replicas_set_by_the_hpa_are_not_fought(cluster: Cluster) -> None:
    ns = cluster.namespace()
    await create(cluster, ns, {})
    cluster.emu.patch("deployments", "tts-gpu", ns, {"spec": {"replicas": 3}})  # as the HPA would
    since = time.time()
    await cluster.reconciles(ns, 2)  # the drift watch and the timer ran; nothing to do
    assert cluster.children(ns)[("Deployment", "tts-gpu")]["spec"]["replicas"] == 3
    assert [w for w in cluster.writes(since, ns) if w[1] == "deployments"] == []


async def test_deleting_the_voiceservice_removes_every_child(cluster: Cluster) -> None:
    ns = cluster.namespace()
    await create(cluster, ns, {})
    cluster.emu.delete("voiceservices", "tts", ns)
    await cluster.wait(
        lambda: cluster.vs(ns) is None and not cluster.children(ns), "children outlived the owner"
    )


async def test_invalid_spec_is_a_permanent_error_without_children(cluster: Cluster) -> None:
    ns = cluster.namespace()
    body = manifest({"model": {"uri": "hf://rhasspy/piper-voices/joe"}})
    body["metadata"]["namespace"] = ns
    cluster.emu.create(body)

    def refused() -> dict[str, Any] | None:
        status = (cluster.vs(ns) or {}).get("status") or {}
        return next(
            (
                c
                for c in status.get("conditions", [])
                if c["type"] == "Ready" and c["reason"] == "InvalidSpec"
            ),
            None,
        )

    condition = await cluster.wait(refused, "InvalidSpec never reached status")
    assert "spec.model.uri" in condition["message"]
    assert "hf://" in condition["message"]
    await cluster.wait(lambda: cluster.events(ns, "InvalidSpec"), "no InvalidSpec event")
    since = time.time()
    await cluster.reconciles(ns, 2)  # timer passes over the refused object
    assert cluster.children(ns) == {}
    assert cluster.writes(since, ns) == [], "a permanent error must not retry"
    # Fixing the spec builds everything.
    cluster.emu.patch("voiceservices", "tts", ns, {"spec": {"model": {"uri": ""}}})
    await cluster.wait(lambda: cluster.settled(ns), "fixed spec never reconciled")


def handled(cluster: Cluster, ns: str) -> bool:
    """kopf finished the creation: its annotation writes are done and the Events of the
    creation (one per child, one for the Ready condition) are posted (kopf posts them
    in the background)."""
    annotations = (cluster.vs(ns) or {}).get("metadata", {}).get("annotations") or {}
    done = {"voiceops.io/last-handled-configuration", "voiceops.io/kopf-managed"}
    progress = [k for k in annotations if k.startswith("voiceops.io/") and k not in done]
    posted = len(cluster.events(ns, "Created")) == len(cluster.children(ns)) and bool(
        cluster.events(ns, "NotReady") or cluster.events(ns, "Ready")
    )
    return "voiceops.io/last-handled-configuration" in annotations and not progress and posted


async def test_steady_state_reconcile_makes_zero_writes(cluster: Cluster) -> None:
    ns = cluster.namespace()
    await create(cluster, ns, {})
    await cluster.wait(lambda: handled(cluster, ns), "kopf never finished the creation")
    since = time.time()
    await cluster.reconciles(ns, 3)  # several timer-driven reconciles
    assert cluster.writes(since, ns) == []


async def test_operator_restart_duplicates_nothing_and_writes_nothing(
    healing_cluster: Cluster,
) -> None:
    # Self-healing on: both loops resume, and neither rewrites what the other wrote.
    cluster = healing_cluster
    ns = cluster.namespace()
    timer_runs = cluster.operator.log().count(RESYNC_DONE)
    await create(cluster, ns, {})
    # Stop once the object's resync timer has run: a kopf timer still in its initial
    # delay when the operator stops lingers for seconds (kopf's doing), which slows
    # this test down without being what it is about.
    await cluster.wait(
        lambda: cluster.operator.log().count(RESYNC_DONE) > timer_runs,
        "the resync timer never ran",
    )
    await cluster.wait(
        lambda: (
            (cluster.vs(ns) or {}).get("status", {}).get("phase") == "Pending"
            and {"Ready", "Progressing", "Degraded", "FailedOver"}
            <= {c["type"] for c in cluster.vs(ns)["status"].get("conditions", [])}
        ),  # type: ignore[index]
        "the healing loop never wrote its part of the status",
    )
    before = {key: obj["metadata"]["uid"] for key, obj in cluster.children(ns).items()}
    status_before = cluster.vs(ns)["status"]  # type: ignore[index]
    await cluster.operator.stop()
    since = time.time()
    await cluster.operator.start()
    # The new process resumes the object (kopf's on.resume), runs its timer and
    # its healing daemon (which reads the pods from the operator's pod watch).
    await cluster.wait(
        lambda: cluster.emu.request_counts(since=since, resource="deployments")["get"] >= 4,
        "the restarted operator never looked at the children",
    )
    await cluster.healing_passes(at_least=2)
    assert cluster.pod_lists(since, ns) == 0  # pods come from the watch, not a LIST per pass
    await cluster.reconciles(ns, 1)  # one more timer pass, writing nothing
    after = {key: obj["metadata"]["uid"] for key, obj in cluster.children(ns).items()}
    assert after == before
    assert cluster.writes(since, ns) == []  # no status write, no child write, no Event
    assert cluster.vs(ns)["status"] == status_before  # type: ignore[index]


async def test_the_api_server_refuses_what_the_crd_rules_forbid(cluster: Cluster) -> None:
    # The emulator evaluates the CRD's schema and CEL rules like kube-apiserver does.
    ns = cluster.namespace()
    body = manifest({"failover": {"memoryHighRatio": 0.99, "memoryCriticalRatio": 0.95}})
    body["metadata"]["namespace"] = ns
    with pytest.raises(Exception, match=r"spec\.failover\.memoryHighRatio must be less than"):
        cluster.emu.create(body)
    assert cluster.vs(ns) is None


async def test_existing_unowned_child_is_adopted(cluster: Cluster) -> None:
    ns = cluster.namespace()
    cluster.emu.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "tts-gpu", "namespace": ns, "labels": {"team": "speech"}},
            "spec": {"selector": {"app": "old"}, "ports": [{"port": 80}]},
        }
    )
    await create(cluster, ns, {})
    service = cluster.emu.get("services", "tts-gpu", ns)
    assert service is not None
    (owner,) = service["metadata"]["ownerReferences"]
    assert owner["uid"] == cluster.vs(ns)["metadata"]["uid"]  # type: ignore[index]
    assert service["spec"]["selector"] == build.tier_selector("tts", "gpu")
    assert service["metadata"]["labels"]["team"] == "speech", "foreign labels are kept"


async def test_child_name_taken_by_another_controller_is_reported(cluster: Cluster) -> None:
    ns = cluster.namespace()
    cluster.emu.create(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {
                "name": "tts-gpu",
                "namespace": ns,
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": "someone-else",
                        "uid": "7d0c3c1e-0000-4000-8000-000000000001",
                        "controller": True,
                    }
                ],
            },
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "x"}}},
        }
    )
    body = manifest({})
    body["metadata"]["namespace"] = ns
    cluster.emu.create(body)

    def failed() -> dict[str, Any] | None:
        conditions = ((cluster.vs(ns) or {}).get("status") or {}).get("conditions", [])
        return next(
            (
                c
                for c in conditions
                if c["type"] == "Progressing" and c["reason"] == "ReconcileFailed"
            ),
            None,
        )

    condition = await cluster.wait(failed, "the name conflict never reached status")
    assert "someone-else" in condition["message"]
    pdb = cluster.emu.get("poddisruptionbudgets", "tts-gpu", ns)
    assert pdb["spec"]["selector"]["matchLabels"] == {"app": "x"}, "never take over others' objects"  # type: ignore[index]


async def test_spec_reconcile_keeps_the_routing_recorded_in_status(cluster: Cluster) -> None:
    ns = cluster.namespace()
    await create(cluster, ns, {})
    # As the self-healing loop would record a failover...
    cluster.emu.patch(
        "voiceservices",
        "tts",
        ns,
        {"status": {"activeTier": "fallback", "fallback": {"desiredReplicas": 3}}},
        subresource="status",
    )
    # ...then a spec change and a hand edit make the spec reconcile run.
    cluster.emu.patch("voiceservices", "tts", ns, {"spec": {"serving": {"maxQueue": 10}}})
    cluster.emu.patch("services", "tts", ns, {"spec": {"selector": {"voiceops.io/tier": "gpu"}}})
    await cluster.wait(lambda: cluster.settled(ns), "never settled after the spec change")
    children = cluster.children(ns)
    assert children[("Service", "tts")]["spec"]["selector"]["voiceops.io/tier"] == "fallback"
    assert children[("HorizontalPodAutoscaler", "tts-fallback")]["spec"]["minReplicas"] == 3
    status = cluster.vs(ns)["status"]  # type: ignore[index]
    assert status["activeTier"] == "fallback"
