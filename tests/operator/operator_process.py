"""The real operator process (`voiceops-operator run`) against the API emulator (test helper)."""

from __future__ import annotations

import sys
from pathlib import Path

from voiceops_sim.apiserver import KubeApiEmulator
from voiceops_sim.operator_process import OperatorProcess

__all__ = ["CRD_FILE", "OperatorProcess", "start_emulator"]

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "voiceservice.yaml"
SCRIPT = Path(sys.executable).parent / "voiceops-operator"


async def start_emulator() -> KubeApiEmulator:
    emulator = KubeApiEmulator(crd_files=[CRD_FILE])
    await emulator.start()
    return emulator
