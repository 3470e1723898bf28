"""Run scenarios: steady state → fault → what must be observed → rollback → steady state.

Load runs through the front Service for the whole of each scenario. Expectations are
polled against the observer's view with deadlines; the numbers come from
``evaluate`` once the load has stopped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from voiceops_localcluster.node_agent import KubeApiError

from . import catalogue as c
from . import evaluate as ev
from .evaluate import Disruption
from .load import Load, LoadSpec
from .observe import Observer
from .targets import FaultTarget

log = logging.getLogger(__name__)

# Which engine answers for each tier: what the client saw answer is read against.
DEFAULT_ENGINES = {"gpu": "vits", "fallback": "espeak"}
SERVING_DEFAULTS = {"maxConcurrency": 8, "maxQueue": 64}  # the CRD's defaults
ACTION_ERRORS = (
    RuntimeError,
    TimeoutError,
    KubeApiError,
    aiohttp.ClientError,
    OSError,
    LookupError,
)


@dataclass(frozen=True)
class RunSettings:
    duration: float = 30.0  # load seconds per scenario at least (lead-in, faulted, tail)
    load: LoadSpec = field(default_factory=LoadSpec)
    steady_within: float | None = None  # overrides the scenarios' steady_state.within


@dataclass
class ScenarioResult:
    id: str
    title: str
    budget: str
    target: str
    fault_class: str = "other"
    status: str = "passed"  # passed | failed | skipped
    problems: list[str] = field(default_factory=list)
    notes: str = ""
    started: float = 0.0
    ended: float = 0.0
    fault_at: float | None = None
    rollback_at: float | None = None
    recovered_at: float | None = None
    steps: list[ev.StepTiming] = field(default_factory=list)
    summary: dict[str, ev.ClientSummary] = field(default_factory=dict)
    verdict: ev.Verdict = field(default_factory=lambda: ev.Verdict(True))
    leftovers: list[str] = field(default_factory=list)
    disruptions: list[Disruption] = field(default_factory=list)
    crash_losses: ev.CrashLosses | None = None
    # Kept for the timeline (not in the JSON report).
    answers: list[ev.Answer] = field(default_factory=list)
    status_history: list[ev.StatusSample] = field(default_factory=list)
    routing_history: list[ev.RoutingSample] = field(default_factory=list)

    @property
    def recovery_seconds(self) -> float | None:
        if self.recovered_at is None or self.rollback_at is None:
            return None
        return self.recovered_at - self.rollback_at

    def fail(self, problem: str) -> None:
        self.status = "failed"
        self.problems.append(problem)


async def wait_steady(observer: Observer, steady: c.SteadyState, within: float) -> float:
    """Until the steady-state hypothesis holds; when it first did."""
    deadline = time.monotonic() + within
    while missing := ev.steady_state_unmet(steady, observer.view()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"steady state not within {within:g}s: {'; '.join(missing)}")
        await asyncio.sleep(0.05)
    return time.monotonic()


async def hold_until(moment: float) -> None:
    """Keep the load running until ``moment`` (time.monotonic())."""
    pause = moment - time.monotonic()
    if pause > 0:
        await asyncio.sleep(pause)


def engines_of(voiceservice: dict[str, Any]) -> dict[str, str]:
    spec = voiceservice.get("spec") or {}
    return {
        "gpu": str((spec.get("model") or {}).get("engine") or DEFAULT_ENGINES["gpu"]),
        "fallback": str((spec.get("fallback") or {}).get("engine") or DEFAULT_ENGINES["fallback"]),
    }


def spike_clients(voiceservice: dict[str, Any], endpoints: int, factor: float) -> int:
    """Clients enough to be ``factor`` times what the front Service's pods admit."""
    serving = (voiceservice.get("spec") or {}).get("serving") or {}
    per_pod = int(serving.get("maxConcurrency", SERVING_DEFAULTS["maxConcurrency"])) + int(
        serving.get("maxQueue", SERVING_DEFAULTS["maxQueue"])
    )
    return max(1, math.ceil(per_pod * max(endpoints, 1) * factor))


class ScenarioRun:
    """One scenario against one target, under load."""

    def __init__(
        self,
        scenario: c.Scenario,
        target: FaultTarget,
        observer: Observer,
        base_url: Callable[[], str],
        settings: RunSettings,
    ) -> None:
        self.scenario = scenario
        self.target = target
        self.observer = observer
        self.settings = settings
        self.load = Load(base_url, settings.load)
        self.result = ScenarioResult(
            scenario.id,
            scenario.title,
            scenario.budget.kind,
            target.name,
            fault_class=scenario.fault_class,
            notes=scenario.notes,
        )
        self.baseline = ev.ClusterView(at=0.0)

    async def run(self) -> ScenarioResult:
        result, scenario = self.result, self.scenario
        reasons = sorted({r for a in scenario.actions() if (r := self.target.unsupported(a))})
        if reasons:
            result.status, result.problems = "skipped", reasons
            return result
        within = self.settings.steady_within or scenario.steady_state.within
        try:
            await wait_steady(self.observer, scenario.steady_state, within)
        except TimeoutError as error:
            result.fail(f"before the fault: {error}")
            return result
        self.baseline = self.observer.view()
        try:
            await self.load.start()
            await self.load.answered_by_both(60)
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            await self.load.stop()
            result.fail(f"load did not start: {error!r}")
            return result
        result.started = time.monotonic()
        duration = self.settings.duration
        try:
            await self._phases(duration, within)
        finally:
            await self.load.stop()
        result.ended = time.monotonic()
        self._evaluate()
        return result

    async def _phases(self, duration: float, within: float) -> None:
        result = self.result
        await hold_until(result.started + duration * 0.25)
        result.fault_at = time.monotonic()
        try:
            for n, step in enumerate(self.scenario.method):
                if not await self._step(f"method {n + 1}", step):
                    break
            await hold_until(result.started + duration * 0.6)
        finally:
            # Recovery counts from the rollback, or from the fault when nothing is undone
            # (a killed pod comes back by itself).
            result.rollback_at = time.monotonic() if self.scenario.rollback else result.fault_at
            for n, step in enumerate(self.scenario.rollback):
                await self._step(f"rollback {n + 1}", step)
        try:
            result.recovered_at = await wait_steady(
                self.observer, self.scenario.steady_state, within
            )
        except TimeoutError as error:
            result.fail(f"after the rollback: {error}")
            return
        await hold_until(max(result.started + duration, result.recovered_at + duration * 0.25))
        result.leftovers = self.target.scenario_leftovers() + await self._stray_pods()

    async def _step(self, name: str, step: c.Step) -> bool:
        """Do the step's action and wait for what it expects; False when that failed."""
        timing = ev.StepTiming(name=f"{name}: {step.do.action}", action_at=time.monotonic())
        self.result.steps.append(timing)
        step_start = self.observer.view()
        spike: asyncio.Task[None] | None = None
        try:
            if isinstance(step.do, c.LoadSpike):
                clients = step.do.clients or spike_clients(
                    self.observer.voiceservice(),
                    len(self.observer.endpoint_ips()),
                    step.do.capacity_factor,
                )
                spike = asyncio.create_task(self.load.spike(clients, step.do.seconds))
                timing.done = f"{clients} more raw clients for {step.do.seconds:g}s"
            elif isinstance(step.do, c.Observe):
                timing.done = "observed"
            else:
                applied = await self.target.apply(step.do)
                timing.done = applied.done
                self.result.disruptions += applied.disruptions
        except ACTION_ERRORS as error:
            self.result.fail(f"{timing.name}: the action failed: {error!r}")
            return False
        ok = True
        for expect in step.expect:
            held = await self._expect(expect, timing.action_at, step_start)
            timing.expectations.append(held)
            if held["seconds"] is None:
                self.result.fail(f"{timing.name}: not within {expect.within:g}s: {held['missing']}")
                ok = False
                break
        if ok and step.traffic_moves_to is not None:
            tier = step.traffic_moves_to

            def moved() -> bool:
                # At some moment since the action, not necessarily now: a replacement
                # may already have brought traffic back (node-lost reschedules).
                history = self.observer.routing_history
                return ev.fault_to_traffic_moved(history, tier, timing.action_at) is not None

            try:
                await self._until(moved, 60)
            except TimeoutError:
                self.result.fail(
                    f"{timing.name}: the front Service's endpoints never all on {tier}"
                )
                ok = False
        if spike is not None:
            await spike
        if ok and step.hold_seconds:
            await asyncio.sleep(step.hold_seconds)
        return ok

    async def _expect(
        self, expect: c.Expect, since: float, step_start: ev.ClusterView
    ) -> dict[str, Any]:
        deadline = since + expect.within
        described = expect.model_dump(exclude_none=True, exclude={"within"})
        while True:
            seen = ev.status_seen_at(expect, self.observer.status_history, since)
            missing = ev.unmet(
                expect,
                self.observer.view(),
                status_seen=seen is not None,
                baseline=self.baseline,
                since=since,
                step_start=step_start,
                statuses=self.load.statuses_since(since),
            )
            if not missing:
                return {"expect": described, "seconds": round(time.monotonic() - since, 3)}
            if time.monotonic() > deadline:
                path = " → ".join(
                    f"{s.phase}/{s.active_tier}/{s.reason} at {s.at - since:.1f}s"
                    for s in self.observer.status_history
                    if s.at >= since
                )
                return {
                    "expect": described,
                    "seconds": None,
                    "missing": "; ".join(missing) + f" (status since the step: {path or 'none'})",
                }
            await asyncio.sleep(0.02)

    @staticmethod
    async def _until(done: Callable[[], bool], within: float) -> None:
        deadline = time.monotonic() + within
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError
            await asyncio.sleep(0.02)

    async def _stray_pods(self, within: float = 60.0) -> list[str]:
        """Pods of the VoiceService still terminating ``within`` seconds after the tail (a
        scale-down after recovery drains for its preStop sleep and in-flight requests)."""
        deadline = time.monotonic() + within
        while True:
            stray = [
                f"pod {p['metadata']['name']} still terminating after {within:g}s"
                for p in self.observer.pods.items.values()
                if p["metadata"].get("deletionTimestamp")
            ]
            if not stray or time.monotonic() > deadline:
                return stray
            await asyncio.sleep(0.2)

    def _evaluate(self) -> None:
        result = self.result
        answers = self.load.answers()
        result.answers = answers
        result.summary = ev.summarise(answers)
        deaths = [
            Disruption(at, slack=1.0, pod_ips=frozenset({ip}) if ip else frozenset())
            for at, ip in [*self.observer.deaths, *self.observer.dropouts]
            if at >= result.started
        ]
        routing = self.observer.routing_history
        result.disruptions = [
            replace(d, exposed_until=ev.exposure_end(routing, d.pod_ips, d.at - d.slack))
            if d.pod_ips
            else d
            for d in result.disruptions + deaths
        ]
        result.crash_losses = ev.crash_losses(answers, result.disruptions)
        result.verdict = ev.judge_budget(self.scenario.budget.kind, answers, result.disruptions)
        if not result.verdict.ok:
            for problem in result.verdict.problems:
                result.fail(f"budget ({result.budget}): {problem}")
        if self.scenario.forbid_flap and result.fault_at is not None:
            until = result.rollback_at if self.scenario.rollback else result.ended
            back = ev.flaps(self.observer.status_history, result.fault_at, until or result.ended)
            if back:
                result.fail(f"the phase flapped: back to {', '.join(back)} before the rollback")
        engines = engines_of(self.observer.voiceservice())
        steps = {t.name: t for t in result.steps}
        for n, step in enumerate([*self.scenario.method, *self.scenario.rollback]):
            label = (
                f"method {n + 1}"
                if n < len(self.scenario.method)
                else (f"rollback {n + 1 - len(self.scenario.method)}")
            )
            timing = steps.get(f"{label}: {step.do.action}")
            if timing is None:
                continue
            for expect in step.expect:
                if expect.phase is not None:
                    timing.phases_seconds[expect.phase] = ev.fault_to_phase(
                        self.observer.status_history, expect.phase, timing.action_at
                    )
            if step.traffic_moves_to is not None:
                tier = step.traffic_moves_to
                timing.traffic_goal = step.traffic_goal and label.startswith("method")
                timing.traffic_moved_seconds = ev.fault_to_traffic_moved(
                    self.observer.routing_history, tier, timing.action_at
                )
                timing.clients_moved_seconds = {
                    client: ev.client_moved(answers, client, engines[tier], timing.action_at)
                    for client in ev.CLIENT_KINDS
                }
        # From the state when the load began (the last sample before it) to the end.
        lo = result.started
        statuses, routing = self.observer.status_history, self.observer.routing_history
        result.status_history = [s for s in statuses if s.at < lo][-1:] + [
            s for s in statuses if s.at >= lo
        ]
        result.routing_history = [r for r in routing if r.at < lo][-1:] + [
            r for r in routing if r.at >= lo
        ]
