"""Pod addresses without a pod network: loopback addresses and their 10.244/14 twins.

The API server refuses loopback addresses in EndpointSlices, so a pod that binds
``127.B.C.D`` reports ``10.(244+B).C.D`` as its pod IP (:func:`pod_ip_for`,
:func:`host_ip_for`). :class:`IpPool` hands out the loopback addresses.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from typing import Any

Obj = dict[str, Any]
POD_NETWORK = ipaddress.ip_network("10.244.0.0/14")


def pod_ip_for(host_ip: str) -> str:
    """The pod IP that stands for loopback address ``127.B.C.D``: ``10.(244+B).C.D``."""
    parts = [int(p) for p in host_ip.split(".")]
    if len(parts) != 4 or parts[0] != 127 or parts[1] > 3:
        raise ValueError(f"{host_ip!r} is not in 127.0.0.0/14, the pods' loopback range")
    return f"10.{244 + parts[1]}.{parts[2]}.{parts[3]}"


def host_ip_for(pod_ip: str) -> str:
    """The loopback address a pod IP in 10.244.0.0/14 stands for; other addresses as given."""
    try:
        address = ipaddress.ip_address(pod_ip)
    except ValueError:
        return pod_ip
    if address not in POD_NETWORK:
        return pod_ip
    _, b, c, d = pod_ip.split(".")
    return f"127.{int(b) - 244}.{c}.{d}"


def pod_network_is_local() -> bool:
    """True when 10.244.0.0/14 is routed to this machine (processes can bind pod IPs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("10.244.0.1", 0))
        except OSError:
            return False
    return True


class IpPool:
    """Loopback pod IPs: 127.0.0.2-250 first, then 127.2.0.1-127.2.255.254 (Linux routes
    all of 127/8 to lo, so processes can bind any of them).

    The pool starts at a random offset and skips addresses whose container ports are
    taken, so two simulated clusters on one machine (parallel test workers) rarely meet.
    """

    def __init__(self) -> None:
        first = [f"127.0.0.{n}" for n in range(2, 251)]
        start = random.randrange(len(first))
        self.free = first[start:] + first[:start]
        self.more = (f"127.2.{n // 256}.{n % 256}" for n in range(1, 65535) if n % 256)
        self.used: set[str] = set()

    @staticmethod
    def _ports_free(ip: str, ports: list[int]) -> bool:
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((ip, port))
                except OSError:
                    return False
        return True

    def take(self, ports: list[int] | None = None) -> str:
        for ip in list(self.free):
            if self._ports_free(ip, ports or []):
                self.free.remove(ip)
                self.used.add(ip)
                return ip
        for ip in self.more:
            if self._ports_free(ip, ports or []):
                self.used.add(ip)
                return ip
        raise RuntimeError(f"no free pod IPs left in 127.0.0.2-250 and 127.2/16 for ports {ports}")

    def give_back(self, ip: str) -> None:
        if ip in self.used:
            self.used.discard(ip)
            self.free.append(ip)  # reused last: a new pod rarely gets a just-freed IP


def container_ports(pod: Obj) -> list[int]:
    return [
        int(port["containerPort"])
        for container in (pod.get("spec") or {}).get("containers") or []
        for port in container.get("ports") or []
        if isinstance(port.get("containerPort"), int)
    ]
