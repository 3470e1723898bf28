"""Security checks: restricted PSS, probes, checkov over the chart and the operator's objects,
hadolint and checkov over the Dockerfile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from testsupport.chart import (
    ALL_FEATURES,
    REPO_ROOT,
    deep_merge,
    missing,
    one,
    pod_spec_of,
    render,
    restricted_pss_violations,
    run,
    tool,
)

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Pod"}

# checkov findings on the objects the *operator* builds (voiceops-operator
# render examples/*.yaml), each skipped for a stated reason. The chart's own
# objects carry their skips as checkov.io/skipN annotations next to the code.
OPERATOR_OBJECT_SKIPS: dict[str, str] = {
    "CKV_K8S_21": "children go to their VoiceService's namespace; the examples use `default` "
    "so that a quick start needs no namespace",
    "CKV_K8S_43": "service images are chosen by the user (operator settings or spec.image); "
    "pin them by digest there",
    "CKV_K8S_15": "IfNotPresent keeps kind and air-gapped clusters working; digests make "
    "tags immutable",
    "CKV_K8S_11": "no CPU limits on inference pods on purpose: CFS throttling adds synthesis "
    "latency; requests are set",
    "CKV_K8S_35": "the fault-injection token reaches the service as VOICEOPS_FAULT_TOKEN "
    "(voiceops_contract.pod), and only in chaos-test examples",
}


def _workloads(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [obj for obj in render(values) if obj["kind"] in WORKLOAD_KINDS]


@pytest.mark.parametrize(
    "values", [{}, {"replicas": 2}, ALL_FEATURES], ids=["default", "ha", "all-features"]
)
def test_every_chart_pod_meets_the_restricted_pod_security_standard(values: dict[str, Any]) -> None:
    workloads = _workloads(values)
    assert {w["kind"] for w in workloads} >= {"Pod"}  # the helm test pod at least
    for workload in workloads:
        problems = restricted_pss_violations(pod_spec_of(workload))
        assert not problems, f"{workload['kind']}/{workload['metadata']['name']}: {problems}"


def test_the_pss_checker_catches_a_root_privileged_pod() -> None:
    # The checker must be able to fail: a pod that breaks several rules.
    bad = {
        "hostNetwork": True,
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"privileged": True, "runAsUser": 0}}],
    }
    problems = restricted_pss_violations(bad)
    assert len(problems) >= 6, problems


def test_operator_liveness_and_startup_probe_kopf_health_endpoint() -> None:
    container = pod_spec_of(one(render({}), "Deployment"))["containers"][0]
    for probe in ("livenessProbe", "startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    health_port = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VOICEOPS_OPERATOR_HEALTH_PORT"] == str(health_port)


def test_helm_test_hook_checks_the_operator_health_endpoint() -> None:
    pod = one(render({}), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    assert "http://voiceops-metrics.voiceops-system.svc:8081/healthz" in script
    compile(script, "helm-test", "exec")  # the inline Python is valid


def _checkov(paths: list[Path], skips: dict[str, str] | None = None) -> dict[str, Any]:
    checkov = tool("checkov")
    command: list[str | Path] = [
        checkov, "--framework", "kubernetes", "--output", "json", "--quiet", "--skip-download",
    ]  # fmt: skip
    for path in paths:
        command += ["--file", path]
    if skips:
        command += ["--skip-check", ",".join(sorted(skips))]
    result = run(command, check=False)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    return (
        report
        if isinstance(report, dict)
        else {"results": {"failed_checks": []}, "reports": report}
    )


def _failures(report: dict[str, Any]) -> list[str]:
    reports = report.get("reports", [report])
    return [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for rep in reports
        for check in rep.get("results", {}).get("failed_checks", [])
    ]


@pytest.mark.slow
def test_checkov_passes_on_the_chart(tmp_path: Path) -> None:
    paths = []
    profiles = {
        "default": {},
        "all": deep_merge(ALL_FEATURES, {"replicas": 2, "watchNamespaces": ["tts"]}),
        "digest": {"image": {"digest": "sha256:" + "ab" * 32}},
    }
    for name, values in profiles.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(render(values)))
        paths.append(path)
    report = _checkov(paths)
    assert not _failures(report), "\n".join(_failures(report))
    summaries = [rep.get("summary", {}) for rep in report.get("reports", [report])]
    assert sum(s.get("passed", 0) for s in summaries) > 100  # checkov really ran


@pytest.mark.slow
def test_checkov_passes_on_the_operators_rendered_examples(tmp_path: Path) -> None:
    examples = sorted((REPO_ROOT / "examples").glob("*.yaml"))
    if not examples:
        missing("examples/*.yaml", "the operator's examples are not in the tree")
    operator_cli = tool("voiceops-operator")
    paths = []
    for example in examples:
        rendered = run([operator_cli, "render", example]).stdout
        assert rendered.strip(), f"render {example.name} printed nothing"
        path = tmp_path / example.name
        path.write_text(rendered)
        paths.append(path)
    report = _checkov(paths, OPERATOR_OBJECT_SKIPS)
    assert not _failures(report), "\n".join(_failures(report))


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = run([tool("hadolint"), "--no-color", REPO_ROOT / "Dockerfile"], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hadolint_ignore_is_justified() -> None:
    lines = (REPO_ROOT / "Dockerfile").read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line or "checkov:skip=" in line:
            reason = line.split(":", 2)[-1] if "checkov" in line else lines[number - 1]
            assert reason.strip().lstrip("#").strip(), f"Dockerfile:{number + 1} has no reason"


@pytest.mark.slow
def test_checkov_passes_on_the_dockerfile() -> None:
    checkov = tool("checkov")
    result = run(
        [checkov, "--framework", "dockerfile", "--file", REPO_ROOT / "Dockerfile",
         "--output", "json", "--quiet", "--skip-download"],
        check=False,
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert not _failures(report), "\n".join(_failures(report))
    assert report["summary"]["passed"] > 50
