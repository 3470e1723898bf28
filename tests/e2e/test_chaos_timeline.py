"""The timeline's bands: one span per label run, the endpoints band with its count."""

from __future__ import annotations

from voiceops_chaos.evaluate import RoutingSample
from voiceops_chaos.timeline import _bands, _routing_changes


def test_a_label_repeated_continues_its_span_and_an_instant_leaves_none() -> None:
    changes = [(0.0, "Serving"), (3.0, "Serving"), (5.0, "FailedOver"), (5.0, "Serving"),
               (9.0, "Degraded")]  # fmt: skip
    assert _bands(changes, 12.0) == [(0.0, 9.0, "Serving"), (9.0, 12.0, "Degraded")]


def test_the_endpoints_band_shows_the_tier_and_how_many_are_ready() -> None:
    history = [
        RoutingSample(10.0, "gpu", frozenset({"gpu"}), frozenset({"10.0.0.1"})),
        RoutingSample(14.0, "gpu", frozenset({"gpu"}), frozenset({"10.0.0.1", "10.0.0.2"})),
        RoutingSample(20.0, "fallback", frozenset({"fallback", "gpu"}), frozenset({"a", "b"})),
        RoutingSample(21.0, "fallback", frozenset(), frozenset()),
    ]
    assert _routing_changes(history, 10.0) == [
        (0.0, "gpu 1"), (4.0, "gpu 2"), (10.0, "both 2"), (11.0, "none 0")
    ]  # fmt: skip
