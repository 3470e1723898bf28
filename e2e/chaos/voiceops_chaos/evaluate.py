"""Pure evaluation: what the clients saw and what the cluster said, in numbers and verdicts.

No I/O and no clock reads: every function takes the recorded answers, the sampled
cluster state and the times of the faults (``time.monotonic()`` values) and returns
numbers or verdicts, so the unit tests can feed them made-up timelines.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .catalogue import BudgetKind, Expect, SteadyState

CLIENT_KINDS = ("plain", "openai")
S = TypeVar("S")  # a sample of some history


@dataclass(frozen=True)
class Answer:
    """One request as a client saw it (``traffic.RequestRecord`` plus Retry-After)."""

    client: str  # plain | openai | spike (the extra raw clients of a load spike)
    started: float
    seconds: float
    status: int  # 0: no HTTP answer (connection refused, reset, timed out)
    engine: str = ""
    error: str = ""
    retry_after: str | None = None  # the 429's Retry-After, where the client kept it

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def ended(self) -> float:
        return self.started + self.seconds


@dataclass(frozen=True)
class StatusSample:
    """The VoiceService's status when a watch event arrived."""

    at: float
    phase: str
    active_tier: str
    reason: str  # status.lastTransition.reason
    memory_ratio: float | None  # status.gpu.memoryUsedRatio (the operator's reading)


@dataclass(frozen=True)
class RoutingSample:
    """Where the front Service sent new connections when its state changed."""

    at: float
    selected: str  # the selector's tier: gpu | fallback | both
    endpoint_tiers: frozenset[str]  # tiers of its ready endpoints ("?" for an unknown pod)
    endpoint_ips: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PodSeen:
    tier: str
    uid: str
    name: str
    ready: bool
    restarts: int
    waiting_reason: str  # CrashLoopBackOff, ContainerCreating, "" while running


@dataclass(frozen=True)
class EventSeen:
    reason: str
    type: str
    about: str  # Kind/name
    seen_at: float
    message: str = ""


@dataclass(frozen=True)
class ClusterView:
    """One moment of the cluster as the observer's watches showed it."""

    at: float
    phase: str = ""
    selected_tier: str = ""
    reason: str = ""
    endpoint_tiers: frozenset[str] = frozenset()
    pods: tuple[PodSeen, ...] = ()
    events: tuple[EventSeen, ...] = ()
    signals: frozenset[str] = frozenset()
    model_version: str = ""  # status.model.current.version while no update is under way
    autoscaled: tuple[tuple[str, int], ...] = ()  # (tier, its HPA's desiredReplicas)

    def ready(self, tier: str) -> int:
        return sum(1 for p in self.pods if p.tier == tier and p.ready)


# --- requests ----------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def failure_cause(answer: Answer) -> str:
    """Why a request failed, in a word a table can hold ("" when it did not)."""
    if answer.ok:
        return ""
    if answer.status:
        return f"http {answer.status}"
    text = answer.error.lower()
    if "timeout" in text or "timed out" in text:
        return "timeout"
    if "refused" in text:
        return "connection refused"
    if "reset" in text or "disconnected" in text or "closed" in text:
        return "connection reset"
    return "no answer"


@dataclass(frozen=True)
class ClientSummary:
    requests: int
    failures: int
    causes: dict[str, int]
    p50_seconds: float | None  # of the answered requests (status 200)
    p99_seconds: float | None
    engines: dict[str, int]  # answers per engine that spoke


def summarise(answers: Iterable[Answer]) -> dict[str, ClientSummary]:
    """Per client kind: requests, failures by cause, latency, who answered."""
    by_client: dict[str, list[Answer]] = {}
    for answer in answers:
        by_client.setdefault(answer.client, []).append(answer)
    out = {}
    for client, mine in sorted(by_client.items()):
        latencies = [a.seconds for a in mine if a.ok]
        out[client] = ClientSummary(
            requests=len(mine),
            failures=sum(1 for a in mine if not a.ok),
            causes=dict(Counter(failure_cause(a) for a in mine if not a.ok)),
            p50_seconds=percentile(latencies, 0.50),
            p99_seconds=percentile(latencies, 0.99),
            engines=dict(Counter(a.engine for a in mine if a.ok)),
        )
    return out


# --- budgets -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    ok: bool
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Disruption:
    """A moment pods died or were cut off.

    A request was in flight then when it started by ``at`` and ended no earlier than
    ``at - slack`` (``slack``: how late the moment may have been seen, for deaths seen
    through a watch). ``pod_ips``: the dead pods; ``exposed_until``: when none of them
    was a ready endpoint of the front Service and some live pod was (until then a new
    connection went to a dead pod, or found no endpoint at all)."""

    at: float
    slack: float = 0.0
    pod_ips: frozenset[str] = frozenset()
    exposed_until: float | None = None


def in_flight_at(answer: Answer, disruptions: Iterable[Disruption]) -> bool:
    """The request was in flight at one of the disruptions."""
    return any(answer.started <= d.at <= answer.ended + d.slack for d in disruptions)


def sent_to_dead_pod(answer: Answer, disruptions: Iterable[Disruption]) -> bool:
    """The request started after a pod died, before traffic had moved to a live pod."""
    return any(
        d.exposed_until is not None and d.at - d.slack <= answer.started <= d.exposed_until
        for d in disruptions
    )


def exposure_end(
    routing: Sequence[RoutingSample], ips: frozenset[str], since: float
) -> float | None:
    """When the front Service next had ready endpoints and none of ``ips`` among them, at
    or after ``since``: until then a new connection went to a dead pod or found none."""
    return first_time(
        routing,
        lambda r: bool(r.endpoint_ips) and not (r.endpoint_ips & ips),
        since,
        lambda r: r.at,
    )


@dataclass(frozen=True)
class CrashLosses:
    """The raw client's failures in a crash scenario, by when they were sent."""

    in_flight: int  # in flight when a pod died
    sent_to_dead_pod: int  # sent after it died, before traffic moved to a live pod
    other: int  # anything else: over budget


def crash_losses(answers: Sequence[Answer], disruptions: Sequence[Disruption]) -> CrashLosses:
    failed = [a for a in answers if a.client == "plain" and not a.ok]
    in_flight = [a for a in failed if in_flight_at(a, disruptions)]
    exposed = [a for a in failed if a not in in_flight and sent_to_dead_pod(a, disruptions)]
    return CrashLosses(len(in_flight), len(exposed), len(failed) - len(in_flight) - len(exposed))


def judge_budget(
    kind: BudgetKind, answers: Sequence[Answer], disruptions: Sequence[Disruption]
) -> Verdict:
    """Whether what users lost fits the scenario's budget (``catalogue.Budget``).

    ``disruptions``: when pods died or were cut off (the crash budget forgives the raw
    client's requests in flight at those moments, and nothing else).
    """
    problems: list[str] = []
    failed = [a for a in answers if not a.ok]

    def describe(items: Sequence[Answer]) -> str:
        causes = Counter(failure_cause(a) for a in items)
        return ", ".join(f"{n} {cause}" for cause, n in causes.most_common())

    if kind == "zero_loss":
        for client in CLIENT_KINDS:
            lost = [a for a in failed if a.client == client]
            if lost:
                problems.append(f"{client}: {len(lost)} failed ({describe(lost)}); budget 0")
    elif kind == "crash":
        lost = [a for a in failed if a.client == "openai"]
        if lost:
            problems.append(f"openai: {len(lost)} failed ({describe(lost)}); budget 0")
        late = [
            a
            for a in failed
            if a.client == "plain"
            and not in_flight_at(a, disruptions)
            and not sent_to_dead_pod(a, disruptions)
        ]
        if late:
            problems.append(
                f"plain: {len(late)} failed that neither were in flight when a pod died nor "
                f"were sent before traffic moved to a live pod ({describe(late)})"
            )
    elif kind == "only_429":
        errors = [a for a in answers if 500 <= a.status < 600]
        if errors:
            problems.append(f"{len(errors)} 5xx answers ({describe(errors)})")
        unanswered = [a for a in failed if a.status == 0]
        if unanswered:
            problems.append(
                f"{len(unanswered)} requests without an answer ({describe(unanswered)})"
            )
        other = [a for a in failed if a.status not in (0, 429) and not 500 <= a.status < 600]
        if other:
            problems.append(f"{len(other)} other failed answers ({describe(other)})")
        bare = [a for a in answers if a.status == 429 and a.retry_after == ""]
        if bare:
            problems.append(f"{len(bare)} 429 answers without Retry-After")
    return Verdict(not problems, tuple(problems))


# --- timings -----------------------------------------------------------------------------
def first_time(
    samples: Sequence[S], holds: Callable[[S], bool], since: float, at: Callable[[S], float]
) -> float | None:
    """When ``holds`` first held at or after ``since``, the state at ``since`` included
    (the last sample before it still stood then); None if it never did."""
    before = [s for s in samples if at(s) < since]
    if before and holds(before[-1]):
        return since
    for sample in samples:
        if at(sample) >= since and holds(sample):
            return at(sample)
    return None


def fault_to_phase(history: Sequence[StatusSample], phase: str, since: float) -> float | None:
    """Seconds from ``since`` until the VoiceService showed ``phase``."""
    seen = first_time(history, lambda s: s.phase == phase, since, lambda s: s.at)
    return None if seen is None else seen - since


def fault_to_traffic_moved(
    routing: Sequence[RoutingSample], tier: str, since: float
) -> float | None:
    """Seconds from ``since`` until every ready endpoint of the front Service was on
    ``tier`` (new connections could only go there)."""
    seen = first_time(
        routing, lambda r: r.endpoint_tiers == frozenset({tier}), since, lambda r: r.at
    )
    return None if seen is None else seen - since


def client_moved(answers: Sequence[Answer], client: str, engine: str, since: float) -> float | None:
    """Seconds from ``since`` until ``client``'s first answer from ``engine`` that it
    sent after ``since`` (what the client itself saw)."""
    ends = [a.ended for a in answers if a.client == client and a.ok and a.engine == engine
            and a.started >= since]  # fmt: skip
    return None if not ends else min(ends) - since


# --- expectations ------------------------------------------------------------------------
def unmet(
    expect: Expect,
    view: ClusterView,
    *,
    baseline: ClusterView,
    since: float,
    step_start: ClusterView | None = None,
    statuses: frozenset[int] = frozenset(),
    status_seen: bool = False,
) -> list[str]:
    """What of ``expect`` does not hold in ``view`` (empty: all of it holds).

    ``baseline``: the cluster when the scenario began (for restarts); ``step_start``:
    when the step began (for replacements; default the baseline); ``since``: when the
    step began (Events must be newer); ``statuses``: HTTP statuses answered since;
    ``status_seen``: the phase, tier and reason were seen together since the step began
    (:func:`status_seen_at`), so a phase that has come and gone counts.
    """
    missing: list[str] = []
    if not status_seen:
        if expect.phase is not None and view.phase != expect.phase:
            missing.append(f"phase {expect.phase} (is {view.phase or 'unknown'})")
        if expect.tier is not None and view.selected_tier != expect.tier:
            missing.append(f"front Service on {expect.tier} (is on {view.selected_tier or '?'})")
        if expect.reason is not None and view.reason != expect.reason:
            missing.append(f"last transition reason {expect.reason} (is {view.reason or 'none'})")
    if expect.endpoints_on is not None:
        wanted = {"both": {"gpu", "fallback"}}.get(expect.endpoints_on, {expect.endpoints_on})
        if set(view.endpoint_tiers) != wanted:
            shown = ", ".join(sorted(view.endpoint_tiers)) or "none"
            missing.append(f"endpoints on {expect.endpoints_on} (are on {shown})")
    for tier, count in (expect.ready_pods or {}).items():
        if view.ready(tier) < count:
            missing.append(f"{count} ready {tier} pod(s) (has {view.ready(tier)})")
    if expect.event is not None and not any(
        e.reason == expect.event and e.seen_at >= since for e in view.events
    ):
        missing.append(f"an Event {expect.event} after the step began")
    if expect.restarted is not None and not restarted(view, baseline, expect.restarted):
        missing.append(f"a {expect.restarted} pod restarted or replaced")
    if expect.unrestarted is not None and restarted(view, baseline, expect.unrestarted):
        missing.append(f"no {expect.unrestarted} pod restarted or replaced")
    if expect.model_version is not None and view.model_version != expect.model_version:
        shown = view.model_version or "an update under way"
        missing.append(f"every GPU pod on model version {expect.model_version} (is {shown})")
    if expect.replaced is not None and not replaced(view, step_start or baseline, expect.replaced):
        missing.append(f"every {expect.replaced} pod replaced, one ready")
    for tier, count in (expect.pods_exactly or {}).items():
        have = sum(1 for p in view.pods if p.tier == tier)
        if have != count:
            missing.append(f"exactly {count} {tier} pod(s) (has {have}, terminating included)")
    if expect.crash_loop is not None and not any(
        p.tier == expect.crash_loop and p.waiting_reason == "CrashLoopBackOff" for p in view.pods
    ):
        missing.append(f"a {expect.crash_loop} container in CrashLoopBackOff")
    if expect.signal is not None and expect.signal not in view.signals:
        missing.append(f"the operator timing the {expect.signal} signal")
    if expect.status_seen is not None and expect.status_seen not in statuses:
        missing.append(f"an answer with status {expect.status_seen}")
    desired = dict(view.autoscaled)
    for tier, count in (expect.autoscaled or {}).items():
        if desired.get(tier, 0) < count:
            shown = f"wants {desired[tier]}" if tier in desired else "no HPA"
            missing.append(f"the {tier} HPA wanting {count} replica(s) ({shown})")
    return missing


def status_seen_at(expect: Expect, history: Sequence[StatusSample], since: float) -> float | None:
    """When the VoiceService's status first showed ``expect``'s phase, active tier and
    reason together at or after ``since`` (None: not yet, or nothing of them to check)."""
    if expect.phase is None and expect.tier is None and expect.reason is None:
        return None

    def matches(s: StatusSample) -> bool:
        return (
            expect.phase in (None, s.phase)
            and expect.tier in (None, s.active_tier)
            and expect.reason in (None, s.reason)
        )

    return first_time(history, matches, since, lambda s: s.at)


def restarted(view: ClusterView, baseline: ClusterView, tier: str) -> bool:
    """A pod of ``tier`` restarted its container, or is new, since ``baseline``."""
    before = {p.uid: p.restarts for p in baseline.pods if p.tier == tier}
    return any(
        p.uid not in before or p.restarts > before[p.uid] for p in view.pods if p.tier == tier
    )


def replaced(view: ClusterView, baseline: ClusterView, tier: str) -> bool:
    """Every pod of ``tier`` (terminating ones too) is new since ``baseline``; one is ready."""
    before = {p.uid for p in baseline.pods if p.tier == tier}
    mine = [p for p in view.pods if p.tier == tier]
    return bool(mine) and not any(p.uid in before for p in mine) and any(p.ready for p in mine)


def flaps(history: Sequence[StatusSample], since: float, until: float) -> list[str]:
    """Phases the VoiceService went back to after leaving them, between ``since`` and
    ``until`` (the state at ``since`` included): a flap."""
    phases = [s.phase for s in history if s.at < since][-1:]
    phases += [s.phase for s in history if since <= s.at < until]
    path: list[str] = []
    for phase in phases:
        if not path or path[-1] != phase:
            path.append(phase)
    return sorted({p for n, p in enumerate(path) if p in path[:n]})


def steady_state_unmet(steady: SteadyState, view: ClusterView) -> list[str]:
    """What of the steady-state hypothesis does not hold in ``view``."""
    expect = Expect(phase=steady.phase, tier=steady.tier, ready_pods=dict(steady.ready_pods))
    missing = unmet(expect, view, baseline=view, since=view.at)
    on = {"both": {"gpu", "fallback"}}.get(steady.tier, {steady.tier})
    if not view.endpoint_tiers or not set(view.endpoint_tiers) <= on:
        shown = ", ".join(sorted(view.endpoint_tiers)) or "none"
        missing.append(f"front Service endpoints on {steady.tier} (are on {shown})")
    return missing


# --- one scenario's numbers ----------------------------------------------------------------
@dataclass
class StepTiming:
    """What one step did and when its expectations held (seconds after its action)."""

    name: str
    action_at: float
    done: str = ""  # what the target did
    expectations: list[dict[str, object]] = field(default_factory=list)
    traffic_moved_seconds: float | None = None
    traffic_goal: bool = False  # counts for the fault → traffic moved goal
    clients_moved_seconds: dict[str, float | None] = field(default_factory=dict)
    phases_seconds: dict[str, float | None] = field(default_factory=dict)
