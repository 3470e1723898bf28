"""The kubelet's resource metrics endpoint, for the node agent's nodes.

metrics-server scrapes ``GET https://<node InternalIP>:<kubeletEndpoint port>/metrics/resource``
on every node and serves what it reads as the ``metrics.k8s.io`` API, which ``kubectl
top`` and CPU- or memory-based HPAs read. A real kubelet reads cgroups; here a
container is a local process tree, so its CPU time is the tree's (with the children it
has reaped) and its working set is the tree's resident memory. Every local node is
this machine: a node's own figures are the machine's.

Like a kubelet, the endpoint serves TLS with a self-signed certificate (metrics-server
runs with ``--kubelet-insecure-tls``, as it does on kind), takes only clients whose
certificate the cluster CA signed, and asks the API server (a SubjectAccessReview)
whether that user may ``get nodes/metrics``.
"""

from __future__ import annotations

import datetime as dt
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class ContainerUsage:
    namespace: str
    pod: str
    container: str
    cpu_seconds: float  # cumulative
    memory_bytes: int  # working set
    started: float  # unix seconds


@dataclass(frozen=True)
class NodeUsage:
    cpu_seconds: float  # cumulative
    memory_bytes: int  # working set


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def resource_metrics(node: NodeUsage, containers: Iterable[ContainerUsage], now_ms: int) -> str:
    """The body of ``/metrics/resource``: the kubelet's metric names, in the Prometheus
    text format, each sample stamped ``now_ms``."""
    rows = list(containers)
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.extend((f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"))
        lines.extend(f"{name}{labels} {value!r} {now_ms}" for labels, value in samples)

    def labelled(row: ContainerUsage) -> str:
        return (
            f'{{container="{_quote(row.container)}",namespace="{_quote(row.namespace)}",'
            f'pod="{_quote(row.pod)}"}}'
        )

    family(
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        [("", round(node.cpu_seconds, 6))],
    )
    family(
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        [("", float(node.memory_bytes))],
    )
    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        [(labelled(r), round(r.cpu_seconds, 6)) for r in rows],
    )
    family(
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        [(labelled(r), float(r.memory_bytes)) for r in rows],
    )
    family("container_start_time_seconds", "gauge",
           "Start time of the container since unix epoch in seconds",
           [(labelled(r), round(r.started, 3)) for r in rows])  # fmt: skip
    return "\n".join(lines) + "\n"


def process_tree_usage(pid: int) -> tuple[float, int, float] | None:
    """CPU seconds, resident bytes and start time of ``pid`` and its descendants; None
    when the process is gone."""
    try:
        root = psutil.Process(pid)
        with root.oneshot():
            times = root.cpu_times()
            cpu = times.user + times.system + times.children_user + times.children_system
            memory = root.memory_info().rss
            started = root.create_time()
        for child in root.children(recursive=True):
            try:
                child_times = child.cpu_times()
                cpu += child_times.user + child_times.system
                memory += child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        return None
    return cpu, memory, started


def machine_usage() -> NodeUsage:
    times = psutil.cpu_times()
    busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
    memory = psutil.virtual_memory()
    return NodeUsage(busy, memory.total - memory.available)


def serving_context(common_name: str, client_ca_pem: bytes) -> ssl.SSLContext:
    """TLS with a fresh self-signed certificate; clients must show one the CA signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=client_ca_pem.decode())
    context.verify_mode = ssl.CERT_REQUIRED
    with tempfile.TemporaryDirectory() as folder:  # load_cert_chain reads files only
        cert_path, key_path = Path(folder) / "tls.crt", Path(folder) / "tls.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context.load_cert_chain(cert_path, key_path)
    return context


def peer_identity(peer_cert: dict[str, object] | None) -> tuple[str, list[str]]:
    """User (CN) and groups (O) of a verified client certificate, as the API server reads them."""
    user, groups = "", []
    for rdn in (peer_cert or {}).get("subject", ()):  # type: ignore[union-attr]
        for key, value in rdn:
            if key == "commonName":
                user = value
            elif key == "organizationName":
                groups.append(value)
    return user, groups


def access_review(user: str, groups: list[str], node: str) -> dict[str, object]:
    """The SubjectAccessReview a kubelet sends for ``GET /metrics/resource``."""
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": groups,
            "resourceAttributes": {
                "verb": "get",
                "resource": "nodes",
                "subresource": "metrics",
                "name": node,
            },
        },
    }
