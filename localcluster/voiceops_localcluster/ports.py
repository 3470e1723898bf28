"""Loopback ports for test servers, benchmarks and the demo."""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Ports handed out lie below the kernel's ephemeral range: a port picked there can be
# taken as the source port of any outgoing connection (the API server's to etcd, a
# test's HTTP client) between the pick and the server's bind, which made a component
# fail with "address already in use" now and then.
LOWEST_PORT = 10000
ATTEMPTS = 200


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' source ports."""
    try:
        low, high = EPHEMERAL_RANGE_FILE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port below the ephemeral range that nothing is bound to right now (bind soon
    after: a random pick keeps parallel test workers apart)."""
    low, _ = ephemeral_range()
    if low <= LOWEST_PORT + 1000:  # an unusual range: let the OS pick
        with socket.socket() as sock:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])
    for _ in range(ATTEMPTS):
        port = random.randrange(LOWEST_PORT, low)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port on {host} in {LOWEST_PORT}..{low - 1} after {ATTEMPTS} tries")
