"""Operator settings: env prefix, defaults, validation."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError
from voiceops_operator.settings import OperatorSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("VOICEOPS_OPERATOR_"):
            monkeypatch.delenv(key)
    settings = OperatorSettings()
    assert settings.service_image == "voiceops/service:0.1.0"
    assert settings.service_gpu_image == "voiceops/service-gpu:0.1.0"
    assert settings.namespaces == ()
    assert settings.scrape_interval_seconds == 5
    assert settings.scrape_timeout_seconds == 1
    assert settings.prometheus_url == ""
    assert (settings.metrics_port, settings.health_port) == (8080, 8081)
    assert settings.standalone
    assert settings.priority == 0
    assert settings.log_format == "plain"


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEOPS_OPERATOR_NAMESPACES", "speech, demo ,")
    monkeypatch.setenv("VOICEOPS_OPERATOR_PEERING", "voiceops")
    monkeypatch.setenv("VOICEOPS_OPERATOR_LOG_FORMAT", "json")
    settings = OperatorSettings()
    assert settings.namespaces == ("speech", "demo")
    assert not settings.standalone
    assert settings.log_format == "json"


def test_nonsense_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEOPS_OPERATOR_SCRAPE_TIMEOUT_SECONDS", "-1")
    with pytest.raises(ValidationError, match="scrape_timeout_seconds"):
        OperatorSettings()
