"""Fixtures every test folder may use: real Kubernetes control planes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from testsupport.needs import missing
from voiceops_localcluster.control_plane import ControlPlane
from voiceops_localcluster.kube_binaries import BinariesError, find


@pytest.fixture(scope="session")
def new_control_plane(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ControlPlane]]:
    """Starts a control plane (etcd, kube-apiserver, controller manager, scheduler), healthy.

    Each one is stopped at the end of the session at the latest. Missing binaries
    skip on a developer machine and fail under CI=true, where ``make test`` builds
    them first (``python -m voiceops_localcluster.kube_binaries``).
    """
    started: list[ControlPlane] = []

    def start(*, audit: bool = False, metrics_server: bool = False) -> ControlPlane:
        try:
            binaries = find()
        except BinariesError as error:
            binaries, problem = None, str(error)
        else:
            problem = "run `make kube-binaries` (python -m voiceops_localcluster.kube_binaries)"
        if binaries is None:
            missing(f"the control plane's binaries are missing: {problem}")
        plane = ControlPlane(
            tmp_path_factory.mktemp("control-plane"), binaries, audit=audit,
            metrics_server=metrics_server,
        )  # fmt: skip
        started.append(plane)
        plane.start()
        return plane

    try:
        yield start
    finally:
        for plane in started:
            plane.stop()


@pytest.fixture(scope="session")
def control_plane(new_control_plane: Callable[..., ControlPlane]) -> ControlPlane:
    """One control plane for the session; each test takes a namespace of its own."""
    return new_control_plane()
