"""Fixtures for the chart, image and script checks (helpers live in chart_support)."""

from __future__ import annotations

from pathlib import Path

import pytest
from chart_support import REPO_ROOT, tool


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def helm() -> Path:
    return tool("helm")
