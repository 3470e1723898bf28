"""The operator's own Prometheus metrics, on its own registry, served at /metrics.

Names (alerts in the chart use them; do not rename without telling its owner):

* ``voiceops_operator_transitions_total{from,to,reason}`` — tier transitions.
* ``voiceops_operator_decision_latency_seconds`` — first bad observation →
  routing change applied (histogram; only transitions away from Serving/Pending
  and escalations, i.e. reactions to a problem).
* ``voiceops_operator_observation_errors_total{kind}`` — scrapes that failed
  (``kind`` = scrape | prometheus | api).
* ``voiceops_operator_reconcile_duration_seconds{loop}`` — one pass of a loop
  (``loop`` = healing | spec), histogram.
* ``voiceops_operator_voiceservice_phase{namespace,name,phase}`` — 1 for the
  current phase of each VoiceService, 0 for the others.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from voiceops_operator.tiers import PHASES

TRANSITIONS_TOTAL = "voiceops_operator_transitions_total"
DECISION_LATENCY_SECONDS = "voiceops_operator_decision_latency_seconds"
OBSERVATION_ERRORS_TOTAL = "voiceops_operator_observation_errors_total"
RECONCILE_DURATION_SECONDS = "voiceops_operator_reconcile_duration_seconds"
VOICESERVICE_PHASE = "voiceops_operator_voiceservice_phase"

_LATENCY_BUCKETS = (0.25, 0.5, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300)
_RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class OperatorMetrics:
    """All operator metrics on one registry (one instance per process, in kopf's memo)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        # prometheus_client appends _total to counters itself.
        self.transitions = Counter(
            TRANSITIONS_TOTAL.removesuffix("_total"),
            "Tier transitions of VoiceServices.",
            ["from", "to", "reason"],
            registry=self.registry,
        )
        self.decision_latency = Histogram(
            DECISION_LATENCY_SECONDS,
            "Seconds from the first observation of a problem to the routing change applied.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.observation_errors = Counter(
            OBSERVATION_ERRORS_TOTAL.removesuffix("_total"),
            "Observations that failed (pod metrics unreadable, Prometheus or API errors).",
            ["kind"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            RECONCILE_DURATION_SECONDS,
            "Seconds one reconcile pass took.",
            ["loop"],
            buckets=_RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.phase = Gauge(
            VOICESERVICE_PHASE,
            "1 for the current phase of each VoiceService, 0 for the others.",
            ["namespace", "name", "phase"],
            registry=self.registry,
        )

    def set_phase(self, namespace: str, name: str, phase: str) -> None:
        for candidate in PHASES:
            self.phase.labels(namespace, name, candidate).set(1 if candidate == phase else 0)

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted VoiceService's phase series."""
        for candidate in PHASES:
            try:
                self.phase.remove(namespace, name, candidate)
            except KeyError:
                continue  # never set: nothing to drop

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_app(metrics: OperatorMetrics) -> web.Application:
    async def serve(_: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", serve)
    return app


async def start_metrics_server(
    metrics: OperatorMetrics, port: int, host: str = "0.0.0.0"
) -> web.AppRunner:
    """Serve ``/metrics``; the caller keeps the runner and calls ``cleanup()`` at exit."""
    runner = web.AppRunner(metrics_app(metrics), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
