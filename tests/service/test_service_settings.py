"""Settings come from VOICEOPS_* env vars (the operator contract) and CLI flags; nonsense fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from voiceops_contract import pod
from voiceops_service.cli import parse_settings
from voiceops_service.settings import ServiceSettings

CONTRACT_ENV = [v for k, v in vars(pod).items() if k.startswith("ENV_") and k != "ENV_PREFIX"]
SCRIPT = str(Path(sys.executable).with_name("voiceops-service"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONTRACT_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("env_name", CONTRACT_ENV)
def test_every_contract_env_var_is_a_setting(env_name: str) -> None:
    field = env_name.removeprefix(pod.ENV_PREFIX).lower()
    assert field in ServiceSettings.model_fields


def test_env_vars_configure_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pod.ENV_ENGINE, "vits")
    monkeypatch.setenv(pod.ENV_MAX_CONCURRENCY, "7")
    monkeypatch.setenv(pod.ENV_BATCH_MAX_DELAY_MS, "2.5")
    monkeypatch.setenv(pod.ENV_FAULT_INJECTION, "true")
    monkeypatch.setenv(pod.ENV_FAULT_TOKEN, "s3cret")
    monkeypatch.setenv(pod.ENV_FALLBACK_ENGINE, "espeak")
    settings = ServiceSettings()
    assert settings.engine == "vits"
    assert settings.max_concurrency == 7
    assert settings.batch_max_delay_ms == 2.5
    assert settings.faults_enabled
    assert settings.fallback_engine == "espeak"
    assert "s3cret" not in repr(settings)


def test_fault_injection_without_token_stays_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pod.ENV_FAULT_INJECTION, "true")
    assert not ServiceSettings().faults_enabled


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        (pod.ENV_MAX_INPUT_CHARS, "5000", "max_input_chars"),
        (pod.ENV_ENGINE, "kokoro", "engine"),
        (pod.ENV_DEVICE, "tpu", "device"),
        (pod.ENV_MAX_CONCURRENCY, "0", "max_concurrency"),
        (pod.ENV_PORT, "70000", "port"),
        (pod.ENV_REQUEST_TIMEOUT_SECONDS, "-1", "request_timeout_seconds"),
    ],
)
def test_nonsense_fails_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError) as error:
        ServiceSettings()
    assert error.value.errors()[0]["loc"] == (field,)


def test_backoff_bounds_are_checked_together() -> None:
    with pytest.raises(ValidationError, match="oom_backoff_max_seconds"):
        ServiceSettings(oom_backoff_initial_seconds=2.0, oom_backoff_max_seconds=1.0)


def test_a_stuck_engine_leaves_the_service_before_liveness_restarts_it() -> None:
    assert ServiceSettings(liveness_stall_seconds=8).readiness_stall_limit_seconds == 4
    assert ServiceSettings(readiness_stall_seconds=3).readiness_stall_limit_seconds == 3
    with pytest.raises(ValidationError, match="readiness_stall_seconds must be <="):
        ServiceSettings(liveness_stall_seconds=2, readiness_stall_seconds=3)


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pod.ENV_PORT, "1234")
    monkeypatch.setenv(pod.ENV_VOICE, "en-gb")
    settings = parse_settings(["--engine", "espeak", "--port", "9000", "--fault-injection"])
    assert settings.port == 9000
    assert settings.voice == "en-gb"
    assert settings.fault_injection is True


def test_cli_rejects_bad_flag_value_with_field_and_env_name() -> None:
    result = subprocess.run(
        [SCRIPT, "--max-concurrency", "0"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "max_concurrency" in result.stderr
    assert "VOICEOPS_MAX_CONCURRENCY" in result.stderr


@pytest.mark.slow
def test_cli_exits_non_zero_when_the_engine_cannot_load(tmp_path: Path) -> None:
    result = subprocess.run(
        [SCRIPT, "--voice", "no-such-voice", "--host", "127.0.0.1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert "no-such-voice" in result.stderr


def test_cli_help_lists_the_issue_flags_with_their_env_vars() -> None:
    result = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--engine", "--voice", "--device", "--host", "--port", "--max-concurrency"):
        assert flag in result.stdout
    assert "VOICEOPS_MAX_QUEUE" in result.stdout
