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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry


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


class _Snapshot(Collector):
    """One scrape's figures as the kubelet's metric families."""

    def __init__(self, node: NodeUsage, containers: list[ContainerUsage], at: float) -> None:
        self.node, self.containers, self.at = node, containers, at

    def collect(self) -> Iterator[Metric]:
        labels = ["container", "namespace", "pod"]
        node_cpu = CounterMetricFamily(
            "node_cpu_usage_seconds", "Cumulative cpu time consumed by the node in core-seconds"
        )
        node_cpu.add_metric([], self.node.cpu_seconds, timestamp=self.at)
        node_memory = GaugeMetricFamily(
            "node_memory_working_set_bytes", "Current working set of the node in bytes"
        )
        node_memory.add_metric([], self.node.memory_bytes, timestamp=self.at)
        cpu = CounterMetricFamily(
            "container_cpu_usage_seconds",
            "Cumulative cpu time consumed by the container in core-seconds",
            labels=labels,
        )
        memory = GaugeMetricFamily(
            "container_memory_working_set_bytes",
            "Current working set of the container in bytes",
            labels=labels,
        )
        started = GaugeMetricFamily(
            "container_start_time_seconds",
            "Start time of the container since unix epoch in seconds",
            labels=labels,
        )
        for row in self.containers:
            names = [row.container, row.namespace, row.pod]
            cpu.add_metric(names, row.cpu_seconds, timestamp=self.at)
            memory.add_metric(names, row.memory_bytes, timestamp=self.at)
            started.add_metric(names, row.started, timestamp=self.at)
        yield from (node_cpu, node_memory, cpu, memory, started)


def resource_metrics(node: NodeUsage, containers: Iterable[ContainerUsage], now_ms: int) -> str:
    """The body of ``/metrics/resource``: the kubelet's metric names, in the Prometheus
    text format, each sample stamped ``now_ms``."""
    registry = CollectorRegistry()
    registry.register(_Snapshot(node, list(containers), now_ms / 1000))
    return generate_latest(registry).decode()


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
