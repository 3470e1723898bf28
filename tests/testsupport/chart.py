"""Helpers for the chart, image and script checks: finding tools, rendering the chart.

Tools come from the project's own scripts (`make tools`): helm in .tools/bin,
checkov in .tools/checkov, hadolint/shellcheck/yamllint in the venv. A test
may skip when a tool is missing on a developer's machine, never in CI
(CI=true): there the missing tool is a broken install step and fails.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from testsupport import needs

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "voiceops"
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
CHECKOV_BIN = REPO_ROOT / ".tools" / "checkov" / "bin"
VENV_BIN = Path(sys.executable).parent
RELEASE = "voiceops"
NAMESPACE = "voiceops-system"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
# newest kubernetes-validate==1.37.0 ships: what we render must pass both.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

# Every optional feature on at once.
ALL_FEATURES: dict[str, Any] = {
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "podMonitor": {"enabled": True},
    },
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "networkPolicy": {"enabled": True},
}


def missing(what: str, how: str) -> None:
    """Skip on a developer machine; fail in CI, where the project installs everything."""
    needs.missing(f"{what} is missing: {how}")


def tool(name: str) -> Path:
    """Path of a tool installed by `make tools`, else on PATH."""
    for folder in (TOOLS_BIN, CHECKOV_BIN, VENV_BIN):
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found is None:
        missing(f"the {name} binary", "run `make tools`")
    return Path(str(found))


def run(
    command: list[str | Path], *, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, command))} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def _values_file(values: Mapping[str, Any], folder: Path) -> Path:
    path = folder / "values.yaml"
    path.write_text(json.dumps(values))  # JSON is YAML
    return path


def helm_template(
    values: Mapping[str, Any] | None = None, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    helm = tool("helm")
    with tempfile.TemporaryDirectory(prefix="voiceops-chart-") as tmp:
        command: list[str | Path] = [
            helm, "template", RELEASE, CHART_DIR, "--namespace", NAMESPACE, "--include-crds",
        ]  # fmt: skip
        if values:
            command += ["--values", _values_file(values, Path(tmp))]
        return run(command, check=check)


@functools.lru_cache(maxsize=32)
def _render_cached(values_json: str) -> tuple[str, ...]:
    output = helm_template(json.loads(values_json)).stdout
    docs = [doc for doc in yaml.safe_load_all(output) if doc]
    return tuple(json.dumps(doc, sort_keys=True) for doc in docs)


def render(values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's objects (CRDs included) for these values; cached per values."""
    key = json.dumps(values or {}, sort_keys=True)
    return [json.loads(doc) for doc in _render_cached(key)]


def kinds(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted(str(obj["kind"]) for obj in objects)


def by_kind(objects: Iterable[Mapping[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [dict(obj) for obj in objects if obj["kind"] == kind]


def one(objects: Iterable[Mapping[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def pod_spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "Pod":
        return dict(obj["spec"])
    return dict(obj["spec"]["template"]["spec"])


# Volume types the restricted Pod Security Standard allows.
_RESTRICTED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
     "projected", "secret"}
)  # fmt: skip


def restricted_pss_violations(pod_spec: Mapping[str, Any]) -> list[str]:
    """Rules of the `restricted` Pod Security Standard (v1.30) this pod breaks."""
    problems: list[str] = []
    pod_sc = pod_spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            problems.append(f"spec.{flag} is true")
    for volume in pod_spec.get("volumes") or []:
        kinds_used = set(volume) - {"name"}
        if not kinds_used <= _RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} uses {sorted(kinds_used)}")
    containers = [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]
    for container in containers:
        where = f"container {container['name']}"
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{where}: capabilities.drop lacks ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds capabilities {caps['add']}")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{where}: runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccompProfile.type is {seccomp!r}")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"{where}: uses a hostPort")
    return problems
