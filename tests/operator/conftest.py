"""Shared fixtures for the operator tests (plain helpers live in testsupport/manifests.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from testsupport.manifests import EXAMPLES
from voiceops_operator.settings import OperatorSettings


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings(_env_file=None)


@pytest.fixture(params=EXAMPLES, ids=[p.name for p in EXAMPLES])
def example_path(request: pytest.FixtureRequest) -> Path:
    return request.param
