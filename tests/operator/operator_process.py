"""The real operator process (`voiceops-operator run`) against the API emulator (test helper)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from voiceops_sim.apiserver import KubeApiEmulator

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "voiceservice.yaml"
SCRIPT = Path(sys.executable).parent / "voiceops-operator"


class OperatorProcess:
    """Starts/stops `voiceops-operator run` as a subprocess pointed at an emulator."""

    def __init__(self, kubeconfig: Path, log_path: Path, **settings: Any) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEOPS_OPERATOR_")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["VOICEOPS_OPERATOR_HEALTH_PORT"] = "0"
        env["VOICEOPS_OPERATOR_METRICS_PORT"] = "0"
        for key, value in self.settings.items():
            env[f"VOICEOPS_OPERATOR_{key.upper()}"] = str(value)
        log = self.log_path.open("a")
        self.proc = await asyncio.create_subprocess_exec(
            str(SCRIPT), "run", "--all-namespaces", env=env, stdout=log, stderr=log
        )
        log.close()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


async def start_emulator() -> KubeApiEmulator:
    emulator = KubeApiEmulator(crd_files=[CRD_FILE])
    await emulator.start()
    return emulator
