"""Property tests of the failover policy: no flapping, cooldowns, determinism."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from voiceops_operator import policy, tiers
from voiceops_operator.policy import (
    GPUMetrics,
    Observation,
    PodObservation,
    PolicyConfig,
    PolicyState,
    decide,
)

T0 = 1_800_000_000.0
CFG = PolicyConfig(window_seconds=3, recover_after_seconds=8, unschedulable_after_seconds=4)

ratios = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
gaps = st.floats(min_value=0.05, max_value=2.0, allow_nan=False)
phases = st.sampled_from(tiers.PHASES)


def _pod(ratio: float) -> PodObservation:
    return PodObservation(name="tts-gpu-0", metrics=GPUMetrics(memory_used_ratio=ratio))


def _without_times(state: PolicyState) -> PolicyState:
    return state.model_copy(update={"signals": {}, "last_transition_time": None})


def _times(state: PolicyState) -> list[float]:
    signals = [state.signals[k] for k in sorted(state.signals)]
    return [*signals, state.last_transition_time or 0.0]


@st.composite
def pods(draw: st.DrawFn) -> PodObservation:
    """Any GPU pod: ready or not, metrics known or unknown, crash loops, Pending."""
    ready = draw(st.booleans())
    metrics = draw(
        st.none()
        | st.builds(
            GPUMetrics,
            memory_used_ratio=st.none() | ratios,
            oom_total=st.floats(0, 10),
            in_flight=st.floats(0, 10),
            degraded=st.booleans(),
        )
    )
    return PodObservation(
        name=f"tts-gpu-{draw(st.integers(0, 3))}",
        phase=draw(st.sampled_from(["Running", "Pending", "Failed"])),
        ready=ready,
        restarts=draw(st.integers(0, 6)),
        crash_looping=draw(st.booleans()),
        unschedulable_since=draw(st.none() | st.floats(T0 - 10, T0 + 60)),
        metrics=metrics if ready else None,
    )


@st.composite
def timelines(draw: st.DrawFn, pod_strategy: st.SearchStrategy) -> list[Observation]:
    steps = draw(st.lists(st.tuples(gaps, st.lists(pod_strategy, max_size=3)), max_size=40))
    t = T0
    out = []
    for gap, ps in steps:
        t += gap
        out.append(Observation(time=t, gpu_pods=tuple(ps), gpu_replicas=len(ps) or 1))
    return out


@st.composite
def states(draw: st.DrawFn) -> PolicyState:
    phase = draw(phases)
    return PolicyState(
        phase=phase,
        active_tier=draw(st.sampled_from(["gpu", "fallback", "both"])),
        last_transition_time=draw(st.none() | st.floats(T0 - 100, T0)),
        fallback_replicas=draw(st.none() | st.integers(0, 6)),
        failovers=draw(st.integers(0, 5)),
    )


@settings(max_examples=200, deadline=None)
@given(
    base=st.floats(0.0, 0.8),
    threshold=st.sampled_from([CFG.memory_high_ratio, CFG.memory_critical_ratio]),
    spikes=st.lists(st.tuples(st.floats(0.05, 2.9), st.floats(0.01, 0.3)), max_size=15),
    calm=st.floats(0.1, 3.0),
)
def test_noise_crossing_for_less_than_a_window_never_transitions(
    base: float, threshold: float, spikes: list[tuple[float, float]], calm: float
) -> None:
    """Bursts above a threshold shorter than the window, separated by calm readings."""
    state = PolicyState(phase="Serving", active_tier="gpu", fallback_replicas=1)
    t = T0
    for duration, excess in spikes:
        # A burst: readings above the threshold spanning less than the window.
        steps = max(1, int(duration / 0.5))
        for i in range(steps + 1):
            at = t + min(duration, i * 0.5)
            d = decide(CFG, state, Observation(time=at, gpu_pods=(_pod(threshold + excess),)))
            assert d.transition is None
            state = d.state
        t += duration + calm
        d = decide(CFG, state, Observation(time=t, gpu_pods=(_pod(base),)))
        assert d.transition is None
        state = d.state
        t += 0.1


@settings(max_examples=80, deadline=None)
@given(start=states(), timeline=timelines(pods()))
def test_at_most_one_transition_per_cooldown(
    start: PolicyState, timeline: list[Observation]
) -> None:
    state = start
    last = start.last_transition_time
    for o in timeline:
        d = decide(CFG, state, o)
        if d.transition is not None:
            if last is not None:
                assert o.time - last >= CFG.cooldown
            last = o.time
            assert d.transition.from_phase != d.transition.to_phase
        state = d.state


@settings(max_examples=80, deadline=None)
@given(start=states(), timeline=timelines(pods()))
def test_invariants_of_every_decision(start: PolicyState, timeline: list[Observation]) -> None:
    state = start
    for o in timeline:
        d = decide(CFG, state, o)
        assert CFG.fallback_standby_replicas <= d.fallback_replicas <= CFG.fallback_max_replicas
        expected_tier = {
            "Pending": "gpu",
            "Serving": "gpu",
            "Degraded": "both",
            "FailedOver": "fallback",
            "Recovering": "both",
        }[d.phase]
        assert d.active_tier == expected_tier
        assert d.state.failovers >= state.failovers
        # Status round trip keeps the state (what an operator restart resumes from).
        if d.transition is not None:
            resumed = policy.state_from_status(policy.state_to_status(d.state, d.transition))
            assert _without_times(resumed) == _without_times(d.state)
            assert _times(resumed) == pytest.approx(_times(d.state), abs=1e-6)
        state = d.state


@settings(max_examples=60, deadline=None)
@given(start=states(), timeline=timelines(pods()))
def test_fallback_disabled_never_routes_to_fallback(
    start: PolicyState, timeline: list[Observation]
) -> None:
    config = CFG.model_copy(update={"fallback_enabled": False, "fallback_standby_replicas": 0})
    state = start
    for o in timeline:
        d = decide(config, state, o)
        assert d.active_tier == "gpu"
        assert d.fallback_replicas == 0
        assert d.phase != "FailedOver" or start.phase == "FailedOver"
        state = d.state


@settings(max_examples=60, deadline=None)
@given(start=states(), timeline=timelines(pods()))
def test_decision_is_a_function_of_its_inputs(
    start: PolicyState, timeline: list[Observation]
) -> None:
    first, second = [], []
    for out in (first, second):
        state = start
        for o in timeline:
            d = decide(CFG, state, o)
            out.append((d.phase, d.active_tier, d.fallback_replicas, d.reason, d.transition))
            state = d.state
    assert first == second
