"""The healing loop's pure helpers: conditions, the status patch, routing, events."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from voiceops_operator import build, events, healing_patches, names, opmetrics, policy, reasons
from voiceops_operator import status as st
from voiceops_operator.spec import parse_voiceservice

T0 = 1_800_000_000.0
NOW = "2027-01-15T08:00:00Z"


def vs_manifest(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "voiceops.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": "tts", "namespace": "ns", "uid": "u-1", "generation": 3},
        "spec": spec,
    }


VS = parse_voiceservice(vs_manifest())
CFG = healing_patches.policy_config(VS.spec)


def decide_from(state: policy.PolicyState, *ratios: float) -> policy.Decision:
    pods = tuple(
        policy.PodObservation(name=f"p{i}", metrics=policy.GPUMetrics(r))
        for i, r in enumerate(ratios)
    )
    return policy.decide(CFG, state, policy.Observation(time=T0, gpu_pods=pods))


def failed_over_decision() -> policy.Decision:
    state = policy.PolicyState(phase="Serving", signals={policy.SIGNAL_FAILURE: T0 - 100})
    d = decide_from(state, 0.99)
    assert d.phase == "FailedOver"
    return d


def test_policy_config_follows_the_spec_defaults() -> None:
    assert CFG.memory_high_ratio == VS.spec.failover.memory_high_ratio
    assert CFG.window_seconds == VS.spec.failover.window_seconds
    assert CFG.cooldown == VS.spec.failover.cooldown_seconds
    assert CFG.fallback_standby_replicas == VS.spec.fallback.standby_replicas
    off = parse_voiceservice(vs_manifest(fallback={"enabled": False}))
    assert healing_patches.policy_config(off.spec).fallback_enabled is False


def test_conditions_when_failed_over_keep_other_types() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "X", "lastTransitionTime": NOW}
    d = failed_over_decision()
    conds = healing_patches.healing_conditions([ready], d, True, 3, NOW)
    by_type = {c["type"]: c for c in conds}
    assert by_type["Ready"] == ready
    assert by_type["Degraded"]["status"] == "True"
    assert by_type["FailedOver"]["status"] == "True"
    assert by_type["FailedOver"]["reason"] == reasons.GPU_MEMORY_CRITICAL
    assert by_type["FailedOver"]["observedGeneration"] == 3


def test_conditions_without_fallback_say_so() -> None:
    d = decide_from(policy.PolicyState(phase="Serving"), 0.5)
    conds = healing_patches.healing_conditions([], d, False, 1, NOW)
    failed = next(c for c in conds if c["type"] == st.FAILED_OVER)
    assert failed["status"] == "False"
    assert failed["reason"] == reasons.FALLBACK_DISABLED


def test_status_patch_is_empty_when_nothing_changed() -> None:
    d = failed_over_decision()
    first = healing_patches.healing_status({}, d, True, 3, NOW)
    assert first["phase"] == "FailedOver"
    assert first["activeTier"] == "fallback"
    assert first["failovers"] == 1
    assert first["lastTransition"]["to"] == "FailedOver"
    assert first["gpu"] == {"memoryUsedRatio": 0.99}
    # Apply the patch the way a merge patch would, with fields the core owns alongside.
    current = {
        **first,
        "gpu": {**first["gpu"], "replicas": 1, "readyReplicas": 1},
        "fallback": {**first["fallback"], "replicas": 1, "readyReplicas": 1},
        "observedGeneration": 3,
    }
    steady = policy.decide(CFG, d.state, policy.Observation(time=T0 + 1, gpu_pods=()))
    assert steady.transition is None
    # Same phase and tier; only the signals moved (no GPU pod: still failing).
    patch = healing_patches.healing_status(current, steady, True, 3, "2027-01-15T08:00:09Z")
    assert set(patch) <= {"healing", "gpu"}
    assert "conditions" not in patch


def test_status_patch_changes_only_the_ratio() -> None:
    d = decide_from(policy.PolicyState(phase="Serving", fallback_replicas=1), 0.5)
    current = healing_patches.healing_status({}, d, True, 3, NOW)
    d2 = policy.decide(
        CFG,
        d.state,
        policy.Observation(
            time=T0 + 1, gpu_pods=(policy.PodObservation("p0", metrics=policy.GPUMetrics(0.6)),)
        ),
    )
    patch = healing_patches.healing_status(current, d2, True, 3, NOW)
    assert patch == {"gpu": {"memoryUsedRatio": 0.6}}


@pytest.mark.parametrize(
    ("tier", "expected"),
    [("gpu", "gpu"), ("fallback", "fallback"), ("both", None)],
)
def test_the_front_service_selects_the_decided_tier(tier: str, expected: str | None) -> None:
    routing = build.routing_within(build.Routing(tier), VS.spec)  # type: ignore[arg-type]
    selector = build.build_front_service(VS, routing)["spec"]["selector"]
    assert selector.get(names.LABEL_TIER) == expected
    assert selector[names.LABEL_INSTANCE] == "tts"


def test_without_fallback_the_decision_routes_to_the_gpu_tier() -> None:
    off = parse_voiceservice(vs_manifest(fallback={"enabled": False}))
    assert build.routing_within(build.Routing("fallback", 3), off.spec) == build.Routing("gpu")


def test_the_fallback_hpa_minimum_follows_the_decision() -> None:
    desired = build.build_all(VS, build.Routing("fallback", fallback_replicas=3), _settings())
    assert build.hpa_minimums(desired) == {
        "tts-gpu": VS.spec.autoscaling.min_replicas,
        "tts-fallback": 3,
    }
    no_hpa = parse_voiceservice(vs_manifest(autoscaling={"enabled": False}))
    desired = build.build_all(no_hpa, build.Routing("both", 2), _settings())
    assert build.hpa_minimums(desired) == {}
    (fallback,) = [
        o for o in desired if (o["kind"], o["metadata"]["name"]) == ("Deployment", "tts-fallback")
    ]
    assert fallback["spec"]["replicas"] == 2


def test_transition_event_shape() -> None:
    d = failed_over_decision()
    assert d.transition is not None
    note = healing_patches.transition_note(d.transition)
    event = events.event_body(vs_manifest(), note, NOW, "op-0")
    assert event["type"] == "Warning"
    assert event["reason"] == reasons.GPU_MEMORY_CRITICAL
    assert event["action"] == "FailOver"
    assert event["involvedObject"]["kind"] == "VoiceService"
    assert event["involvedObject"]["uid"] == "u-1"
    assert "Serving → FailedOver" in event["message"]
    assert event["metadata"]["generateName"] == "tts."
    assert event["source"]["component"] == events.COMPONENT
    assert event["reportingInstance"] == "op-0"


def _settings():
    from voiceops_operator.settings import OperatorSettings

    return OperatorSettings()


async def test_operator_metrics_served_over_http() -> None:
    metrics = opmetrics.OperatorMetrics()
    metrics.transitions.labels("Serving", "FailedOver", "GPUMemoryCritical").inc()
    metrics.decision_latency.observe(2.4)
    metrics.observation_errors.labels("scrape").inc(3)
    metrics.reconcile_duration.labels("healing").observe(0.01)
    metrics.set_phase("ns", "tts", "FailedOver")
    runner = await opmetrics.start_metrics_server(metrics, 0, host="127.0.0.1")
    try:
        port = runner.addresses[0][1]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            assert resp.status == 200
            text = await resp.text()
    finally:
        await runner.cleanup()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    key = (("from", "Serving"), ("reason", "GPUMemoryCritical"), ("to", "FailedOver"))
    assert samples[(opmetrics.TRANSITIONS_TOTAL, key)] == 1
    assert samples[(opmetrics.DECISION_LATENCY_SECONDS + "_count", ())] == 1
    assert samples[(opmetrics.OBSERVATION_ERRORS_TOTAL, (("kind", "scrape"),))] == 3
    assert samples[(opmetrics.RECONCILE_DURATION_SECONDS + "_count", (("loop", "healing"),))] == 1
    phase = (("name", "tts"), ("namespace", "ns"), ("phase", "FailedOver"))
    assert samples[(opmetrics.VOICESERVICE_PHASE, phase)] == 1
    metrics.forget("ns", "tts")
    assert b'name="tts"' not in metrics.exposition()


def test_status_patch_removes_signals_that_ended() -> None:
    # Pressure pending, then healthy again: the pressure since-time must go (null in
    # the merge patch), or a restart would resume a window that is over.
    state = policy.PolicyState(phase="Serving", fallback_replicas=1)
    pressured = decide_from(state, 0.93)
    assert set(pressured.state.signals) == {policy.SIGNAL_PRESSURE}
    current = healing_patches.healing_status({}, pressured, True, 3, NOW)
    assert set(current["healing"]["signals"]) == {policy.SIGNAL_PRESSURE}
    healthy = policy.decide(
        CFG,
        pressured.state,
        policy.Observation(
            time=T0 + 1, gpu_pods=(policy.PodObservation("p0", metrics=policy.GPUMetrics(0.5)),)
        ),
    )
    patch = healing_patches.healing_status(current, healthy, True, 3, NOW)
    assert patch["healing"]["signals"] == {
        policy.SIGNAL_PRESSURE: None,
        policy.SIGNAL_HEALTHY: policy.to_rfc3339(T0 + 1),
    }
    # Applied as a merge patch, the next identical pass writes nothing.
    applied = {**current, "gpu": {"memoryUsedRatio": 0.5}, "healing": {"signals": {}}}
    applied["healing"]["signals"] = {policy.SIGNAL_HEALTHY: policy.to_rfc3339(T0 + 1)}
    again = policy.decide(
        CFG,
        healthy.state,
        policy.Observation(
            time=T0 + 2, gpu_pods=(policy.PodObservation("p0", metrics=policy.GPUMetrics(0.5)),)
        ),
    )
    assert healing_patches.healing_status(applied, again, True, 3, NOW) == {}


def test_no_signals_write_nothing_into_an_empty_status() -> None:
    # Memory in the hysteresis band: no signal pending at all.
    d = decide_from(policy.PolicyState(phase="Serving", fallback_replicas=1), 0.87)
    assert d.state.signals == {}
    patch = healing_patches.healing_status({}, d, True, 3, NOW)
    assert "healing" not in patch
    assert healing_patches.healing_status(patch, d, True, 3, NOW) == {}


def test_each_status_field_has_one_writer() -> None:
    # The healing loop's patch never names a field the spec reconcile owns...
    core_owned = {"observedGeneration", "ready"}
    d = failed_over_decision()
    patch = healing_patches.healing_status({}, d, True, 3, NOW)
    assert not core_owned & set(patch)
    assert set(patch["gpu"]) == {"memoryUsedRatio"}
    assert set(patch["fallback"]) == {"desiredReplicas"}
    assert {c["type"] for c in patch["conditions"]} == {st.DEGRADED, st.FAILED_OVER}
    # ...and the spec reconcile (self-healing on) changes nothing the loop owns.
    healed = {**patch, "gpu": {**patch["gpu"]}, "fallback": {**patch["fallback"]}}
    new = st.compute_status(
        healed,
        generation=3,
        active_tier="fallback",
        gpu=st.TierCounts(desired=1, replicas=1, ready=0),
        fallback=st.TierCounts(desired=1, replicas=1, ready=1),
        now=NOW,
        writes_phase=False,
    )
    for key in ("phase", "activeTier", "failovers", "lastTransition", "healing"):
        assert new[key] == healed[key], key
    assert new["gpu"]["memoryUsedRatio"] == healed["gpu"]["memoryUsedRatio"]
    assert new["fallback"]["desiredReplicas"] == healed["fallback"]["desiredReplicas"]
    by_type = {c["type"]: c for c in new["conditions"]}
    for type_ in (st.DEGRADED, st.FAILED_OVER):
        assert by_type[type_] == next(c for c in healed["conditions"] if c["type"] == type_)
    assert by_type[st.READY]["status"] == "True"  # the fallback tier it routes to is ready
