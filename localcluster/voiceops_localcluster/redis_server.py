"""A real ``redis-server`` process on a loopback port, for the job tests, benchmarks and chaos.

Append-only file on and fsync'd on every write, so a restarted (even a SIGKILLed)
server comes back with every job; the data lives in the directory it is given.
``redis-server`` comes from the Debian package of that name (``make test`` installs it).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from voiceops_localcluster.ports import free_port

START_DEADLINE_SECONDS = 10.0


class RedisServerMissingError(RuntimeError):
    """No ``redis-server`` on the PATH."""


def find_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RedisServerMissingError(
            "redis-server is not on the PATH: apt-get install -y redis-server "
            "(make test installs it when it runs as root)"
        )
    return path


class RedisServer:
    def __init__(
        self, directory: Path, *, host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        self.directory = directory
        self.host = host
        self.port = port or free_port(host)
        self.executable = find_redis_server()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self) -> None:
        """Start (or start again, on the same port and data) and wait until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.executable,
                    "--port", str(self.port),
                    "--bind", self.host,
                    "--dir", str(self.directory),
                    "--appendonly", "yes",
                    "--appendfsync", "always",
                    "--save", "",
                    "--protected-mode", "no",
                    "--daemonize", "no",
                ],
                stdout=log,
                stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_path.read_text()[-2000:]}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {START_DEADLINE_SECONDS}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what the append-only file holds survives."""
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
