"""Status computed from the children: conditions, counts, the READY column."""

from __future__ import annotations

from typing import Any

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
    assert condition(not_ready, st.READY)["reason"] == st.Reason.NO_READY_REPLICAS
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
    assert condition(done, st.PROGRESSING)["reason"] == st.Reason.ROLLOUT_COMPLETE


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
    assert (ready["status"], ready["reason"]) == ("False", st.Reason.INVALID_SPEC)
    assert "spec.model.uri" in ready["message"]
    assert status["observedGeneration"] == 4


def test_status_patch_lists_changed_keys_only() -> None:
    assert st.status_patch({"a": 1, "b": 2}, {"a": 1, "b": 3}) == {"b": 3}
    assert st.status_patch({"a": 1, "gone": 1}, {"a": 1}) == {"gone": None}


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
