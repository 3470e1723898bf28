"""Every pod the operator creates meets the restricted Pod Security Standard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voiceops_operator.cli import render_documents
from voiceops_operator.settings import OperatorSettings

ALLOWED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def pod_templates(path: Path, settings: OperatorSettings) -> list[dict[str, Any]]:
    objects = render_documents(path.read_text(), str(path), settings)
    return [o["spec"]["template"] for o in objects if o["kind"] == "Deployment"]


def check_restricted(template: dict[str, Any]) -> list[str]:
    """Rules of the restricted profile (Kubernetes docs: Pod Security Standards)."""
    problems = []
    spec = template["spec"]
    pod_sc = spec.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"{key} set")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} of type {kinds}")
    containers = spec.get("containers", []) + spec.get("initContainers", [])
    assert containers
    for c in containers:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation not false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities not drop ALL")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities")
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot missing")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) in (0, None):
            problems.append(f"{name}: runAsUser 0 or unset")
        seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccomp not RuntimeDefault")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem writable")
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        if "/tmp" not in mounts:
            problems.append(f"{name}: no writable /tmp")
        for port in c.get("ports", []):
            if "hostPort" in port:
                problems.append(f"{name}: hostPort")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append("service account token mounted (pods never call the API)")
    return problems


def test_every_pod_template_is_restricted(example_path: Path, settings: OperatorSettings) -> None:
    templates = pod_templates(example_path, settings)
    assert templates
    for template in templates:
        assert check_restricted(template) == []


def test_the_checker_catches_violations(settings: OperatorSettings, example_path: Path) -> None:
    template = pod_templates(example_path, settings)[0]
    container = template["spec"]["containers"][0]
    container["securityContext"]["allowPrivilegeEscalation"] = True
    container["securityContext"]["readOnlyRootFilesystem"] = False
    template["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    problems = check_restricted(template)
    assert len(problems) == 3
