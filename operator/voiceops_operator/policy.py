"""The failover policy: observations of the GPU tier in, a tier decision out.

Pure: no I/O, no clock reads (time comes in with the observation), no kopf or
Kubernetes client. The same config, state and observation always give the
same decision, and the state round-trips through the VoiceService status so
an operator restart resumes where it was.

Rules; each signal must hold ``window_seconds`` before acting:

* Severity 2 ("GPU tier cannot serve") → FailedOver: no usable ready GPU pod
  because every ready GPU pod is at or above the critical memory ratio, or
  GPU pods crash-loop beyond ``crash_loop_restarts``, or are unschedulable
  past ``unschedulable_after_seconds``, or simply no GPU pod is ready.
* Severity 1 ("GPU tier under pressure") → Degraded (both tiers, fallback
  scaled up): some ready GPU pod at or above the high ratio or reporting
  itself degraded, some GPU pod crash-looping or unschedulable past its grace
  while others still serve, or a ready GPU pod whose metrics cannot be read.
* Healthy: a ready GPU pod exists, every ready GPU pod has readable metrics,
  memory below ``high - hysteresis_margin`` and is not degraded, and no GPU
  pod is crash-looping or stuck unschedulable. Between the clear threshold
  and the high threshold nothing changes (hysteresis).
* Degraded/FailedOver → Recovering after ``window_seconds`` of health;
  Recovering → Serving after ``recover_after_seconds`` of continuous health.
* At most one transition per ``cooldown_seconds`` (spec.failover.cooldownSeconds;
  default: the window).
* Facts act at once, noise waits: an empty tier is a fact, not a noisy signal.
  With no ready GPU pod while a fallback pod is ready, Serving, Degraded and
  Recovering fail over at once (no window, no cooldown). FailedOver with no
  ready fallback pod while a GPU pod is ready goes to Degraded (both tiers) at
  once: the GPU tier serves under pressure rather than nothing. A failover
  that would route to a fallback tier with no ready pod, while the GPU tier
  has one, becomes Degraded instead (which scales the fallback tier up).
* Pending (no GPU pod ever ready): a ready GPU pod → Serving at once; pods
  that merely start (pulling, loading the model) are no failure, but GPU pods
  unschedulable past their grace or crash-looping fail over from Pending too.
* Partial trouble (one of several GPU pods critical, crash-looping or
  unschedulable while others still serve) is Degraded, not FailedOver: the
  healthy GPU pods keep serving next to the fallback tier.

Unknown metrics: a ready GPU pod whose /metrics could not be read never
counts as healthy, so it blocks recovery; if it persists for a window the
tier is Degraded (reason MetricsUnavailable) rather than FailedOver, because
the kubelet still reports the pod ready and an unreadable endpoint alone is
not proof that the GPU cannot serve. A reachable pod that exports no GPU
gauges at all (no GPU visible, no fault injection) has no memory reading;
that is not pressure, so memory rules do not apply to it.

Fallback disabled: the policy never routes to the fallback tier; a severity-2
signal makes the phase Degraded with the GPU tier still active and a message
saying there is no fallback to fail over to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from voiceops_operator import reasons
from voiceops_operator.tiers import ACTIVE_TIERS, PHASES, ActiveTier, Phase

# Pending-signal keys kept in the state (and in status.healing.signals).
SIGNAL_PRESSURE = "pressure"  # severity >= 1
SIGNAL_FAILURE = "failure"  # severity == 2
SIGNAL_HEALTHY = "healthy"
SIGNALS = (SIGNAL_PRESSURE, SIGNAL_FAILURE, SIGNAL_HEALTHY)


class Severity(IntEnum):
    HEALTHY = 0
    HOLD = 1  # between the clear and the high threshold: change nothing
    PRESSURE = 2
    FAILURE = 3


class PolicyConfig(BaseModel):
    """spec.failover plus what the policy needs from spec.fallback and spec.gpu."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_high_ratio: float = Field(0.90, gt=0, le=1)
    memory_critical_ratio: float = Field(0.97, gt=0, le=1)
    window_seconds: float = Field(10, ge=0)
    recover_after_seconds: float = Field(60, ge=0)
    unschedulable_after_seconds: float = Field(30, ge=0)
    crash_loop_restarts: int = Field(3, ge=1)
    # Memory must fall this far below the high ratio to count as healthy.
    hysteresis_margin: float = Field(0.05, ge=0, lt=1)
    # None: the window (one window between any two transitions).
    cooldown_seconds: float | None = Field(None, ge=0)
    fallback_enabled: bool = True
    fallback_standby_replicas: int = Field(1, ge=0)
    fallback_max_replicas: int = Field(4, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> PolicyConfig:
        if self.memory_high_ratio >= self.memory_critical_ratio:
            raise ValueError(
                "failover.memoryHighRatio must be below failover.memoryCriticalRatio "
                f"(got {self.memory_high_ratio} >= {self.memory_critical_ratio})"
            )
        if self.fallback_standby_replicas > self.fallback_max_replicas:
            raise ValueError(
                "fallback.standbyReplicas must not exceed fallback.maxReplicas "
                f"(got {self.fallback_standby_replicas} > {self.fallback_max_replicas})"
            )
        return self

    @property
    def cooldown(self) -> float:
        return self.window_seconds if self.cooldown_seconds is None else self.cooldown_seconds

    @property
    def memory_clear_ratio(self) -> float:
        return self.memory_high_ratio - self.hysteresis_margin

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], **overrides: Any) -> PolicyConfig:
        """Build from a VoiceService ``spec`` dict (camelCase, CRD defaults may be absent)."""
        failover = spec.get("failover") or {}
        fallback = spec.get("fallback") or {}
        pairs = {
            "memory_high_ratio": failover.get("memoryHighRatio"),
            "memory_critical_ratio": failover.get("memoryCriticalRatio"),
            "window_seconds": failover.get("windowSeconds"),
            "recover_after_seconds": failover.get("recoverAfterSeconds"),
            "unschedulable_after_seconds": failover.get("unschedulableAfterSeconds"),
            "crash_loop_restarts": failover.get("crashLoopRestarts"),
            "cooldown_seconds": failover.get("cooldownSeconds"),
            "fallback_enabled": fallback.get("enabled"),
            "fallback_standby_replicas": fallback.get("standbyReplicas"),
            "fallback_max_replicas": fallback.get("maxReplicas"),
        }
        values = {k: v for k, v in pairs.items() if v is not None}
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class GPUFault:
    """A GPU the pod's NVML reports unhealthy (voiceops_gpu_healthy 0)."""

    gpu: str
    uuid: str
    reason: str  # xid_79, gpu_lost, nvml_error, ecc_uncorrectable

    def describe(self) -> str:
        return f"GPU {self.gpu} ({self.uuid or 'no UUID'}): {self.reason}"


@dataclass(frozen=True)
class GPUMetrics:
    """What one GPU pod's /metrics said. ``memory_used_ratio`` None: no GPU gauges."""

    memory_used_ratio: float | None
    oom_total: float = 0.0
    in_flight: float = 0.0
    degraded: bool = False
    faults: tuple[GPUFault, ...] = ()


@dataclass(frozen=True)
class PodObservation:
    """One pod, as its status and (GPU tier) its metrics showed it."""

    name: str
    phase: str = "Running"
    ready: bool = True
    restarts: int = 0
    # Waiting CrashLoopBackOff, terminated with an error, or running again soon after one.
    crash_looping: bool = False
    unschedulable_since: float | None = None  # PodScheduled=False, reason Unschedulable
    unschedulable_message: str = ""
    last_termination_reason: str = ""  # OOMKilled, Error, ...
    metrics: GPUMetrics | None = None  # None: not scraped or the scrape failed (unknown)
    node: str = ""
    # Hardware faults its GPUs report, ready or not (an unhealthy GPU makes it unready).
    gpu_faults: tuple[GPUFault, ...] = ()


@dataclass(frozen=True)
class Observation:
    """Everything the policy sees at one instant."""

    time: float  # seconds since the epoch
    gpu_pods: tuple[PodObservation, ...] = ()
    gpu_replicas: int = 1  # the GPU tier's desired replicas (Deployment or HPA)
    fallback_ready: int | None = None  # ready fallback pods; None: not observed


class PolicyState(BaseModel):
    """What the policy remembers between observations (persisted in status)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    phase: Phase = "Pending"
    active_tier: ActiveTier = "gpu"
    reason: str = reasons.WAITING_FOR_GPU
    message: str = "waiting for a ready GPU pod"
    signals: dict[str, float] = Field(default_factory=dict)  # key → since (epoch seconds)
    last_transition_time: float | None = None
    failovers: int = 0
    fallback_replicas: int | None = None  # None: standby (never decided yet)


@dataclass(frozen=True)
class Transition:
    from_phase: Phase
    to_phase: Phase
    from_tier: ActiveTier
    to_tier: ActiveTier
    reason: str
    message: str
    time: float
    signal_since: float  # when the triggering signal was first seen


@dataclass(frozen=True)
class Assessment:
    """The tier's condition in one observation, before windows and cooldowns."""

    severity: Severity
    reason: str
    message: str
    ready_gpu_pods: int
    memory_used_ratio: float | None  # the highest ratio among readable pods


@dataclass(frozen=True)
class Replacement:
    """A pod whose GPU has a hardware fault: delete it, so its Deployment makes a new one."""

    pod: str
    node: str
    faults: tuple[GPUFault, ...]

    @property
    def message(self) -> str:
        where = f" on node {self.node}" if self.node else ""
        faults = "; ".join(f.describe() for f in self.faults)
        return f"replacing pod {self.pod}{where}: {faults}"


@dataclass(frozen=True)
class Decision:
    phase: Phase
    active_tier: ActiveTier
    fallback_replicas: int
    reason: str
    message: str
    transition: Transition | None
    state: PolicyState
    assessment: Assessment = field(compare=False)
    # The earliest time this decision could change with no new input (a window,
    # a grace period or the cooldown running out): when to look again at the latest.
    recheck_at: float | None = None
    # Pods to replace now, whatever the phase: a GPU hardware fault does not heal in place.
    replace: tuple[Replacement, ...] = ()


def replacements(obs: Observation) -> tuple[Replacement, ...]:
    return tuple(Replacement(p.name, p.node, p.gpu_faults) for p in obs.gpu_pods if p.gpu_faults)


def _fmt(ratio: float) -> str:
    return f"{ratio:.2f}"


def assess(config: PolicyConfig, obs: Observation) -> Assessment:
    """Classify the GPU tier in one observation (no windows, no history)."""
    ready = [p for p in obs.gpu_pods if p.ready]
    crash = [p for p in obs.gpu_pods if not p.ready and _crash_looping(config, p)]
    stuck = [
        p
        for p in obs.gpu_pods
        if p.unschedulable_since is not None
        and obs.time - p.unschedulable_since >= config.unschedulable_after_seconds
    ]
    unknown = [p for p in ready if p.metrics is None]
    readable = [p for p in ready if p.metrics is not None]
    ratios = [
        p.metrics.memory_used_ratio
        for p in readable
        if p.metrics is not None and p.metrics.memory_used_ratio is not None
    ]
    top = max(ratios) if ratios else None
    critical = [p for p in readable if _ratio(p) >= config.memory_critical_ratio]
    high = [p for p in readable if _ratio(p) >= config.memory_high_ratio]
    degraded = [p for p in readable if p.metrics is not None and p.metrics.degraded]
    faulty = [p for p in obs.gpu_pods if p.gpu_faults]
    usable = [p for p in readable if p not in critical and not p.gpu_faults]
    n = len(obs.gpu_pods)

    def out(sev: Severity, reason: str, message: str) -> Assessment:
        return Assessment(sev, reason, message, len(ready), top)

    if faulty and not usable and not unknown:
        return out(Severity.FAILURE, reasons.GPU_HARDWARE_FAULT, _fault_message(faulty, n))
    if not usable and not (unknown and not critical):
        # Nothing on the GPU tier can take traffic.
        if stuck:
            return out(
                Severity.FAILURE,
                reasons.GPU_UNSCHEDULABLE,
                f"{len(stuck)} of {n} GPU pods unschedulable for over "
                f"{config.unschedulable_after_seconds:g}s: {_first_message(stuck)}",
            )
        if crash:
            return out(
                Severity.FAILURE,
                reasons.GPU_CRASH_LOOP,
                f"{len(crash)} of {n} GPU pods crash-looping "
                f"(restarts >= {config.crash_loop_restarts}): {_names(crash)}",
            )
        if critical:
            return out(
                Severity.FAILURE,
                reasons.GPU_MEMORY_CRITICAL,
                f"GPU memory at {_fmt(top or 0)} >= critical "
                f"{_fmt(config.memory_critical_ratio)} on every ready GPU pod",
            )
        unschedulable = [p for p in obs.gpu_pods if p.unschedulable_since is not None]
        why = f": {_first_message(unschedulable)}" if unschedulable else ""
        return out(
            Severity.FAILURE,
            reasons.NO_READY_GPU_PODS,
            f"no ready GPU pod (0 of {n} ready){why}",
        )
    if not usable:
        return out(
            Severity.PRESSURE,
            reasons.METRICS_UNAVAILABLE,
            f"metrics of all {len(unknown)} ready GPU pods unreadable: {_names(unknown)}",
        )
    if faulty:
        return out(Severity.PRESSURE, reasons.GPU_HARDWARE_FAULT, _fault_message(faulty, n))
    if high:
        return out(
            Severity.PRESSURE,
            reasons.GPU_MEMORY_HIGH,
            f"GPU memory at {_fmt(top or 0)} >= high {_fmt(config.memory_high_ratio)} "
            f"on {len(high)} of {len(ready)} ready GPU pods",
        )
    if degraded:
        return out(
            Severity.PRESSURE,
            reasons.GPU_POD_DEGRADED,
            f"{len(degraded)} GPU pods report themselves degraded: {_names(degraded)}",
        )
    if crash:
        return out(
            Severity.PRESSURE,
            reasons.GPU_CRASH_LOOP,
            f"{len(crash)} of {n} GPU pods crash-looping: {_names(crash)}",
        )
    if stuck:
        return out(
            Severity.PRESSURE,
            reasons.GPU_UNSCHEDULABLE,
            f"{len(stuck)} of {n} GPU pods unschedulable: {_first_message(stuck)}",
        )
    if unknown:
        return out(
            Severity.PRESSURE,
            reasons.METRICS_UNAVAILABLE,
            f"metrics of {len(unknown)} of {len(ready)} ready GPU pods unreadable: "
            f"{_names(unknown)}",
        )
    if top is not None and top >= config.memory_clear_ratio:
        return out(
            Severity.HOLD,
            reasons.GPU_MEMORY_HIGH,
            f"GPU memory at {_fmt(top)}, between clear {_fmt(config.memory_clear_ratio)} "
            f"and high {_fmt(config.memory_high_ratio)}",
        )
    memory = f", GPU memory at {_fmt(top)}" if top is not None else ""
    return out(
        Severity.HEALTHY,
        reasons.GPU_TIER_HEALTHY,
        f"{len(ready)} of {n} GPU pods ready and healthy{memory}",
    )


def _fault_message(pods: list[PodObservation], n: int) -> str:
    named = "; ".join(
        f"{p.name}" + (f" on {p.node}" if p.node else "") + ": "
        + ", ".join(f.describe() for f in p.gpu_faults)
        for p in pods[:3]
    )  # fmt: skip
    return f"GPU hardware fault on {len(pods)} of {n} GPU pods: {named}"


def _ratio(pod: PodObservation) -> float:
    if pod.metrics is None or pod.metrics.memory_used_ratio is None:
        return 0.0
    return pod.metrics.memory_used_ratio


def _crash_looping(config: PolicyConfig, pod: PodObservation) -> bool:
    return pod.crash_looping and pod.restarts >= config.crash_loop_restarts


def _names(pods: list[PodObservation], limit: int = 3) -> str:
    names = [p.name for p in pods[:limit]]
    more = f" and {len(pods) - limit} more" if len(pods) > limit else ""
    return ", ".join(names) + more


def _first_message(pods: list[PodObservation]) -> str:
    return pods[0].unschedulable_message or _names(pods)


def fallback_replicas_for(config: PolicyConfig, phase: Phase, obs: Observation) -> int:
    """Fallback replicas each phase wants, within standby..max."""
    if not config.fallback_enabled:
        return 0
    standby, most = config.fallback_standby_replicas, config.fallback_max_replicas
    gpu = max(obs.gpu_replicas, len(obs.gpu_pods), 1)
    if phase == "FailedOver":
        # Carry the GPU tier's load: one fallback pod per GPU pod it replaces.
        wanted = max(standby, gpu)
    elif phase == "Degraded":
        # Share the load: kube-proxy spreads by endpoint count.
        wanted = standby + math.ceil(gpu / 2)
    else:
        wanted = standby
    return max(standby, min(most, wanted))


def _fallback_wanted(
    config: PolicyConfig, phase: Phase, obs: Observation, previous: int | None
) -> int:
    """Replicas for ``phase``; during an incident never fewer than already decided."""
    wanted = fallback_replicas_for(config, phase, obs)
    if (
        config.fallback_enabled
        and previous is not None
        and phase
        in (
            "Degraded",
            "FailedOver",
            "Recovering",  # keep the capacity until the GPU tier proves itself
        )
    ):
        wanted = max(wanted, min(previous, config.fallback_max_replicas))
    return wanted


def _tier_for(config: PolicyConfig, phase: Phase) -> ActiveTier:
    if not config.fallback_enabled:
        return "gpu"
    return {
        "Pending": "gpu",
        "Serving": "gpu",
        "Degraded": "both",
        "FailedOver": "fallback",
        "Recovering": "both",
    }[phase]


def _update_signals(
    previous: Mapping[str, float], severity: Severity, now: float
) -> dict[str, float]:
    present = {
        SIGNAL_PRESSURE: severity >= Severity.PRESSURE,
        SIGNAL_FAILURE: severity >= Severity.FAILURE,
        SIGNAL_HEALTHY: severity == Severity.HEALTHY,
    }
    signals: dict[str, float] = {}
    for key, on in present.items():
        if on:
            since = previous.get(key, now)
            # A since-time in the future (clock step, bad status) restarts the window.
            signals[key] = since if since <= now else now
    return signals


def _held(signals: Mapping[str, float], key: str, now: float, seconds: float) -> bool:
    return key in signals and now - signals[key] >= seconds


def decide(config: PolicyConfig, state: PolicyState, obs: Observation) -> Decision:
    """The next phase, tier and fallback replicas, given what was and what is seen."""
    a = assess(config, obs)
    now = obs.time
    signals = _update_signals(state.signals, a.severity, now)
    cooled = state.last_transition_time is None or (
        now - state.last_transition_time >= config.cooldown
    )
    target, trigger = _target_phase(config, state.phase, a, signals, now)
    fallback_ready = obs.fallback_ready
    fallback_empty = config.fallback_enabled and fallback_ready == 0 and a.ready_gpu_pods > 0
    reason, message = a.reason, a.message

    # Fallback disabled: nothing to fail over to; the GPU tier stays active.
    if target == "FailedOver" and not config.fallback_enabled:
        target = "Degraded"
    # Never route to an empty fallback tier while GPU pods can answer: both tiers
    # serve (and the fallback tier scales up) until a fallback pod is ready.
    if target == "FailedOver" and fallback_empty:
        target = "Degraded"
        reason = reasons.NO_READY_FALLBACK_PODS
        message = f"{a.message}; no ready fallback pod to fail over to, the GPU tier keeps serving"

    # Facts: a tier with no ready pod while the other has one moves traffic now.
    hardware = a.reason == reasons.GPU_HARDWARE_FAULT and a.severity == Severity.FAILURE
    if (
        config.fallback_enabled
        and state.phase in ("Serving", "Degraded", "Recovering")
        and (a.ready_gpu_pods == 0 or hardware)
        and fallback_ready
    ):
        target, trigger, cooled = "FailedOver", SIGNAL_FAILURE, True
        reason, message = a.reason, f"{a.message}: failing over at once"
    elif state.phase == "FailedOver" and not config.fallback_enabled:
        # The fallback tier was switched off while failed over: the GPU tier is all
        # there is, so say so rather than claim a failover that routes nowhere.
        target, trigger, cooled = "Degraded", None, True
        reason, message = a.reason, f"{a.message}; fallback tier switched off while failed over"
    elif state.phase == "FailedOver" and fallback_empty:
        target, trigger, cooled = "Degraded", None, True
        reason = reasons.NO_READY_FALLBACK_PODS
        message = (
            f"no ready fallback pod while failed over ({a.message}): the GPU tier serves "
            "under pressure rather than nothing, at once"
        )

    if target is not None and target != state.phase and cooled:
        phase: Phase = target
        if target == "Recovering":
            reason = reasons.RECOVERING
            message = f"GPU tier healthy again ({a.message}); both tiers serve"
        elif target == "Serving" and state.phase == "Recovering":
            reason = reasons.RECOVERED
            message = (
                f"GPU tier healthy for {config.recover_after_seconds:g}s; "
                "traffic back on the GPU tier"
            )
        elif target == "Serving":
            reason = reasons.GPU_TIER_READY
        if not config.fallback_enabled and a.severity >= Severity.PRESSURE:
            message = f"{message}; no fallback tier (spec.fallback.enabled is false)"
        fallback = _fallback_wanted(config, phase, obs, state.fallback_replicas)
        tier = _tier_for(config, phase)
        transition = Transition(
            from_phase=state.phase,
            to_phase=phase,
            from_tier=state.active_tier,
            to_tier=tier,
            reason=reason,
            message=message,
            time=now,
            signal_since=signals.get(trigger, now) if trigger else now,
        )
        new_state = PolicyState(
            phase=phase,
            active_tier=tier,
            reason=reason,
            message=message,
            signals=signals,
            last_transition_time=now,
            failovers=state.failovers + (1 if phase == "FailedOver" else 0),
            fallback_replicas=fallback,
        )
        return Decision(
            phase,
            tier,
            fallback,
            reason,
            message,
            transition,
            new_state,
            a,
            recheck_at(config, new_state, obs),
            replacements(obs),
        )

    fallback = _fallback_wanted(config, state.phase, obs, state.fallback_replicas)
    tier = _tier_for(config, state.phase)
    new_state = state.model_copy(
        update={"signals": signals, "active_tier": tier, "fallback_replicas": fallback}
    )
    return Decision(
        state.phase,
        tier,
        fallback,
        state.reason,
        state.message,
        None,
        new_state,
        a,
        recheck_at(config, new_state, obs),
        replacements(obs),
    )


def recheck_at(config: PolicyConfig, state: PolicyState, obs: Observation) -> float | None:
    """When a held signal, grace period or cooldown next runs out (None: nothing pending)."""
    now = obs.time
    times: list[float] = []
    for key, since in state.signals.items():
        times.append(since + config.window_seconds)
        if key == SIGNAL_HEALTHY:
            times.append(since + config.recover_after_seconds)
    times.extend(
        p.unschedulable_since + config.unschedulable_after_seconds
        for p in obs.gpu_pods
        if p.unschedulable_since is not None
    )
    if state.signals and state.last_transition_time is not None:
        times.append(state.last_transition_time + config.cooldown)
    future = [t for t in times if t > now]
    return min(future) if future else None


# The fastest the loop observes a VoiceService: a floor under a quarter of a short
# window that bounds the scraping; what observing at a cadence costs: bench/README.md.
MIN_OBSERVATION_INTERVAL_SECONDS = 0.25
# Never sleep less than this before a recheck (a deadline a hair away, clock jitter).
MIN_RECHECK_DELAY_SECONDS = 0.05


def observation_interval(config: PolicyConfig, scrape_interval_seconds: float) -> float:
    """Seconds between observations of one VoiceService: a quarter of its window.

    Clamped to [MIN_OBSERVATION_INTERVAL_SECONDS, scrape_interval_seconds] (the
    operator's SCRAPE_INTERVAL_SECONDS is the ceiling, and wins when set lower than
    the floor). A signal is first seen at most one interval after it appears and
    acted on when its window runs out (:func:`recheck_at`), so a decision comes
    within ``window + window/4`` of the signal, whatever the scrape interval.
    """
    quarter = max(MIN_OBSERVATION_INTERVAL_SECONDS, config.window_seconds / 4)
    return min(scrape_interval_seconds, quarter)


def observation_delay(
    config: PolicyConfig,
    scrape_interval_seconds: float,
    recheck: float | None,
    now: float,
) -> float:
    """How long to wait before the next observation, given the latest decision.

    ``recheck`` is the decision's :attr:`Decision.recheck_at`. The spec-derived
    cadence holds in every phase (a signal that appears in steady Serving must be
    seen promptly, and a pending window must be sampled often enough that a dip in
    the middle restarts it); sooner when a window, grace period or cooldown runs
    out before the next tick, so the decision lands on time.
    """
    interval = observation_interval(config, scrape_interval_seconds)
    if recheck is None:
        return interval
    return min(interval, max(MIN_RECHECK_DELAY_SECONDS, recheck - now + 0.01))


def _target_phase(
    config: PolicyConfig,
    phase: Phase,
    a: Assessment,
    signals: Mapping[str, float],
    now: float,
) -> tuple[Phase | None, str | None]:
    """Where the rules point (ignoring the cooldown), and which signal triggered it."""
    window = config.window_seconds
    failing = _held(signals, SIGNAL_FAILURE, now, window)
    pressured = _held(signals, SIGNAL_PRESSURE, now, window)
    healthy_window = _held(signals, SIGNAL_HEALTHY, now, window)
    healthy_long = _held(signals, SIGNAL_HEALTHY, now, config.recover_after_seconds)

    if phase == "Pending":
        # Starting up: pods that are merely not ready yet are no failure, but a
        # ready GPU pod ends Pending, and real failures (no GPU to schedule on,
        # crash loops) fail over once they hold.
        if a.ready_gpu_pods > 0:
            return "Serving", None
        if failing and a.reason in (reasons.GPU_UNSCHEDULABLE, reasons.GPU_CRASH_LOOP):
            return "FailedOver", SIGNAL_FAILURE
        return None, None
    if failing:
        return "FailedOver", SIGNAL_FAILURE
    if pressured and phase in ("Serving", "Recovering"):
        return "Degraded", SIGNAL_PRESSURE
    if phase in ("Degraded", "FailedOver") and healthy_window:
        return "Recovering", SIGNAL_HEALTHY
    if phase == "Recovering" and healthy_long:
        return "Serving", SIGNAL_HEALTHY
    return None, None


# --- status (de)serialisation --------------------------------------------------


def to_rfc3339(ts: float) -> str:
    """Epoch seconds → RFC 3339 UTC with microseconds (our own status fields)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_rfc3339_seconds(ts: float) -> str:
    """Epoch seconds → RFC 3339 UTC, whole seconds (metav1.Time fields)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_rfc3339(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def state_from_status(status: Mapping[str, Any] | None) -> PolicyState:
    """Rebuild the policy state from a VoiceService status (missing → Pending)."""
    status = status or {}
    phase = status.get("phase")
    if phase not in PHASES:
        return PolicyState()
    healing = status.get("healing") or {}
    last = status.get("lastTransition") or {}
    signals: dict[str, float] = {}
    for key, value in (healing.get("signals") or {}).items():
        if key in SIGNALS and isinstance(value, str):
            try:
                signals[key] = from_rfc3339(value)
            except ValueError:
                continue  # a garbled timestamp restarts that window, nothing worse
    last_time = None
    if isinstance(last.get("time"), str):
        try:
            last_time = from_rfc3339(last["time"])
        except ValueError:
            last_time = None
    tier = status.get("activeTier")
    fallback = (status.get("fallback") or {}).get("desiredReplicas")
    # No transition yet (still Pending): the initial reason and message, exactly as
    # a fresh state has them, so a restart rewrites nothing.
    initial = PolicyState()
    return PolicyState(
        phase=phase,
        active_tier=tier if tier in ACTIVE_TIERS else "gpu",
        reason=str(last.get("reason") or initial.reason),
        message=str(last.get("message") or initial.message),
        signals=signals,
        last_transition_time=last_time,
        failovers=int(status.get("failovers") or 0),
        fallback_replicas=int(fallback) if isinstance(fallback, int) else None,
    )


def state_to_status(state: PolicyState, transition: Transition | None = None) -> dict[str, Any]:
    """The status fields the healing loop owns (a merge-patch body for ``status``)."""
    status: dict[str, Any] = {
        "phase": state.phase,
        "activeTier": state.active_tier,
        "failovers": state.failovers,
        "healing": {
            "signals": {k: to_rfc3339(v) for k, v in sorted(state.signals.items())},
        },
    }
    if state.fallback_replicas is not None:
        status["fallback"] = {"desiredReplicas": state.fallback_replicas}
    if transition is not None:
        status["lastTransition"] = {
            "time": to_rfc3339(transition.time),
            "from": transition.from_phase,
            "to": transition.to_phase,
            "reason": transition.reason,
            "message": transition.message,
        }
    return status
