"""Objects as the operator's watches last saw them: reads that send no request.

The spec reconcile compares each child with its stored version and reads the
VoiceService it reconciles. Rather than a GET per object per pass, it reads
kopf indexes (declared in :mod:`~voiceops_operator.handlers`) over the watches
the operator keeps anyway (drift repair, the VoiceServices themselves): each
maps ``(namespace, name)`` to the object's latest body. kopf lists every
indexed resource and fills its index before any handler runs, and updates an
index from a watch event before that event's handlers run.

A view can lag the API server by the watch's latency, never more; the
reconcile's writes are correct against a lagging view (see reconcile.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

# (namespace, name) → the bodies stored under it (kopf.Index[(ns, name), body] is one).
IndexKey = tuple[str, str]
ObjectIndex = Mapping[IndexKey, Collection[dict[str, Any]]]


class ObjectReader(Protocol):
    """Where a reconcile reads objects from: the API (:class:`~kube.KubeApi`) or the watches."""

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...


class WatchedObjects:
    """Reads from the kopf indexes over the operator's watches, one index per kind."""

    def __init__(self, indexes: Mapping[tuple[str, str], ObjectIndex]) -> None:
        self._indexes = dict(indexes)  # (apiVersion, kind) → index

    def kinds(self) -> set[tuple[str, str]]:
        return set(self._indexes)

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        # A kind without an index is a wiring bug: KeyError, not a silent "absent".
        found = self._indexes[(api_version, kind)].get((namespace, name))
        return next(iter(found), None) if found else None


def index_entry(body: Mapping[str, Any]) -> dict[IndexKey, dict[str, Any]]:
    """What an index keeps of one object: its body by (namespace, name).

    managedFields go: the bulk of a stored object, and nothing the operator reads.
    """
    meta = dict(body.get("metadata") or {})
    meta.pop("managedFields", None)
    key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
    return {key: {**body, "metadata": meta}}
