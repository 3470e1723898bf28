"""Shared fixtures for the operator tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import KIND

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def voiceservices_in(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [d for d in docs if d.get("kind") == KIND]


def manifest(spec: dict[str, Any] | None = None, name: str = "tts") -> dict[str, Any]:
    return {
        "apiVersion": "voiceops.io/v1alpha1",
        "kind": KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec if spec is not None else {},
    }


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings(_env_file=None)


@pytest.fixture(params=EXAMPLES, ids=[p.name for p in EXAMPLES])
def example_path(request: pytest.FixtureRequest) -> Path:
    return request.param
