"""Where the failover policy's lines fall: ratios, partial trouble, crash loops, deadlines.

Each test states one rule of the policy's docstring at its boundary: a value
exactly at a threshold, one bad pod among good ones, a deadline exactly now.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from voiceops_operator import policy, reasons, tiers
from voiceops_operator.policy import (
    GPUMetrics,
    Observation,
    PodObservation,
    PolicyConfig,
    PolicyState,
    decide,
)

CFG = PolicyConfig(
    memory_high_ratio=0.90,
    memory_critical_ratio=0.97,
    hysteresis_margin=0.05,
    window_seconds=2,
    recover_after_seconds=6,
    unschedulable_after_seconds=5,
    crash_loop_restarts=3,
    cooldown_seconds=4,
    fallback_standby_replicas=1,
    fallback_max_replicas=4,
)
T0 = 1_800_000_000.0


def gpu(ratio: float | None = 0.5, name: str = "tts-gpu-0", **kw: object) -> PodObservation:
    metrics = kw.pop("metrics", GPUMetrics(memory_used_ratio=ratio))
    return PodObservation(name=name, metrics=metrics, **kw)  # type: ignore[arg-type]


def at(t: float, *pods: PodObservation, **kw: object) -> Observation:
    return Observation(time=T0 + t, gpu_pods=tuple(pods), **kw)  # type: ignore[arg-type]


def state(phase: tiers.Phase, tier: tiers.ActiveTier, **kw: object) -> PolicyState:
    return PolicyState(phase=phase, active_tier=tier, fallback_replicas=1, **kw)  # type: ignore[arg-type]


SERVING = state("Serving", "gpu")


def run(
    steps: Sequence[Observation], start: PolicyState = SERVING, config: PolicyConfig = CFG
) -> list[policy.Decision]:
    decisions = []
    current = start
    for observation in steps:
        decision = decide(config, current, observation)
        decisions.append(decision)
        current = decision.state
    return decisions


def phases(decisions: Sequence[policy.Decision]) -> list[str]:
    return [d.transition.to_phase for d in decisions if d.transition]


# --- memory ratios ---------------------------------------------------------------------------


def test_memory_exactly_at_the_critical_ratio_on_every_pod_fails_over() -> None:
    ds = run([at(t, gpu(0.97, "a"), gpu(0.97, "b")) for t in range(4)])
    assert phases(ds) == ["FailedOver"]
    assert ds[-1].reason == reasons.GPU_MEMORY_CRITICAL
    assert ds[-1].message.startswith("GPU memory at 0.97 >= critical 0.97 on every ready GPU pod")


def test_memory_exactly_at_the_high_ratio_degrades() -> None:
    ds = run([at(t, gpu(0.90)) for t in range(4)])
    assert phases(ds) == ["Degraded"]
    assert ds[-1].reason == reasons.GPU_MEMORY_HIGH
    assert ds[-1].message == "GPU memory at 0.90 >= high 0.90 on 1 of 1 ready GPU pods"


def test_one_pod_at_critical_memory_among_healthy_ones_degrades_not_fails_over() -> None:
    """Partial trouble is Degraded: the healthy GPU pods keep serving next to the fallback."""
    ds = run([at(t, gpu(0.99, "a"), gpu(0.5, "b"), fallback_ready=1) for t in range(10)])
    assert phases(ds) == ["Degraded"]
    assert ds[-1].active_tier == "both"
    assert ds[-1].reason == reasons.GPU_MEMORY_HIGH
    assert ds[-1].message == "GPU memory at 0.99 >= high 0.90 on 1 of 2 ready GPU pods"
    assert ds[-1].assessment.memory_used_ratio == 0.99


def test_memory_exactly_at_the_clear_ratio_is_not_yet_healthy() -> None:
    """Between clear and high nothing changes: a Degraded tier at the clear ratio stays so."""
    clear = CFG.memory_clear_ratio
    ds = run([at(t, gpu(clear)) for t in range(20)], start=state("Degraded", "both"))
    assert phases(ds) == []
    assessment = ds[-1].assessment
    assert assessment.severity == policy.Severity.HOLD
    assert assessment.reason == reasons.GPU_MEMORY_HIGH
    assert assessment.message == "GPU memory at 0.85, between clear 0.85 and high 0.90"


def test_just_below_the_clear_ratio_is_healthy_and_says_so() -> None:
    a = policy.assess(CFG, at(0, gpu(0.84, "a"), gpu(0.5, "b")))
    assert (a.severity, a.reason) == (policy.Severity.HEALTHY, reasons.GPU_TIER_HEALTHY)
    assert a.message == "2 of 2 GPU pods ready and healthy, GPU memory at 0.84"
    assert a.memory_used_ratio == 0.84


def test_a_pod_without_gpu_gauges_next_to_a_measured_one_is_healthy() -> None:
    a = policy.assess(CFG, at(0, gpu(None, "cpu-only"), gpu(0.5, "measured")))
    assert a.severity == policy.Severity.HEALTHY
    assert a.memory_used_ratio == 0.5
    without = policy.assess(CFG, at(0, gpu(None, "cpu-only")))
    assert without.message == "1 of 1 GPU pods ready and healthy"
    assert without.memory_used_ratio is None


# --- crash loops and scheduling --------------------------------------------------------------


@pytest.mark.parametrize(
    ("crash_looping", "phase", "restarts", "reason"),
    [
        (True, "Running", 3, reasons.GPU_CRASH_LOOP),  # waiting in CrashLoopBackOff
        # Restarts long ago, unready now (its node lost, say): no crash loop.
        (False, "Running", 3, reasons.NO_READY_GPU_PODS),
        (False, "Failed", 5, reasons.NO_READY_GPU_PODS),
        (True, "Pending", 3, reasons.GPU_CRASH_LOOP),
        (False, "Pending", 5, reasons.NO_READY_GPU_PODS),  # not started: no crash loop
        (True, "Running", 2, reasons.NO_READY_GPU_PODS),  # under the restart threshold
    ],
)
def test_what_counts_as_crash_looping(
    crash_looping: bool, phase: str, restarts: int, reason: str
) -> None:
    pod = gpu(
        name="p",
        ready=False,
        metrics=None,
        phase=phase,
        restarts=restarts,
        crash_looping=crash_looping,
    )
    assert policy.assess(CFG, at(0, pod)).reason == reason


def test_crash_loops_are_named_and_counted_with_the_rest_summed_up() -> None:
    looping = [
        gpu(name=f"p{i}", ready=False, metrics=None, restarts=4, crash_looping=True)
        for i in range(5)
    ]
    a = policy.assess(CFG, at(0, *looping))
    assert a.message == "5 of 5 GPU pods crash-looping (restarts >= 3): p0, p1, p2 and 2 more"
    three = policy.assess(CFG, at(0, *looping[:3]))
    assert three.message.endswith(": p0, p1, p2")


def test_a_crash_loop_next_to_a_serving_pod_is_pressure_naming_it() -> None:
    looping = gpu(name="p1", ready=False, metrics=None, restarts=4, crash_looping=True)
    a = policy.assess(CFG, at(0, gpu(0.5, "p0"), looping))
    assert (a.severity, a.reason) == (policy.Severity.PRESSURE, reasons.GPU_CRASH_LOOP)
    assert a.message == "1 of 2 GPU pods crash-looping: p1"


def test_unschedulable_pods_within_grace_explain_an_empty_tier() -> None:
    waiting = gpu(
        name="p",
        ready=False,
        metrics=None,
        phase="Pending",
        unschedulable_since=T0,
        unschedulable_message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    )
    a = policy.assess(CFG, at(1, waiting))
    assert a.reason == reasons.NO_READY_GPU_PODS
    assert a.message == (
        "no ready GPU pod (0 of 1 ready): 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    )
    starting = gpu(name="p", ready=False, metrics=None, phase="Pending")
    assert policy.assess(CFG, at(1, starting)).message == "no ready GPU pod (0 of 1 ready)"


def test_an_unschedulable_pod_past_grace_next_to_a_serving_one_is_pressure() -> None:
    stuck = gpu(name="p1", ready=False, metrics=None, phase="Pending", unschedulable_since=T0)
    a = policy.assess(CFG, at(5, gpu(0.5, "p0"), stuck))
    assert (a.severity, a.reason) == (policy.Severity.PRESSURE, reasons.GPU_UNSCHEDULABLE)
    assert a.message == "1 of 2 GPU pods unschedulable: p1"


def test_unreadable_metrics_are_named_with_the_rest_summed_up() -> None:
    pods = [gpu(name=f"p{i}", metrics=None) for i in range(4)]
    a = policy.assess(CFG, at(0, *pods))
    assert a.reason == reasons.METRICS_UNAVAILABLE
    assert a.message == "metrics of all 4 ready GPU pods unreadable: p0, p1, p2 and 1 more"
    some = policy.assess(CFG, at(0, gpu(0.5, "ok"), pods[0]))
    assert some.message == "metrics of 1 of 2 ready GPU pods unreadable: p0"


# --- windows, deadlines and the cooldown -----------------------------------------------------


def test_a_signal_acts_exactly_when_its_window_has_held() -> None:
    ds = run([at(0, gpu(0.99)), at(1.999, gpu(0.99)), at(2, gpu(0.99))])
    assert [d.phase for d in ds] == ["Serving", "Serving", "FailedOver"]


def test_the_policy_looks_again_when_the_cooldown_ends() -> None:
    """A failure confirmed inside the cooldown is acted on the moment the cooldown ends."""
    just_degraded = state(
        "Degraded",
        "both",
        last_transition_time=T0,
        signals={policy.SIGNAL_PRESSURE: T0 - 2, policy.SIGNAL_FAILURE: T0},
    )
    inside = decide(CFG, just_degraded, at(3, gpu(0.99), fallback_ready=1))
    assert inside.transition is None  # the window has held, the cooldown (4 s) has not
    assert inside.recheck_at == T0 + CFG.cooldown_seconds
    then = decide(CFG, inside.state, at(inside.recheck_at - T0, gpu(0.99), fallback_ready=1))
    assert then.phase == "FailedOver"


def test_the_policy_looks_again_when_recovery_has_lasted_long_enough() -> None:
    recovering = state(
        "Recovering", "both", last_transition_time=T0 - 100, signals={policy.SIGNAL_HEALTHY: T0}
    )
    d = decide(CFG, recovering, at(3, gpu(0.5)))
    assert d.transition is None
    assert d.recheck_at == T0 + CFG.recover_after_seconds


def test_the_policy_looks_again_when_an_unschedulable_pod_s_grace_ends() -> None:
    stuck = gpu(name="b", ready=False, metrics=None, phase="Pending", unschedulable_since=T0 + 1)
    healthy_for_long = state("Serving", "gpu", signals={policy.SIGNAL_HEALTHY: T0 - 100})
    d = decide(CFG, healthy_for_long, at(2, gpu(0.5, "a"), stuck))
    assert d.recheck_at == T0 + 1 + CFG.unschedulable_after_seconds


def test_a_deadline_that_is_now_is_not_looked_at_again() -> None:
    healthy = state("Serving", "gpu", signals={policy.SIGNAL_HEALTHY: T0})
    now = T0 + CFG.window_seconds  # the healthy window ends now: nothing left to wait for
    d = decide(CFG, healthy, Observation(time=now, gpu_pods=(gpu(0.5),)))
    assert d.recheck_at is None or d.recheck_at > now


def test_a_signal_first_seen_now_starts_its_window_now() -> None:
    d = decide(CFG, SERVING, at(0, gpu(0.99)))
    assert d.state.signals == {policy.SIGNAL_PRESSURE: T0, policy.SIGNAL_FAILURE: T0}
    assert d.recheck_at == T0 + CFG.window_seconds


# --- facts act at once, only facts -----------------------------------------------------------


def test_critical_memory_on_every_pod_waits_for_its_window_even_with_a_fallback_ready() -> None:
    """Critical memory is a noisy signal, not a fact: no failover before the window."""
    d = decide(CFG, SERVING, at(0, gpu(0.99), fallback_ready=1))
    assert d.transition is None
    assert d.phase == "Serving"


def test_with_neither_tier_ready_a_failed_over_service_stays_failed_over() -> None:
    failed_over = state("FailedOver", "fallback", last_transition_time=T0 - 100)
    d = decide(CFG, failed_over, at(0, gpu(ready=False, metrics=None), fallback_ready=0))
    assert d.transition is None
    assert d.active_tier == "fallback"


def test_switching_the_fallback_tier_off_while_failed_over_degrades_at_once() -> None:
    """Without a fallback tier a service is never FailedOver: the GPU tier is all it has."""
    no_fallback = CFG.model_copy(update={"fallback_enabled": False, "fallback_standby_replicas": 0})
    failed_over = state("FailedOver", "fallback", last_transition_time=T0)
    d = decide(no_fallback, failed_over, at(1, gpu(ready=False, metrics=None)))
    assert d.transition is not None
    assert (d.phase, d.active_tier, d.fallback_replicas) == ("Degraded", "gpu", 0)
    assert "fallback tier switched off" in d.transition.message


# --- fallback capacity -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu_replicas", "pods", "phase", "wanted"),
    [
        (1, 3, "FailedOver", 3),  # one fallback pod per GPU pod seen (a rollout's surge too)
        (3, 1, "FailedOver", 3),  # ... or per GPU pod wanted
        (0, 0, "FailedOver", 1),  # scaled to zero: the standby pod
        (3, 3, "Degraded", 3),  # standby + half the GPU tier, rounded up
        (4, 4, "Degraded", 3),
        (1, 1, "Degraded", 2),
        (3, 3, "Serving", 1),
    ],
)
def test_fallback_replicas_each_phase_wants(
    gpu_replicas: int, pods: int, phase: tiers.Phase, wanted: int
) -> None:
    observation = at(0, *[gpu(name=f"p{i}") for i in range(pods)], gpu_replicas=gpu_replicas)
    assert policy.fallback_replicas_for(CFG, phase, observation) == wanted


@pytest.mark.parametrize("phase", ["Degraded", "FailedOver", "Recovering"])
def test_during_an_incident_the_fallback_tier_never_shrinks(phase: tiers.Phase) -> None:
    tier = {"Degraded": "both", "FailedOver": "fallback", "Recovering": "both"}[phase]
    scaled_up = PolicyState(
        phase=phase, active_tier=tier, fallback_replicas=4, last_transition_time=T0
    )
    pressure = gpu(0.92) if phase != "FailedOver" else gpu(0.99)
    d = decide(CFG, scaled_up, at(1, pressure, fallback_ready=4))
    assert d.transition is None
    assert d.fallback_replicas == 4
    assert d.state.fallback_replicas == 4


def test_back_to_serving_the_fallback_tier_returns_to_standby() -> None:
    recovering = PolicyState(
        phase="Recovering",
        active_tier="both",
        fallback_replicas=4,
        last_transition_time=T0 - 100,
        signals={policy.SIGNAL_HEALTHY: T0 - 100},
    )
    d = decide(CFG, recovering, at(0, gpu(0.5)))
    assert d.phase == "Serving"
    assert d.fallback_replicas == 1
