"""Fixtures for the service tests: a real `voiceops-service` process on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testsupport.service_process import ServiceProcess, start_service


@pytest.fixture(scope="module")
def espeak_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A plain espeak server, fault injection off (as in production)."""
    service = start_service(
        tmp_path_factory.mktemp("espeak"),
        {"VOICEOPS_ENGINE": "espeak", "VOICEOPS_MAX_CONCURRENCY": "4", "VOICEOPS_MAX_QUEUE": "32"},
    )
    yield service
    service.stop()
