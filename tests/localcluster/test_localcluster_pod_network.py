"""Pods in network namespaces of their own: real pod IPs, reached by anything on this machine.

Real control plane and node agent (``pod_network=NamespacePodNetwork``); the pods'
addresses are in the control plane's pod subnet, on veths in namespaces this test
creates (and removes). Needs root for ``ip netns``: CI runs as root; elsewhere the
module skips with the reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from testsupport.needs import network_namespaces
from voiceops_localcluster import pod_network
from voiceops_localcluster.control_plane import ControlPlane
from voiceops_localcluster.node_agent import KubeClient, NodeAgent

pytestmark = pytest.mark.slow
SERVE = (
    "import os, http.server as s; s.ThreadingHTTPServer((os.environ['VOICEOPS_HOST'], 8000), "
    "s.SimpleHTTPRequestHandler).serve_forever()"
)
# In-cluster style, as kopf and kubernetes clients find the API server: the mounted
# ServiceAccount volume and KUBERNETES_SERVICE_HOST/PORT.
LIST_PODS = (
    "import os, ssl, time, urllib.request\n"
    "d = '/var/run/secrets/kubernetes.io/serviceaccount/'\n"
    "token, ns = open(d + 'token').read(), open(d + 'namespace').read()\n"
    "ctx = ssl.create_default_context(cafile=d + 'ca.crt')\n"
    "server = 'https://%s:%s' % (os.environ['KUBERNETES_SERVICE_HOST'], "
    "os.environ['KUBERNETES_SERVICE_PORT'])\n"
    "r = urllib.request.Request(server + '/api/v1/namespaces/' + ns + '/pods', "
    "headers={'Authorization': 'Bearer ' + token})\n"
    "print('SERVER', server, 'LIST', urllib.request.urlopen(r, context=ctx).status, flush=True)\n"
    "time.sleep(3600)\n"
)


@pytest.fixture(scope="module")
def control_plane(new_control_plane: Callable[[], ControlPlane]) -> Iterator[ControlPlane]:
    network_namespaces()
    plane = new_control_plane()
    try:
        yield plane
    finally:
        plane.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agent(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[NodeAgent]:
    network = pod_network.NamespacePodNetwork(control_plane.pod_cidr)
    running = NodeAgent(
        control_plane.admin_kubeconfig,
        ["local-cpu-0:0:8"],
        tmp_path_factory.mktemp("agent"),
        pod_network=network,
    )
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
        assert pod_network.leftovers(network.tag) == ([], [])  # nothing left behind


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(control_plane: ControlPlane, agent: NodeAgent) -> AsyncIterator[KubeClient]:
    client = KubeClient.from_kubeconfig(control_plane.admin_kubeconfig, agent.work_dir / "t")
    try:
        yield client
    finally:
        await client.close()


async def eventually(check: Callable[[], object], what: str, within: float = 60) -> object:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await check()  # type: ignore[misc]
        if found:
            return found
        assert asyncio.get_running_loop().time() < deadline, f"not within {within:g}s: {what}"
        await asyncio.sleep(0.2)


def pod(name: str, code: str, **spec: object) -> dict[str, object]:
    container = {"name": "main", "image": "test/python:1", "command": [sys.executable, "-c", code]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [container], **spec}}  # fmt: skip


@pytest.mark.asyncio(loop_scope="module")
async def test_a_pod_serves_on_its_own_address_in_the_pod_subnet(
    control_plane: ControlPlane, agent: NodeAgent, api: KubeClient
) -> None:
    ns = f"net-{uuid.uuid4().hex[:6]}"
    await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    await api.request("POST", f"/api/v1/namespaces/{ns}/pods", pod("web", SERVE))

    async def address() -> str | None:
        found = await api.get(f"/api/v1/namespaces/{ns}/pods/web")
        return ((found or {}).get("status") or {}).get("podIP")

    pod_ip = str(await eventually(address, "a pod IP"))
    assert ipaddress.ip_address(pod_ip) in control_plane.pod_cidr

    async def answers() -> bool:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://{pod_ip}:8000/") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    assert await eventually(answers, "an answer from the pod's own address")


@pytest.mark.asyncio(loop_scope="module")
async def test_a_pod_reaches_the_api_server_as_its_service_account_through_the_gateway(
    control_plane: ControlPlane, agent: NodeAgent, api: KubeClient
) -> None:
    ns = f"net-{uuid.uuid4().hex[:6]}"
    await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}"
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
    await api.request("POST", f"{rbac}/roles", {"metadata": {"name": "r"}, "rules": [rule]})
    binding = {
        "metadata": {"name": "b"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}],
    }
    await api.request("POST", f"{rbac}/rolebindings", binding)
    await api.request("POST", f"/api/v1/namespaces/{ns}/pods", pod("lister", LIST_PODS))

    async def listed() -> bool:
        log = agent.pod_log(ns, "lister") or ""
        return "LIST 200" in log

    await eventually(listed, "the pod listed pods through the gateway")
    gateway = str(next(control_plane.pod_cidr.hosts()))
    assert f"SERVER https://{gateway}:" in (agent.pod_log(ns, "lister") or "")


def test_leftovers_of_a_tag_are_found_and_removed(tmp_path: Path) -> None:
    network_namespaces()
    network = pod_network.NamespacePodNetwork(ipaddress.ip_network("10.252.7.0/29"))
    network.setup()
    network.attach()
    assert pod_network.leftovers(network.tag) != ([], [])
    pod_network.remove_leftovers(network.tag)  # as a later run would after a crash
    assert pod_network.leftovers(network.tag) == ([], [])
