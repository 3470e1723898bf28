"""The demo's command line (``DemoOptions``, ``parse_args``) and the repository files it uses."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CRD_FILE = REPO / "crds" / "voiceservice.yaml"
EXAMPLE_FILE = REPO / "examples" / "local.yaml"
KUBECTL = REPO / ".tools" / "bin" / "kubectl"  # `make tools` puts it there
POD_NETWORKS = ("auto", "namespaces", "loopback")


@dataclass(frozen=True)
class DemoOptions:
    """What the command line asked for, and the step deadlines (seconds)."""

    scenario: str = "basic"
    output: Path = Path("demo-output")
    keep_running: bool = False
    ready_timeout: float = 120.0
    transition_timeout: float = 40.0
    request_timeout: float = 30.0
    # auto: network namespaces when this process may make them (root), else loopback.
    pod_network: str = "auto"
    example: Path = EXAMPLE_FILE


def parse_args(argv: Sequence[str] | None = None) -> DemoOptions:
    parser = argparse.ArgumentParser(
        prog="python -m voiceops_localcluster.demo",
        description=(
            "Run voiceops end to end on a local cluster: a real Kubernetes control plane "
            "(etcd, kube-apiserver, kube-controller-manager, kube-scheduler), test-double "
            "nodes that run pods as local processes, the real operator and real TTS "
            "service processes; then inject GPU faults and watch the failover."
        ),
    )
    parser.add_argument(
        "--scenario",
        choices=["basic", "all"],
        default="basic",
        help="basic: GPU memory pressure; all: also GPU capacity lost and restored",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("demo-output"), help="wav files, logs, timeline.json"
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the cluster up at the end and print how to use it (Ctrl-C stops it)",
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=120.0, help="seconds to wait for Serving"
    )
    parser.add_argument(
        "--pod-network",
        choices=POD_NETWORKS,
        default="auto",
        help="namespaces: pods get real addresses in network namespaces (needs root); "
        "loopback: pods listen on loopback addresses (no privileges); auto: namespaces "
        "when possible",
    )
    args = parser.parse_args(argv)
    if args.ready_timeout <= 0:
        parser.error("--ready-timeout: must be > 0")
    return DemoOptions(
        scenario=args.scenario,
        output=args.output,
        keep_running=args.keep_running,
        ready_timeout=args.ready_timeout,
        pod_network=args.pod_network,
    )
