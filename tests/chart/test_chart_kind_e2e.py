"""e2e/kind: the script is shellcheck-clean, fails fast without docker/kind, and its
kind profile renders a valid, GPU-free VoiceService."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from testsupport.chart import REPO_ROOT, helm_template, run, tool

KIND_DIR = REPO_ROOT / "e2e" / "kind"
SCRIPT = KIND_DIR / "run.sh"


def test_kind_script_is_shellcheck_clean() -> None:
    result = run([tool("shellcheck"), "--severity=style", SCRIPT], check=False)
    assert result.returncode == 0, result.stdout


def test_kind_script_is_strict_and_executable() -> None:
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(SCRIPT, os.X_OK)


def _bin_with(tmp_path: Path, fakes: dict[str, str]) -> dict[str, str]:
    """A PATH holding only `dirname` and the given fake commands (shell snippets)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    dirname = shutil.which("dirname")
    assert dirname
    (folder / "dirname").symlink_to(dirname)
    for name, body in fakes.items():
        fake = folder / name
        fake.write_text(f"#!/bin/sh\n{body}\n")
        fake.chmod(0o755)
    return {"PATH": str(folder), "HOME": str(tmp_path)}


def test_kind_script_fails_fast_naming_missing_docker_and_kind(tmp_path: Path) -> None:
    env = _bin_with(tmp_path, {"kubectl": "exit 0", "helm": "exit 0", "curl": "exit 0"})
    result = run(["/bin/bash", SCRIPT], check=False, env=env, timeout=20)
    assert result.returncode == 1
    assert "missing: docker kind." in result.stderr, result.stderr
    assert "kind.sigs.k8s.io" in result.stderr


def test_kind_script_fails_fast_when_the_docker_daemon_is_down(tmp_path: Path) -> None:
    fakes = {name: "exit 0" for name in ("kind", "kubectl", "helm", "curl")}
    fakes["docker"] = 'echo "Cannot connect to the Docker daemon" >&2; exit 1'
    fakes["kind"] = 'echo "kind must not be called" >&2; exit 99'
    result = run(["/bin/bash", SCRIPT], check=False, env=_bin_with(tmp_path, fakes), timeout=20)
    assert result.returncode == 1
    assert "daemon is not reachable" in result.stderr, result.stderr
    assert "must not be called" not in result.stderr


def _kind_voiceservice() -> dict:
    kubectl = tool("kubectl")
    result = run([kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", KIND_DIR])
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert len(documents) == 1
    return documents[0]


def test_kind_profile_is_the_example_without_gpus() -> None:
    from voiceops_operator.spec import parse_voiceservice

    manifest = _kind_voiceservice()
    example = yaml.safe_load((REPO_ROOT / "examples" / "voiceservice.yaml").read_text())
    assert manifest["metadata"]["name"] == example["metadata"]["name"]
    # Still the VITS voice; model changes swap in place (the chaos catalogue's scenario).
    assert manifest["spec"]["model"] == {**example["spec"]["model"], "updateStrategy": "InPlace"}
    vs = parse_voiceservice(manifest)  # the operator's own validation accepts it
    assert vs.spec.gpu.count == 0
    assert vs.spec.autoscaling.enabled is False


def test_kind_profile_builds_gpu_tier_pods_without_gpu_requests_on_cpu() -> None:
    from voiceops_contract import pod as pod_contract
    from voiceops_operator.cli import render_documents
    from voiceops_operator.settings import OperatorSettings

    values = yaml.safe_load((KIND_DIR / "values-kind.yaml").read_text())
    settings = OperatorSettings(
        service_image=values["serviceImages"]["cpu"],
        service_gpu_image=values["serviceImages"]["gpu"],
    )
    built = render_documents(yaml.safe_dump(_kind_voiceservice()), "kind", settings)
    gpu_tier = next(
        o for o in built if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-gpu")
    )
    container = gpu_tier["spec"]["template"]["spec"]["containers"][0]
    limits = container.get("resources", {}).get("limits", {})
    assert not [name for name in limits if "gpu" in name], limits
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[pod_contract.ENV_ENGINE] == "vits"
    assert env[pod_contract.ENV_DEVICE] == "cpu"
    assert container["image"] == "voiceops/service:0.1.0"


def test_kind_chart_values_pass_the_chart_schema() -> None:
    values = yaml.safe_load((KIND_DIR / "values-kind.yaml").read_text())
    assert helm_template(values).returncode == 0


YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable,"
    " truthy: {check-keys: false}}}"
)
YAML_SOURCES = [
    "e2e/kind/values-kind.yaml",
    "e2e/kind/kustomization.yaml",
    "e2e/kind/voiceservice-kind-patch.yaml",
    "charts/voiceops/values.yaml",
    "charts/voiceops/Chart.yaml",
    "charts/voiceops/crds/kopf-peering.yaml",
]


@pytest.mark.parametrize("path", YAML_SOURCES)
def test_yaml_sources_pass_yamllint(path: str) -> None:
    config = YAMLLINT_CONFIG
    result = run([tool("yamllint"), "--strict", "-d", config, REPO_ROOT / path], check=False)
    assert result.returncode == 0, result.stdout


def test_kind_speech_request_is_one_the_service_accepts() -> None:
    import json
    import re

    from voiceops_service.speech import OPENAI_MODELS, SpeechBody

    body = re.search(r"-d '(\{[^']*\})'", SCRIPT.read_text())
    assert body, "no speech request body in run.sh"
    request = SpeechBody.model_validate(json.loads(body.group(1)))
    assert request.model in OPENAI_MODELS  # accepted whichever tier answers
    assert request.response_format == "wav"  # the script checks the RIFF header
