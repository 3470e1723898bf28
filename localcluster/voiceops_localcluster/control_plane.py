"""A real Kubernetes control plane on this machine: etcd, API server, controllers, scheduler.

Real components (``kube_binaries`` builds them), no nodes: the node agent (the
kubelet stand-in) registers those. What ``ControlPlane.start()`` sets up in its
folder:

* a CA, and client certificates signed by it: the admin (``system:masters``), the
  controller manager and the scheduler, each with its own kubeconfig;
* the API server's serving certificate (127.0.0.1, localhost, kubernetes.default.svc);
* a service-account signing key (TokenRequest works: a pod talks as itself);
* etcd on loopback ports (no fsync: a test cluster), the API server with RBAC and
  Node authorization, the controller manager (Deployments and ReplicaSets, the garbage
  collector, EndpointSlices, HPAs, node lifecycle) with short monitor periods so a
  lost node shows in seconds, and the scheduler;
* ``admin.kubeconfig`` for kubectl, helm and the operator;
* the aggregation layer (a front-proxy CA and client certificate), and with
  ``metrics_server=True`` the real metrics-server behind ``v1beta1.metrics.k8s.io``:
  it scrapes each node agent's ``/metrics/resource`` endpoint, so ``kubectl top`` and
  CPU-based HPAs work. The API server reaches it through an ExternalName Service
  ``localhost`` (there is no kube-proxy on this machine to route a ClusterIP).

It waits until each component says it is healthy and reports the time. Every
process writes its pid to ``<folder>/pids/<name>.pid``; ``start()`` stops what a
crashed earlier run left behind in the same folder (by those pid files, never by
process name), and ``stop()`` stops everything (SIGTERM, then SIGKILL). A component
that exits is named with the tail of its log.

    python -m voiceops_localcluster.control_plane --dir .localkube up   # until Ctrl-C
    python -m voiceops_localcluster.control_plane --dir .localkube up --metrics-server
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .kube_binaries import Binaries, BinariesError, build, build_metrics_server
from .ports import free_port

SERVICE_CIDR = "10.96.0.0/16"
# Short node-lifecycle periods: a node that stops reporting is NotReady, tainted and
# its pods evicted within seconds (a real cluster takes minutes).
NODE_MONITOR_GRACE_SECONDS = 6
TOLERATION_SECONDS = 4
HEALTH_DEADLINE_SECONDS = 120.0
# metrics-server's shortest resolution: an HPA sees a new CPU rate this often.
METRIC_RESOLUTION_SECONDS = 10
METRICS_SERVER_USER = "voiceops:metrics-server"
METRICS_API_SERVICE = "v1beta1.metrics.k8s.io"
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
"""


def free_pod_cidr() -> ipaddress.IPv4Network:
    """A /24 in 10.251.0.0/16 that no interface on this machine uses yet."""
    try:
        shown = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=False)
        addresses = shown.stdout
    except FileNotFoundError:  # no iproute2: no pod network will be made here either
        addresses = ""
    for _ in range(256):
        subnet = ipaddress.ip_network(f"10.251.{random.randrange(256)}.0/24")
        if f" 10.251.{subnet.network_address.packed[2]}." not in addresses:
            return subnet
    raise ControlPlaneError("no free /24 left in 10.251.0.0/16 for a pod network")


class ControlPlaneError(RuntimeError):
    """A component could not start or died; the message names it and shows its log."""


def _key() -> ec.EllipticCurvePrivateKey:
    # ECDSA P-256 (kubeadm offers it too): every component takes it, and it is made
    # far faster than an RSA key, which every control plane start pays for.
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _name(common: str, org: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(parts)


@dataclass
class Pki:
    """The CA and what it signed, as PEM files in ``folder``."""

    folder: Path

    def create(self, extra_ips: list[str] | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        ca, ca_key = self._ca("ca", "voiceops-local-ca")
        sans: list[x509.GeneralName] = [
            x509.DNSName(n)
            for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
        ]
        addresses = ["127.0.0.1", "10.96.0.1", *(extra_ips or [])]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        self._leaf("apiserver", _name("kube-apiserver"), ca, ca_key, sans, server=True)
        self._leaf("admin", _name("voiceops-admin", "system:masters"), ca, ca_key)
        self._leaf("controller-manager", _name("system:kube-controller-manager"), ca, ca_key)
        self._leaf("scheduler", _name("system:kube-scheduler"), ca, ca_key)
        # The aggregation layer: the API server proxies to metrics-server as
        # front-proxy-client, which metrics-server trusts through this second CA.
        proxy_ca, proxy_ca_key = self._ca("front-proxy-ca", "voiceops-front-proxy-ca")
        self._leaf("front-proxy-client", _name("front-proxy-client"), proxy_ca, proxy_ca_key)
        self._leaf("metrics-server-client", _name(METRICS_SERVER_USER), ca, ca_key)
        metrics_sans: list[x509.GeneralName] = [
            x509.DNSName("metrics-server.kube-system.svc"),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        self._leaf("metrics-server", _name("metrics-server"), ca, ca_key, metrics_sans, server=True)
        sa = _key()
        (self.folder / "sa.key").write_bytes(_pem_key(sa))
        (self.folder / "sa.pub").write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _ca(self, name: str, common: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        key = _key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(_name(common))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        self._write(name, cert, key)
        return cert, key

    def _leaf(
        self,
        name: str,
        subject: x509.Name,
        ca: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        sans: list[x509.GeneralName] | None = None,
        server: bool = False,
    ) -> None:
        key = _key()
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        usage = x509.oid.ExtendedKeyUsageOID
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(
                x509.ExtendedKeyUsage([usage.SERVER_AUTH if server else usage.CLIENT_AUTH]),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        self._write(name, builder.sign(ca_key, hashes.SHA256()), key)

    def _write(self, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (self.folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        path = self.folder / f"{name}.key"
        path.write_bytes(_pem_key(key))
        path.chmod(0o600)

    def path(self, name: str) -> str:
        return str(self.folder / name)


def kubeconfig(server: str, pki: Pki, user: str) -> str:
    """A kubeconfig for ``user``'s client certificate (file paths, not inline data)."""
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: local\n  cluster:\n    server: {server}\n"
        f"    certificate-authority: {pki.path('ca.crt')}\n"
        f"users:\n- name: {user}\n  user:\n"
        f"    client-certificate: {pki.path(user + '.crt')}\n"
        f"    client-key: {pki.path(user + '.key')}\n"
        f"contexts:\n- name: local\n  context:\n    cluster: local\n    user: {user}\n"
        "current-context: local\n"
    )


_PLURALS = {
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "RoleBinding": "rolebindings",
    "Service": "services",
    "APIService": "apiservices",
}


def collection_path(obj: dict[str, Any]) -> str:
    """The URL path objects of ``obj``'s kind are created at."""
    version = obj["apiVersion"]
    prefix = "/api/v1" if version == "v1" else f"/apis/{version}"
    namespace = obj["metadata"].get("namespace")
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{prefix}{scope}/{_PLURALS[obj['kind']]}"


def metrics_api_objects(port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """What metrics-server needs in the API: least-privilege RBAC for its user, the
    authentication delegation every aggregated API server needs, an ExternalName
    Service ``localhost`` and the APIService that sends ``metrics.k8s.io`` there."""
    rbac = "rbac.authorization.k8s.io/v1"
    user = [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": METRICS_SERVER_USER}]

    def role_ref(kind: str, name: str) -> dict[str, str]:
        return {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}

    return [
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": METRICS_SERVER_USER},
         "rules": [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": rbac, "kind": "ClusterRoleBinding",
         "metadata": {"name": METRICS_SERVER_USER},
         "roleRef": role_ref("ClusterRole", METRICS_SERVER_USER), "subjects": user},
        {"apiVersion": rbac, "kind": "ClusterRoleBinding",
         "metadata": {"name": f"{METRICS_SERVER_USER}:auth-delegator"},
         "roleRef": role_ref("ClusterRole", "system:auth-delegator"), "subjects": user},
        {"apiVersion": rbac, "kind": "RoleBinding",
         "metadata": {"name": f"{METRICS_SERVER_USER}:auth-reader", "namespace": "kube-system"},
         "roleRef": role_ref("Role", "extension-apiserver-authentication-reader"),
         "subjects": user},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "metrics-server", "namespace": "kube-system"},
         "spec": {"type": "ExternalName", "externalName": "localhost"}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": METRICS_API_SERVICE},
         "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
                  "service": {"namespace": "kube-system", "name": "metrics-server", "port": port},
                  "caBundle": base64.b64encode(ca_bundle).decode(),
                  "groupPriorityMinimum": 100, "versionPriority": 100}},
    ]  # fmt: skip


@dataclass
class Component:
    name: str
    args: list[str]
    health_url: str
    process: subprocess.Popen[bytes] | None = None


@dataclass
class ControlPlane:
    """Start with ``start()``, stop with ``stop()`` (or use it as a context manager)."""

    folder: Path
    binaries: Binaries | None = None
    # Log every API request's metadata (verb, resource, user agent) to audit.log:
    # what benchmarks count requests with.
    audit: bool = False
    # The pods' subnet when they run in network namespaces (pod_network.py): its
    # gateway forwards to the API server, so the serving certificate names it.
    pod_cidr: ipaddress.IPv4Network = field(default_factory=lambda: free_pod_cidr())
    # Run metrics-server behind the metrics.k8s.io API (module docstring). Off by
    # default: an APIService whose server is down breaks discovery for every client.
    metrics_server: bool = False
    components: list[Component] = field(default_factory=list)
    api_port: int = 0
    seconds_to_healthy: float = 0.0

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.folder / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.folder / "audit.log"

    def audit_events(self) -> list[dict[str, object]]:
        """Every request the API server answered so far (``audit=True``), oldest first."""
        if not self.audit_log.exists():
            return []
        lines = self.audit_log.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    @property
    def pki(self) -> Pki:
        return Pki(self.folder / "pki")

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        started = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stop_leftovers()
        binaries = self.binaries or build()
        self.binaries = binaries
        pki = self.pki
        pki.create(extra_ips=[str(next(self.pod_cidr.hosts()))])
        data = self.folder / "etcd-data"
        if data.exists():  # a stale data folder from an earlier run: start clean
            subprocess.run(["rm", "-rf", str(data)], check=True)
        etcd_port, peer_port = free_port(), free_port()
        self.api_port = free_port()
        cm_port, sched_port = free_port(), free_port()
        self.admin_kubeconfig.write_text(kubeconfig(self.server, pki, "admin"))
        for user in ("controller-manager", "scheduler"):
            (self.folder / f"{user}.kubeconfig").write_text(kubeconfig(self.server, pki, user))
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        audit_flags: list[str] = []
        if self.audit:
            policy = self.folder / "audit-policy.yaml"
            policy.write_text(AUDIT_POLICY)
            audit_flags = [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
                           "--audit-log-format=json", "--audit-log-maxsize=0"]  # fmt: skip
        cm_config = str(self.folder / "controller-manager.kubeconfig")
        sched_config = str(self.folder / "scheduler.kubeconfig")
        self.components = [
            Component(
                "etcd",
                [str(binaries.path("etcd")), "--name=local", f"--data-dir={data}",
                 f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
                 f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                 f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                 f"--initial-cluster=local=http://127.0.0.1:{peer_port}",
                 "--unsafe-no-fsync", "--log-level=warn"],
                f"{etcd_url}/health",
            ),
            Component(
                "kube-apiserver",
                [str(binaries.path("kube-apiserver")), f"--etcd-servers={etcd_url}",
                 "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                 f"--secure-port={self.api_port}",
                 f"--tls-cert-file={pki.path('apiserver.crt')}",
                 f"--tls-private-key-file={pki.path('apiserver.key')}",
                 f"--client-ca-file={pki.path('ca.crt')}",
                 "--authorization-mode=Node,RBAC",
                 f"--service-cluster-ip-range={SERVICE_CIDR}",
                 "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                 f"--service-account-key-file={pki.path('sa.pub')}",
                 f"--service-account-signing-key-file={pki.path('sa.key')}",
                 f"--default-not-ready-toleration-seconds={TOLERATION_SECONDS}",
                 f"--default-unreachable-toleration-seconds={TOLERATION_SECONDS}",
                 f"--requestheader-client-ca-file={pki.path('front-proxy-ca.crt')}",
                 "--requestheader-allowed-names=front-proxy-client",
                 "--requestheader-username-headers=X-Remote-User",
                 "--requestheader-group-headers=X-Remote-Group",
                 "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                 f"--proxy-client-cert-file={pki.path('front-proxy-client.crt')}",
                 f"--proxy-client-key-file={pki.path('front-proxy-client.key')}",
                 "--allow-privileged=true", "--profiling=false", "--v=0", *audit_flags],
                f"{self.server}/readyz",
            ),
            Component(
                "kube-controller-manager",
                [str(binaries.path("kube-controller-manager")), f"--kubeconfig={cm_config}",
                 f"--authentication-kubeconfig={cm_config}",
                 f"--authorization-kubeconfig={cm_config}",
                 "--bind-address=127.0.0.1", f"--secure-port={cm_port}",
                 "--leader-elect=false", "--use-service-account-credentials=true",
                 f"--service-account-private-key-file={pki.path('sa.key')}",
                 f"--root-ca-file={pki.path('ca.crt')}",
                 f"--service-cluster-ip-range={SERVICE_CIDR}",
                 "--node-monitor-period=1s",
                 f"--node-monitor-grace-period={NODE_MONITOR_GRACE_SECONDS}s",
                 "--horizontal-pod-autoscaler-sync-period=2s",
                 "--concurrent-gc-syncs=5", "--profiling=false", "--v=0"],
                f"https://127.0.0.1:{cm_port}/healthz",
            ),
            Component(
                "kube-scheduler",
                [str(binaries.path("kube-scheduler")), f"--kubeconfig={sched_config}",
                 f"--authentication-kubeconfig={sched_config}",
                 f"--authorization-kubeconfig={sched_config}",
                 "--bind-address=127.0.0.1", f"--secure-port={sched_port}",
                 "--leader-elect=false", "--profiling=false", "--v=0"],
                f"https://127.0.0.1:{sched_port}/healthz",
            ),
        ]  # fmt: skip
        try:
            for component in self.components:
                self._launch(component)
                self._wait_healthy(component)
            if self.metrics_server:
                self._start_metrics_server()
        except BaseException:
            self.stop()
            raise
        self.seconds_to_healthy = time.monotonic() - started

    def _start_metrics_server(self) -> None:
        """metrics-server, its RBAC and the APIService; returns once the API is Available."""
        binary = build_metrics_server()
        pki = self.pki
        port = free_port()
        config = self.folder / "metrics-server.kubeconfig"
        config.write_text(kubeconfig(self.server, pki, "metrics-server-client"))
        for obj in metrics_api_objects(port, Path(pki.path("ca.crt")).read_bytes()):
            self.create(obj)
        component = Component(
            "metrics-server",
            [str(binary), f"--secure-port={port}", "--bind-address=127.0.0.1",
             f"--tls-cert-file={pki.path('metrics-server.crt')}",
             f"--tls-private-key-file={pki.path('metrics-server.key')}",
             f"--kubeconfig={config}", f"--authentication-kubeconfig={config}",
             f"--authorization-kubeconfig={config}",
             # Node agents serve self-signed certificates, as kind's kubelets do.
             "--kubelet-insecure-tls", "--kubelet-use-node-status-port",
             "--kubelet-preferred-address-types=InternalIP",
             f"--metric-resolution={METRIC_RESOLUTION_SECONDS}s",
             f"--kubelet-request-timeout={METRIC_RESOLUTION_SECONDS // 2}s", "--profiling=false",
             "--v=0"],
            f"https://127.0.0.1:{port}/livez",
        )  # fmt: skip
        self.components.append(component)
        self._launch(component)
        self._wait_healthy(component)
        self._wait_available(METRICS_API_SERVICE, component)

    def _wait_available(self, api_service: str, component: Component) -> None:
        deadline = time.monotonic() + HEALTH_DEADLINE_SECONDS
        conditions: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            found = self.request(
                "GET", f"/apis/apiregistration.k8s.io/v1/apiservices/{api_service}"
            )
            conditions = (found.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Available" and c["status"] == "True" for c in conditions):
                return
            time.sleep(0.2)
        raise ControlPlaneError(
            f"APIService {api_service} not Available within {HEALTH_DEADLINE_SECONDS:g}s "
            f"({conditions}); the end of {component.name}'s log:\n" + self.log_tail(component.name)
        )

    # ------------------------------------------------------------------ API
    def _admin_tls(self) -> ssl.SSLContext:
        """TLS as the admin, trusting the cluster CA."""
        context = ssl.create_default_context(cafile=self.pki.path("ca.crt"))
        context.load_cert_chain(self.pki.path("admin.crt"), self.pki.path("admin.key"))
        return context

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API request as the admin; the decoded answer."""
        context = self._admin_tls()
        data = None if body is None else json.dumps(body).encode()
        sent = urllib.request.Request(
            self.server + path, data=data, method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(sent, timeout=10, context=context) as answer:
            decoded: dict[str, Any] = json.loads(answer.read() or b"{}")
            return decoded

    def create(self, obj: dict[str, Any]) -> None:
        """Create ``obj`` (one already there is left as it is)."""
        try:
            self.request("POST", collection_path(obj), obj)
        except urllib.error.HTTPError as error:
            if error.code != 409:
                raise ControlPlaneError(
                    f"creating {obj['kind']} {obj['metadata']['name']}: HTTP {error.code} "
                    f"{error.read().decode(errors='replace')[:500]}"
                ) from error

    # ------------------------------------------------------------------ processes
    def _pid_file(self, name: str) -> Path:
        return self.folder / "pids" / f"{name}.pid"

    def _log(self, name: str) -> Path:
        return self.folder / "logs" / f"{name}.log"

    def _launch(self, component: Component) -> None:
        for sub in ("pids", "logs"):
            (self.folder / sub).mkdir(exist_ok=True)
        with self._log(component.name).open("ab") as log:
            component.process = subprocess.Popen(
                component.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C to the launcher is ours to pass on
            )
        self._pid_file(component.name).write_text(f"{component.process.pid}\n")

    def _wait_healthy(self, component: Component) -> None:
        context = self._admin_tls()
        if "kube-controller-manager" in component.name or "scheduler" in component.name:
            context = ssl._create_unverified_context()  # self-signed serving certs
        deadline = time.monotonic() + HEALTH_DEADLINE_SECONDS
        last = ""
        while time.monotonic() < deadline:
            assert component.process is not None
            if component.process.poll() is not None:
                raise ControlPlaneError(
                    f"{component.name} exited with code {component.process.returncode} "
                    f"while starting; the end of {self._log(component.name)}:\n"
                    + self.log_tail(component.name)
                )
            try:
                with urllib.request.urlopen(component.health_url, timeout=2, context=context) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as error:
                last = str(error)
            time.sleep(0.1)
        raise ControlPlaneError(
            f"{component.name} not healthy within {HEALTH_DEADLINE_SECONDS:g}s ({last}); "
            f"the end of its log:\n{self.log_tail(component.name)}"
        )

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self._log(name)
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def dead(self) -> list[str]:
        """Components that exited since they started, each with its log's tail."""
        return [
            f"{c.name} exited with code {c.process.returncode}:\n{self.log_tail(c.name)}"
            for c in self.components
            if c.process is not None and c.process.poll() is not None
        ]

    def stop(self) -> None:
        """Stop every component, the last started first (SIGTERM, then SIGKILL)."""
        for component in reversed(self.components):
            _terminate(component, grace_seconds=10)
            self._pid_file(component.name).unlink(missing_ok=True)
        self.components = []

    def restart(self, name: str, grace_seconds: float = 10) -> float:
        """Stop one component (SIGTERM, SIGKILL after ``grace_seconds``) and start it
        again with the same arguments, port and log; seconds it took to stop."""
        found = [c for c in self.components if c.name == name]
        if not found:
            raise ControlPlaneError(f"no component {name!r} in this control plane")
        (component,) = found
        began = time.monotonic()
        _terminate(component, grace_seconds)
        stopped = time.monotonic() - began
        self._launch(component)
        self._wait_healthy(component)
        return stopped

    def stop_leftovers(self) -> list[int]:
        """Stop the processes an earlier run in this folder left (its pid files)."""
        stopped = []
        for pid_file in sorted((self.folder / "pids").glob("*.pid")):
            try:
                pid = int(pid_file.read_text().strip())
            except ValueError:
                pid_file.unlink()
                continue
            if _is_ours(pid, self.folder):
                os.kill(pid, signal.SIGKILL)
                stopped.append(pid)
            pid_file.unlink()
        return stopped


def _terminate(component: Component, grace_seconds: float) -> None:
    process = component.process
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _is_ours(pid: int, folder: Path) -> bool:
    """The pid still runs a command that names this folder (pids are reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(folder).encode() in cmdline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a local Kubernetes control plane (etcd, kube-apiserver, "
        "kube-controller-manager, kube-scheduler) until Ctrl-C."
    )
    parser.add_argument("--dir", type=Path, default=Path(".localkube"), help="state folder")
    parser.add_argument("command", choices=["up"], help="up: start, wait for Ctrl-C, stop")
    parser.add_argument(
        "--metrics-server", action="store_true",
        help="also run metrics-server behind metrics.k8s.io (kubectl top, HPAs on CPU)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    plane = ControlPlane(args.dir.resolve(), metrics_server=args.metrics_server)
    try:
        plane.start()
    except (BinariesError, ControlPlaneError) as error:
        print(f"control plane: {error}", file=sys.stderr)
        return 1
    print(
        f"control plane healthy in {plane.seconds_to_healthy:.1f}s at {plane.server}\n"
        f"export KUBECONFIG={plane.admin_kubeconfig}",
        flush=True,
    )
    stop = False

    def interrupt(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        while not stop:
            if dead := plane.dead():
                print("control plane: " + "\n".join(dead), file=sys.stderr)
                return 1
            time.sleep(0.5)
    finally:
        plane.stop()
        print("control plane stopped", flush=True)
    return 130


if __name__ == "__main__":
    sys.exit(main())
