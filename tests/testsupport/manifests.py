"""Helpers for the operator tests: the repository root, the examples, VoiceService manifests.

A module of its own (not conftest.py) so tests can import it by a name no other
test directory uses: several directories have a conftest.py, and importing
``from conftest`` resolved to whichever was imported first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
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
