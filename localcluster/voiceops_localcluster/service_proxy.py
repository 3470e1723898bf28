"""A tiny kube-proxy for the simulated cluster: each Service port gets a loopback address.

Every Service with a selector is served on ``127.0.1.N:<port>`` (one address
per Service, N from 1..250; ports below 1024 are shifted by +8000 so no
privileges are needed). Each new TCP connection goes to a Ready endpoint *at
that moment* (round robin), so a selector change (the operator switching tiers)
moves new traffic at once, as it does with kube-proxy. Connections already open
stay where they are.

Endpoints come from ``endpoint_source``: the node agent's
:func:`endpoints_from_slices` over the EndpointSlices the real EndpointSlice
controller writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Obj = dict[str, Any]
# (Service, one entry of its spec.ports) -> the (ip, port) pairs a new connection may use.
EndpointSource = Callable[[Obj, Obj], list[tuple[str, int]]]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass
class _Listener:
    address: str
    port: int
    target_port: Any
    server: asyncio.AbstractServer
    counter: itertools.count[int] = field(default_factory=itertools.count)
    service_port: Obj = field(default_factory=dict)


def local_port(port: int) -> int:
    """The loopback port a Service port is served on (privileged ports shifted by 8000)."""
    return port + 8000 if port < 1024 else port


def endpoints_from_slices(slices: list[Obj], svc: Obj, service_port: Obj) -> list[tuple[str, int]]:
    """The ready ``(address, port)`` pairs of ``svc``'s port in these EndpointSlices.

    Slices belong to the Service by the ``kubernetes.io/service-name`` label (and its
    namespace); the slice port is matched by name, as kube-proxy does. An endpoint
    whose ``conditions.ready`` is unset counts as ready (the API's documented meaning).
    Terminating endpoints have ``ready: false``; as kube-proxy does (KEP-1669), those
    still ``serving`` take the traffic only while no endpoint is ready, so a rollout or
    a drain that empties the ready set does not refuse connections the old pods could
    still answer.
    """
    meta = svc["metadata"]
    name = service_port.get("name") or ""
    ready: list[tuple[str, int]] = []
    serving_terminating: list[tuple[str, int]] = []
    for piece in slices:
        piece_meta = piece.get("metadata") or {}
        if piece_meta.get("namespace") != meta.get("namespace"):
            continue
        if (piece_meta.get("labels") or {}).get(SERVICE_NAME_LABEL) != meta["name"]:
            continue
        if piece.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
            continue
        port = next(
            (p.get("port") for p in piece.get("ports") or [] if (p.get("name") or "") == name),
            None,
        )
        if port is None:
            continue
        for endpoint in piece.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            pairs = [(address, int(port)) for address in endpoint.get("addresses") or []]
            if conditions.get("ready") is not False:
                ready.extend(pairs)
            elif conditions.get("serving") and conditions.get("terminating"):
                serving_terminating.extend(pairs)
    return sorted(set(ready or serving_terminating))


class ServiceProxy:
    """Loopback listeners for Services; endpoints looked up per connection."""

    def __init__(
        self,
        list_objects: Callable[[str, str], list[Obj]],
        endpoint_source: EndpointSource,
    ) -> None:
        self._list = list_objects  # (plural, namespace) -> objects
        self._endpoint_source = endpoint_source
        self.addresses: dict[tuple[str, str], str] = {}
        self.listeners: dict[tuple[str, str, int], _Listener] = {}
        self._free = [f"127.0.1.{n}" for n in range(1, 251)]

    def url(self, namespace: str, name: str, port: int | None = None) -> str:
        """``http://127.0.1.N:P`` for a Service (its first port unless ``port``)."""
        for (ns, svc, svc_port), listener in self.listeners.items():
            if (ns, svc) == (namespace, name) and port in (None, svc_port):
                return f"http://{listener.address}:{listener.port}"
        raise LookupError(f"service {namespace}/{name} has no proxied port {port or ''}".strip())

    def endpoints(self, namespace: str, name: str) -> list[str]:
        """``ip:port`` of the Ready pods a Service selects now (first port)."""
        svc = next(
            (s for s in self._list("services", namespace) if s["metadata"]["name"] == name), None
        )
        if svc is None:
            return []
        ports = (svc.get("spec") or {}).get("ports") or [{}]
        return [f"{ip}:{port}" for ip, port in self._endpoints(svc, ports[0])]

    def _endpoints(self, svc: Obj, service_port: Obj) -> list[tuple[str, int]]:
        """Where a new connection to this Service port may go now."""
        return self._endpoint_source(svc, service_port)

    async def sync(self, services: list[Obj]) -> None:
        """Open listeners for new Service ports, close those of deleted Services."""
        wanted: dict[tuple[str, str, int], Obj] = {}
        for svc in services:
            if not (svc.get("spec") or {}).get("selector"):
                continue
            for port in (svc.get("spec") or {}).get("ports") or []:
                key = (svc["metadata"]["namespace"], svc["metadata"]["name"], int(port["port"]))
                wanted[key] = port
        for key in [k for k in self.listeners if k not in wanted]:
            await self._close(key)
        for key, port in wanted.items():
            if key in self.listeners:
                self.listeners[key].target_port = port.get("targetPort", port["port"])
                self.listeners[key].service_port = port
                continue
            listening = await self._listen(key, local_port(key[2]))
            if listening is None:
                continue
            address, server = listening
            target = port.get("targetPort", key[2])
            self.listeners[key] = _Listener(
                address, local_port(key[2]), target, server, service_port=port
            )

    async def _listen(
        self, key: tuple[str, str, int], port: int
    ) -> tuple[str, asyncio.AbstractServer] | None:
        """A listener on the Service's address; a new Service takes the next address that
        is free (another simulated cluster on this machine may hold some)."""
        ns, name, _ = key
        fixed = self.addresses.get((ns, name))
        candidates = [fixed] if fixed is not None else list(self._free)
        for address in candidates:
            try:
                server = await asyncio.start_server(
                    lambda r, w, k=key: self._forward(k, r, w), address, port
                )
            except OSError as exc:
                last = exc
                continue
            if fixed is None:
                self._free.remove(address)
                self.addresses[(ns, name)] = address
            return address, server
        log.warning(
            "cannot proxy service %s/%s on port %s: %s",
            ns,
            name,
            port,
            last if candidates else "no loopback address left",
        )
        return None

    async def _close(self, key: tuple[str, str, int]) -> None:
        listener = self.listeners.pop(key)
        listener.server.close()
        with contextlib.suppress(Exception):
            await listener.server.wait_closed()
        ns, name, _ = key
        if not any(k[:2] == (ns, name) for k in self.listeners):
            self._free.append(self.addresses.pop((ns, name)))

    async def close(self) -> None:
        for key in list(self.listeners):
            await self._close(key)

    async def _forward(
        self, key: tuple[str, str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        ns, name, _ = key
        listener = self.listeners.get(key)
        svc = next((s for s in self._list("services", ns) if s["metadata"]["name"] == name), None)
        found: list[tuple[str, int]] = []
        if svc is not None and listener is not None:
            spec = listener.service_port or {"port": key[2], "targetPort": listener.target_port}
            found = self._endpoints(svc, spec)
        if not found or listener is None:
            writer.close()  # no endpoints: kube-proxy rejects the connection too
            return
        ip, port = found[next(listener.counter) % len(found)]
        await splice(reader, writer, ip, port)


async def splice(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
) -> None:
    """Connect to ``host:port`` and copy both ways until either side closes.

    A refused connection closes the client's, as a proxy whose backend is gone does.
    """
    try:
        up_reader, up_writer = await asyncio.open_connection(host, port)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()
