"""Fixtures every test folder may use: the real Kubernetes control plane, once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from voiceops_sim.control_plane import ControlPlane
from voiceops_sim.kube_binaries import BinariesError, find


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler, healthy.

    Missing binaries skip on a developer machine and fail under CI=true, where
    ``make test`` builds them first (``python -m voiceops_sim.kube_binaries``).
    """
    try:
        binaries = find()
    except BinariesError as error:
        binaries, problem = None, str(error)
    else:
        problem = "run `python -m voiceops_sim.kube_binaries` (or `make kube-binaries`) once"
    if binaries is None:
        message = f"the control plane's binaries are missing: {problem}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"), binaries)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()
