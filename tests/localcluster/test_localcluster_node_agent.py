"""The node agent against a REAL control plane: etcd, kube-apiserver, controllers, scheduler.

Real: the Deployment/ReplicaSet controllers, the scheduler, the EndpointSlice and node
lifecycle controllers, RBAC and TokenRequest; the agent registers the nodes and runs
the pods as local processes. Needs the binaries ``python -m voiceops_localcluster.kube_binaries``
builds (skipped without them; a failure under ``CI=true``). One control plane and one
agent for the module; each test in its own namespace.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from voiceops_localcluster.control_plane import ControlPlane
from voiceops_localcluster.node_agent import (
    POD_NETWORK,
    Image,
    KubeApiError,
    KubeClient,
    NodeAgent,
    default_images,
    find_image,
    host_ip_for,
    parse_node,
    pod_ip_for,
)
from voiceops_localcluster.pod_volumes import can_mount
from voiceops_localcluster.service_proxy import endpoints_from_slices
from voiceops_operator.diff import parse_quantity

pytestmark = pytest.mark.asyncio(loop_scope="module")
cluster = pytest.mark.slow

SPARE = "local-spare-0"  # tainted: only the heartbeat test uses it (nothing is scheduled there)
HTTP_SERVER = (
    "import os, http.server as s; s.ThreadingHTTPServer((os.environ['VOICEOPS_HOST'], "
    "int(os.environ['VOICEOPS_PORT'])), s.SimpleHTTPRequestHandler).serve_forever()"
)
GRACEFUL = """
import os, signal, sys
def bye(*_):
    print('got SIGTERM; preStop ran before:', os.path.exists('prestop-ran'), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print('running', flush=True)
while True:
    signal.pause()
"""
PRESTOP = "import os, pathlib; pathlib.Path(os.environ['HOME'], 'prestop-ran').write_text('yes')"
LIST_PODS = """
import base64, os, ssl, signal, time, urllib.error, urllib.request, yaml
ACCOUNT = '/var/run/secrets/kubernetes.io/serviceaccount'
if os.path.exists(ACCOUNT + '/token'):  # as root: the projected volume, in-cluster style
    token = open(ACCOUNT + '/token').read()
    context = ssl.create_default_context(cafile=ACCOUNT + '/ca.crt')
    server = 'https://%s:%s' % (os.environ['KUBERNETES_SERVICE_HOST'],
                                os.environ['KUBERNETES_SERVICE_PORT'])
    namespace = open(ACCOUNT + '/namespace').read()
elif 'KUBECONFIG' in os.environ:  # without root: a kubeconfig with the token
    config = yaml.safe_load(open(os.environ['KUBECONFIG']))
    cluster = config['clusters'][0]['cluster']
    token = config['users'][0]['user']['token']
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster['certificate-authority-data']).decode())
    server = cluster['server']
    namespace = os.environ['POD_NAMESPACE']
else:
    token = None
    print('LIST no-token', flush=True)
if token:
    url = server + '/api/v1/namespaces/' + namespace + '/pods'
    for _ in range(40):  # RBAC reaches the authorizer's cache a moment after the binding
        request = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + token})
        try:
            code = urllib.request.urlopen(request, context=context, timeout=5).status
        except urllib.error.HTTPError as error:
            code = error.code
        print('LIST', code, flush=True)
        if code == 200:
            break
        time.sleep(0.25)
while True:
    signal.pause()
"""


# ------------------------------------------------------------------ no cluster needed
async def test_pod_ips_map_one_to_one_onto_loopback_addresses() -> None:
    assert pod_ip_for("127.0.0.7") == "10.244.0.7"
    assert pod_ip_for("127.2.1.9") == "10.246.1.9"
    assert host_ip_for("10.246.1.9") == "127.2.1.9"
    assert host_ip_for("192.0.2.1") == "192.0.2.1"  # not the pod network: as given
    with pytest.raises(ValueError, match="loopback"):
        pod_ip_for("10.0.0.1")


async def test_images_match_on_the_repository_and_args_replace_the_defaults() -> None:
    images = default_images()
    operator = find_image(images, "ghcr.io/acme/voiceops/operator:0.1.0")
    assert operator is not None
    assert operator.cmd == ("run", "--all-namespaces")
    service_gpu = find_image(images, "voiceops/service-gpu@sha256:" + "0" * 64)
    assert service_gpu is not None
    assert service_gpu.entrypoint[0].endswith("voiceops-service")
    assert find_image(images, "voiceops/service-extra:1") is None
    assert find_image({"x/y": Image(("y",))}, "registry:5000/x/y:2") is not None


async def test_endpoints_come_from_ready_endpoints_of_the_services_slices() -> None:
    svc = {"metadata": {"name": "front", "namespace": "a"}}
    label = {"kubernetes.io/service-name": "front"}
    slices = [
        {
            "metadata": {"namespace": "a", "labels": label},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8000}, {"name": "metrics", "port": 9000}],
            "endpoints": [
                {"addresses": ["10.244.0.2"], "conditions": {"ready": True}},
                {"addresses": ["10.244.0.3"], "conditions": {"ready": False}},  # terminating
                {"addresses": ["10.244.0.4"]},  # ready unset: counts as ready
            ],
        },
        {"metadata": {"namespace": "b", "labels": label}, "ports": [{"name": "http", "port": 1}]},
        {"metadata": {"namespace": "a", "labels": {}}, "ports": [{"name": "http", "port": 1}]},
    ]
    assert endpoints_from_slices(slices, svc, {"name": "http", "port": 80}) == [
        ("10.244.0.2", 8000),
        ("10.244.0.4", 8000),
    ]
    assert endpoints_from_slices(slices, svc, {"name": "grpc", "port": 81}) == []


async def test_serving_terminating_endpoints_take_traffic_only_while_none_is_ready() -> None:
    """kube-proxy's fallback (KEP-1669): a draining pod still answers rather than nobody."""
    svc = {"metadata": {"name": "front", "namespace": "a"}}

    def slice_of(*endpoints: dict[str, object]) -> list[dict[str, object]]:
        meta = {"namespace": "a", "labels": {"kubernetes.io/service-name": "front"}}
        return [{"metadata": meta, "ports": [{"name": "http", "port": 8000}],
                 "endpoints": list(endpoints)}]  # fmt: skip

    draining = {"ready": False, "serving": True, "terminating": True}
    gone_quiet = {"ready": False, "serving": False, "terminating": True}
    unready = {"ready": False, "serving": False}
    port = {"name": "http", "port": 80}
    ready = {"addresses": ["10.0.0.1"], "conditions": {"ready": True}}
    old = {"addresses": ["10.0.0.2"], "conditions": draining}
    assert endpoints_from_slices(slice_of(ready, old), svc, port) == [("10.0.0.1", 8000)]
    assert endpoints_from_slices(slice_of(old), svc, port) == [("10.0.0.2", 8000)]
    quiet = {"addresses": ["10.0.0.3"], "conditions": gone_quiet}
    starting = {"addresses": ["10.0.0.4"], "conditions": unready}
    assert endpoints_from_slices(slice_of(quiet, starting), svc, port) == []


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def control_plane(new_control_plane: Callable[[], ControlPlane]) -> Iterator[ControlPlane]:
    """A control plane of this module's own: its nodes must not take other tests' pods."""
    plane = new_control_plane()
    try:
        yield plane
    finally:
        plane.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agent(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[NodeAgent]:
    spare = parse_node(f"{SPARE}:0:4")
    spare.taints.append({"key": "voiceops.io/spare", "value": "true", "effect": "NoSchedule"})
    nodes = [parse_node("local-gpu-0:1:8"), parse_node("local-cpu-0:0:8"), spare]
    running = NodeAgent(control_plane.admin_kubeconfig, nodes, tmp_path_factory.mktemp("agent"))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
        assert not control_plane.dead(), control_plane.dead()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(control_plane: ControlPlane, agent: NodeAgent) -> AsyncIterator[KubeClient]:
    client = KubeClient.from_kubeconfig(control_plane.admin_kubeconfig, agent.work_dir / "test")
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture(loop_scope="module")
async def namespace(api: KubeClient) -> AsyncIterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    # Pods are refused until the ServiceAccount controller made the default account.
    await eventually(
        lambda: api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        f"serviceaccount {name}/default",
    )
    try:
        yield name
    finally:  # the namespace controller deletes its pods; the agent stops their processes
        await api.request("DELETE", f"/api/v1/namespaces/{name}")


# ----------------------------------------------------------------------- helpers
async def eventually(check: Callable[[], Awaitable[Any]], what: str, within: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while True:
        try:
            last = await check()
        except (AssertionError, KeyError, IndexError, LookupError) as error:
            last = error
        else:
            if last:
                return last
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {within:g}s; last seen: {last!r}")
        await asyncio.sleep(0.2)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind]
    return found[0] if found else {}


def container_status(pod: dict[str, Any] | None) -> dict[str, Any]:
    return (((pod or {}).get("status") or {}).get("containerStatuses") or [{}])[0]


def pod_body(name: str, command: str | None, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": spec.pop("image", "test/python:1")}
    if command is not None:
        container["command"] = [sys.executable, "-c", command]
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [container], **spec},
    }


async def create_pod(api: KubeClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return await api.request("POST", f"/api/v1/namespaces/{namespace}/pods", body)


async def pod_when(
    api: KubeClient,
    namespace: str,
    name: str,
    test: Callable[[dict[str, Any]], bool],
    what: str,
    within: float = 60.0,
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        pod = await api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        return pod if pod is not None and test(pod) else None

    return await eventually(check, f"pod {namespace}/{name} {what}", within)


def is_ready(pod: dict[str, Any]) -> bool:
    return condition(pod, "Ready").get("status") == "True"


# ------------------------------------------------------------------------- tests
@cluster
async def test_nodes_are_ready_with_their_capacity_and_keep_their_lease(
    agent: NodeAgent, api: KubeClient
) -> None:
    for name, gpus in (("local-gpu-0", "1"), ("local-cpu-0", None)):
        node = await api.request("GET", f"/api/v1/nodes/{name}")
        for field in ("capacity", "allocatable"):
            resources = node["status"][field]
            assert resources["cpu"] == "8"
            assert parse_quantity(resources["memory"]) == 64 * 2**30  # the API says 64Gi
            assert resources["pods"] == "110"
            assert resources.get("nvidia.com/gpu") == gpus
        assert condition(node, "Ready")["status"] == "True"
        assert not node["spec"].get("taints")
    path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/local-gpu-0"
    lease = await api.request("GET", path)
    assert lease["spec"]["holderIdentity"] == "local-gpu-0"

    async def renewed() -> bool:
        again = await api.request("GET", path)
        return bool(again["spec"]["renewTime"] != lease["spec"]["renewTime"])

    await eventually(renewed, "the lease of local-gpu-0 renewed", within=15)

    await agent.set_gpu_capacity("local-gpu-0", 3)
    try:
        node = await api.request("GET", "/api/v1/nodes/local-gpu-0")
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "3"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "3"
        assert node["status"]["allocatable"]["cpu"] == "8"  # the rest stays
    finally:
        await agent.set_gpu_capacity("local-gpu-0", 1)


@cluster
async def test_a_deployment_becomes_ready_and_its_service_routes_through_endpointslices(
    agent: NodeAgent, api: KubeClient, namespace: str
) -> None:
    labels = {"app": "tts"}
    probe = {"httpGet": {"path": "/readyz", "port": 8000}, "periodSeconds": 1}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "tts"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "service",
                            "image": "voiceops/service:0.1.0",
                            "env": [{"name": "VOICEOPS_ENGINE", "value": "espeak"}],
                            "ports": [{"name": "http", "containerPort": 8000}],
                            "readinessProbe": probe,
                        }
                    ]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "tts"},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 8000}]},
    }
    await api.request("POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment)
    await api.request("POST", f"/api/v1/namespaces/{namespace}/services", service)

    async def available() -> dict[str, Any] | None:
        dep = await api.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/tts")
        return dep if (dep.get("status") or {}).get("availableReplicas") == 1 else None

    await eventually(available, "deployment tts available", within=90)
    pods = await api.request("GET", f"/api/v1/namespaces/{namespace}/pods")
    (pod,) = pods["items"]
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"  # the real controller
    assert pod["spec"]["nodeName"] in agent.nodes
    pod_ip = pod["status"]["podIP"]
    assert ipaddress.ip_address(pod_ip) in POD_NETWORK  # not loopback: EndpointSlices refuse it

    async def slice_endpoint() -> list[str]:
        slices = await api.request(
            "GET",
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            params={"labelSelector": "kubernetes.io/service-name=tts"},
        )
        return [
            address
            for piece in slices["items"]
            for endpoint in piece.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready")
            for address in endpoint["addresses"]
        ]

    assert await eventually(slice_endpoint, "a ready EndpointSlice endpoint") == [pod_ip]

    async def proxied() -> str:
        return agent.service_url(namespace, "tts")  # LookupError until the proxy listens

    url = await eventually(proxied, "the proxied Service")
    assert agent.service_endpoints(namespace, "tts") == [f"{host_ip_for(pod_ip)}:8000"]
    async with aiohttp.ClientSession() as session, session.get(f"{url}/v1/models") as rsp:
        assert rsp.status == 200
        models = [m["id"] for m in (await rsp.json())["data"]]
    assert "espeak" in models


@cluster
async def test_a_pod_wanting_more_gpus_than_any_node_has_stays_pending(
    api: KubeClient, namespace: str
) -> None:
    body = pod_body(
        "greedy",
        HTTP_SERVER,
        container={"resources": {"limits": {"nvidia.com/gpu": 2}}},
    )
    await create_pod(api, namespace, body)

    def unschedulable(pod: dict[str, Any]) -> bool:
        scheduled = condition(pod, "PodScheduled")
        return scheduled.get("reason") == "Unschedulable"

    pod = await pod_when(api, namespace, "greedy", unschedulable, "unschedulable")
    assert "Insufficient nvidia.com/gpu" in condition(pod, "PodScheduled")["message"]
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


@cluster
async def test_readiness_another_writer_turned_off_is_said_again(
    api: KubeClient, namespace: str
) -> None:
    """The node lifecycle controller marks pods not ready when their node seemed lost (an
    API server outage longer than the grace period does that to every node); once the
    node reports again, its kubelet says what it sees, as the kubelet's status manager
    does."""
    probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
    container = {"ports": [{"name": "http", "containerPort": 8080}], "readinessProbe": probe}
    await create_pod(api, namespace, pod_body("told", HTTP_SERVER, container=container))
    await pod_when(api, namespace, "told", is_ready, "ready")
    not_ready = {"type": "Ready", "status": "False", "reason": "NodeNotReady"}
    await api.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/told/status",
        {"status": {"conditions": [not_ready]}},
        patch="merge",
    )
    pod = await pod_when(api, namespace, "told", is_ready, "ready again", within=30)
    assert condition(pod, "ContainersReady")["status"] == "True"


@cluster
async def test_a_killed_process_is_restarted_and_ready_again(
    agent: NodeAgent, api: KubeClient, namespace: str
) -> None:
    probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
    body = pod_body(
        "web",
        HTTP_SERVER,
        container={"ports": [{"name": "http", "containerPort": 8080}], "readinessProbe": probe},
    )
    await create_pod(api, namespace, body)
    await pod_when(api, namespace, "web", is_ready, "ready")
    assert agent.kill_pod_process(namespace, "web", signal.SIGKILL)

    def restarted_and_ready(pod: dict[str, Any]) -> bool:
        return container_status(pod).get("restartCount") == 1 and is_ready(pod)

    pod = await pod_when(api, namespace, "web", restarted_and_ready, "restarted and ready")
    last = container_status(pod)["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (137, "OOMKilled")


@cluster
async def test_a_deleted_pod_gets_its_prestop_hook_and_sigterm_then_disappears(
    agent: NodeAgent, api: KubeClient, namespace: str
) -> None:
    hook = {"preStop": {"exec": {"command": [sys.executable, "-c", PRESTOP]}}}
    await create_pod(api, namespace, pod_body("graceful", GRACEFUL, container={"lifecycle": hook}))
    await pod_when(api, namespace, "graceful", is_ready, "ready")
    await api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/graceful")

    async def gone() -> bool:
        return await api.get(f"/api/v1/namespaces/{namespace}/pods/graceful") is None

    await eventually(gone, "pod graceful removed by the agent", within=30)
    assert "got SIGTERM; preStop ran before: True" in agent.pod_log(namespace, "graceful")


@cluster
async def test_a_pod_talks_to_the_api_as_its_service_account(
    agent: NodeAgent, api: KubeClient, namespace: str
) -> None:
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/" + namespace
    await api.request(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "reader"}}
    )
    role = {
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
    }
    await api.request("POST", f"{rbac}/roles", role)
    binding = {
        "metadata": {"name": "reader-reads-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    }
    await api.request("POST", f"{rbac}/rolebindings", binding)
    await create_pod(api, namespace, pod_body("as-reader", LIST_PODS, serviceAccountName="reader"))
    await create_pod(api, namespace, pod_body("as-default", LIST_PODS))
    await create_pod(
        api, namespace, pod_body("no-token", LIST_PODS, automountServiceAccountToken=False)
    )

    def log_has(pod: str, text: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return text in agent.pod_log(namespace, pod)

        return check

    await eventually(log_has("as-reader", "LIST 200"), "as-reader listed pods")
    await eventually(log_has("as-default", "LIST 403"), "as-default refused")
    await eventually(log_has("no-token", "LIST no-token"), "no-token without a token")
    assert "LIST 200" not in agent.pod_log(namespace, "as-default")


@cluster
async def test_env_from_secrets_and_fields_waits_for_a_missing_secret(
    agent: NodeAgent, api: KubeClient, namespace: str
) -> None:
    env = [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw"}}},
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    show = "import os, signal; print('ENV', os.environ['PASSWORD'], os.environ['MY_IP'], " + (
        "os.environ['MY_NODE'], os.environ['POD_NAMESPACE'], flush=True); signal.pause()"
    )
    await create_pod(api, namespace, pod_body("env", show, container={"env": env}))

    def config_error(pod: dict[str, Any]) -> bool:
        waiting = container_status(pod).get("state", {}).get("waiting", {})
        return waiting.get("reason") == "CreateContainerConfigError"

    pod = await pod_when(api, namespace, "env", config_error, "waiting for its secret")
    assert 'secret "creds" not found' in container_status(pod)["state"]["waiting"]["message"]
    secret = {"metadata": {"name": "creds"}, "stringData": {"pw": "s3cret"}}
    await api.request("POST", f"/api/v1/namespaces/{namespace}/secrets", secret)
    pod = await pod_when(api, namespace, "env", is_ready, "ready once the secret exists")

    async def printed() -> str | None:
        text = agent.pod_log(namespace, "env")
        return text if "ENV " in text else None

    expected = f"ENV s3cret {pod['status']['podIP']} {pod['spec']['nodeName']} {namespace}"
    assert expected in await eventually(printed, "the env printed")


READ_VOLUMES = """
import json, os, signal
found = {}
for path in ('/etc/voiceops-test/secret/pw', '/etc/voiceops-test/settings/mode.conf',
             '/etc/voiceops-test/pod/name', '/etc/voiceops-test/projected/labels-app',
             '/etc/voiceops-test/projected/pw'):
    found[path] = open(path).read()
try:
    open('/etc/voiceops-test/secret/new', 'w').write('x')
    found['secret writable'] = True
except OSError:
    found['secret writable'] = False
print('VOLUMES', json.dumps(found, sort_keys=True), flush=True)
signal.pause()
"""


@cluster
@pytest.mark.skipif(not can_mount(), reason="bind mounts need root (a mount namespace per pod)")
async def test_volumes_are_written_and_mounted_where_the_containers_say(
    agent: NodeAgent, api: KubeClient, namespace: str
) -> None:
    secret = {"metadata": {"name": "creds"}, "stringData": {"pw": "s3cret", "other": "no"}}
    await api.request("POST", f"/api/v1/namespaces/{namespace}/secrets", secret)
    settings = {"metadata": {"name": "settings"}, "data": {"mode": "fast"}}
    await api.request("POST", f"/api/v1/namespaces/{namespace}/configmaps", settings)
    field = {"fieldRef": {"fieldPath": "metadata.name"}}
    volumes = [
        {"name": "secret", "secret": {"secretName": "creds", "defaultMode": 0o440}},
        {
            "name": "settings",
            "configMap": {"name": "settings", "items": [{"key": "mode", "path": "mode.conf"}]},
        },
        {"name": "pod", "downwardAPI": {"items": [{"path": "name", **field}]}},
        {
            "name": "projected",
            "projected": {
                "sources": [
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "labels-app",
                                    "fieldRef": {"fieldPath": "metadata.labels['app']"},
                                }
                            ]
                        }
                    },
                    {"secret": {"name": "creds", "items": [{"key": "pw", "path": "pw"}]}},
                ]
            },
        },
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts = [
        {"name": "secret", "mountPath": "/etc/voiceops-test/secret", "readOnly": True},
        {"name": "settings", "mountPath": "/etc/voiceops-test/settings"},
        {"name": "pod", "mountPath": "/etc/voiceops-test/pod"},
        {"name": "projected", "mountPath": "/etc/voiceops-test/projected"},
        {"name": "scratch", "mountPath": "/tmp"},
    ]
    body = pod_body("volumes", READ_VOLUMES, volumes=volumes, container={"volumeMounts": mounts})
    await create_pod(api, namespace, body)

    async def printed() -> dict[str, Any] | None:
        lines = [x for x in agent.pod_log(namespace, "volumes").splitlines() if "VOLUMES " in x]
        return json.loads(lines[-1].split("VOLUMES ", 1)[1]) if lines else None

    assert await eventually(printed, "the volumes read") == {
        "/etc/voiceops-test/secret/pw": "s3cret",
        "/etc/voiceops-test/settings/mode.conf": "fast",
        "/etc/voiceops-test/pod/name": "volumes",
        "/etc/voiceops-test/projected/labels-app": "volumes",
        "/etc/voiceops-test/projected/pw": "s3cret",
        "secret writable": False,
    }
    # The mounts are the pod's own: this machine's folder stays empty.
    assert not await asyncio.to_thread(lambda: any(Path("/etc/voiceops-test/secret").iterdir()))

    # (A claim would not get past the real scheduler without a bound PersistentVolume.)
    host_path = {"name": "model", "hostPath": {"path": "/srv/weights"}}
    await create_pod(api, namespace, pod_body("claim", "pass", volumes=[host_path]))

    def config_error(pod: dict[str, Any]) -> bool:
        waiting = container_status(pod).get("state", {}).get("waiting", {})
        return waiting.get("reason") == "CreateContainerConfigError"

    pod = await pod_when(api, namespace, "claim", config_error, "refused its volume")
    message = container_status(pod)["state"]["waiting"]["message"]
    assert 'volume "model": hostPath volumes are not supported' in message


@cluster
async def test_an_image_without_a_command_waits_with_err_image_pull(
    api: KubeClient, namespace: str
) -> None:
    await create_pod(api, namespace, pod_body("mystery", None, image="example.com/mystery:7"))

    def pull_error(pod: dict[str, Any]) -> bool:
        return container_status(pod).get("state", {}).get("waiting", {}).get("reason") == (
            "ErrImagePull"
        )

    pod = await pod_when(api, namespace, "mystery", pull_error, "waiting with ErrImagePull")
    assert "example.com/mystery:7" in container_status(pod)["state"]["waiting"]["message"]
    assert pod["status"]["phase"] == "Pending"


@cluster
async def test_a_node_that_stops_its_heartbeat_goes_not_ready_and_is_tainted(
    agent: NodeAgent, api: KubeClient
) -> None:
    path = f"/api/v1/nodes/{SPARE}"

    def unreachable(node: dict[str, Any]) -> bool:
        taints = {(t["key"], t["effect"]) for t in node["spec"].get("taints") or []}
        return ("node.kubernetes.io/unreachable", "NoSchedule") in taints

    async def lost() -> dict[str, Any] | None:
        node = await api.request("GET", path)
        unknown = condition(node, "Ready").get("status") == "Unknown"
        return node if unknown and unreachable(node) else None

    async def back() -> bool:
        node = await api.request("GET", path)
        return condition(node, "Ready").get("status") == "True" and not unreachable(node)

    await agent.stop_heartbeat(SPARE)
    try:
        node = await eventually(lost, f"{SPARE} NotReady (Unknown) and tainted", within=45)
        assert condition(node, "Ready")["reason"] == "NodeStatusUnknown"
    finally:
        await agent.resume_heartbeat(SPARE)
    await eventually(back, f"{SPARE} Ready again and untainted", within=45)


@cluster
async def test_the_api_answers_errors_as_kube_api_errors(api: KubeClient) -> None:
    with pytest.raises(KubeApiError) as caught:
        await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": "Not_Valid"}})
    assert caught.value.status == 422
    assert "Not_Valid" in caught.value.message
    assert await api.get("/api/v1/namespaces/does-not-exist") is None
