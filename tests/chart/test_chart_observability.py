"""Alerts and the dashboard use only metrics that exist, and cover what the issue asks."""

from __future__ import annotations

import json
import re
from typing import Any

from testsupport.chart import CHART_DIR, one, render
from voiceops_contract import metrics as contract_metrics
from voiceops_operator import opmetrics

# Series names Prometheus derives from a metric (histograms and counters).
_SUFFIXES = ("_bucket", "_sum", "_count", "_created")
_METRIC_TOKEN = re.compile(r"\bvoiceops_[a-z0-9_]+\b")


def _known_series() -> set[str]:
    names = {spec.name for spec in contract_metrics.ALL}
    names |= {
        getattr(opmetrics, attr)
        for attr in dir(opmetrics)
        if attr.isupper() and isinstance(getattr(opmetrics, attr), str)
        and getattr(opmetrics, attr).startswith("voiceops_operator_")
    }  # fmt: skip
    return names | {name + suffix for name in names for suffix in _SUFFIXES}


def _unknown_metrics(expression: str) -> set[str]:
    return set(_METRIC_TOKEN.findall(expression)) - _known_series()


def _rules() -> list[dict[str, Any]]:
    rule = one(render({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_the_metric_name_check_can_fail() -> None:
    assert _unknown_metrics("rate(voiceops_made_up_total[5m])") == {"voiceops_made_up_total"}
    assert not _unknown_metrics("voiceops_request_duration_seconds_bucket")


def test_alerts_cover_the_failure_modes_with_severity_and_runbook() -> None:
    rules = {r["alert"]: r for r in _rules()}
    assert set(rules) == {
        "VoiceServiceFailedOver", "VoiceServiceDegradedTooLong", "VoiceopsGpuMemoryCritical",
        "VoiceopsOperatorNotReconciling", "VoiceopsCudaOomRate",
    }  # fmt: skip
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert len(rule["annotations"]["runbook"]) > 80, f"{name}: runbook too thin"
        assert rule["annotations"]["summary"], name
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), name


def test_alert_expressions_use_only_real_metric_names() -> None:
    for rule in _rules():
        assert not _unknown_metrics(rule["expr"]), (rule["alert"], _unknown_metrics(rule["expr"]))


def test_alert_phases_are_phases_the_operator_reports() -> None:
    from voiceops_operator.tiers import PHASES

    for rule in _rules():
        for phase in re.findall(r'phase="([A-Za-z]+)"', rule["expr"]):
            assert phase in PHASES, (rule["alert"], phase)


def test_alert_thresholds_follow_values() -> None:
    values = {
        "prometheusRule": {"enabled": True, "gpuMemoryCriticalRatio": 0.8, "degradedFor": "42m"}
    }
    rule = one(render(values), "PrometheusRule")
    rules = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert rules["VoiceopsGpuMemoryCritical"]["expr"].rstrip().endswith("> 0.8")
    assert rules["VoiceServiceDegradedTooLong"]["for"] == "42m"


def _dashboard() -> dict[str, Any]:
    config_map = one(render({"grafanaDashboard": {"enabled": True}}), "ConfigMap")
    return json.loads(config_map["data"]["voiceops.json"])


def test_dashboard_in_the_config_map_is_the_shipped_json() -> None:
    assert _dashboard() == json.loads((CHART_DIR / "dashboards" / "voiceops.json").read_text())


def test_dashboard_has_the_required_sections_and_real_metrics() -> None:
    dashboard = _dashboard()
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Tiers", "Traffic", "Latency", "GPU memory", "Failovers"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(expressions) >= 10
    for expression in expressions:
        assert not _unknown_metrics(expression), (expression, _unknown_metrics(expression))
        assert expression.count("(") == expression.count(")"), expression
    used = {m for e in expressions for m in _METRIC_TOKEN.findall(e)}
    for needed in ("voiceops_operator_transitions_total", "voiceops_gpu_memory_used_bytes",
                   "voiceops_request_duration_seconds_bucket", "voiceops_requests_total",
                   "voiceops_operator_voiceservice_phase"):  # fmt: skip
        assert needed in used, needed


def test_monitors_scrape_the_named_ports() -> None:
    objects = render(
        {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}}
    )
    service_ports = {p["name"] for p in one(objects, "Service")["spec"]["ports"]}
    service_monitor = one(objects, "ServiceMonitor")
    assert {e["port"] for e in service_monitor["spec"]["endpoints"]} <= service_ports
    assert service_monitor["spec"]["endpoints"][0]["honorLabels"] is True
    pod_monitor = one(objects, "PodMonitor")
    # Inference pods serve /metrics on the container port named `http` (team contract).
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert pod_monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "voiceops-service",
        "app.kubernetes.io/managed-by": "voiceops-operator",
    }


def test_pod_monitor_and_network_policy_select_the_pods_the_operator_builds() -> None:
    from voiceops_contract import pod as pod_contract
    from voiceops_operator.cli import render_documents
    from voiceops_operator.settings import OperatorSettings

    example = (CHART_DIR.parents[1] / "examples" / "voiceservice.yaml").read_text()
    built = render_documents(example, "examples/voiceservice.yaml", OperatorSettings())
    deployments = [obj for obj in built if obj["kind"] == "Deployment"]
    assert len(deployments) == 2
    objects = render(
        {"metrics": {"podMonitor": {"enabled": True}}, "networkPolicy": {"enabled": True}}
    )
    selector = one(objects, "PodMonitor")["spec"]["selector"]["matchLabels"]
    egress = one(objects, "NetworkPolicy")["spec"]["egress"]
    scrape_rule = next(rule for rule in egress if "to" in rule)
    assert scrape_rule["to"][0]["podSelector"]["matchLabels"] == selector
    assert scrape_rule["ports"][0]["port"] == pod_contract.DEFAULT_PORT
    for deployment in deployments:
        template = deployment["spec"]["template"]
        assert selector.items() <= template["metadata"]["labels"].items()
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports["http"] == pod_contract.DEFAULT_PORT
