"""The chart's RBAC against what the real operator does on a real API server.

The chart's ServiceAccount, ClusterRole and ClusterRoleBinding (``helm template``)
go into a real kube-apiserver; the operator process runs with that ServiceAccount's
token (TokenRequest), creates, updates and deletes a VoiceService, and the API
server's audit log must show no request of that ServiceAccount refused. The same
run with one verb taken out of the ClusterRole must show refusals: a verb the chart
forgets fails this test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from testsupport.chart import NAMESPACE, render
from testsupport.kubectl import Kubectl
from voiceops_localcluster.control_plane import ControlPlane
from voiceops_localcluster.operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:voiceops"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def plane(new_control_plane: Callable[..., ControlPlane]) -> Iterator[ControlPlane]:
    if not KUBECTL.exists():
        pytest.fail(f"{KUBECTL} is missing: `make tools` installs it")
    started = new_control_plane(audit=True)
    try:
        yield started
    finally:
        started.stop()


def kubectl(plane: ControlPlane, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(plane.admin_kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def install_rbac(plane: ControlPlane, drop: tuple[str, str] | None = None) -> None:
    """The chart's CRDs, namespace-scoped ServiceAccount and cluster RBAC; ``drop``
    removes one (resource, verb) from its ClusterRole."""
    objects = [o for o in render({}) if o["kind"] in {"ServiceAccount", "ClusterRole",
               "ClusterRoleBinding", "CustomResourceDefinition"}]  # fmt: skip
    for obj in objects:
        if obj["kind"] == "ClusterRole" and drop is not None:
            for rule in obj["rules"]:
                if drop[0] in rule["resources"] and drop[1] in rule["verbs"]:
                    rule["verbs"] = [v for v in rule["verbs"] if v != drop[1]]
    kubectl(plane, "create", "namespace", NAMESPACE)
    kubectl(plane, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objects))
    Kubectl(plane).apply_crd()  # the same CRD again, and waits until it is Established


def token_kubeconfig(plane: ControlPlane, folder: Path) -> Path:
    token = kubectl(plane, "-n", NAMESPACE, "create", "token", "voiceops", "--duration=1h")
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": {
            "server": plane.server, "certificate-authority": plane.pki.path("ca.crt")}}],
        "users": [{"name": "sa", "user": {"token": token.strip()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
    }  # fmt: skip
    path = folder / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def refused(plane: ControlPlane) -> list[str]:
    return sorted(
        {
            f"{e['verb']} {(e.get('objectRef') or {}).get('resource')}"
            for e in plane.audit_events()
            if (e.get("user") or {}).get("username") == SERVICE_ACCOUNT
            and (e.get("responseStatus") or {}).get("code") == 403
        }
    )


def manifest(ns: str, replicas: int) -> str:
    spec = {"autoscaling": {"enabled": False}, "replicas": replicas}
    return json.dumps({"apiVersion": "voiceops.io/v1alpha1", "kind": "VoiceService",
                       "metadata": {"name": "tts", "namespace": ns}, "spec": spec})  # fmt: skip


def wait_until(check: Callable[[], Any], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds:g}s: {what}"
        time.sleep(0.2)


async def exercise(plane: ControlPlane, folder: Path, within: float = 60) -> None:
    """Create, change and delete a VoiceService with the operator as the chart runs it."""
    operator = OperatorProcess(token_kubeconfig(plane, folder), folder / "operator.log")
    await operator.start()
    try:
        ns = f"rbac-{uuid.uuid4().hex[:6]}"
        kubectl(plane, "create", "namespace", ns)
        kubectl(plane, "apply", "-f", "-", stdin=manifest(ns, 1))

        def replicas(n: int) -> Callable[[], bool]:
            def check() -> bool:
                out = kubectl(plane, "-n", ns, "get", "deployment", "tts-gpu", "-o", "json",
                              "--ignore-not-found")  # fmt: skip
                return bool(out) and json.loads(out)["spec"]["replicas"] == n

            return check

        await asyncio.to_thread(wait_until, replicas(1), within, "the GPU tier built")
        kubectl(plane, "apply", "-f", "-", stdin=manifest(ns, 2))
        await asyncio.to_thread(wait_until, replicas(2), within, "the GPU tier scaled")
        kubectl(plane, "-n", ns, "delete", "voiceservice", "tts", "--timeout=60s")
    finally:
        await operator.stop()


async def test_the_operator_never_needs_what_the_chart_does_not_grant(
    plane: ControlPlane, tmp_path: Path
) -> None:
    install_rbac(plane)
    await exercise(plane, tmp_path)
    assert refused(plane) == []
    # The same run, one verb short, is refused: this test would catch a forgotten verb.
    kubectl(plane, "delete", "clusterrolebinding", "voiceops")
    kubectl(plane, "delete", "namespace", NAMESPACE, "--timeout=60s")
    install_rbac(plane, drop=("deployments", "patch"))
    with pytest.raises(AssertionError):
        await exercise(plane, tmp_path, within=15)
    assert "patch deployments" in refused(plane)
