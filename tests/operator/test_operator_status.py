"""Status computed from the children: conditions, counts, the READY column."""

from __future__ import annotations

import copy
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from voiceops_operator import reasons
from voiceops_operator import status as st

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def deployment(desired: int, ready: int, generation: int = 1, seen: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": desired},
        "status": {
            "replicas": desired,
            "readyReplicas": ready,
            "updatedReplicas": desired,
            "observedGeneration": seen,
        },
    }


def compute(current: dict[str, Any], gpu: Any, fallback: Any, tier: str = "gpu", now: str = T0):
    return st.compute_status(
        current,
        generation=2,
        active_tier=tier,
        gpu=st.TierCounts.from_deployment(gpu),
        fallback=st.TierCounts.from_deployment(fallback) if fallback is not False else None,
        now=now,
    )


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_ready_only_when_the_serving_tier_has_ready_pods() -> None:
    not_ready = compute({}, deployment(1, 0), deployment(1, 1))
    assert condition(not_ready, st.READY)["status"] == "False"
    assert condition(not_ready, st.READY)["reason"] == reasons.NO_READY_REPLICAS
    assert not_ready["phase"] == "Pending"
    ready = compute({}, deployment(1, 1), deployment(1, 0))
    assert condition(ready, st.READY)["status"] == "True"
    assert ready["phase"] == "Serving"
    failed_over = compute({"activeTier": "fallback"}, deployment(1, 1), deployment(1, 0))
    assert condition(failed_over, st.READY)["status"] == "False"
    both = compute({"activeTier": "both"}, deployment(1, 0), deployment(1, 1))
    assert condition(both, st.READY)["status"] == "True"


def test_counts_and_ready_string() -> None:
    status = compute({}, deployment(2, 1), deployment(3, 3))
    assert status["ready"] == "gpu 1/2 · cpu 3/3"
    assert status["gpu"] == {"replicas": 2, "readyReplicas": 1}
    assert status["fallback"] == {"replicas": 3, "readyReplicas": 3}
    assert status["observedGeneration"] == 2
    assert compute({}, deployment(1, 1), False)["ready"] == "gpu 1/1 · cpu off"


def test_progressing_while_rolling_out() -> None:
    rolling = compute({}, deployment(1, 1, generation=3, seen=2), deployment(1, 1))
    assert condition(rolling, st.PROGRESSING)["status"] == "True"
    done = compute({}, deployment(1, 1), deployment(1, 1))
    assert condition(done, st.PROGRESSING)["status"] == "False"
    assert condition(done, st.PROGRESSING)["reason"] == reasons.ROLLOUT_COMPLETE


def test_transition_time_moves_only_on_status_change() -> None:
    first = compute({}, deployment(1, 0), deployment(1, 1), now=T0)
    same = compute(first, deployment(1, 0), deployment(1, 1), now=T1)
    assert condition(same, st.READY)["lastTransitionTime"] == T0
    assert st.status_patch(first, same) == {}
    flipped = compute(first, deployment(1, 1), deployment(1, 1), now=T1)
    assert condition(flipped, st.READY)["lastTransitionTime"] == T1


def test_self_healing_fields_are_kept() -> None:
    current = {
        "phase": "FailedOver",
        "activeTier": "fallback",
        "failovers": 2,
        "gpu": {"memoryUsedRatio": 0.99},
        "fallback": {"desiredReplicas": 4},
        "lastTransition": {"time": T0, "from": "Degraded", "to": "FailedOver"},
        "conditions": [
            {"type": "FailedOver", "status": "True", "reason": "MemoryCritical", "message": ""}
        ],
    }
    new = compute(current, deployment(1, 1), deployment(4, 4))
    assert new["phase"] == "FailedOver"
    assert new["activeTier"] == "fallback"
    assert new["failovers"] == 2
    assert new["gpu"]["memoryUsedRatio"] == 0.99
    assert new["fallback"]["desiredReplicas"] == 4
    assert new["lastTransition"] == current["lastTransition"]
    assert condition(new, "FailedOver")["reason"] == "MemoryCritical"
    assert [c["type"] for c in new["conditions"]] == ["FailedOver", st.READY, st.PROGRESSING]


def test_invalid_spec_status() -> None:
    status = st.invalid_spec_status({}, generation=4, message="spec.model.uri: bad", now=T0)
    ready = condition(status, st.READY)
    assert (ready["status"], ready["reason"]) == ("False", reasons.INVALID_SPEC)
    assert "spec.model.uri" in ready["message"]
    assert status["observedGeneration"] == 4


def test_status_patch_lists_changed_keys_only() -> None:
    assert st.status_patch({"a": 1, "b": 2}, {"a": 1, "b": 3}) == {"b": 3}
    assert st.status_patch({"a": 1, "gone": 1}, {"a": 1}) == {"gone": None}
    # Nested maps too: only what changed, and keys dropped on purpose removed.
    current = {"gpu": {"replicas": 1, "readyReplicas": 1, "memoryUsedRatio": 0.5}}
    new = {"gpu": {"replicas": 2, "readyReplicas": 1}}
    assert st.status_patch(current, new) == {"gpu": {"replicas": 2, "memoryUsedRatio": None}}


def test_status_patch_compares_json_values_exactly() -> None:
    # The API server hands a written 1.0 back as 1: the same value, nothing to write.
    assert st.status_patch({"gpu": {"memoryUsedRatio": 1}}, {"gpu": {"memoryUsedRatio": 1.0}}) == {}
    assert st.status_patch({"failovers": 0}, {"failovers": 0}) == {}


def test_with_self_healing_on_the_reconcile_never_writes_phase_or_tier() -> None:
    # Fresh object, serving tier ready: without the loop the reconcile says Serving;
    # with it, phase and activeTier are the loop's alone (its first pass sets them).
    ready = compute({}, deployment(1, 1), deployment(1, 1))
    assert (ready["phase"], ready["activeTier"]) == ("Serving", "gpu")
    healed = st.compute_status(
        {},
        generation=1,
        active_tier="gpu",
        gpu=st.TierCounts.from_deployment(deployment(1, 1)),
        fallback=st.TierCounts.from_deployment(deployment(1, 1)),
        now=T0,
        writes_phase=False,
    )
    assert "phase" not in healed
    assert "activeTier" not in healed
    assert condition(healed, st.READY)["status"] == "True"
    invalid = st.invalid_spec_status({}, generation=1, message="x", now=T0, writes_phase=False)
    assert "phase" not in invalid


def test_conditions_say_which_tier_serves_and_for_which_generation() -> None:
    ready_line = "gpu 1/1 · cpu 1/1"
    for tier, word in (("gpu", "GPU tier"), ("fallback", "fallback tier"), ("both", "both tiers")):
        status = compute({"activeTier": tier}, deployment(1, 1), deployment(1, 1))
        assert condition(status, st.READY) == {
            "type": st.READY,
            "status": "True",
            "reason": reasons.SERVING_TIER_READY,
            "message": f"serving from the {word}: {ready_line}",
            "lastTransitionTime": T0,
            "observedGeneration": 2,
        }
        assert condition(status, st.PROGRESSING) == {
            "type": st.PROGRESSING,
            "status": "False",
            "reason": reasons.ROLLOUT_COMPLETE,
            "message": "all tiers rolled out",
            "lastTransitionTime": T0,
            "observedGeneration": 2,
        }
    down = compute({"activeTier": "fallback"}, deployment(1, 1), deployment(1, 0))
    message = "no ready pods in the fallback tier: gpu 1/1 · cpu 0/1"
    assert condition(down, st.READY)["message"] == message
    assert condition(down, st.READY)["observedGeneration"] == 2
    rolling = compute({}, deployment(1, 1, generation=3, seen=2), deployment(1, 1))
    assert condition(rolling, st.PROGRESSING)["reason"] == reasons.ROLLING_OUT
    assert condition(rolling, st.PROGRESSING)["message"] == f"rolling out: {ready_line}"
    assert condition(rolling, st.PROGRESSING)["observedGeneration"] == 2
    odd = compute({"activeTier": "elsewhere"}, deployment(1, 1), deployment(1, 1))
    assert condition(odd, st.READY)["message"] == f"serving from the elsewhere: {ready_line}"


def test_a_fresh_object_and_a_pending_one_become_serving_once_ready() -> None:
    fresh = st.compute_status(
        None,  # type: ignore[arg-type]
        generation=1,
        active_tier="gpu",
        gpu=st.TierCounts.from_deployment(deployment(1, 1)),
        fallback=None,
        now=T0,
    )
    assert (fresh["phase"], fresh["activeTier"]) == ("Serving", "gpu")
    pending = compute({"phase": "Pending"}, deployment(1, 1), deployment(1, 1))
    assert pending["phase"] == "Serving"


def test_turning_the_fallback_off_drops_its_status() -> None:
    current = compute({}, deployment(1, 1), deployment(1, 1))
    assert "fallback" in current
    without = compute(current, deployment(1, 1), False)
    assert "fallback" not in without
    assert st.status_patch(current, without)["fallback"] is None


def test_the_current_status_is_never_changed_in_place() -> None:
    current = {
        "gpu": {"memoryUsedRatio": 0.5},
        "fallback": {"desiredReplicas": 2},
        "conditions": [{"type": st.READY, "status": "False", "reason": "R", "message": ""}],
    }
    snapshot = copy.deepcopy(current)
    compute(current, deployment(1, 1), False)
    st.invalid_spec_status(current, generation=3, message="bad", now=T1)
    st.failed_reconcile_status(current, generation=3, message="boom", now=T1)
    assert current == snapshot


@pytest.mark.parametrize(
    ("tier", "gpu_ready", "fallback", "ready"),
    [
        ("fallback", 1, None, False),  # no fallback tier at all
        ("fallback", 0, 1, True),
        ("fallback", 0, 0, False),
        ("both", 0, 0, False),
        ("both", 1, 0, True),
        ("both", 0, 1, True),
        ("gpu", 1, 0, True),
        ("gpu", 0, 2, False),
    ],
)
def test_ready_means_the_selected_tier_has_a_ready_pod(
    tier: str, gpu_ready: int, fallback: int | None, ready: bool
) -> None:
    gpu = st.TierCounts(desired=1, ready=gpu_ready)
    counts = None if fallback is None else st.TierCounts(desired=1, ready=fallback)
    assert st.serving_ready(tier, gpu, counts) is ready


def test_a_condition_keeps_its_place_when_it_changes() -> None:
    conditions = st.set_condition([], st.READY, "True", "A", "a", 1, T0)
    conditions = st.set_condition(conditions, "FailedOver", "False", "B", "b", 1, T0)
    conditions = st.set_condition(conditions, st.READY, "False", "C", "c", 2, T1)
    assert [c["type"] for c in conditions] == [st.READY, "FailedOver"]
    assert conditions[0] == {
        "type": st.READY,
        "status": "False",
        "reason": "C",
        "message": "c",
        "lastTransitionTime": T1,
        "observedGeneration": 2,
    }
    assert st.condition_status({"conditions": conditions}, "FailedOver") == "False"
    assert st.condition_status({"conditions": conditions}, "Progressing") is None
    assert st.condition_status({}, st.READY) is None


def test_an_invalid_spec_keeps_the_rest_and_stops_progressing() -> None:
    current = {"phase": "Serving", "gpu": {"replicas": 1}, "conditions": []}
    status = st.invalid_spec_status(current, generation=4, message="spec.x: bad", now=T0)
    assert status["phase"] == "Serving"
    assert status["gpu"] == {"replicas": 1}
    for type_ in (st.READY, st.PROGRESSING):
        assert condition(status, type_) == {
            "type": type_,
            "status": "False",
            "reason": reasons.INVALID_SPEC,
            "message": "spec.x: bad",
            "lastTransitionTime": T0,
            "observedGeneration": 4,
        }
    fresh = st.invalid_spec_status({}, generation=1, message="bad", now=T0)
    assert fresh["phase"] == "Pending"


def test_a_failed_reconcile_shows_in_progressing_only() -> None:
    current = compute({}, deployment(1, 1), deployment(1, 1))
    failed = st.failed_reconcile_status(current, generation=2, message="boom", now=T1)
    assert condition(failed, st.PROGRESSING) == {
        "type": st.PROGRESSING,
        "status": "False",
        "reason": reasons.RECONCILE_FAILED,
        "message": "boom",
        "lastTransitionTime": T0,  # Progressing was already False
        "observedGeneration": 2,
    }
    assert condition(failed, st.READY) == condition(current, st.READY)
    assert (
        st.failed_reconcile_status({}, generation=1, message="x", now=T0)["conditions"][0]["reason"]
        == reasons.RECONCILE_FAILED
    )


def test_a_rollout_with_a_pod_of_the_old_template_left_is_not_over() -> None:
    def surge(replicas: int) -> dict:
        status = {"observedGeneration": 2, "replicas": replicas, "updatedReplicas": 3,
                  "readyReplicas": replicas}  # fmt: skip
        return {"metadata": {"generation": 2}, "spec": {"replicas": 3}, "status": status}

    assert st.TierCounts.from_deployment(surge(4)).rolled_out is False  # the old pod is up
    assert st.TierCounts.from_deployment(surge(3)).rolled_out is True


def test_tier_counts_read_a_deployment_with_kubernetes_defaults() -> None:
    assert st.TierCounts.from_deployment(None) == st.TierCounts(rolled_out=False)
    created = st.TierCounts.from_deployment({"metadata": {"generation": 1}, "spec": {}})
    assert created == st.TierCounts(desired=1, replicas=0, ready=0, updated=0, rolled_out=False)
    unseen = {"metadata": {"generation": 1}, "spec": {"replicas": 0}}
    assert st.TierCounts.from_deployment(unseen).rolled_out is False
    no_generations = {"spec": {"replicas": 0}}
    assert st.TierCounts.from_deployment(no_generations).rolled_out is True
    partial = {
        "metadata": {"generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "readyReplicas": 1},
    }
    assert st.TierCounts.from_deployment(partial) == st.TierCounts(
        desired=1, replicas=0, ready=1, updated=0, rolled_out=False
    )
    counted = st.TierCounts.from_deployment(deployment(3, 2))
    assert counted == st.TierCounts(desired=3, replicas=3, ready=2, updated=3, rolled_out=False)


def test_now_is_utc_whatever_the_machine_s_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        stamp = st.now_rfc3339()
    finally:
        monkeypatch.undo()
        time.tzset()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    seconds = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert abs(seconds - time.time()) < 3600  # Kolkata's local time would be 5.5 h off


def test_a_first_failure_or_refusal_on_a_fresh_object_is_stamped_now() -> None:
    failed = st.failed_reconcile_status(None, generation=1, message="boom", now=T1)  # type: ignore[arg-type]
    assert condition(failed, st.PROGRESSING)["lastTransitionTime"] == T1
    refused = st.invalid_spec_status(None, generation=1, message="bad", now=T1)  # type: ignore[arg-type]
    assert condition(refused, st.READY)["lastTransitionTime"] == T1
    assert refused["phase"] == "Pending"


def test_an_invalid_spec_keeps_the_self_healing_conditions() -> None:
    failed_over = {"type": "FailedOver", "status": "True", "reason": "R", "message": "m"}
    status = st.invalid_spec_status(
        {"conditions": [failed_over]}, generation=2, message="bad", now=T0
    )
    assert [c["type"] for c in status["conditions"]] == ["FailedOver", st.READY, st.PROGRESSING]
    assert condition(status, "FailedOver") == failed_over
