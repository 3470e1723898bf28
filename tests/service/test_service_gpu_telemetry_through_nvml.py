"""The service's real NVML path (nvidia-ml-py) against the fake libnvidia-ml.so.1 (tools/fake-nvml).

Each test starts a real ``voiceops-service`` process whose ``LD_LIBRARY_PATH``
finds the fake library first; the fake reads the GPU's state from a file the
test rewrites, so memory, XIDs, ECC errors, a lost GPU and failing NVML calls
enter where real ones do. Every wait has a deadline; nothing sleeps.
"""

from __future__ import annotations

import ctypes.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from testsupport.needs import build_fake_nvml
from testsupport.service_process import (
    FAULT_TOKEN,
    ServiceProcess,
    metric_value,
    start_service,
    wait_for,
)
from voiceops_contract import metrics as contract

pytestmark = pytest.mark.slow

GIB = 2**30
UUID0 = "GPU-11111111-2222-3333-4444-000000000000"
UUID1 = "GPU-11111111-2222-3333-4444-000000000001"
POLL = "0.05"  # seconds between GPU polls: quick tests, same code path
DEADLINE = 15.0

HEALTHY = contract.GPU_HEALTHY.name
XIDS = contract.GPU_XID_ERRORS_TOTAL.name
USED = contract.GPU_MEMORY_USED_BYTES.name


@pytest.fixture(scope="session")
def fake_nvml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding the fake libnvidia-ml.so.1, built once per session (per worker)."""
    return build_fake_nvml(tmp_path_factory.mktemp("fake-nvml"))


class GpuState:
    """The fake library's state file; every change is one atomic rename."""

    def __init__(self, path: Path, **values: object) -> None:
        self.path = path
        self.values: dict[str, str] = {}
        self.set(**values)

    def set(self, **values: object) -> None:
        """Keys as in tools/fake-nvml/README.md, with ``__`` for the dot: gpu0__lost=1."""
        for key, value in values.items():
            self.values[key.replace("__", ".")] = str(value)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text("".join(f"{key}={value}\n" for key, value in self.values.items()))
        partial.replace(self.path)


def one_gpu(path: Path) -> GpuState:
    return GpuState(
        path,
        device_count=1,
        gpu0__name="NVIDIA H100 80GB HBM3",
        gpu0__uuid=UUID0,
        gpu0__memory_total=80 * GIB,
        gpu0__memory_used=30 * GIB,
        gpu0__utilization_gpu=42,
    )


@pytest.fixture
def services() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for service in started:
        service.stop()


StartFn = Callable[..., ServiceProcess]


@pytest.fixture
def start(
    fake_nvml: Path, tmp_path: Path, services: list[ServiceProcess]
) -> Callable[..., ServiceProcess]:
    """Start an espeak service that loads NVML from ``library_dir`` (default: the fake)."""

    def run(state: GpuState | None, library_dir: Path | None = None, **env: str) -> ServiceProcess:
        library_path = [str(library_dir or fake_nvml), os.environ.get("LD_LIBRARY_PATH", "")]
        full_env = {
            "VOICEOPS_ENGINE": "espeak",
            "VOICEOPS_GPU_POLL_INTERVAL_SECONDS": POLL,
            "LD_LIBRARY_PATH": ":".join(p for p in library_path if p),
            "VOICEOPS_FAKE_NVML_STATE": str(state.path if state else tmp_path / "no-state"),
            **env,
        }
        service = start_service(tmp_path, full_env)
        services.append(service)
        return service

    return run


def readyz(service: ServiceProcess) -> tuple[int, dict]:
    response = httpx.get(f"{service.url}/readyz", timeout=5.0)
    return response.status_code, response.json()


def health_of(service: ServiceProcess, gpu: str = "0") -> dict:
    _, body = readyz(service)
    return next(h for h in body["gpu"]["health"] if h["gpu"] == gpu)


def unready_for_gpu(service: ServiceProcess) -> dict | None:
    status, body = readyz(service)
    return body if status == 503 and "gpu_unhealthy" in body["reasons"] else None


def test_memory_and_utilization_come_from_nvml(start: StartFn, tmp_path: Path) -> None:
    state = one_gpu(tmp_path / "gpu-state")
    service = start(state)
    wait_for(lambda: metric_value(service, USED, gpu="0") == 30 * GIB, DEADLINE)
    assert metric_value(service, contract.GPU_MEMORY_TOTAL_BYTES.name, gpu="0") == 80 * GIB
    assert metric_value(service, contract.GPU_UTILIZATION_RATIO.name, gpu="0") == 0.42
    assert metric_value(service, HEALTHY, gpu="0", uuid=UUID0, reason="ok") == 1
    status, body = readyz(service)
    assert status == 200, body
    assert body["gpu"]["nvml"] is True
    assert body["gpu"]["health"][0]["name"] == "NVIDIA H100 80GB HBM3"
    state.set(gpu0__memory_used=70 * GIB)  # read at run time, as the chaos runner moves it
    wait_for(lambda: metric_value(service, USED, gpu="0") == 70 * GIB, DEADLINE)


def test_a_fatal_xid_makes_the_pod_unready_and_a_non_fatal_one_is_only_counted(
    start: StartFn, tmp_path: Path
) -> None:
    state = GpuState(
        tmp_path / "gpu-state",
        device_count=2,
        gpu0__uuid=UUID0,
        gpu1__uuid=UUID1,
        gpu1__name="NVIDIA H200",
    )
    service = start(state)
    state.set(gpu1__xids="13")
    wait_for(lambda: health_of(service, "1")["xids"] == {"13": 1}, DEADLINE)
    assert metric_value(service, XIDS, gpu="1", xid="13") == 1
    status, body = readyz(service)
    assert status == 200, body  # counted and shown, not acted on
    assert metric_value(service, HEALTHY, gpu="1", uuid=UUID1, reason="ok") == 1

    state.set(gpu1__xids="13,79")
    body = wait_for(lambda: unready_for_gpu(service), DEADLINE)
    message = body["messages"]["gpu_unhealthy"]
    assert "GPU 1" in message
    assert UUID1 in message
    assert "XID 79" in message
    assert UUID0 not in message  # the healthy GPU is not blamed
    assert metric_value(service, HEALTHY, gpu="1", uuid=UUID1, reason="xid_79") == 0
    assert metric_value(service, HEALTHY, gpu="1", uuid=UUID1, reason="ok") is None
    assert metric_value(service, HEALTHY, gpu="0", uuid=UUID0, reason="ok") == 1
    assert metric_value(service, XIDS, gpu="1", xid="79") == 1
    assert metric_value(service, XIDS, gpu="1", xid="13") == 1  # each event counted once
    assert contract.gpu_health_fatal_xid("xid_79") == 79
    assert httpx.get(f"{service.url}/healthz", timeout=5.0).status_code == 200  # alive

    service.stop()  # clean shutdown with NVML open and an event set registered
    assert service.process.returncode in (0, -15)  # uvicorn re-raises SIGTERM once done
    assert "Application shutdown complete." in service.log()
    assert "Traceback" not in service.log()


def test_uncorrectable_ecc_errors_make_the_gpu_unhealthy_while_they_last(
    start: StartFn, tmp_path: Path
) -> None:
    state = one_gpu(tmp_path / "gpu-state")
    service = start(state)
    state.set(gpu0__ecc_volatile_uncorrected=2)
    body = wait_for(lambda: unready_for_gpu(service), DEADLINE)
    assert "2 volatile uncorrectable ECC" in body["messages"]["gpu_unhealthy"]
    assert UUID0 in body["messages"]["gpu_unhealthy"]
    assert metric_value(service, HEALTHY, gpu="0", uuid=UUID0, reason="ecc_uncorrectable") == 0
    state.set(gpu0__ecc_volatile_uncorrected=0)  # the driver reloaded: volatile counts reset
    wait_for(lambda: readyz(service)[0] == 200, DEADLINE)
    assert metric_value(service, HEALTHY, gpu="0", uuid=UUID0, reason="ok") == 1


def test_a_lost_gpu_is_unhealthy_and_exports_no_stale_memory(
    start: StartFn, tmp_path: Path
) -> None:
    state = one_gpu(tmp_path / "gpu-state")
    service = start(state)
    wait_for(lambda: metric_value(service, USED, gpu="0") == 30 * GIB, DEADLINE)
    state.set(gpu0__lost=1)
    body = wait_for(lambda: unready_for_gpu(service), DEADLINE)
    assert "GPU is lost" in body["messages"]["gpu_unhealthy"]
    assert metric_value(service, HEALTHY, gpu="0", uuid=UUID0, reason="gpu_lost") == 0
    assert metric_value(service, USED, gpu="0") is None


def test_nvml_failing_mid_run_is_unhealthy_not_a_crash(start: StartFn, tmp_path: Path) -> None:
    state = one_gpu(tmp_path / "gpu-state")
    service = start(state)
    state.set(fail=1)
    body = wait_for(lambda: unready_for_gpu(service), DEADLINE)
    assert "Unknown Error" in body["messages"]["gpu_unhealthy"]
    assert metric_value(service, HEALTHY, gpu="0", uuid=UUID0, reason="nvml_error") == 0
    assert httpx.get(f"{service.url}/healthz", timeout=5.0).status_code == 200
    state.set(fail=0)  # NVML answers again: healthy again (no XID was seen)
    wait_for(lambda: readyz(service)[0] == 200, DEADLINE)
    wait_for(lambda: metric_value(service, USED, gpu="0") == 30 * GIB, DEADLINE)
    assert service.process.poll() is None


def test_nvml_failing_from_the_start_is_the_nvml_error_path(start: StartFn, tmp_path: Path) -> None:
    state = GpuState(tmp_path / "gpu-state", fail=1)
    service = start(state)  # espeak needs no GPU: ready, and says why there is no telemetry
    _, body = readyz(service)
    assert body["gpu"]["nvml"] is False
    assert "NVMLError_Unknown" in body["gpu"]["nvml_error"]
    assert body["gpu"]["health"] == []
    assert metric_value(service, HEALTHY, gpu="0") is None


def test_without_the_library_nvml_says_why(start: StartFn, tmp_path: Path) -> None:
    if ctypes.util.find_library("nvidia-ml") is not None:
        # Missing here: a machine without NVML (a GPU machine's driver library cannot be
        # hidden from the loader); CI machines have none, so it runs there.
        pytest.skip("needs a machine without libnvidia-ml; this one has the driver's")
    empty = tmp_path / "no-libraries"
    empty.mkdir()
    service = start(None, library_dir=empty)
    _, body = readyz(service)
    assert body["gpu"]["nvml"] is False
    assert "NVMLError_LibraryNotFound" in body["gpu"]["nvml_error"]
    assert metric_value(service, USED, gpu="0") is None
    assert metric_value(service, HEALTHY, gpu="0") is None


def test_the_fault_endpoint_still_overrides_nvml_memory(start: StartFn, tmp_path: Path) -> None:
    state = one_gpu(tmp_path / "gpu-state")
    service = start(state, VOICEOPS_FAULT_INJECTION="true", VOICEOPS_FAULT_TOKEN=FAULT_TOKEN)
    auth = {"Authorization": f"Bearer {FAULT_TOKEN}"}
    wait_for(lambda: metric_value(service, USED, gpu="0") == 30 * GIB, DEADLINE)
    response = httpx.post(
        f"{service.url}/admin/faults",
        json={"gpu_memory": {"used_bytes": 79 * GIB, "total_bytes": 80 * GIB}},
        headers=auth,
        timeout=5.0,
    )
    assert response.status_code == 200, response.text
    wait_for(lambda: metric_value(service, USED, gpu="0") == 79 * GIB, DEADLINE)
    assert httpx.delete(f"{service.url}/admin/faults", headers=auth, timeout=5.0).is_success
    wait_for(lambda: metric_value(service, USED, gpu="0") == 30 * GIB, DEADLINE)
