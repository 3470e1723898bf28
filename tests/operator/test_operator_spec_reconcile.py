"""The operator against a real Kubernetes control plane: the API server is the authority.

Real: kube-apiserver (the CRD's structural schema and CEL, compiled and cost-checked
by the API server itself; merge patches; the status and scale subresources; RBAC;
the audit log), the controller manager (ReplicaSets and pods under the Deployments,
Deployment status, the HPA controller, the garbage collector), the scheduler, and
the operator process (kopf, ``voiceops-operator run``) with a ServiceAccount's token,
so the audit log tells its requests from everyone else's. Test double: one node's
kubelet (``testsupport.loopback_kubelet.LoopbackKubelet``): pods are bound to its Node and stay
Pending, except in the tiers a test asks it to run, which it reports Running and
Ready.

Two operator processes share the control plane: one with the spec reconcile alone
(watching the ``spec-*`` namespaces; the tests play the healing loop's part by hand)
and one as shipped, with the self-healing loop (``heal-*``). Each test has a
namespace of its own.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_operator_crd import INVALID, with_spec
from testsupport.kubectl import KUBECTL, Kubectl
from testsupport.loopback_kubelet import (
    LoopbackKubelet,
    create_namespace,
    eventually,
)
from testsupport.manifests import manifest as voiceservice
from voiceops_localcluster.control_plane import ControlPlane
from voiceops_localcluster.node_agent import KubeClient
from voiceops_localcluster.operator_process import OperatorProcess
from voiceops_operator import build, diff, names
from voiceops_operator.kube import USER_AGENT
from voiceops_operator.opmetrics import RECONCILE_DURATION_SECONDS
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import parse_status, parse_voiceservice

ROOT = Path(__file__).resolve().parents[2]
# Child kinds: plural → (API path prefix, kind).
CHILD_RESOURCES = {
    "deployments": ("/apis/apps/v1", "Deployment"),
    "services": ("/api/v1", "Service"),
    "configmaps": ("/api/v1", "ConfigMap"),
    "horizontalpodautoscalers": ("/apis/autoscaling/v2", "HorizontalPodAutoscaler"),
    "poddisruptionbudgets": ("/apis/policy/v1", "PodDisruptionBudget"),
    "networkpolicies": ("/apis/networking.k8s.io/v1", "NetworkPolicy"),
}
MANAGED = "app.kubernetes.io/managed-by=voiceops-operator"
OPERATOR_NAMESPACE = "voiceops-system"
OPERATOR_ACCOUNT = "voiceops-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
RESYNC_SECONDS = 1.0
DEADLINE = 30.0
RESYNC_DONE = "Timer 'register.<locals>.resync' succeeded"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
# The operator processes live for the module, in the module's event loop.
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def plane(new_control_plane: Callable[..., ControlPlane]) -> Iterator[ControlPlane]:
    """This module's control plane, with the audit log (every request's metadata) on."""
    started = new_control_plane(audit=True)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def kubectl(plane: ControlPlane) -> Kubectl:
    if not KUBECTL.exists():
        pytest.fail(f"{KUBECTL} is missing: `make tools` installs it")
    k = Kubectl(plane)
    k.apply_crd()
    return k


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    ns = f"op-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    yield ns
    kubectl("delete", "namespace", ns, "--wait=false", check=False)


def manifest(ns: str, spec: dict[str, Any] | None = None) -> str:
    body = with_spec(spec or {})
    body["metadata"] = {"name": "tts", "namespace": ns}
    return yaml.safe_dump(body)


@pytest.mark.parametrize(("changes", "field"), INVALID, ids=[f for _, f in INVALID])
def test_the_real_api_server_refuses_invalid_specs_naming_the_field(
    kubectl: Kubectl, namespace: str, changes: dict[str, Any], field: str
) -> None:
    refused = kubectl(
        "create", "-f", "-", stdin=manifest(namespace, copy.deepcopy(changes)), check=False
    )
    assert refused.returncode != 0, f"admitted {changes}"
    # The API server writes list indexes as [0]; the emulator's table used .0.
    assert re.sub(r"\.(\d+)\.", r"[\1].", field) in refused.stderr, refused.stderr
    assert kubectl("-n", namespace, "get", "voiceservices", "-o", "name").stdout == ""


# --- the operator process on the control plane -------------------------------------------


class AuditLog:
    """The API server's audit log, read as it grows (each call parses only new lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._events: list[dict[str, Any]] = []

    def events(self) -> list[dict[str, Any]]:
        if self.path.exists():
            with self.path.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
            complete = data.rfind(b"\n") + 1  # a line being written waits for the next call
            self._offset += complete
            self._events += [json.loads(line) for line in data[:complete].splitlines() if line]
        return self._events

    def operator_requests(self, since: float, namespace: str) -> list[dict[str, Any]]:
        """The operator's requests about ``namespace`` the API server received after ``since``."""
        return [
            e
            for e in self.events()
            if (e.get("user") or {}).get("username") == OPERATOR_USER
            and (e.get("objectRef") or {}).get("namespace") == namespace
            and _received(e) >= since
        ]


def _received(event: dict[str, Any]) -> float:
    stamp = str(event.get("requestReceivedTimestamp", ""))
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _ref(event: dict[str, Any]) -> dict[str, Any]:
    return event.get("objectRef") or {}


class Cluster:
    """One operator process on the module's control plane, and what tests ask of it."""

    def __init__(
        self,
        api: KubeClient,
        audit: AuditLog,
        kubelet: LoopbackKubelet,
        operator: OperatorProcess,
        prefix: str,
    ) -> None:
        self.api = api
        self.audit = audit
        self.kubelet = kubelet
        self.operator = operator
        self.prefix = prefix

    async def namespace(self) -> str:
        name = f"{self.prefix}-{uuid.uuid4().hex[:8]}"
        await create_namespace(self.api, name)
        return name

    @staticmethod
    def path(plural: str, ns: str, name: str = "", subresource: str = "") -> str:
        prefix = "/apis/voiceops.io/v1alpha1"
        if plural in CHILD_RESOURCES:
            prefix = CHILD_RESOURCES[plural][0]
        elif plural in ("pods", "events"):
            prefix = "/api/v1"
        elif plural == "replicasets":
            prefix = "/apis/apps/v1"
        parts = [f"{prefix}/namespaces/{ns}/{plural}", name, subresource]
        return "/".join(p for p in parts if p)

    async def get(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        return await self.api.get(self.path(plural, ns, name))

    async def create(self, plural: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.api.request("POST", self.path(plural, ns), body)

    async def patch(
        self, plural: str, ns: str, name: str, body: dict[str, Any], subresource: str = ""
    ) -> dict[str, Any]:
        path = self.path(plural, ns, name, subresource)
        return await self.api.request("PATCH", path, body, patch="merge")

    async def delete(self, plural: str, ns: str, name: str) -> None:
        await self.api.request("DELETE", self.path(plural, ns, name))

    async def items(self, plural: str, ns: str, **params: str) -> list[dict[str, Any]]:
        found = await self.api.request("GET", self.path(plural, ns), params=params or None)
        return list(found.get("items") or [])

    async def children(self, ns: str) -> dict[tuple[str, str], dict[str, Any]]:
        found = {}
        for plural, (prefix, kind) in CHILD_RESOURCES.items():
            for obj in await self.items(plural, ns, labelSelector=MANAGED):
                # A list's items carry no kind; a GET's object does.
                obj.update(apiVersion=prefix.removeprefix("/apis/").removeprefix("/api/"))
                obj["kind"] = kind
                found[(kind, obj["metadata"]["name"])] = obj
        return found

    async def vs(self, ns: str, name: str = "tts") -> dict[str, Any] | None:
        return await self.get("voiceservices", ns, name)

    async def status(self, ns: str, name: str = "tts") -> dict[str, Any]:
        return ((await self.vs(ns, name)) or {}).get("status") or {}

    async def wait(
        self, predicate: Callable[[], Any], message: str, deadline: float = DEADLINE
    ) -> Any:
        """Poll ``predicate`` (sync or async) until truthy; the operator's log on a timeout."""
        try:
            return await eventually(predicate, deadline, message, every=0.1)
        except AssertionError:
            tail = self.operator.log()[-3000:]
            raise AssertionError(f"{message}\n--- operator log tail ---\n{tail}") from None

    async def desired(self, ns: str, name: str = "tts") -> list[dict[str, Any]]:
        body = await self.vs(ns, name)
        assert body is not None
        vs = parse_voiceservice(body)
        status = parse_status(body.get("status"))
        routing = build.routing_from_status(status, vs.spec)
        # The operator's own routing key: its public half is in every pod template.
        settings = OperatorSettings(
            _env_file=None, routing_key=self.operator.settings["routing_key"]
        )
        return build.build_all(vs, routing, settings, status.model)

    async def in_sync(self, ns: str, name: str = "tts") -> bool:
        """Children are exactly the desired set, each matching on the owned fields."""
        desired = await self.desired(ns, name)
        actual = await self.children(ns)
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

    async def settled(self, ns: str, name: str = "tts") -> bool:
        body = await self.vs(ns, name) or {}
        status = body.get("status") or {}
        generation = body.get("metadata", {}).get("generation")
        return status.get("observedGeneration") == generation and await self.in_sync(ns, name)

    async def events(self, ns: str, reason: str) -> list[dict[str, Any]]:
        """Events about the VoiceService with this reason (kopf posts them for the operator)."""
        return [
            e
            for e in await self.items("events", ns)
            if e.get("reason") == reason and e["involvedObject"].get("kind") == "VoiceService"
        ]

    def timer_runs(self, ns: str, name: str = "tts") -> int:
        """Finished runs of the object's resync timer (kopf logs each; each reconciles it)."""
        return self.operator.log().count(f"[{ns}/{name}] {RESYNC_DONE}")

    async def reconciles(self, ns: str, count: int, name: str = "tts") -> None:
        """Wait until ``count`` more timer-driven reconciles of the object have finished.

        Counted from the operator's log: the reconcile reads from the watches, so the
        API server sees nothing of a reconcile that has nothing to change.
        """
        start = self.timer_runs(ns, name)
        await self.wait(
            lambda: self.timer_runs(ns, name) >= start + count,
            f"fewer than {count} reconciles of {ns}/{name}",
        )

    async def healing_passes(self, at_least: int, deadline: float = DEADLINE) -> float:
        """Wait until this operator process has made ``at_least`` healing passes."""
        name = f"{RECONCILE_DURATION_SECONDS}_count"

        async def passes() -> float:
            page = await self.operator.metrics()
            return sum(
                sample.value
                for family in text_string_to_metric_families(page)
                for sample in family.samples
                if sample.name == name and sample.labels.get("loop") == "healing"
            )

        async def enough() -> float:
            found = await passes()
            return found if found >= at_least else 0.0

        return float(await self.wait(enough, f"{at_least} healing passes", deadline))

    def pod_lists(self, since: float, ns: str) -> int:
        """Pod LISTs in ``ns`` other than kopf's (the healing loop's would be one per pass;
        kopf lists once to start the watch the loop reads its pods from)."""
        return sum(
            1
            for e in self.audit.operator_requests(since, ns)
            if e.get("verb") == "list"
            and _ref(e).get("resource") == "pods"
            and not str(e.get("userAgent", "")).startswith("kopf/")
        )

    def reconcile_reads(self, since: float, ns: str) -> list[tuple[str, str, str]]:
        """The spec reconcile's reads in ``ns`` (its user agent): (verb, resource, name)."""
        return [
            (str(e["verb"]), str(_ref(e).get("resource", "")), str(_ref(e).get("name", "")))
            for e in self.audit.operator_requests(since, ns)
            if e.get("verb") in ("get", "list") and e.get("userAgent") == USER_AGENT
        ]

    def writes(self, since: float, ns: str) -> list[tuple[str, str, str, str]]:
        """The operator's writes in ``ns``: (verb, resource, name, subresource)."""
        return [
            (
                str(e["verb"]),
                str(_ref(e).get("resource", "")),
                str(_ref(e).get("name", "")),
                str(_ref(e).get("subresource", "")),
            )
            for e in self.audit.operator_requests(since, ns)
            if e.get("verb") in WRITE_VERBS
        ]


@pytest.fixture(scope="module")
def operator_kubeconfig(
    plane: ControlPlane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A ServiceAccount's token for the operator: the audit log names its requests."""
    kubectl("create", "namespace", OPERATOR_NAMESPACE)
    kubectl("-n", OPERATOR_NAMESPACE, "create", "serviceaccount", OPERATOR_ACCOUNT)
    kubectl(
        "create",
        "clusterrolebinding",
        OPERATOR_ACCOUNT,
        "--clusterrole=cluster-admin",
        f"--serviceaccount={OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}",
    )
    token = kubectl("-n", OPERATOR_NAMESPACE, "create", "token", OPERATOR_ACCOUNT, "--duration=2h")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "operator",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": plane.server,
                    "certificate-authority": plane.pki.path("ca.crt"),
                },
            }
        ],
        "users": [{"name": "operator", "user": {"token": token.stdout.strip()}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
    }
    path = tmp_path_factory.mktemp("operator-identity") / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(
    plane: ControlPlane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[KubeClient]:
    client = KubeClient.from_kubeconfig(
        plane.admin_kubeconfig, tmp_path_factory.mktemp("credentials")
    )
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def kubelet(api: KubeClient) -> AsyncIterator[LoopbackKubelet]:
    node = LoopbackKubelet(api)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()
    assert node.failures == [], node.failures


async def _cluster(
    plane: ControlPlane,
    api: KubeClient,
    kubelet: LoopbackKubelet,
    kubeconfig: Path,
    log: Path,
    prefix: str,
    self_healing: bool,
) -> AsyncIterator[Cluster]:
    operator = OperatorProcess(
        kubeconfig,
        log,
        namespaces=[f"{prefix}-*"],
        resync_interval_seconds=RESYNC_SECONDS,
        self_healing=str(self_healing).lower(),
        scrape_interval_seconds=RESYNC_SECONDS,
    )
    await operator.start()
    try:
        yield Cluster(api, AuditLog(plane.audit_log), kubelet, operator, prefix)
    finally:
        await operator.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(
    plane: ControlPlane,
    api: KubeClient,
    kubelet: LoopbackKubelet,
    operator_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Cluster]:
    """The spec reconcile alone (these tests play the healing loop's part by hand)."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    async for c in _cluster(plane, api, kubelet, operator_kubeconfig, log, "spec", False):
        yield c


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def healing_cluster(
    plane: ControlPlane,
    api: KubeClient,
    kubelet: LoopbackKubelet,
    operator_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Cluster]:
    """The operator as shipped: spec reconcile and self-healing loop both writing status."""
    log = tmp_path_factory.mktemp("healing-operator") / "operator.log"
    async for c in _cluster(plane, api, kubelet, operator_kubeconfig, log, "heal", True):
        yield c


async def create(cluster: Cluster, ns: str, spec: dict[str, Any], name: str = "tts") -> None:
    body = voiceservice(spec, name=name)
    body["metadata"]["namespace"] = ns
    await cluster.create("voiceservices", ns, body)
    await cluster.wait(lambda: cluster.settled(ns, name), f"{ns}/{name} never settled")


def condition(status: dict[str, Any], type_: str, reason: str | None = None) -> dict[str, Any]:
    found = [c for c in status.get("conditions", []) if c["type"] == type_]
    found = [c for c in found if reason is None or c["reason"] == reason]
    return found[0] if found else {}


@module_loop
async def test_create_builds_every_child_with_the_right_content(cluster: Cluster) -> None:
    ns = await cluster.namespace()
    await create(cluster, ns, {"autoscaling": {"metric": "inFlight"}})
    children = await cluster.children(ns)
    assert set(children) == {
        ("Deployment", "tts-gpu"),
        ("Deployment", "tts-fallback"),
        ("Service", "tts"),
        ("Service", "tts-gpu"),
        ("Service", "tts-fallback"),
        ("HorizontalPodAutoscaler", "tts-gpu"),
        ("ConfigMap", "tts-model"),
        ("HorizontalPodAutoscaler", "tts-fallback"),
        ("PodDisruptionBudget", "tts-gpu"),
        ("PodDisruptionBudget", "tts-fallback"),
        ("NetworkPolicy", "tts"),
    }
    body = await cluster.vs(ns)
    assert body is not None
    for obj in children.values():
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["uid"] == body["metadata"]["uid"]
        assert owner["controller"] is True
    gpu = children[("Deployment", "tts-gpu")]["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    hpa = children[("HorizontalPodAutoscaler", "tts-gpu")]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "voiceops_requests_in_flight"
    assert children[("Service", "tts")]["spec"]["selector"]["voiceops.io/tier"] == "gpu"
    status = body["status"]
    assert status["ready"] == "gpu 0/1 · cpu 0/1"
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoReadyReplicas")
    await cluster.wait(lambda: cluster.events(ns, "Created"), "no Created event")
    # The real ReplicaSet controller made a pod in each tier; the scheduler bound them to
    # the node, whose kubelet was not asked to run them: they stay Pending.
    pods = await cluster.wait(
        lambda: _all_bound(cluster, ns, 2), "a pod in each tier bound to the node"
    )
    assert {p["status"].get("phase") for p in pods} == {"Pending"}


async def _all_bound(cluster: Cluster, ns: str, count: int) -> list[dict[str, Any]]:
    pods = await cluster.items("pods", ns)
    bound = [p for p in pods if p["spec"].get("nodeName") == cluster.kubelet.node]
    return bound if len(bound) == count else []


@module_loop
async def test_status_turns_ready_when_the_serving_tier_has_ready_pods(cluster: Cluster) -> None:
    ns = await cluster.namespace()
    await create(cluster, ns, {})
    # The fallback tier's pod starts first; the Deployment controller counts it ready.
    cluster.kubelet.run(ns, tiers=("fallback",))
    await cluster.wait(
        lambda: _status_has(cluster, ns, "ready", "gpu 0/1 · cpu 1/1"),
        "fallback readiness never reached status",
    )
    status = await cluster.status(ns)
    assert condition(status, "Ready")["status"] == "False", (
        "the GPU tier serves; fallback pods do not make it Ready"
    )

    cluster.kubelet.run(ns, tiers=("gpu", "fallback"))

    async def ready_now() -> bool:
        return condition(await cluster.status(ns), "Ready").get("status") == "True"

    await cluster.wait(ready_now, "Ready never turned True")
    status = await cluster.status(ns)
    assert status["gpu"]["readyReplicas"] == 1
    assert status["phase"] == "Serving"
    await cluster.wait(lambda: cluster.events(ns, "Ready"), "no Ready event")


async def _status_has(cluster: Cluster, ns: str, key: str, value: Any) -> bool:
    return (await cluster.status(ns)).get(key) == value


@module_loop
async def test_spec_updates_roll_through_including_removals(cluster: Cluster) -> None:
    ns = await cluster.namespace()
    await create(cluster, ns, {})
    await cluster.patch("voiceservices", ns, "tts", {"spec": {"serving": {"maxConcurrency": 16}}})
    await cluster.wait(lambda: cluster.settled(ns), "maxConcurrency never rolled out")
    children = await cluster.children(ns)
    container = children[("Deployment", "tts-gpu")]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "VOICEOPS_MAX_CONCURRENCY", "value": "16"} in container["env"]

    await cluster.patch(
        "voiceservices", ns, "tts", {"spec": {"autoscaling": {"enabled": False}, "replicas": 3}}
    )
    await cluster.wait(lambda: cluster.settled(ns), "autoscaling off never applied")
    children = await cluster.children(ns)
    assert not [k for k in children if k[0] == "HorizontalPodAutoscaler"]
    assert children[("Deployment", "tts-gpu")]["spec"]["replicas"] == 3

    await cluster.patch("voiceservices", ns, "tts", {"spec": {"fallback": {"enabled": False}}})
    await cluster.wait(lambda: cluster.settled(ns), "fallback off never applied")
    assert not [k for k in await cluster.children(ns) if k[1].endswith("-fallback")]
    await cluster.wait(lambda: cluster.events(ns, "Deleted"), "no Deleted event")


@module_loop
async def test_network_policy_follows_the_spec_and_goes_when_disabled(cluster: Cluster) -> None:
    ns = await cluster.namespace()
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}]
    await create(cluster, ns, {"networkPolicy": {"allowFrom": peers}})
    policy = (await cluster.children(ns))[("NetworkPolicy", "tts")]
    assert policy["spec"]["ingress"][0]["from"] == peers
    assert policy["spec"]["egress"][0]["ports"][0]["port"] == 53

    # Back to any source with unrestricted egress: the stale `from` and DNS ports must go.
    await cluster.patch(
        "voiceservices",
        ns,
        "tts",
        {"spec": {"networkPolicy": {"allowFrom": [], "allowEgress": True}}},
    )
    await cluster.wait(lambda: cluster.settled(ns), "networkPolicy change never applied")
    policy = (await cluster.children(ns))[("NetworkPolicy", "tts")]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 8000, "protocol": "TCP"}]}]
    assert policy["spec"]["egress"] == [{}]

    await cluster.delete("networkpolicies", ns, "tts")
    await cluster.wait(lambda: cluster.settled(ns), "hand-deleted NetworkPolicy never came back")

    await cluster.patch("voiceservices", ns, "tts", {"spec": {"networkPolicy": {"enabled": False}}})
    await cluster.wait(lambda: cluster.settled(ns), "networkPolicy off never applied")
    children = await cluster.children(ns)
    assert not [k for k in children if k[0] == "NetworkPolicy"]
    assert ("Deployment", "tts-gpu") in children

    async def policy_deleted_event() -> bool:
        deleted = await cluster.events(ns, "Deleted")
        return any(e.get("message") == "deleted NetworkPolicy tts" for e in deleted)

    await cluster.wait(policy_deleted_event, "no Deleted event for the NetworkPolicy")


@module_loop
async def test_hand_deleted_and_hand_edited_children_are_restored(cluster: Cluster) -> None:
    ns = await cluster.namespace()
    await create(cluster, ns, {})
    old_uid = (await cluster.children(ns))[("Deployment", "tts-gpu")]["metadata"]["uid"]
    await cluster.delete("deployments", ns, "tts-gpu")

    async def recreated() -> bool:
        found = await cluster.get("deployments", ns, "tts-gpu")
        return found is not None and found["metadata"]["uid"] != old_uid

    await cluster.wait(recreated, "deleted Deployment never came back")
    await cluster.patch("services", ns, "tts", {"spec": {"selector": {"voiceops.io/tier": "x"}}})
    await cluster.patch(
        "deployments",
        ns,
        "tts-fallback",
        {"spec": {"template": {"spec": {"nodeSelector": {"hand": "edited"}}}}},
    )
    await cluster.delete("poddisruptionbudgets", ns, "tts-gpu")
    await cluster.wait(lambda: cluster.settled(ns), "hand edits never repaired")
    children = await cluster.children(ns)
    fallback_pod = children[("Deployment", "tts-fallback")]["spec"]["template"]
    assert not fallback_pod["spec"].get("nodeSelector")
    assert children[("Service", "tts")]["spec"]["selector"]["voiceops.io/tier"] == "gpu"


@module_loop
async def test_replicas_set_by_the_hpa_are_not_fought(cluster: Cluster, kubectl: Kubectl) -> None:
    ns = await cluster.namespace()
    await create(cluster, ns, {})
    since = time.time()
    # Through the scale subresource, as the HPA controller scales.
    await asyncio.to_thread(kubectl, "-n", ns, "scale", "deployment", "tts-gpu", "--replicas=3")
    await cluster.reconciles(ns, 2)  # the drift watch and the timer ran; nothing to do
    deployment = await cluster.get("deployments", ns, "tts-gpu")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 3
    assert [w for w in cluster.writes(since, ns) if w[1] == "deployments"] == []


@module_loop
async def test_deleting_the_voiceservice_removes_every_child(
    cluster: Cluster, kubectl: Kubectl
) -> None:
    ns = await cluster.namespace()
    await create(cluster, ns, {})
    await cluster.wait(lambda: cluster.items("replicasets", ns), "ReplicaSets under the tiers")
    await asyncio.to_thread(kubectl, "-n", ns, "delete", "voiceservice", "tts", "--wait=false")

    # The garbage collector, not the operator, removes the children with their owner
    # (and the ReplicaSets and pods with the Deployments).
    async def collected() -> bool:
        left = await cluster.children(ns)
        return (
            await cluster.vs(ns) is None
            and not left
            and not await cluster.items("replicasets", ns)
            and not await cluster.items("pods", ns)
        )

    try:
        # kopf keeps its finalizer until the object's timers have stopped; a timer caught
        # mid-run is looked at again after the cancellation polling period (1 s, set by
        # configure_kopf; kopf's default of 60 s held deletions for a minute).
        await cluster.wait(collected, "children outlived the owner", deadline=45)
    except AssertionError as error:
        owner = await cluster.vs(ns)
        left = sorted(await cluster.children(ns))
        raise AssertionError(
            f"{error}\nowner: {owner and owner['metadata']}\nleft: {left}"
        ) from None


@module_loop
async def test_invalid_spec_is_a_permanent_error_without_children(cluster: Cluster) -> None:
    ns = await cluster.namespace()
    # The CRD admits it (any string); the operator's own validation refuses it.
    body = voiceservice({"model": {"uri": "hf://rhasspy/piper-voices/joe"}})
    body["metadata"]["namespace"] = ns
    await cluster.create("voiceservices", ns, body)

    async def refused() -> dict[str, Any]:
        return condition(await cluster.status(ns), "Ready", "InvalidSpec")

    found = await cluster.wait(refused, "InvalidSpec never reached status")
    assert "spec.model.uri" in found["message"]
    assert "hf://" in found["message"]
    await cluster.wait(lambda: cluster.events(ns, "InvalidSpec"), "no InvalidSpec event")
    # kopf's own last write (the handled configuration, its progress cleared) may land
    # after the status: only then is the object at rest.
    await cluster.wait(lambda: kopf_done(cluster, ns), "kopf never finished the creation")
    since = time.time()
    await cluster.reconciles(ns, 2)  # timer passes over the refused object
    assert await cluster.children(ns) == {}
    assert cluster.writes(since, ns) == [], "a permanent error must not retry"
    # Fixing the spec builds everything.
    await cluster.patch("voiceservices", ns, "tts", {"spec": {"model": {"uri": ""}}})
    await cluster.wait(lambda: cluster.settled(ns), "fixed spec never reconciled")


async def kopf_done(cluster: Cluster, ns: str) -> bool:
    """kopf's annotation writes for the last change are done: the handled configuration
    stored, no handler progress left."""
    annotations = ((await cluster.vs(ns)) or {}).get("metadata", {}).get("annotations") or {}
    done = {"voiceops.io/last-handled-configuration", "voiceops.io/kopf-managed"}
    progress = [k for k in annotations if k.startswith("voiceops.io/") and k not in done]
    return "voiceops.io/last-handled-configuration" in annotations and not progress


async def handled(cluster: Cluster, ns: str) -> bool:
    """kopf finished the creation: its annotation writes are done and the Events of the
    creation (one per child, one for the Ready condition) are posted (kopf posts them
    in the background)."""
    created = len(await cluster.events(ns, "Created")) == len(await cluster.children(ns))
    posted = created and bool(
        await cluster.events(ns, "NotReady") or await cluster.events(ns, "Ready")
    )
    return await kopf_done(cluster, ns) and posted


@module_loop
async def test_steady_state_reconcile_makes_zero_writes(cluster: Cluster) -> None:
    ns = await cluster.namespace()
    await create(cluster, ns, {})
    await cluster.wait(lambda: handled(cluster, ns), "kopf never finished the creation")

    # The world it reports on may still move for a moment (the scheduler marking the
    # pods Unschedulable, the Deployment controller's conditions on a busy machine):
    # each such change is one status write. Steady means one reconcile with none.
    async def quiet_reconcile() -> bool:
        since = time.time()
        await cluster.reconciles(ns, 1)
        return cluster.writes(since, ns) == []

    await cluster.wait(quiet_reconcile, "the status never stopped changing")
    since = time.time()
    await cluster.reconciles(ns, 3)  # several timer-driven reconciles
    assert cluster.writes(since, ns) == []
    # Nor any read: the object and its children come from the operator's watches.
    assert cluster.reconcile_reads(since, ns) == []


@module_loop
async def test_operator_restart_duplicates_nothing_and_writes_nothing(
    healing_cluster: Cluster,
) -> None:
    # Self-healing on: both loops resume, and neither rewrites what the other wrote.
    cluster = healing_cluster
    ns = await cluster.namespace()
    timer_runs = cluster.operator.log().count(RESYNC_DONE)
    await create(cluster, ns, {})
    # Stop once the object's resync timer has run: a kopf timer still in its initial
    # delay when the operator stops lingers for seconds (kopf's doing), which slows
    # this test down without being what it is about.
    await cluster.wait(
        lambda: cluster.operator.log().count(RESYNC_DONE) > timer_runs,
        "the resync timer never ran",
    )

    async def healing_wrote() -> bool:
        status = await cluster.status(ns)
        kinds = {c["type"] for c in status.get("conditions", [])}
        return (
            status.get("phase") == "Pending"
            and {
                "Ready",
                "Progressing",
                "Degraded",
                "FailedOver",
            }
            <= kinds
        )

    await cluster.wait(healing_wrote, "the healing loop never wrote its part of the status")
    before = {key: obj["metadata"]["uid"] for key, obj in (await cluster.children(ns)).items()}
    status_before = await cluster.status(ns)
    await cluster.operator.stop()
    since = time.time()
    timer_runs = cluster.timer_runs(ns)
    await cluster.operator.start()
    # The new process resumes the object (kopf's on.resume), runs its timer and
    # its healing daemon (which reads the pods from the operator's pod watch).
    await cluster.wait(
        lambda: cluster.timer_runs(ns) > timer_runs,
        "the restarted operator never reconciled the object",
    )
    await cluster.healing_passes(at_least=2)
    assert cluster.pod_lists(since, ns) == 0  # pods come from the watch, not a LIST per pass
    await cluster.reconciles(ns, 1)  # one more timer pass, writing nothing
    after = {key: obj["metadata"]["uid"] for key, obj in (await cluster.children(ns)).items()}
    assert after == before
    assert cluster.writes(since, ns) == []  # no status write, no child write, no Event
    # kopf filled its indexes before the first reconcile: nothing looked missing, so
    # nothing was created (refused 409) or read after the fact.
    assert cluster.reconcile_reads(since, ns) == []
    assert await cluster.status(ns) == status_before


@module_loop
async def test_existing_unowned_child_is_adopted(cluster: Cluster) -> None:
    ns = await cluster.namespace()
    await cluster.create(
        "services",
        ns,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "tts-gpu", "namespace": ns, "labels": {"team": "speech"}},
            "spec": {"selector": {"app": "old"}, "ports": [{"port": 80}]},
        },
    )
    await create(cluster, ns, {})
    service = await cluster.get("services", ns, "tts-gpu")
    assert service is not None
    body = await cluster.vs(ns)
    assert body is not None
    (owner,) = service["metadata"]["ownerReferences"]
    assert owner["uid"] == body["metadata"]["uid"]
    assert service["spec"]["selector"] == names.tier_selector("tts", "gpu")
    assert service["metadata"]["labels"]["team"] == "speech", "foreign labels are kept"


@module_loop
async def test_child_name_taken_by_another_controller_is_reported(cluster: Cluster) -> None:
    ns = await cluster.namespace()
    # A real owner: the garbage collector deletes objects whose controller does not exist.
    other = await cluster.create(
        "deployments",
        ns,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "someone-else", "namespace": ns},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "x"}},
                "template": {
                    "metadata": {"labels": {"app": "x"}},
                    "spec": {"containers": [{"name": "x", "image": "x"}]},
                },
            },
        },
    )
    await cluster.create(
        "poddisruptionbudgets",
        ns,
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
                        "uid": other["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "x"}}},
        },
    )
    body = voiceservice({})
    body["metadata"]["namespace"] = ns
    await cluster.create("voiceservices", ns, body)

    async def failed() -> dict[str, Any]:
        return condition(await cluster.status(ns), "Progressing", "ReconcileFailed")

    found = await cluster.wait(failed, "the name conflict never reached status")
    assert "someone-else" in found["message"]
    pdb = await cluster.get("poddisruptionbudgets", ns, "tts-gpu")
    assert pdb is not None
    assert pdb["spec"]["selector"]["matchLabels"] == {"app": "x"}, "never take over others' objects"
    assert [r["name"] for r in pdb["metadata"]["ownerReferences"]] == ["someone-else"]


@module_loop
async def test_spec_reconcile_keeps_the_routing_recorded_in_status(cluster: Cluster) -> None:
    ns = await cluster.namespace()
    await create(cluster, ns, {})
    # As the self-healing loop would record a failover...
    await cluster.patch(
        "voiceservices",
        ns,
        "tts",
        {"status": {"activeTier": "fallback", "fallback": {"desiredReplicas": 3}}},
        subresource="status",
    )
    # ...then a spec change and a hand edit make the spec reconcile run.
    await cluster.patch("voiceservices", ns, "tts", {"spec": {"serving": {"maxQueue": 10}}})
    await cluster.patch("services", ns, "tts", {"spec": {"selector": {"voiceops.io/tier": "gpu"}}})
    await cluster.wait(lambda: cluster.settled(ns), "never settled after the spec change")
    children = await cluster.children(ns)
    assert children[("Service", "tts")]["spec"]["selector"]["voiceops.io/tier"] == "fallback"
    assert children[("HorizontalPodAutoscaler", "tts-fallback")]["spec"]["minReplicas"] == 3
    assert (await cluster.status(ns))["activeTier"] == "fallback"
