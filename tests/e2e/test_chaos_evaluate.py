"""The chaos runner's pure evaluation: latencies, causes, budgets, timings, expectations."""

from __future__ import annotations

import pytest
from voiceops_chaos import evaluate as ev
from voiceops_chaos.catalogue import Expect, SteadyState


def answer(
    client: str, started: float, seconds: float = 0.2, status: int = 200, **kw: object
) -> ev.Answer:
    return ev.Answer(client, started, seconds, status, **kw)  # type: ignore[arg-type]


def test_percentile_interpolates_and_says_none_for_nothing() -> None:
    assert ev.percentile([], 0.5) is None
    assert ev.percentile([3.0], 0.99) == 3.0
    assert ev.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert ev.percentile([4.0, 1.0, 3.0, 2.0], 1.0) == 4.0


@pytest.mark.parametrize(
    ("status", "error", "cause"),
    [
        (200, "", ""),
        (503, "", "http 503"),
        (0, "ClientConnectorError(... Connection refused)", "connection refused"),
        (0, "ServerDisconnectedError('Server disconnected')", "connection reset"),
        (0, "APITimeoutError('Request timed out.')", "timeout"),
        (0, "something else", "no answer"),
    ],
)
def test_failure_causes_are_short_words(status: int, error: str, cause: str) -> None:
    assert ev.failure_cause(answer("plain", 0, status=status, error=error)) == cause


def test_summaries_per_client_count_failures_by_cause_and_answered_latency_only() -> None:
    answers = [
        answer("plain", 0, 0.1, engine="vits"),
        answer("plain", 1, 0.3, engine="espeak"),
        answer("plain", 2, 9.0, status=0, error="Connection refused"),
        answer("openai", 0, 0.2, engine="vits"),
    ]
    summary = ev.summarise(answers)
    plain = summary["plain"]
    assert (plain.requests, plain.failures) == (3, 1)
    assert plain.causes == {"connection refused": 1}
    assert plain.p50_seconds == pytest.approx(0.2)  # the failure's 9 s is not a latency
    assert plain.engines == {"vits": 1, "espeak": 1}
    assert summary["openai"].failures == 0


def test_zero_loss_budget_names_each_client_kind_that_lost_something() -> None:
    answers = [answer("plain", 0), answer("openai", 0, status=503), answer("openai", 1)]
    verdict = ev.judge_budget("zero_loss", answers, [])
    assert not verdict.ok
    assert verdict.problems == ("openai: 1 failed (1 http 503); budget 0",)
    assert ev.judge_budget("zero_loss", [answer("plain", 0)], []).ok


def test_crash_budget_forgives_the_raw_clients_requests_on_the_dead_pod_only() -> None:
    death = ev.Disruption(10.0, pod_ips=frozenset({"10.0.0.5"}), exposed_until=10.4)
    in_flight = answer("plain", 9.9, 0.1, status=0, error="reset")  # 9.9 .. 10.0
    sent_to_dead = answer("plain", 10.2, 0.01, status=0, error="reset")
    late = answer("plain", 11.0, 0.01, status=0, error="refused")
    assert ev.judge_budget("crash", [in_flight, sent_to_dead], [death]).ok
    verdict = ev.judge_budget("crash", [in_flight, late], [death])
    assert not verdict.ok
    assert "plain: 1 failed" in verdict.problems[0]
    losses = ev.crash_losses([in_flight, sent_to_dead, late], [death])
    assert losses == ev.CrashLosses(in_flight=1, sent_to_dead_pod=1, other=1)


def test_crash_budget_forgives_the_openai_client_nothing() -> None:
    death = ev.Disruption(10.0)
    verdict = ev.judge_budget("crash", [answer("openai", 9.9, 0.2, status=0)], [death])
    assert not verdict.ok
    assert verdict.problems[0].startswith("openai: 1 failed")


def test_a_death_seen_late_through_a_watch_still_counts_what_was_in_flight() -> None:
    # Died at ~10.0, seen at 10.3: the request failed at 10.0, before the death was seen.
    seen_late = ev.Disruption(10.3, slack=1.0)
    failed = answer("plain", 9.5, 0.5, status=0)
    assert ev.in_flight_at(failed, [seen_late])
    assert not ev.in_flight_at(failed, [ev.Disruption(10.3)])


def test_only_429_budget_allows_429s_with_retry_after_and_nothing_else() -> None:
    ok = [answer("spike", 0, status=429, retry_after="2"), answer("plain", 0)]
    assert ev.judge_budget("only_429", ok, []).ok
    bare = ev.judge_budget("only_429", [answer("spike", 0, status=429, retry_after="")], [])
    assert bare.problems == ("1 429 answers without Retry-After",)
    errors = ev.judge_budget("only_429", [answer("plain", 0, status=504)], [])
    assert errors.problems == ("1 5xx answers (1 http 504)",)
    refused = ev.judge_budget("only_429", [answer("spike", 0, status=0, error="reset")], [])
    assert refused.problems == ("1 requests without an answer (1 connection reset)",)
    assert ev.judge_budget("report", [answer("plain", 0, status=500)], []).ok


def status(at: float, phase: str) -> ev.StatusSample:
    return ev.StatusSample(at, phase, "", "", None)


def test_fault_to_phase_counts_from_the_fault_and_sees_a_phase_already_there() -> None:
    history = [status(0, "Serving"), status(12.5, "FailedOver"), status(20, "Serving")]
    assert ev.fault_to_phase(history, "FailedOver", 10.0) == pytest.approx(2.5)
    assert ev.fault_to_phase(history, "FailedOver", 13.0) == 0.0  # it was FailedOver then
    assert ev.fault_to_phase(history, "Recovering", 10.0) is None


def routing(at: float, *tiers: str, ips: tuple[str, ...] = ()) -> ev.RoutingSample:
    return ev.RoutingSample(at, "", frozenset(tiers), frozenset(ips))


def test_traffic_moved_when_every_ready_endpoint_is_on_the_tier() -> None:
    history = [
        routing(0, "gpu"),
        routing(10.1),  # the dead pod left, nothing ready yet
        routing(10.3, "gpu", "fallback"),
        routing(10.6, "fallback"),
    ]
    assert ev.fault_to_traffic_moved(history, "fallback", 10.0) == pytest.approx(0.6)
    assert ev.fault_to_traffic_moved(history, "gpu", 11.0) is None


def test_exposure_ends_when_live_endpoints_and_no_dead_one_take_connections() -> None:
    history = [
        routing(0, ips=("a",)),
        routing(5.1),
        routing(5.2, ips=("b",)),
        routing(6, ips=("a", "b")),
    ]
    assert ev.exposure_end(history, frozenset({"a"}), 5.0) == 5.2  # 5.1: no endpoint at all
    assert ev.exposure_end(history, frozenset({"c"}), 5.0) == 5.0


def test_client_moved_counts_its_first_answer_from_the_engine_sent_after_the_fault() -> None:
    answers = [
        answer("plain", 9.0, 2.0, engine="espeak"),  # sent before the fault: not counted
        answer("plain", 10.5, 0.1, engine="vits"),
        answer("plain", 10.8, 0.1, engine="espeak"),
    ]
    assert ev.client_moved(answers, "plain", "espeak", 10.0) == pytest.approx(0.9)
    assert ev.client_moved(answers, "openai", "espeak", 10.0) is None


def test_flaps_are_phases_come_back_to_in_the_window() -> None:
    history = [status(0, "Serving"), status(5, "FailedOver"), status(6, "Serving"),
               status(7, "FailedOver"), status(20, "Serving")]  # fmt: skip
    assert ev.flaps(history, 4.0, 10.0) == ["FailedOver", "Serving"]
    assert ev.flaps(history, 6.5, 10.0) == []  # Serving (the state at 6.5), then FailedOver


def pod(
    tier: str, uid: str, ready: bool = True, restarts: int = 0, waiting: str = ""
) -> ev.PodSeen:
    return ev.PodSeen(tier, uid, f"{tier}-{uid}", ready, restarts, waiting)


def test_expectations_name_what_is_missing() -> None:
    view = ev.ClusterView(
        at=5.0,
        phase="Degraded",
        selected_tier="both",
        reason="GPUMemoryHigh",
        endpoint_tiers=frozenset({"gpu", "fallback"}),
        pods=(pod("gpu", "g1"), pod("fallback", "f1")),
        events=(ev.EventSeen("GPUMemoryHigh", "Warning", "VoiceService/tts", seen_at=4.0),),
        signals=frozenset({"pressure"}),
    )
    base = dict(baseline=view, since=3.0)
    assert (
        ev.unmet(Expect(phase="Degraded", tier="both", reason="GPUMemoryHigh"), view, **base) == []
    )
    assert ev.unmet(Expect(endpoints_on="both", event="GPUMemoryHigh"), view, **base) == []
    assert ev.unmet(Expect(phase="FailedOver", tier="fallback"), view, **base) == [
        "phase FailedOver (is Degraded)",
        "front Service on fallback (is on both)",
    ]
    assert ev.unmet(Expect(event="GPUMemoryHigh"), view, baseline=view, since=4.5) == [
        "an Event GPUMemoryHigh after the step began"
    ]
    assert ev.unmet(Expect(ready_pods={"gpu": 2}), view, **base) == ["2 ready gpu pod(s) (has 1)"]
    assert ev.unmet(Expect(signal="failure"), view, **base) == [
        "the operator timing the failure signal"
    ]
    assert ev.unmet(Expect(status_seen=429), view, **base, statuses=frozenset({429})) == []


def test_restarts_replacements_and_crash_loops_compare_with_an_earlier_view() -> None:
    before = ev.ClusterView(at=0, pods=(pod("gpu", "g1"),))
    restarted = ev.ClusterView(at=1, pods=(pod("gpu", "g1", ready=False, restarts=1,
                                              waiting="CrashLoopBackOff"),))  # fmt: skip
    assert ev.unmet(Expect(restarted="gpu"), before, baseline=before, since=0) == [
        "a gpu pod restarted or replaced"
    ]
    assert ev.unmet(Expect(restarted="gpu", crash_loop="gpu"), restarted, baseline=before,
                    since=0) == []  # fmt: skip
    rolling = ev.ClusterView(at=2, pods=(pod("gpu", "g1", ready=False), pod("gpu", "g2")))
    done = ev.ClusterView(at=3, pods=(pod("gpu", "g2"),))
    assert not ev.replaced(rolling, before, "gpu")  # the old pod is still terminating
    assert ev.replaced(done, before, "gpu")
    assert ev.unmet(Expect(pods_exactly={"gpu": 1}), rolling, baseline=before, since=0) == [
        "exactly 1 gpu pod(s) (has 2, terminating included)"
    ]
    # A replacement counts against the step's start, not the scenario's.
    assert ev.unmet(Expect(replaced="gpu"), done, baseline=before, step_start=done, since=0) == [
        "every gpu pod replaced, one ready"
    ]


def test_an_in_place_model_update_needs_the_version_and_no_restart() -> None:
    before = ev.ClusterView(at=0, pods=(pod("gpu", "g1"),), model_version="bundled")
    updating = ev.ClusterView(at=1, pods=(pod("gpu", "g1"),), model_version="")
    swapped = ev.ClusterView(at=2, pods=(pod("gpu", "g1"),), model_version="v2")
    rolled = ev.ClusterView(at=3, pods=(pod("gpu", "g2"),), model_version="v2")
    expect = Expect(model_version="v2", unrestarted="gpu")
    assert ev.unmet(expect, swapped, baseline=before, since=0) == []
    assert ev.unmet(expect, updating, baseline=before, since=0) == [
        "every GPU pod on model version v2 (is an update under way)"
    ]
    assert ev.unmet(expect, rolled, baseline=before, since=0) == [
        "no gpu pod restarted or replaced"
    ]


def test_autoscaled_needs_the_tiers_hpa_to_want_that_many() -> None:
    expect = Expect(autoscaled={"gpu": 2})
    before = ev.ClusterView(at=0)
    wants_one = ev.ClusterView(at=1, autoscaled=(("fallback", 3), ("gpu", 1)))
    wants_two = ev.ClusterView(at=2, autoscaled=(("fallback", 1), ("gpu", 2)))
    assert ev.unmet(expect, before, baseline=before, since=0) == [
        "the gpu HPA wanting 2 replica(s) (no HPA)"
    ]
    assert ev.unmet(expect, wants_one, baseline=before, since=0) == [
        "the gpu HPA wanting 2 replica(s) (wants 1)"
    ]
    assert ev.unmet(expect, wants_two, baseline=before, since=0) == []


def test_the_steady_state_needs_its_phase_tier_pods_and_endpoints() -> None:
    steady = SteadyState()
    good = ev.ClusterView(
        at=0,
        phase="Serving",
        selected_tier="gpu",
        endpoint_tiers=frozenset({"gpu"}),
        pods=(pod("gpu", "g1"), pod("fallback", "f1")),
    )
    assert ev.steady_state_unmet(steady, good) == []
    no_endpoints = ev.ClusterView(at=0, phase="Serving", selected_tier="gpu", pods=good.pods)
    assert ev.steady_state_unmet(steady, no_endpoints) == [
        "front Service endpoints on gpu (are on none)"
    ]
