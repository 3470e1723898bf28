"""What a test needs from the machine: skipped without it on a developer's machine, failed in CI.

Under CI=true `make test` has installed everything (apt packages, npm, the control
plane's binaries, gcc), so a missing piece there is a broken install step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest
from voiceops_localcluster import pod_network

FAKE_NVML_BUILD = Path(__file__).resolve().parents[2] / "tools" / "fake-nvml" / "build.sh"


def missing(what: str) -> NoReturn:
    """Skip naming ``what`` is missing; fail instead under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(what)
    pytest.skip(what)


def network_namespaces() -> None:
    """Pods in network namespaces of their own need root (``ip netns``)."""
    reason = pod_network.available()
    if reason is not None:
        missing(reason)


def build_fake_nvml(out: Path) -> Path:
    """Build the test-double libnvidia-ml.so.1 (tools/fake-nvml) into ``out``; returns ``out``."""
    compiler = os.environ.get("CC", "gcc")
    if shutil.which(compiler) is None:
        missing(f"{compiler} not found: cannot build the fake NVML library (tools/fake-nvml)")
    result = subprocess.run(
        ["bash", str(FAKE_NVML_BUILD), str(out)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert (out / "libnvidia-ml.so.1").is_file()
    return out
