"""Fixtures for the chart, image and script checks (helpers live in testsupport.chart)."""

from __future__ import annotations

from pathlib import Path

import pytest
from testsupport.chart import REPO_ROOT, tool


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def helm() -> Path:
    return tool("helm")
