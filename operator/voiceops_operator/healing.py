"""The self-healing loop: observe each VoiceService's tiers, decide, act.

One kopf daemon per VoiceService runs a level-triggered loop (every
``SCRAPE_INTERVAL_SECONDS``, and promptly when one of its pods changes): list
its pods, scrape the ready GPU pods' /metrics (or ask Prometheus), call the
pure :func:`policy.decide`, then:

1. write its decision, and only that: its own status fields (phase,
   activeTier, Degraded/FailedOver conditions, failovers, lastTransition,
   fallback.desiredReplicas, gpu.memoryUsedRatio, healing signals), through
   the one guarded status writer (:func:`~voiceops_operator.kube.write_status`);
2. when the routing changed, ask the spec reconcile to apply it now
   (:meth:`~voiceops_operator.reconcile.Reconciler.route`): the reconcile is the
   one writer of the children, the front Service's selector and the fallback
   tier's size included, and builds them from the decision;
3. one Kubernetes Event and one metric sample per transition; then the routing
   notices to the pods, once the front Service selects the new tier.

What to write is decided purely in :mod:`~voiceops_operator.healing_patches`
(conditions, the status patch, what the Events say); the kopf handlers that run
one loop per VoiceService are in :mod:`~voiceops_operator.healing_handlers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from voiceops_contract import pod as pod_contract

from voiceops_operator import build, names, observe, policy, routing_notices
from voiceops_operator import status as st
from voiceops_operator.events import EventSink
from voiceops_operator.healing_patches import (
    ESCALATIONS,
    healing_status,
    policy_config,
    replacement_note,
    routing_of,
    transition_note,
)
from voiceops_operator.kube import (
    HEALING_USER_AGENT,
    EventPoster,
    KubeApi,
    KubeError,
    write_status,
)
from voiceops_operator.opmetrics import OperatorMetrics
from voiceops_operator.reconcile import ChildConflict, Reconciler
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import InvalidSpec, VoiceService, parse_voiceservice
from voiceops_operator.tiers import ActiveTier

log = logging.getLogger(__name__)

MIN_WAKE_GAP_SECONDS = 0.2  # at most one pass per gap for a burst of pod events


def _tier_of(pod: Mapping[str, Any]) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(names.LABEL_TIER, ""))


@dataclass
class HealingRuntime:
    """Process-wide pieces every VoiceService's loop shares (kept in kopf's memo)."""

    settings: OperatorSettings
    api: KubeApi
    session: aiohttp.ClientSession
    metrics: OperatorMetrics
    scraper: observe.PodScraper
    # The spec reconcile, shared with the kopf handlers: the loop asks it to route.
    reconciler: Reconciler
    events: EventSink
    prometheus: observe.PrometheusSource | None = None
    # Signs routing notices to the pods; None: the pods are not told (no key set).
    routing_key: Ed25519PrivateKey | None = None
    wakers: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    instance: str = field(default_factory=socket.gethostname)
    # Set by close(): kopf may (re)spawn a daemon while the operator stops (a handler
    # that finishes after the stop began); it must then return at once, not use
    # closed clients until kopf's cancellation timeout.
    closed: bool = False

    async def gpu_metrics(
        self, namespace: str, gpu_pods: list[dict[str, Any]]
    ) -> observe.ScrapeResult:
        if self.prometheus is not None:
            result = await self.prometheus.scrape(namespace, gpu_pods)
            kind = "prometheus"
        else:
            result = await self.scraper.scrape(gpu_pods)
            kind = "scrape"
        if result.errors:
            self.metrics.observation_errors.labels(kind).inc(len(result.errors))
        return result

    async def tell_pod(self, target: routing_notices.PodTarget) -> bool:
        """Send one pod its routing notice; False when it could not be delivered."""
        if self.routing_key is None:
            return False
        token = routing_notices.sign_notice(
            self.routing_key, target.name, target.routed, time.time()
        )
        url = f"http://{target.address}{pod_contract.PATH_ROUTING}"
        timeout = aiohttp.ClientTimeout(total=self.settings.scrape_timeout_seconds)
        try:
            async with self.session.post(
                url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
            ) as response:
                if response.status == 200:
                    return True
                detail = (await response.text())[:200]
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
        self.metrics.observation_errors.labels("routing").inc()
        log.debug("routing notice to %s (%s) not delivered: %s", target.name, url, detail)
        return False

    async def close(self) -> None:
        self.closed = True
        await self.session.close()
        await self.api.close()


# The VoiceService's pods, from the operator's pod watch (kopf index) instead of a LIST
# per pass: one LIST per VoiceService per pass adds up to many API reads a second
# (the numbers: bench/README.md).
PodSource = Callable[[], list[dict[str, Any]]]
# Pods by (namespace, VoiceService), as the pod watch keeps them (kopf.Index is one).
PodIndex = Mapping[tuple[str, str], Collection[dict[str, Any]]]


def pods_from_index(index: PodIndex, namespace: str, name: str) -> PodSource:
    """The pod source of one VoiceService's loop: its entry in the pod watch's index."""

    def pods() -> list[dict[str, Any]]:
        return list(index.get((namespace, name), ()))

    return pods


class HealingLoop:
    """One VoiceService's loop state: the policy state and what was last applied."""

    def __init__(
        self,
        runtime: HealingRuntime,
        namespace: str,
        name: str,
        pods: PodSource,
    ) -> None:
        self.runtime = runtime
        self.namespace = namespace
        self.name = name
        self.pods = pods
        self.state: policy.PolicyState | None = None
        self.applied: build.Routing | None = None  # routing the reconcile last applied
        self.config: policy.PolicyConfig | None = None  # from the spec, each pass
        # Seconds between passes, from the spec (policy.observation_interval).
        self.interval = runtime.settings.scrape_interval_seconds
        # Status fields the API server pruned (a CRD without them): never retried.
        self._pruned: set[str] = set()
        # What each pod (uid, restarts) was last told about its routing.
        self.told: dict[tuple[str, int], bool] = {}
        # Pods (uids) deleted for a GPU hardware fault: each is deleted once.
        self.replaced: set[str] = set()

    async def step(self, body: Mapping[str, Any]) -> policy.Decision | None:
        """One observe → decide → act pass; None when the spec is invalid."""
        started = time.perf_counter()
        try:
            vs = parse_voiceservice(dict(body), self.namespace)
        except InvalidSpec:
            return None  # the spec reconcile reports it; nothing to heal
        config = self.config = policy_config(vs.spec)
        self.interval = policy.observation_interval(
            config, self.runtime.settings.scrape_interval_seconds
        )
        if self.state is None:
            self.state = policy.state_from_status(dict(body.get("status") or {}))
        pods = self.pods()
        gpu_pods = [p for p in pods if _tier_of(p) == "gpu"]
        fallback_pods = [p for p in pods if _tier_of(p) == "fallback"]
        scraped = await self.runtime.gpu_metrics(self.namespace, observe.live_pods(gpu_pods))
        if scraped.errors:
            log.debug("%s/%s: unknown metrics: %s", self.namespace, self.name, scraped.errors)
        observation = observe.build_observation(
            time.time(),
            gpu_pods,
            fallback_pods,
            scraped.metrics,
            # The spec's count; an HPA that scaled further shows in the pod count,
            # which the policy takes the larger of.
            gpu_replicas=build.gpu_replicas(vs.spec),
        )
        decision = policy.decide(config, self.state, observation)
        await self._act(body, vs, decision)
        self.state = decision.state
        await self._tell_pods(pods, vs, decision.active_tier)
        await self._replace_faulty(body, pods, decision)
        self.runtime.metrics.reconcile_duration.labels("healing").observe(
            time.perf_counter() - started
        )
        return decision

    async def _act(
        self,
        body: Mapping[str, Any],
        vs: VoiceService,
        decision: policy.Decision,
    ) -> None:
        rt = self.runtime
        await self._write_status(body, vs, decision)
        routing = routing_of(decision)
        if routing != self.applied:
            await self._route(routing)
            self.applied = routing
        rt.metrics.set_phase(self.namespace, self.name, decision.phase)
        t = decision.transition
        if t is None:
            return
        rt.metrics.transitions.labels(t.from_phase, t.to_phase, t.reason).inc()
        if t.to_phase in ESCALATIONS or t.to_tier == "fallback":
            rt.metrics.decision_latency.observe(max(0.0, time.time() - t.signal_since))
        log.info(
            "%s/%s: %s → %s (%s): %s",
            self.namespace,
            self.name,
            t.from_phase,
            t.to_phase,
            t.reason,
            t.message,
        )
        await rt.events(body, transition_note(t))

    async def _route(self, routing: build.Routing) -> None:
        """Have the spec reconcile apply the routing now; it waits for nothing else."""
        try:
            await self.runtime.reconciler.route(self.namespace, self.name, routing)
        except ChildConflict as exc:
            # The reconcile reports it (status, Event) and retries on its own schedule.
            log.warning("%s/%s: routing not applied: %s", self.namespace, self.name, exc)

    async def _replace_faulty(
        self, body: Mapping[str, Any], pods: list[dict[str, Any]], decision: policy.Decision
    ) -> None:
        """Delete each pod whose GPU has a hardware fault (once), with a Warning Event.

        Its Deployment makes a new pod, which the scheduler may place on a healthy GPU.
        """
        uids = {p["metadata"]["name"]: p["metadata"].get("uid", "") for p in pods}
        for replacement in decision.replace:
            uid = uids.get(replacement.pod, "")
            if not uid or uid in self.replaced:
                continue
            rt = self.runtime
            await rt.api.delete("v1", "Pod", self.namespace, replacement.pod)
            self.replaced.add(uid)
            log.warning("%s/%s: %s", self.namespace, self.name, replacement.message)
            await rt.events(body, replacement_note(replacement))
        self.replaced &= set(uids.values())

    async def _tell_pods(
        self, pods: list[dict[str, Any]], vs: VoiceService, active_tier: ActiveTier
    ) -> None:
        """Tell every pod whose routing changed (or who restarted) whether it is routed to.

        After the selector switch, so the clients that a pod routed away lets go
        reconnect to the tier the front Service selects now.
        """
        if self.runtime.routing_key is None:
            return
        tier = active_tier if vs.spec.fallback.enabled else "gpu"
        targets = routing_notices.pod_targets(pods, tier, vs.spec.serving.port)
        self.told = {t.key: self.told[t.key] for t in targets if t.key in self.told}
        stale = [t for t in targets if self.told.get(t.key) != t.routed]
        if not stale:
            return
        delivered = await asyncio.gather(*(self.runtime.tell_pod(t) for t in stale))
        for target, ok in zip(stale, delivered, strict=True):
            if ok:
                self.told[target.key] = target.routed

    async def _write_status(
        self, body: Mapping[str, Any], vs: VoiceService, decision: policy.Decision
    ) -> None:
        """Write the healing-owned status fields (kube.write_status: guarded, retried)."""
        now = st.now_rfc3339()

        def patch_for(current: dict[str, Any]) -> dict[str, Any]:
            patch = healing_status(current, decision, vs.spec.fallback.enabled, vs.generation, now)
            for key in self._pruned:
                patch.pop(key, None)
            return patch

        written = await write_status(self.runtime.api, body, patch_for)
        if written is None or not written.patch:
            return  # nothing changed, or deleted meanwhile (the daemon stops)
        stored = written.obj.get("status") or {}
        pruned = {k for k, v in written.patch.items() if v is not None and k not in stored}
        if pruned - self._pruned:
            log.warning(
                "%s/%s: the API server dropped status fields %s (CRD schema without "
                "them); the healing loop keeps them in memory only",
                self.namespace,
                self.name,
                sorted(pruned),
            )
            self._pruned |= pruned


async def wait_for_wake(stopped: Any, wake: asyncio.Event, seconds: float) -> bool:
    """Sleep until the pause ends, a pod event wakes us, or the daemon stops.

    True when a pod event woke us (the caller then lets a burst of events settle).
    """
    waiters = [
        asyncio.ensure_future(wake.wait()),
        asyncio.ensure_future(stopped.wait()),
    ]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        for w in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await w
    woken = wake.is_set()
    wake.clear()
    return woken


async def run_loop(
    loop: HealingLoop, body: Mapping[str, Any], stopped: Any, wake: asyncio.Event
) -> None:
    """Passes until stopped; one failed pass is logged and retried next interval."""
    last_pass = -math.inf
    while not stopped and not loop.runtime.closed:
        pause = loop.interval
        last_pass = time.monotonic()
        try:
            decision = await loop.step(body)
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            loop.runtime.metrics.observation_errors.labels("api").inc()
            log.warning("%s/%s: healing pass failed: %s", loop.namespace, loop.name, exc)
            loop.applied = None  # re-check the children next time
            loop.state = None  # and re-read the status
        else:
            if decision is not None and loop.config is not None:
                # The spec's cadence, or sooner when a pending window runs out.
                pause = policy.observation_delay(
                    loop.config,
                    loop.runtime.settings.scrape_interval_seconds,
                    decision.recheck_at,
                    time.time(),
                )
        if stopped or loop.runtime.closed:
            break
        if await wait_for_wake(stopped, wake, pause) and not stopped:
            # A pod event (a pod lost, a pod ready) is acted on at once; the rest of its
            # burst (status, conditions) is taken by one pass at most a gap later.
            gap = last_pass + MIN_WAKE_GAP_SECONDS - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
            wake.clear()


async def make_runtime(
    settings: OperatorSettings,
    kubeconfig: str | None = None,
    reconciler: Reconciler | None = None,
) -> HealingRuntime:
    """Clients for the API (in-cluster, else kubeconfig) and for scraping pods.

    ``reconciler``: the operator's spec reconcile, which applies the routing; when
    not given (tests driving the loop alone), one over this runtime's API client.
    """
    api = await KubeApi.connect(settings.api_timeout_seconds, kubeconfig, HEALING_USER_AGENT)
    # Plenty of connections for scraping many pods; the scraper bounds concurrency.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128))
    prometheus = None
    if settings.prometheus_url:
        prometheus = observe.PrometheusSource(
            session, settings.prometheus_url, settings.scrape_timeout_seconds
        )
    instance = os.environ.get("HOSTNAME") or socket.gethostname()
    events = EventPoster(api, instance)
    return HealingRuntime(
        settings=settings,
        api=api,
        session=session,
        metrics=OperatorMetrics(),
        scraper=observe.PodScraper(session, settings.scrape_timeout_seconds),
        reconciler=reconciler if reconciler is not None else Reconciler(api, settings, events),
        events=events,
        prometheus=prometheus,
        routing_key=settings.routing_signing_key(),
        instance=instance,
    )
