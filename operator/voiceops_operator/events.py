"""Kubernetes Events about VoiceServices: what both loops say, and its one shape. Pure.

The spec reconcile (children created, updated, deleted; Ready; an invalid spec)
and the self-healing loop (transitions, replaced pods) each say what they decided
as a :class:`Note`; :func:`event_body` makes the core/v1 Event, and
:class:`~voiceops_operator.kube.EventPoster` posts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from voiceops_operator.spec import API_VERSION, KIND

COMPONENT = "voiceops-operator"  # the Events' source
MESSAGE_LIMIT = 1024  # the API server's limit on an Event's message

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Note:
    """One thing an Event says about a VoiceService."""

    type: EventType
    reason: str
    message: str
    action: str  # what the operator did: Reconcile, Route, FailOver, ReplacePod


class EventSink(Protocol):
    """Where Events go (kube.EventPoster; a list in tests)."""

    async def __call__(self, body: Mapping[str, Any], note: Note) -> None: ...


def event_body(body: Mapping[str, Any], note: Note, now: str, instance: str) -> dict[str, Any]:
    """A core/v1 Event about the VoiceService ``body``."""
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": note.reason,
        "message": note.message[:MESSAGE_LIMIT],
        "type": note.type,
        "source": {"component": COMPONENT},
        "reportingComponent": f"voiceops.io/{COMPONENT}",
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "action": note.action,
    }
