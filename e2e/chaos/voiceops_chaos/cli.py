"""``voiceops-chaos``: run the chaos catalogue under load and write a report.

Without ``--kubeconfig`` it starts the local cluster (real control plane, node-agent
nodes, the operator; needs root) and runs there; with it, it runs against that
cluster's VoiceService, with faults through the API alone.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from voiceops_localcluster.node_agent import KubeClient

from . import catalogue as c
from .front import ServiceProxyFront
from .load import DEFAULT_TEXT, LoadSpec
from .observe import Observer
from .report import RunInfo, write_report
from .runner import RunSettings, ScenarioResult, ScenarioRun, wait_steady
from .targets import ApiFaults, FaultTarget

EXIT_OK, EXIT_FAILED, EXIT_SETUP = 0, 1, 2
LOCAL_NOTE = (
    "The local cluster runs the real metrics-server (HPAs scale on CPU, load-spike turns "
    "them on); the other scenarios run with autoscaling off and one GPU pod, so each "
    "knows which pod its fault hits."
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voiceops-chaos",
        description="Run declared fault scenarios against a VoiceService under steady speech "
        "load (raw and openai clients) and write a report (markdown, JSON, PNG timelines).",
    )
    target = p.add_argument_group("target (default: start the local cluster; needs root)")
    target.add_argument("--kubeconfig", type=Path, help="run against this cluster instead")
    target.add_argument("--namespace", default="default", help="the VoiceService's namespace")
    target.add_argument("--voiceservice", default="tts", help="the VoiceService's name")
    target.add_argument(
        "--url",
        help="the front Service's URL as clients reach it (e.g. a port-forward); default: "
        "the local cluster's Service address, or the API server's service proxy",
    )
    target.add_argument("--operator-namespace", default="voiceops-system")
    target.add_argument("--operator-selector", default="app.kubernetes.io/component=operator")
    target.add_argument(
        "--work-dir", type=Path, help="local cluster state (default: a temporary folder)"
    )
    target.add_argument(
        "--window-seconds", type=int, default=2, help="the local VoiceService's failover window"
    )
    what = p.add_argument_group("what to run")
    what.add_argument(
        "--catalogue", type=Path, help="scenario catalogue (default: the shipped one)"
    )
    what.add_argument("--scenarios", help="comma-separated scenario ids (default: all)")
    what.add_argument("--list", action="store_true", help="list the catalogue and exit")
    what.add_argument("--fail-on-skip", action="store_true", help="a skipped scenario fails")
    load = p.add_argument_group("load")
    load.add_argument("--clients", type=int, default=1, help="clients of each kind (default 1)")
    load.add_argument(
        "--rate",
        type=float,
        default=10.0,
        help="most requests a second per client, both kinds (default 10; 0: back to back, "
        "which turns each refused connection into a burst of raw-client failures)",
    )
    load.add_argument(
        "--duration", type=float, default=30.0, help="seconds of load per scenario, at least"
    )
    load.add_argument("--text", default=DEFAULT_TEXT, help="what the clients ask to speak")
    p.add_argument("--report", type=Path, default=Path("chaos-report"), help="report folder")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def catalogue_table(catalogue: c.Catalogue) -> str:
    rows = [f"{'id':30} {'class':10} {'budget':9} {'actions':40} title"]
    for s in catalogue.scenarios:
        actions = ", ".join(dict.fromkeys(a.action for a in s.actions()))
        rows.append(f"{s.id:30} {s.fault_class:10} {s.budget.kind:9} {actions[:40]:40} {s.title}")
    return "\n".join(rows)


def say(text: str) -> None:
    print(f"[chaos] {text}", file=sys.stderr, flush=True)


async def run_scenarios(
    scenarios: Sequence[c.Scenario],
    target: FaultTarget,
    observer: Observer,
    base_url: Callable[[], str],
    settings: RunSettings,
) -> list[ScenarioResult]:
    results = []
    for scenario in scenarios:
        say(f"{scenario.id}: {scenario.title}")
        result = await ScenarioRun(scenario, target, observer, base_url, settings).run()
        counts = ", ".join(
            f"{k} {s.requests} ({s.failures} failed)" for k, s in result.summary.items()
        )
        say(
            " ".join(
                x
                for x in (f"{scenario.id}: {result.status}", counts, "; ".join(result.problems))
                if x
            )
        )
        results.append(result)
    return results


def finish(report_dir: Path, info: RunInfo, results: list[ScenarioResult]) -> dict[str, Any]:
    from .timeline import draw  # matplotlib: only once there is something to draw

    report_dir.mkdir(parents=True, exist_ok=True)
    timelines = {}
    for result in results:
        if result.status != "skipped" and result.started:
            name = f"timeline-{result.id}.png"
            draw(result, report_dir / name)
            timelines[result.id] = name
    return write_report(report_dir, info, results, timelines)


async def run_local(
    scenarios: Sequence[c.Scenario],
    settings: RunSettings,
    report_dir: Path,
    work_dir: Path,
    window_seconds: int = 2,
) -> dict[str, Any]:
    """Start the local cluster, run ``scenarios`` there, tear it down, write the report."""
    from .local import LocalFaults, local_cluster  # needs the local cluster's binaries

    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    results: list[ScenarioResult] = []
    async with local_cluster(work_dir, window_seconds) as cluster:
        say(f"local cluster up; VoiceService {cluster.namespace}/{cluster.name}")
        observer = Observer(cluster.api, cluster.namespace, cluster.name)
        await observer.start()
        try:
            target = LocalFaults(cluster, observer)
            await wait_for_voiceservice(observer)
            await wait_steady(observer, c.SteadyState(), 300)  # the fault endpoint is checked
            await target.prepare()
            results = await run_scenarios(scenarios, target, observer, cluster.front_url, settings)
        finally:
            await observer.stop()
    info = RunInfo(
        target="local",
        started=started,
        duration_seconds=settings.duration,
        clients=settings.load.clients,
        rate=settings.load.rate,
        window_seconds=float(window_seconds),
        notes=[LOCAL_NOTE],
        teardown_leftovers=cluster.leftovers,
    )
    return finish(report_dir, info, results)


async def wait_for_voiceservice(observer: Observer, within: float = 300) -> None:
    """Until the VoiceService exists and has pods (its first start loads the model)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (observer.voiceservice().get("status") or {}).get("phase"):
        if loop.time() > deadline:
            raise TimeoutError(f"VoiceService {observer.namespace}/{observer.name}: no phase")
        await asyncio.sleep(0.1)


async def run_cluster(
    scenarios: Sequence[c.Scenario],
    settings: RunSettings,
    report_dir: Path,
    kubeconfig: Path,
    namespace: str,
    name: str,
    url: str | None,
    operator_namespace: str,
    operator_selector: str,
) -> dict[str, Any]:
    """Run ``scenarios`` against a VoiceService on the cluster of ``kubeconfig``."""
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="voiceops-chaos-") as secrets:
        api = KubeClient.from_kubeconfig(kubeconfig, Path(secrets))
        observer = Observer(api, namespace, name)
        front: ServiceProxyFront | None = None
        notes = []
        try:
            await observer.start()
            await wait_for_voiceservice(observer, 60)
            await wait_steady(observer, c.SteadyState(), 300)
            if url is None:
                front = ServiceProxyFront(api, namespace, name)
                url = await front.start()
                notes.append(
                    "clients reach the front Service through the API server's service proxy"
                )
            else:
                notes.append(
                    f"clients reach the front Service at {url}; a kubectl port-forward holds "
                    "one pod, so client-side 'traffic moved' there says nothing of routing"
                )
            target = ApiFaults(
                api,
                observer,
                operator_namespace=operator_namespace,
                operator_selector=operator_selector,
            )
            await target.prepare()
            front_url = url
            results = await run_scenarios(scenarios, target, observer, lambda: front_url, settings)
        finally:
            if front is not None:
                await front.stop()
            await observer.stop()
            await api.close()
    window = ((observer.voiceservice().get("spec") or {}).get("failover") or {}).get(
        "windowSeconds", 10
    )
    info = RunInfo(
        target=f"cluster ({kubeconfig})",
        started=started,
        duration_seconds=settings.duration,
        clients=settings.load.clients,
        rate=settings.load.rate,
        window_seconds=float(window),
        notes=notes,
    )
    return finish(report_dir, info, results)


def exit_code(document: dict[str, Any], fail_on_skip: bool) -> int:
    statuses = [s["status"] for s in document["scenarios"]]
    if "failed" in statuses or (fail_on_skip and "skipped" in statuses):
        return EXIT_FAILED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if not args.verbose:
        # A restarted API server drops every watch: the informers say so, then list again.
        logging.getLogger("voiceops_localcluster").setLevel(logging.ERROR)
    try:
        catalogue = c.load_catalogue(args.catalogue)
        if args.list:
            print(catalogue_table(catalogue))
            return EXIT_OK
        wanted = [s.strip() for s in args.scenarios.split(",")] if args.scenarios else None
        scenarios = catalogue.select(wanted)
    except (c.CatalogueError, OSError) as error:
        print(f"voiceops-chaos: {error}", file=sys.stderr)
        return EXIT_SETUP
    settings = RunSettings(
        duration=args.duration,
        load=LoadSpec(clients=args.clients, rate=args.rate, text=args.text),
    )
    report_dir = args.report.resolve()
    try:
        if args.kubeconfig is None:
            if args.work_dir is not None:
                args.work_dir.mkdir(parents=True, exist_ok=True)
                document = asyncio.run(
                    run_local(scenarios, settings, report_dir, args.work_dir.resolve(),
                              args.window_seconds)
                )  # fmt: skip
            else:
                with tempfile.TemporaryDirectory(prefix="voiceops-chaos-") as tmp:
                    document = asyncio.run(
                        run_local(scenarios, settings, report_dir, Path(tmp), args.window_seconds)
                    )
        else:
            document = asyncio.run(
                run_cluster(scenarios, settings, report_dir, args.kubeconfig, args.namespace,
                            args.voiceservice, args.url, args.operator_namespace,
                            args.operator_selector)
            )  # fmt: skip
    except (RuntimeError, TimeoutError, OSError) as error:
        print(f"voiceops-chaos: {error}", file=sys.stderr)
        return EXIT_SETUP
    say(f"report: {report_dir / 'report.md'}")
    return exit_code(document, args.fail_on_skip)


if __name__ == "__main__":
    sys.exit(main())
