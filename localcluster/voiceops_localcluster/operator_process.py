"""The real operator (``voiceops-operator run``) as a child process against a kubeconfig.

One helper for the demo, the operator's integration tests and benchmarks, so
they all start, configure and stop the operator the same way.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from .ports import free_port

OPERATOR_SCRIPT = Path(sys.executable).parent / "voiceops-operator"
SETTINGS_PREFIX = "VOICEOPS_OPERATOR_"


class OperatorProcess:
    """Start/stop the operator; ``settings`` become ``VOICEOPS_OPERATOR_<NAME>`` variables.

    Inherited ``VOICEOPS_OPERATOR_*`` variables are dropped so only what the
    caller asks for applies. The health port is off; the metrics port is a
    free one (``metrics_port``). No namespaces = all namespaces. The routing key
    (which signs routing notices to the pods) is made once per instance, so a
    restarted operator builds the same pod templates, as the chart's kept key does.
    """

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *,
        namespaces: Sequence[str] = (),
        **settings: Any,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.namespaces = tuple(namespaces)
        self.metrics_port = int(settings.pop("metrics_port", 0)) or free_port()
        self.settings = {
            "health_port": 0,
            "routing_key": base64.b64encode(os.urandom(32)).decode(),
            **settings,
        }
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIX)}
        env["KUBECONFIG"] = str(self.kubeconfig)
        env[f"{SETTINGS_PREFIX}METRICS_PORT"] = str(self.metrics_port)
        for key, value in self.settings.items():
            env[f"{SETTINGS_PREFIX}{key.upper()}"] = str(value)
        scope = [a for ns in self.namespaces for a in ("--namespace", ns)] or ["--all-namespaces"]
        with self.log_path.open("ab") as out:  # the child keeps its own copy of the fd
            self.proc = await asyncio.create_subprocess_exec(
                str(OPERATOR_SCRIPT), "run", *scope, env=env, stdout=out, stderr=out
            )

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def kill(self) -> None:
        """SIGKILL: the operator gets no chance to finish anything."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.kill()
        await self.proc.wait()

    def exited(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return None if self.proc is None else self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    async def metrics(self) -> str:
        """The operator's own ``/metrics`` page."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            response.raise_for_status()
            return await response.text()
