"""Table tests of the failover policy: every transition and every rule."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pydantic import ValidationError
from voiceops_operator import policy, reasons
from voiceops_operator.policy import (
    GPUMetrics,
    Observation,
    PodObservation,
    PolicyConfig,
    PolicyState,
    decide,
)

CFG = PolicyConfig(
    window_seconds=2,
    recover_after_seconds=6,
    unschedulable_after_seconds=5,
    crash_loop_restarts=3,
    fallback_standby_replicas=1,
    fallback_max_replicas=4,
)
T0 = 1_800_000_000.0


def gpu(ratio: float | None = 0.5, name: str = "tts-gpu-0", **kw: object) -> PodObservation:
    metrics = kw.pop("metrics", GPUMetrics(memory_used_ratio=ratio))
    return PodObservation(name=name, metrics=metrics, **kw)  # type: ignore[arg-type]


def obs(t: float, *pods: PodObservation, gpu_replicas: int = 1) -> Observation:
    return Observation(time=T0 + t, gpu_pods=tuple(pods), gpu_replicas=gpu_replicas)


def run(
    steps: Sequence[Observation],
    state: PolicyState | None = None,
    config: PolicyConfig = CFG,
) -> list[policy.Decision]:
    state = state or PolicyState(phase="Serving", active_tier="gpu", fallback_replicas=1)
    out = []
    for o in steps:
        d = decide(config, state, o)
        out.append(d)
        state = d.state
    return out


def transitions(decisions: Sequence[policy.Decision]) -> list[tuple[str, str, str]]:
    return [
        (d.transition.from_phase, d.transition.to_phase, d.transition.reason)
        for d in decisions
        if d.transition
    ]


def serving() -> PolicyState:
    return PolicyState(phase="Serving", active_tier="gpu", fallback_replicas=1)


def test_healthy_tier_stays_serving() -> None:
    ds = run([obs(t, gpu(0.5)) for t in range(10)])
    assert transitions(ds) == []
    assert ds[-1].phase == "Serving"
    assert ds[-1].active_tier == "gpu"
    assert ds[-1].fallback_replicas == 1


def test_pending_to_serving_when_a_gpu_pod_is_ready() -> None:
    ds = run(
        [obs(0, gpu(name="p", ready=False, metrics=None)), obs(1, gpu(0.3))],
        state=PolicyState(),
    )
    assert transitions(ds) == [("Pending", "Serving", reasons.GPU_TIER_READY)]
    assert ds[-1].active_tier == "gpu"


def test_pending_waits_while_pods_start() -> None:
    starting = gpu(name="p", ready=False, metrics=None, phase="Pending")
    ds = run([obs(t, starting) for t in range(60)], state=PolicyState())
    assert transitions(ds) == []
    assert ds[-1].phase == "Pending"


def test_pending_fails_over_when_unschedulable_past_grace() -> None:
    pod = gpu(
        name="p",
        ready=False,
        metrics=None,
        phase="Pending",
        unschedulable_since=T0,
        unschedulable_message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    )
    ds = run([obs(t, pod) for t in range(0, 10)], state=PolicyState())
    assert transitions(ds) == [("Pending", "FailedOver", reasons.GPU_UNSCHEDULABLE)]
    first = next(d for d in ds if d.transition)
    # No ready GPU pod since 0 (the window has long held); the grace decides.
    assert first.transition.time == T0 + 5
    assert "Insufficient nvidia.com/gpu" in first.message
    assert first.active_tier == "fallback"


def test_memory_high_sustained_degrades_and_scales_fallback() -> None:
    ds = run([obs(0, gpu(0.5)), *[obs(t, gpu(0.93)) for t in range(1, 6)]])
    assert transitions(ds) == [("Serving", "Degraded", reasons.GPU_MEMORY_HIGH)]
    d = next(d for d in ds if d.transition)
    assert d.transition.time == T0 + 3  # first high at 1, window 2
    assert d.transition.signal_since == T0 + 1
    assert d.active_tier == "both"
    assert d.fallback_replicas == 2


def test_memory_critical_fails_over_from_serving() -> None:
    ds = run([obs(t, gpu(0.99), gpu_replicas=3) for t in range(5)])
    assert transitions(ds) == [("Serving", "FailedOver", reasons.GPU_MEMORY_CRITICAL)]
    d = ds[-1]
    assert d.active_tier == "fallback"
    assert d.fallback_replicas == 3  # covers the 3 GPU replicas
    assert d.state.failovers == 1


def test_fallback_cover_is_bounded_by_max() -> None:
    ds = run([obs(t, gpu(0.99), gpu_replicas=9) for t in range(5)])
    assert ds[-1].fallback_replicas == 4


def test_degraded_then_failed_over_respects_cooldown() -> None:
    config = CFG.model_copy(update={"cooldown_seconds": 5})
    steps = [obs(t, gpu(0.93)) for t in range(0, 3)] + [obs(t, gpu(0.99)) for t in range(3, 12)]
    ds = run(steps, config=config)
    assert transitions(ds) == [
        ("Serving", "Degraded", reasons.GPU_MEMORY_HIGH),
        ("Degraded", "FailedOver", reasons.GPU_MEMORY_CRITICAL),
    ]
    times = [d.transition.time - T0 for d in ds if d.transition]
    assert times == [2, 7]  # critical held since 3 (window ok at 5) but cooldown until 7


def test_no_ready_gpu_pod_fails_over() -> None:
    down = gpu(name="p", ready=False, metrics=None)
    ds = run([obs(0, gpu(0.3)), *[obs(t, down) for t in range(1, 5)]])
    assert transitions(ds) == [("Serving", "FailedOver", reasons.NO_READY_GPU_PODS)]


def test_no_gpu_pods_at_all_fails_over() -> None:
    ds = run([obs(t) for t in range(4)])
    assert transitions(ds) == [("Serving", "FailedOver", reasons.NO_READY_GPU_PODS)]


def test_crash_loop_beyond_threshold_fails_over() -> None:
    looping = gpu(
        name="p",
        ready=False,
        metrics=None,
        restarts=3,
        crash_looping=True,
        last_termination_reason="OOMKilled",
    )
    ds = run([obs(t, looping) for t in range(4)])
    assert transitions(ds) == [("Serving", "FailedOver", reasons.GPU_CRASH_LOOP)]


def test_one_crash_looping_pod_among_healthy_ones_degrades() -> None:
    looping = gpu(name="b", ready=False, metrics=None, restarts=5, crash_looping=True)
    ds = run([obs(t, gpu(0.4, name="a"), looping, gpu_replicas=2) for t in range(4)])
    assert transitions(ds) == [("Serving", "Degraded", reasons.GPU_CRASH_LOOP)]


def test_unschedulable_within_grace_with_ready_pods_changes_nothing() -> None:
    pending = gpu(name="b", ready=False, metrics=None, phase="Pending", unschedulable_since=T0)
    ds = run([obs(t, gpu(0.4, name="a"), pending) for t in range(5)])
    assert transitions(ds) == []


def test_unschedulable_past_grace_with_ready_pods_degrades() -> None:
    pending = gpu(name="b", ready=False, metrics=None, phase="Pending", unschedulable_since=T0)
    ds = run([obs(t, gpu(0.4, name="a"), pending) for t in range(10)])
    assert transitions(ds) == [("Serving", "Degraded", reasons.GPU_UNSCHEDULABLE)]
    assert next(d for d in ds if d.transition).transition.time == T0 + 7


def test_all_gpu_pods_unschedulable_past_grace_fail_over_with_that_reason() -> None:
    pending = gpu(name="b", ready=False, metrics=None, phase="Pending", unschedulable_since=T0 - 9)
    ds = run([obs(t, pending) for t in range(4)])
    assert transitions(ds) == [("Serving", "FailedOver", reasons.GPU_UNSCHEDULABLE)]


def test_pod_reporting_degraded_degrades() -> None:
    sick = gpu(metrics=GPUMetrics(memory_used_ratio=0.4, degraded=True))
    ds = run([obs(t, sick) for t in range(4)])
    assert transitions(ds) == [("Serving", "Degraded", reasons.GPU_POD_DEGRADED)]


def test_all_metrics_unknown_degrades_not_fails_over() -> None:
    blind = gpu(metrics=None)
    ds = run([obs(t, blind) for t in range(10)])
    assert transitions(ds) == [("Serving", "Degraded", reasons.METRICS_UNAVAILABLE)]
    assert ds[-1].active_tier == "both"


def test_some_metrics_unknown_degrades() -> None:
    ds = run([obs(t, gpu(0.3, name="a"), gpu(name="b", metrics=None)) for t in range(4)])
    assert transitions(ds) == [("Serving", "Degraded", reasons.METRICS_UNAVAILABLE)]


def test_unknown_metrics_block_recovery() -> None:
    failed = PolicyState(
        phase="FailedOver",
        active_tier="fallback",
        last_transition_time=T0 - 100,
        fallback_replicas=2,
    )
    ds = run([obs(t, gpu(name="a", metrics=None)) for t in range(30)], state=failed)
    assert transitions(ds) == []
    assert ds[-1].active_tier == "fallback"


def test_pod_without_gpu_gauges_is_not_memory_pressure() -> None:
    ds = run([obs(t, gpu(None)) for t in range(10)])
    assert transitions(ds) == []


def test_full_cycle_failover_recovering_serving() -> None:
    steps = [obs(t, gpu(0.99), gpu_replicas=2) for t in range(0, 4)] + [
        obs(t, gpu(0.5), gpu_replicas=2) for t in range(4, 20)
    ]
    ds = run(steps)
    assert transitions(ds) == [
        ("Serving", "FailedOver", reasons.GPU_MEMORY_CRITICAL),
        ("FailedOver", "Recovering", reasons.RECOVERING),
        ("Recovering", "Serving", reasons.RECOVERED),
    ]
    by_phase = {d.transition.to_phase: d for d in ds if d.transition}
    assert by_phase["Recovering"].transition.time == T0 + 6  # healthy since 4, window 2
    assert by_phase["Recovering"].active_tier == "both"
    assert by_phase["Recovering"].fallback_replicas == 2  # keeps the cover
    assert by_phase["Serving"].transition.time == T0 + 10  # healthy since 4, recover 6
    assert by_phase["Serving"].active_tier == "gpu"
    assert by_phase["Serving"].fallback_replicas == 1  # back to standby
    assert ds[-1].state.failovers == 1


def test_degraded_recovers_through_recovering() -> None:
    steps = [obs(t, gpu(0.93)) for t in range(0, 3)] + [obs(t, gpu(0.5)) for t in range(3, 15)]
    assert transitions(run(steps)) == [
        ("Serving", "Degraded", reasons.GPU_MEMORY_HIGH),
        ("Degraded", "Recovering", reasons.RECOVERING),
        ("Recovering", "Serving", reasons.RECOVERED),
    ]


def test_relapse_while_recovering_goes_back_to_failed_over() -> None:
    recovering = PolicyState(
        phase="Recovering",
        active_tier="both",
        last_transition_time=T0 - 10,
        signals={policy.SIGNAL_HEALTHY: T0 - 12},
        fallback_replicas=3,
        failovers=1,
    )
    ds = run([obs(t, gpu(0.99)) for t in range(4)], state=recovering)
    assert transitions(ds) == [("Recovering", "FailedOver", reasons.GPU_MEMORY_CRITICAL)]
    assert ds[-1].state.failovers == 2
    assert ds[-1].fallback_replicas == 3


def test_pressure_while_recovering_goes_back_to_degraded() -> None:
    recovering = PolicyState(
        phase="Recovering", active_tier="both", last_transition_time=T0 - 10, fallback_replicas=2
    )
    ds = run([obs(t, gpu(0.92)) for t in range(4)], state=recovering)
    assert transitions(ds) == [("Recovering", "Degraded", reasons.GPU_MEMORY_HIGH)]


def test_hysteresis_band_neither_degrades_nor_recovers() -> None:
    # clear = 0.85: readings in [0.85, 0.90) hold the current phase
    ds = run([obs(t, gpu(0.87)) for t in range(20)])
    assert transitions(ds) == []
    degraded = PolicyState(
        phase="Degraded", active_tier="both", last_transition_time=T0 - 100, fallback_replicas=2
    )
    ds = run([obs(t, gpu(0.87)) for t in range(20)], state=degraded)
    assert transitions(ds) == []
    assert ds[-1].active_tier == "both"


def test_short_spike_below_window_does_nothing() -> None:
    steps = [obs(0, gpu(0.5)), obs(1, gpu(0.99)), obs(2.5, gpu(0.5)), obs(3, gpu(0.99))]
    assert transitions(run(steps)) == []


def test_fallback_disabled_never_routes_to_it() -> None:
    config = CFG.model_copy(update={"fallback_enabled": False, "fallback_standby_replicas": 0})
    steps = [obs(t, gpu(0.99)) for t in range(10)]
    ds = run(steps, config=config)
    assert transitions(ds) == [("Serving", "Degraded", reasons.GPU_MEMORY_CRITICAL)]
    assert all(d.active_tier == "gpu" for d in ds)
    assert all(d.fallback_replicas == 0 for d in ds)
    assert "no fallback tier" in ds[-1].message
    assert ds[-1].state.failovers == 0


def test_restart_resumes_from_status_without_flapping() -> None:
    steps = [obs(t, gpu(0.99)) for t in range(4)]
    ds = run(steps)
    d = ds[-1]
    assert d.phase == "FailedOver"
    transition = next(x.transition for x in ds if x.transition)
    status = policy.state_to_status(d.state, transition)
    resumed = policy.state_from_status(status)
    assert resumed == d.state
    # The restarted operator sees the same pressure: no transition, same routing.
    after = run([obs(t, gpu(0.99)) for t in range(4, 12)], state=resumed)
    assert transitions(after) == []
    assert {x.active_tier for x in after} == {"fallback"}


def test_restart_mid_recovery_keeps_the_recovery_clock() -> None:
    steps = [obs(t, gpu(0.99)) for t in range(4)] + [obs(t, gpu(0.5)) for t in range(4, 8)]
    ds = run(steps)
    assert ds[-1].phase == "Recovering"
    status: dict = {}
    for x in ds:
        _merge(status, policy.state_to_status(x.state, x.transition))
    resumed = policy.state_from_status(status)
    assert resumed.signals[policy.SIGNAL_HEALTHY] == T0 + 4
    after = run([obs(t, gpu(0.5)) for t in range(8, 12)], state=resumed)
    assert transitions(after) == [("Recovering", "Serving", reasons.RECOVERED)]
    assert next(x for x in after if x.transition).transition.time == T0 + 10


def _merge(target: dict, patch: dict) -> None:
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = v


def test_state_from_empty_or_garbled_status_is_pending() -> None:
    assert policy.state_from_status(None).phase == "Pending"
    assert policy.state_from_status({"phase": "Bogus"}).phase == "Pending"
    garbled = policy.state_from_status(
        {"phase": "Degraded", "activeTier": "both", "healing": {"signals": {"healthy": "nope"}}}
    )
    assert garbled.phase == "Degraded"
    assert garbled.signals == {}


def test_future_signal_time_restarts_the_window() -> None:
    state = serving().model_copy(update={"signals": {policy.SIGNAL_FAILURE: T0 + 1000}})
    d = decide(CFG, state, obs(0, gpu(0.99)))
    assert d.transition is None
    assert d.state.signals[policy.SIGNAL_FAILURE] == T0


@pytest.mark.parametrize(
    ("field", "values", "message"),
    [
        ("memory", {"memory_high_ratio": 0.98, "memory_critical_ratio": 0.97}, "memoryHighRatio"),
        (
            "fallback",
            {"fallback_standby_replicas": 5, "fallback_max_replicas": 4},
            "standbyReplicas",
        ),
        ("window", {"window_seconds": -1}, "window_seconds"),
    ],
)
def test_config_rejects_nonsense_naming_the_field(field: str, values: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PolicyConfig(**values)


def test_config_from_spec_reads_camel_case() -> None:
    config = PolicyConfig.from_spec(
        {
            "failover": {"memoryHighRatio": 0.8, "windowSeconds": 3, "crashLoopRestarts": 5},
            "fallback": {"enabled": False, "standbyReplicas": 0, "maxReplicas": 2},
        }
    )
    assert config.memory_high_ratio == 0.8
    assert config.window_seconds == 3
    assert config.crash_loop_restarts == 5
    assert config.fallback_enabled is False
    assert config.cooldown == 3
    assert PolicyConfig.from_spec({}) == PolicyConfig()


def test_recheck_at_points_at_the_window_end() -> None:
    d = run([obs(0, gpu(0.5)), obs(1, gpu(0.99))])[-1]
    assert d.transition is None
    assert d.recheck_at == T0 + 1 + CFG.window_seconds
    calm = run([obs(t, gpu(0.5)) for t in range(0, 30)])[-1]
    assert calm.recheck_at is None


def test_recheck_at_includes_the_unschedulable_grace() -> None:
    pending = gpu(name="b", ready=False, metrics=None, phase="Pending", unschedulable_since=T0)
    d = run([obs(1, gpu(0.4, name="a"), pending)])[-1]
    assert d.recheck_at is not None
    assert d.recheck_at <= T0 + CFG.unschedulable_after_seconds


def test_pending_without_fallback_degrades_instead_of_failing_over() -> None:
    config = CFG.model_copy(update={"fallback_enabled": False, "fallback_standby_replicas": 0})
    pod = gpu(name="p", ready=False, metrics=None, phase="Pending", unschedulable_since=T0)
    ds = run([obs(t, pod) for t in range(10)], state=PolicyState(), config=config)
    assert transitions(ds) == [("Pending", "Degraded", reasons.GPU_UNSCHEDULABLE)]
    assert ds[-1].active_tier == "gpu"
    assert "no fallback tier" in ds[-1].message


# --- observation cadence -------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "scrape_interval", "expected"),
    [
        (2, 5, 0.5),  # a quarter window
        (10, 5, 2.5),  # the default window
        (40, 5, 5),  # never slower than SCRAPE_INTERVAL_SECONDS
        (0.5, 5, policy.MIN_OBSERVATION_INTERVAL_SECONDS),  # never faster than the floor
        (0, 5, policy.MIN_OBSERVATION_INTERVAL_SECONDS),
        (2, 0.2, 0.2),  # an operator told to scrape faster than the floor is obeyed
    ],
)
def test_observation_interval_is_a_clamped_quarter_window(
    window: float, scrape_interval: float, expected: float
) -> None:
    config = PolicyConfig(window_seconds=window)
    assert policy.observation_interval(config, scrape_interval) == pytest.approx(expected)


def test_a_signal_is_confirmed_within_window_plus_one_interval() -> None:
    # Fault at T0+0.1 between two ticks: seen at the next tick, then rechecked at
    # the window end instead of one interval later.
    config = PolicyConfig(window_seconds=2, cooldown_seconds=0)
    interval = policy.observation_interval(config, 5.0)
    state, now = serving(), T0
    fault_at = T0 + 0.1
    while True:
        ratio = 0.99 if now >= fault_at else 0.5
        d = decide(config, state, Observation(time=now, gpu_pods=(gpu(ratio),)))
        state = d.state
        if d.transition is not None:
            break
        now += policy.observation_delay(config, 5.0, d.recheck_at, now)
    assert d.transition.to_phase == "FailedOver"
    assert now - fault_at <= config.window_seconds + interval + 0.02


def test_observation_delay_is_the_interval_or_the_next_deadline() -> None:
    config = PolicyConfig(window_seconds=2)
    assert policy.observation_delay(config, 5.0, None, T0) == 0.5
    assert policy.observation_delay(config, 5.0, T0 + 10, T0) == 0.5
    assert policy.observation_delay(config, 5.0, T0 + 0.2, T0) == pytest.approx(0.21)
    assert policy.observation_delay(config, 5.0, T0 - 1, T0) == (policy.MIN_RECHECK_DELAY_SECONDS)


def test_restart_while_pending_keeps_the_initial_reason_and_message() -> None:
    # Nothing has transitioned yet (no lastTransition): a restart must rebuild the
    # same reason/message, or it would rewrite the Degraded condition's message.
    fresh = PolicyState()
    resumed = policy.state_from_status(policy.state_to_status(fresh))
    assert (resumed.reason, resumed.message) == (fresh.reason, fresh.message)
    assert resumed == fresh


# --- what a decision carries --------------------------------------------------------------


def test_config_from_spec_reads_every_field() -> None:
    config = PolicyConfig.from_spec(
        {
            "failover": {
                "memoryHighRatio": 0.8,
                "memoryCriticalRatio": 0.95,
                "windowSeconds": 3,
                "recoverAfterSeconds": 40,
                "unschedulableAfterSeconds": 20,
                "crashLoopRestarts": 5,
                "cooldownSeconds": 7,
            },
            "fallback": {"enabled": True, "standbyReplicas": 2, "maxReplicas": 6},
        }
    )
    assert config == PolicyConfig(
        memory_high_ratio=0.8,
        memory_critical_ratio=0.95,
        window_seconds=3,
        recover_after_seconds=40,
        unschedulable_after_seconds=20,
        crash_loop_restarts=5,
        cooldown_seconds=7,
        fallback_enabled=True,
        fallback_standby_replicas=2,
        fallback_max_replicas=6,
    )
    assert config.cooldown == 7


def test_a_transition_names_both_tiers_and_is_remembered_in_the_state() -> None:
    ds = run([obs(t, gpu(0.99)) for t in range(4)])
    d = next(d for d in ds if d.transition)
    assert d.transition is not None
    assert (d.transition.from_tier, d.transition.to_tier) == ("gpu", "fallback")
    assert (d.state.phase, d.state.active_tier, d.state.failovers) == ("FailedOver", "fallback", 1)
    assert d.state.last_transition_time == d.transition.time
    assert (d.state.reason, d.state.message) == (d.reason, d.message)


def test_every_decision_carries_its_assessment_recheck_and_replacements() -> None:
    fault = policy.GPUFault("0", "GPU-1", "xid_79")
    faulty = gpu(0.5, name="bad", node="n1", gpu_faults=(fault,))
    for d in run([obs(0, faulty, gpu(0.5, name="good")), obs(3, faulty, gpu(0.5, name="good"))]):
        assert d.assessment.reason == reasons.GPU_HARDWARE_FAULT
        assert d.replace == (policy.Replacement("bad", "n1", (fault,)),)
        assert d.recheck_at is not None
    first, second = run([obs(0, faulty, gpu(0.5, name="good")), obs(3, faulty, gpu(0.5, "good"))])
    assert first.transition is None
    assert second.transition is not None


def test_without_a_transition_the_decision_keeps_the_last_reason() -> None:
    state = serving().model_copy(update={"reason": "Earlier", "message": "earlier message"})
    d = decide(CFG, state, obs(0, gpu(0.93)))
    assert d.transition is None
    assert (d.reason, d.message) == ("Earlier", "earlier message")


def test_a_restored_state_takes_the_tier_and_standby_its_phase_wants() -> None:
    restored = PolicyState(phase="FailedOver", active_tier="gpu", fallback_replicas=None)
    d = decide(CFG, restored, obs(0, gpu(0.99)))
    assert d.transition is None
    assert (d.active_tier, d.state.active_tier) == ("fallback", "fallback")
    assert d.state.fallback_replicas == d.fallback_replicas == 1


def test_pending_routes_to_the_gpu_tier() -> None:
    starting = gpu(name="p", ready=False, metrics=None, phase="Pending")
    d = decide(CFG, PolicyState(active_tier="both"), obs(0, starting))
    assert (d.phase, d.active_tier, d.state.active_tier) == ("Pending", "gpu", "gpu")


def test_messages_say_where_traffic_goes() -> None:
    steps = [obs(t, gpu(0.99)) for t in range(4)] + [obs(t, gpu(0.5)) for t in range(4, 14)]
    moves = [d for d in run(steps) if d.transition]
    assert [d.phase for d in moves] == ["FailedOver", "Recovering", "Serving"]
    assert moves[1].message.startswith("GPU tier healthy again (")
    assert moves[1].message.endswith("); both tiers serve")
    assert moves[2].message == "GPU tier healthy for 6s; traffic back on the GPU tier"


def test_without_a_fallback_tier_only_trouble_says_there_is_none() -> None:
    config = CFG.model_copy(update={"fallback_enabled": False, "fallback_standby_replicas": 0})
    note = "; no fallback tier (spec.fallback.enabled is false)"
    high = run([obs(t, gpu(0.93)) for t in range(4)], config=config)
    assert [d.phase for d in high if d.transition] == ["Degraded"]
    assert high[-1].message.endswith(note)
    healed = run([obs(t, gpu(0.5)) for t in range(4, 14)], state=high[-1].state, config=config)
    assert [d.phase for d in healed if d.transition] == ["Recovering", "Serving"]
    assert not any(d.message.endswith(note) for d in healed if d.transition)
    with_fallback = run([obs(t, gpu(0.93)) for t in range(4)])
    assert not with_fallback[-1].message.endswith(note)


def test_no_ready_fallback_while_failed_over_degrades_at_once_saying_why() -> None:
    failed_over = PolicyState(
        phase="FailedOver", active_tier="fallback", fallback_replicas=2, last_transition_time=T0
    )
    observation = Observation(time=T0 + 1, gpu_pods=(gpu(0.99),), fallback_ready=0)
    d = decide(CFG, failed_over, observation)
    assert d.phase == "Degraded"
    assert d.reason == reasons.NO_READY_FALLBACK_PODS
    assert d.message.endswith("the GPU tier serves under pressure rather than nothing, at once")


# --- status (de)serialisation -----------------------------------------------------------------


def test_the_status_names_the_last_transition_in_full() -> None:
    ds = run([obs(t, gpu(0.99)) for t in range(4)])
    d = next(d for d in ds if d.transition)
    status = policy.state_to_status(d.state, d.transition)
    assert status["lastTransition"] == {
        "time": policy.to_rfc3339(T0 + 2),
        "from": "Serving",
        "to": "FailedOver",
        "reason": reasons.GPU_MEMORY_CRITICAL,
        "message": d.message,
    }
    assert status["phase"] == "FailedOver"
    assert status["activeTier"] == "fallback"
    assert status["failovers"] == 1
    assert status["fallback"] == {"desiredReplicas": 1}


def test_restoring_keeps_valid_tiers_and_signals_and_drops_the_rest() -> None:
    signals = {
        "failure": "not a time",
        "pressure": policy.to_rfc3339(T0),
        "bogus": policy.to_rfc3339(T0),
        "healthy": 12,
    }
    for tier in ("gpu", "fallback", "both"):
        restored = policy.state_from_status(
            {"phase": "Degraded", "activeTier": tier, "healing": {"signals": signals}}
        )
        assert restored.active_tier == tier
        assert restored.signals == {policy.SIGNAL_PRESSURE: T0}
    unknown = policy.state_from_status({"phase": "Degraded", "activeTier": "tpu"})
    assert unknown.active_tier == "gpu"


def test_a_garbled_transition_time_is_no_transition_time() -> None:
    restored = policy.state_from_status(
        {"phase": "Serving", "lastTransition": {"time": "yesterday", "reason": "R"}}
    )
    assert restored.last_transition_time is None
    assert restored.reason == "R"


def test_status_times_are_utc_whatever_the_machine_s_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        assert policy.to_rfc3339(1_800_000_000.25) == "2027-01-15T08:00:00.250000Z"
        assert policy.to_rfc3339_seconds(1_800_000_000.25) == "2027-01-15T08:00:00Z"
        assert policy.from_rfc3339("2027-01-15T08:00:00.250000Z") == 1_800_000_000.25
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_hardware_fault_message_names_pods_nodes_and_gpus() -> None:
    xid = policy.GPUFault("0", "GPU-1", "xid_79")
    lost = policy.GPUFault("1", "", "gpu_lost")
    pods = [
        gpu(0.5, name="a", node="n1", gpu_faults=(xid, lost)),
        gpu(0.5, name="b", gpu_faults=(xid,)),
        gpu(0.5, name="c", node="n3", gpu_faults=(lost,)),
        gpu(0.5, name="d", node="n4", gpu_faults=(xid,)),
        gpu(0.5, name="e"),
    ]
    a = policy.assess(CFG, obs(0, *pods))
    assert (a.severity, a.reason) == (policy.Severity.PRESSURE, reasons.GPU_HARDWARE_FAULT)
    assert a.message == (
        "GPU hardware fault on 4 of 5 GPU pods: "
        "a on n1: GPU 0 (GPU-1): xid_79, GPU 1 (no UUID): gpu_lost; "
        "b: GPU 0 (GPU-1): xid_79; "
        "c on n3: GPU 1 (no UUID): gpu_lost"
    )
    only = policy.assess(CFG, obs(0, pods[1]))
    assert only.severity == policy.Severity.FAILURE
    assert only.message == "GPU hardware fault on 1 of 1 GPU pods: b: GPU 0 (GPU-1): xid_79"


def test_a_gpu_tier_scaled_to_zero_still_counts_as_one_pod_for_the_fallback() -> None:
    empty = Observation(time=T0, gpu_pods=(), gpu_replicas=0)
    assert policy.fallback_replicas_for(CFG, "Degraded", empty) == 2  # standby + half of one
    assert policy.fallback_replicas_for(CFG, "FailedOver", empty) == 1
