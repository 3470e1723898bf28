"""The local control plane: real components, healthy, secured, and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from voiceops_localcluster.control_plane import ControlPlane, ControlPlaneError
from voiceops_localcluster.kube_binaries import COMPONENTS, KUBERNETES_VERSION, Binaries

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"


def kubectl(
    plane: ControlPlane, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    if token is None:
        auth = ["--kubeconfig", str(plane.admin_kubeconfig)]
    else:
        ca = plane.pki.path("ca.crt")
        auth = ["--token", token, "--server", plane.server, "--certificate-authority", ca]
    return subprocess.run(
        [str(KUBECTL), *auth, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def binaries(control_plane: ControlPlane) -> Binaries:
    assert control_plane.binaries is not None  # the session fixture found them
    return control_plane.binaries


@pytest.fixture(autouse=True)
def _kubectl_installed() -> None:
    if not KUBECTL.exists():
        pytest.fail(f"{KUBECTL} is missing: `make tools` installs it")


def test_the_api_server_is_the_pinned_version_and_healthy(control_plane: ControlPlane) -> None:
    version = json.loads(kubectl(control_plane, "version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == f"v{KUBERNETES_VERSION}"
    assert kubectl(control_plane, "get", "--raw", "/readyz").stdout == "ok"
    assert control_plane.dead() == []


def test_rbac_refuses_a_service_account_until_a_role_allows_it(
    control_plane: ControlPlane,
) -> None:
    ns = f"rbac-{uuid.uuid4().hex[:6]}"
    assert kubectl(control_plane, "create", "namespace", ns).returncode == 0
    assert kubectl(control_plane, "-n", ns, "create", "serviceaccount", "app").returncode == 0
    token = kubectl(control_plane, "-n", ns, "create", "token", "app").stdout.strip()
    refused = kubectl(control_plane, "-n", ns, "get", "pods", token=token)
    assert refused.returncode != 0
    assert f'"system:serviceaccount:{ns}:app" cannot list resource "pods"' in refused.stderr
    role = ["create", "role", "pod-reader", "--verb=list", "--resource=pods"]
    assert kubectl(control_plane, "-n", ns, *role).returncode == 0
    binding = ["create", "rolebinding", "r", "--role=pod-reader", f"--serviceaccount={ns}:app"]
    assert kubectl(control_plane, "-n", ns, *binding).returncode == 0
    allowed = kubectl(control_plane, "-n", ns, "get", "pods", token=token)
    assert allowed.returncode == 0, allowed.stderr


def test_a_new_launch_stops_what_a_crashed_run_left_in_its_folder(
    tmp_path: Path, binaries: Binaries
) -> None:
    first = ControlPlane(tmp_path / "plane", binaries)
    first.start()
    left = [c.process for c in first.components if c.process is not None]
    first.components = []  # as if the launcher had crashed: its processes run on
    second = ControlPlane(tmp_path / "plane", binaries)
    try:
        second.start()
        for process in left:  # killed through the pid files, so they end
            assert process.wait(timeout=10) != 0
    finally:
        second.stop()
    assert list((tmp_path / "plane" / "pids").glob("*.pid")) == []


def test_a_component_that_dies_is_named_with_its_log(tmp_path: Path, binaries: Binaries) -> None:
    broken = tmp_path / "bin"
    broken.mkdir()
    for name in COMPONENTS:
        (broken / name).symlink_to(binaries.path(name))
    (broken / "kube-apiserver").unlink()
    (broken / "kube-apiserver").write_text("#!/bin/sh\necho 'unknown flag: --nope' >&2\nexit 3\n")
    os.chmod(broken / "kube-apiserver", 0o755)
    plane = ControlPlane(tmp_path / "plane", Binaries(broken))
    with pytest.raises(ControlPlaneError, match=r"kube-apiserver exited with code 3[\s\S]*--nope"):
        plane.start()
    assert plane.components == []  # what had started (etcd) was stopped
    assert list((tmp_path / "plane" / "pids").glob("*.pid")) == []


def test_a_restarted_api_server_keeps_its_address_and_its_data(
    tmp_path: Path, binaries: Binaries
) -> None:
    """What the chaos runner does to it: the same port, the same etcd, a new process."""
    with ControlPlane(tmp_path / "plane", binaries) as plane:
        name = f"kept-{uuid.uuid4().hex[:6]}"
        assert kubectl(plane, "create", "namespace", name).returncode == 0
        (api,) = [c for c in plane.components if c.name == "kube-apiserver"]
        before = api.process
        assert before is not None
        plane.restart("kube-apiserver", grace_seconds=2)
        assert before.poll() is not None
        assert api.process is not None
        assert api.process.pid != before.pid
        pid_file = tmp_path / "plane" / "pids" / "kube-apiserver.pid"
        assert pid_file.read_text().strip() == str(api.process.pid)
        found = kubectl(plane, "get", "namespace", name, "-o", "name")
        assert found.stdout.strip() == f"namespace/{name}"
        with pytest.raises(ControlPlaneError, match="no component 'kubelet'"):
            plane.restart("kubelet")
