"""Facts act at once, noise waits: an empty tier moves traffic without a window or cooldown."""

from __future__ import annotations

from voiceops_operator import policy, reasons, tiers
from voiceops_operator.policy import (
    GPUMetrics,
    Observation,
    PodObservation,
    PolicyConfig,
    PolicyState,
    decide,
)

CFG = PolicyConfig(window_seconds=10, recover_after_seconds=30, fallback_standby_replicas=1)
T0 = 1_800_000_000.0
JUST_MOVED = T0 - 1  # a transition a second ago: inside the cooldown (the window, 10 s)


def gpu(ratio: float = 0.5, ready: bool = True) -> PodObservation:
    return PodObservation(name="tts-gpu-0", ready=ready, metrics=GPUMetrics(ratio))


def at(*pods: PodObservation, fallback_ready: int | None) -> Observation:
    return Observation(time=T0, gpu_pods=pods, fallback_ready=fallback_ready)


def state(phase: tiers.Phase, tier: tiers.ActiveTier, **kw: object) -> PolicyState:
    return PolicyState(
        phase=phase,
        active_tier=tier,
        fallback_replicas=1,
        last_transition_time=JUST_MOVED,
        **kw,  # type: ignore[arg-type]
    )


def test_no_ready_gpu_pod_with_a_ready_fallback_fails_over_in_the_same_pass() -> None:
    for phase, tier in (("Serving", "gpu"), ("Degraded", "both"), ("Recovering", "both")):
        d = decide(CFG, state(phase, tier), at(gpu(ready=False), fallback_ready=1))
        assert (d.phase, d.active_tier) == ("FailedOver", "fallback"), phase
        assert d.transition is not None
        assert d.transition.reason == reasons.NO_READY_GPU_PODS
        assert "at once" in d.transition.message
        assert d.state.failovers == 1


def test_no_ready_gpu_pod_with_no_ready_fallback_waits_its_window() -> None:
    # Nothing can answer either way: the usual window, then FailedOver scales the fallback up.
    d = decide(CFG, state("Serving", "gpu"), at(gpu(ready=False), fallback_ready=0))
    assert d.phase == "Serving"
    assert d.transition is None


def test_unknown_fallback_readiness_is_no_fact() -> None:
    d = decide(CFG, state("Serving", "gpu"), at(gpu(ready=False), fallback_ready=None))
    assert d.transition is None


def test_a_lost_fallback_while_failed_over_routes_to_the_gpu_tier_at_once() -> None:
    # The GPU pod is still at critical memory, but ready: better than nothing.
    failed_over = state("FailedOver", "fallback", failovers=1)
    d = decide(CFG, failed_over, at(gpu(0.99), fallback_ready=0))
    assert (d.phase, d.active_tier) == ("Degraded", "both")
    assert d.transition is not None
    assert d.transition.reason == reasons.NO_READY_FALLBACK_PODS
    assert d.state.failovers == 1  # not a failover


def test_a_failover_to_an_empty_fallback_tier_becomes_degraded() -> None:
    failing_since = {policy.SIGNAL_FAILURE: T0 - 20, policy.SIGNAL_PRESSURE: T0 - 20}
    serving = PolicyState(phase="Serving", active_tier="gpu", signals=failing_since)
    d = decide(CFG, serving, at(gpu(0.99), fallback_ready=0))
    assert (d.phase, d.active_tier) == ("Degraded", "both")
    assert d.reason == reasons.NO_READY_FALLBACK_PODS
    assert d.fallback_replicas > 1  # the fallback tier scales up meanwhile

    # Still no ready fallback pod: it stays Degraded instead of flapping.
    again = decide(CFG, d.state, Observation(time=T0 + 20, gpu_pods=(gpu(0.99),), fallback_ready=0))
    assert again.phase == "Degraded"
    assert again.transition is None

    # A fallback pod is ready: the failure that held all along fails over.
    ready = Observation(time=T0 + 40, gpu_pods=(gpu(0.99),), fallback_ready=1)
    assert decide(CFG, again.state, ready).phase == "FailedOver"


def test_a_healthy_tier_with_both_tiers_ready_changes_nothing() -> None:
    d = decide(CFG, state("Serving", "gpu"), at(gpu(0.5), fallback_ready=1))
    assert d.transition is None
