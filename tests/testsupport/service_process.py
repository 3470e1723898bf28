"""Helpers for the service tests: start a real `voiceops-service` process, poll, read metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from voiceops_localcluster.ports import free_port

FAULT_TOKEN = "test-fault-token"
STARTUP_DEADLINE_SECONDS = 60.0


def wait_for(
    condition: Callable[[], object], deadline_seconds: float = 10.0, interval: float = 0.02
) -> object:
    """Poll ``condition`` until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + deadline_seconds
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except (httpx.HTTPError, OSError) as error:
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"condition not met within {deadline_seconds}s (last error: {last_error})")


@dataclass
class ServiceProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_service(
    tmp_path: Path, env: dict[str, str], args: list[str] | None = None
) -> ServiceProcess:
    """Start the console script and wait (with a deadline) until /readyz says ready."""
    port = free_port()
    log_path = tmp_path / f"service-{port}.log"
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("VOICEOPS_")}
    full_env.update({"VOICEOPS_HOST": "127.0.0.1", "VOICEOPS_PORT": str(port), **env})
    executable = Path(sys.executable).with_name("voiceops-service")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(executable), *(args or [])], env=full_env, stdout=log_file, stderr=log_file
        )
    service = ServiceProcess(process, port, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"service exited with {process.returncode}:\n{service.log()}")
        return httpx.get(f"{service.url}/readyz", timeout=1.0).status_code == 200

    try:
        wait_for(ready, STARTUP_DEADLINE_SECONDS, interval=0.05)
    except BaseException:
        service.stop()
        raise
    return service


def speech(client: httpx.Client, **body: object) -> httpx.Response:
    payload = {"model": "tts-1", "input": "Hello from the voice service.", **body}
    return client.post("/v1/audio/speech", json=payload)


def assert_envelope(response: httpx.Response, status: int, param: str | None) -> dict[str, object]:
    """The response is ``status`` in OpenAI's error envelope naming ``param``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["param"] == param, error
    return error


def metric_value(service: ServiceProcess, name: str, **labels: str) -> float | None:
    """One sample from the live /metrics (parsed with prometheus_client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{service.url}/metrics", timeout=5.0).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None
