"""Pods in network namespaces of their own, on one bridge: real pod IPs on this machine.

What a CNI plugin's simplest setup (bridge + host-local IPAM) does, with ``ip``:
a bridge in the root namespace holds the pod subnet's gateway address; each pod
gets a network namespace, a veth pair (one end on the bridge, the other in the
namespace with the pod's address) and a default route via the gateway. The pod's
processes run under ``ip netns exec``, bind their pod IP, and anything on this
machine (the operator scraping /metrics, probes, the Service proxy) reaches them
at ``status.podIP``; packets never leave the machine. Needs root (CI runs as root).

A pod reaches the API server through the gateway (a forwarder the node agent runs
there), so the API server's certificate names the gateway address
(``ControlPlane.pod_cidr``). Every name this network creates starts with its tag,
so ``teardown()`` removes exactly what it made, and ``leftovers(tag)`` finds what a
crashed run left.
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
from dataclasses import dataclass, field

IP = "ip"


class PodNetworkError(RuntimeError):
    """An ``ip`` command failed: the command and its error."""


def _ip(*args: str, netns: str | None = None) -> None:
    argv = [IP, *(("-n", netns) if netns else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PodNetworkError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")


def available() -> str | None:
    """None when network namespaces can be made here, else why not."""
    probe = f"vop{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (PodNetworkError, OSError) as error:
        return f"cannot create network namespaces ({error}); the pod network needs root"
    _ip("netns", "del", probe)
    return None


@dataclass
class NamespacePodNetwork:
    """A bridge for ``subnet`` and a namespace per pod (``attach``/``detach``)."""

    subnet: ipaddress.IPv4Network
    tag: str = field(default_factory=lambda: f"vo{secrets.token_hex(2)}")
    attached: dict[str, str] = field(default_factory=dict)  # netns → pod IP
    _hosts: list[str] = field(default_factory=list)
    _serial: int = 0

    @property
    def gateway(self) -> str:
        return str(next(self.subnet.hosts()))

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"  # interface names are at most 15 characters

    def setup(self) -> None:
        self._hosts = [str(h) for h in list(self.subnet.hosts())[1:]]
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def attach(self) -> tuple[str, str]:
        """A new namespace on the bridge: (its name, the pod IP in it)."""
        if not self._hosts:
            raise PodNetworkError(f"the pod subnet {self.subnet} has no address left")
        self._serial += 1
        netns = f"{self.tag}-p{self._serial}"
        host_end, pod_end = f"{self.tag}h{self._serial}", f"{self.tag}c{self._serial}"
        address = self._hosts.pop(0)
        _ip("netns", "add", netns)
        try:
            _ip("link", "add", host_end, "type", "veth", "peer", "name", pod_end)
            _ip("link", "set", pod_end, "netns", netns)
            _ip("link", "set", host_end, "master", self.bridge)
            _ip("link", "set", host_end, "up")
            _ip("link", "set", "lo", "up", netns=netns)
            _ip("addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", pod_end, netns=netns)
            _ip("link", "set", pod_end, "up", netns=netns)
            _ip("route", "add", "default", "via", self.gateway, netns=netns)
        except PodNetworkError:
            self._remove(netns)
            self._hosts.insert(0, address)
            raise
        self.attached[netns] = address
        return netns, address

    def detach(self, netns: str) -> None:
        """Delete the pod's namespace (its veth goes with it); its address is free again."""
        address = self.attached.pop(netns, None)
        self._remove(netns)
        if address is not None:
            self._hosts.append(address)

    def exec_prefix(self, netns: str) -> list[str]:
        """Run a command in the pod's namespace: put this in front of its argv."""
        return [IP, "netns", "exec", netns]

    def teardown(self) -> None:
        for netns in list(self.attached):
            self.detach(netns)
        remove_leftovers(self.tag)

    @staticmethod
    def _remove(netns: str) -> None:
        subprocess.run([IP, "netns", "del", netns], capture_output=True, check=False)


def leftovers(tag: str) -> tuple[list[str], list[str]]:
    """(namespaces, links) whose names start with ``tag``."""
    spaces = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, check=False)
    links = subprocess.run([IP, "-o", "link", "show"], capture_output=True, text=True, check=False)
    names = [line.split()[0] for line in spaces.stdout.splitlines() if line.strip()]
    interfaces = [
        line.split(":")[1].strip().split("@")[0]
        for line in links.stdout.splitlines()
        if ":" in line
    ]
    return [n for n in names if n.startswith(tag)], [i for i in interfaces if i.startswith(tag)]


def remove_leftovers(tag: str) -> None:
    spaces, links = leftovers(tag)
    for netns in spaces:
        subprocess.run([IP, "netns", "del", netns], capture_output=True, check=False)
    for link in links:
        subprocess.run([IP, "link", "del", link], capture_output=True, check=False)
