"""``voiceops-sim``: run the test doubles from a shell (the demo and manual poking)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from .apiserver import KubeApiEmulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voiceops-sim",
        description="Test doubles for a Kubernetes cluster (not a real cluster).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    api = sub.add_parser("apiserver", help="serve the Kubernetes API emulator until SIGTERM")
    _common(api)
    cluster = sub.add_parser(
        "cluster", help="API emulator + simulated kubelet running pods as local processes"
    )
    _common(cluster)
    cluster.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="NAME[:GPUS[:CPU[:PODS]]]",
        help="a simulated node (repeatable); default: sim-gpu-0:1:8 and sim-cpu-0:0:8",
    )
    cluster.add_argument(
        "--pod-mode", choices=["process", "inert"], default="process", help="how pods run"
    )
    cluster.add_argument("--log-dir", default=None, help="where pod logs go (default: a temp dir)")
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--crd", action="append", default=[], metavar="FILE", help="CRD YAML")
    parser.add_argument("--kubeconfig", default=None, metavar="OUT", help="write a kubeconfig")
    parser.add_argument("--namespace", action="append", default=[], help="create this namespace")
    parser.add_argument("--token", default=None, help="require this bearer token")
    parser.add_argument("-v", "--verbose", action="store_true")


async def _serve(args: argparse.Namespace) -> int:
    emulator = KubeApiEmulator(crd_files=args.crd, token=args.token, namespaces=args.namespace)
    url = await emulator.start(args.host, args.port)
    kubelet = None
    if args.command == "cluster":
        from .kubelet import KubeletConfig, SimulatedKubelet, parse_node

        nodes = [parse_node(n) for n in args.node] or [
            parse_node("sim-gpu-0:1:8"),
            parse_node("sim-cpu-0:0:8"),
        ]
        kubelet = SimulatedKubelet(
            emulator, KubeletConfig(nodes=nodes, pod_mode=args.pod_mode, log_dir=args.log_dir)
        )
        await kubelet.start()
    if args.kubeconfig:
        emulator.write_kubeconfig(args.kubeconfig)
    print(url, flush=True)
    if args.kubeconfig:
        print(f"kubeconfig: {args.kubeconfig}", flush=True)
    if kubelet is not None:
        print(f"pod logs: {kubelet.log_dir}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    announcer = asyncio.create_task(_announce_services(kubelet, stop)) if kubelet else None
    try:
        await stop.wait()
    finally:
        if announcer is not None:
            announcer.cancel()
        if kubelet is not None:
            await kubelet.stop()
        await emulator.stop()
    return 0


async def _announce_services(kubelet: object, stop: asyncio.Event) -> None:
    """Print each Service's loopback address once it is served (the kube-proxy stand-in)."""
    proxy = getattr(kubelet, "proxy", None)
    if proxy is None:
        return
    shown: set[tuple[str, str, int]] = set()
    while not stop.is_set():
        for key, listener in list(proxy.listeners.items()):
            if key not in shown:
                shown.add(key)
                ns, name, port = key
                print(
                    f"service {ns}/{name}:{port} -> http://{listener.address}:{listener.port}",
                    flush=True,
                )
        shown &= set(proxy.listeners)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
