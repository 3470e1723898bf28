"""The operator against a real Kubernetes control plane: the API server is the authority.

Real: kube-apiserver (the CRD's structural schema and CEL, compiled and cost-checked
by the API server itself; merge patches; the status subresource; RBAC), the
controller manager (the ReplicaSet controller under the Deployments, the garbage
collector) and the operator process. No nodes: pods stay Pending here.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_operator_crd import INVALID, with_spec
from voiceops_sim.control_plane import ControlPlane
from voiceops_sim.operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
CRD = ROOT / "crds" / "voiceservice.yaml"
CHILDREN = {
    "deployments": {"tts-gpu", "tts-fallback"},
    "services": {"tts", "tts-gpu", "tts-fallback"},
    "horizontalpodautoscalers": {"tts-gpu", "tts-fallback"},
    "poddisruptionbudgets": {"tts-gpu", "tts-fallback"},
    "networkpolicies": {"tts"},
}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


class Kubectl:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(self.plane.admin_kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done

    def json(self, *args: str) -> dict[str, Any]:
        return json.loads(self(*args, "-o", "json").stdout)

    def names(self, resource: str, ns: str) -> set[str]:
        items = self.json("-n", ns, "get", resource, "-l", "app.kubernetes.io/instance=tts")
        return {item["metadata"]["name"] for item in items["items"]}


def wait_until(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:g}s: {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    if not KUBECTL.exists():
        pytest.fail(f"{KUBECTL} is missing: `make tools` installs it")
    k = Kubectl(control_plane)
    # The API server compiles the CRD's CEL rules and checks their cost here.
    k("apply", "--server-side", "-f", str(CRD))
    k("wait", "--for=condition=Established", "crd/voiceservices.voiceops.io", "--timeout=60s")
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


async def test_create_builds_every_child_and_deleting_the_owner_collects_them(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    operator = OperatorProcess(
        control_plane.admin_kubeconfig, tmp_path / "operator.log", namespaces=[namespace]
    )
    await operator.start()
    try:
        kubectl("apply", "-f", "-", stdin=manifest(namespace))

        def built() -> bool:
            return all(kubectl.names(r, namespace) == names for r, names in CHILDREN.items())

        await asyncio.to_thread(wait_until, built, 60, "every child of tts")
        owner = kubectl.json("-n", namespace, "get", "voiceservice", "tts")
        for resource in CHILDREN:
            for item in kubectl.json("-n", namespace, "get", resource)["items"]:
                refs = item["metadata"].get("ownerReferences") or []
                assert [r["uid"] for r in refs] == [owner["metadata"]["uid"]], item["metadata"]
        # The real ReplicaSet controller made pods under the Deployments (no node: Pending).
        await asyncio.to_thread(
            wait_until,
            lambda: kubectl.json("-n", namespace, "get", "replicasets")["items"],
            30,
            "ReplicaSets under the tiers",
        )

        def status_written() -> bool:
            status = kubectl.json("-n", namespace, "get", "voiceservice", "tts").get("status")
            return bool(status) and status.get("observedGeneration") == 1

        await asyncio.to_thread(wait_until, status_written, 30, "the status subresource written")

        # The garbage collector, not the operator, removes the children with their owner.
        kubectl("-n", namespace, "delete", "voiceservice", "tts", "--wait=true", "--timeout=60s")

        def collected() -> bool:
            return not any(kubectl.names(r, namespace) for r in CHILDREN)

        await asyncio.to_thread(wait_until, collected, 60, "the children garbage-collected")
    finally:
        await operator.stop()
        print(operator.log_tail(40))
