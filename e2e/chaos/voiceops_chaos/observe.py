"""What the operator says, read from watches on any cluster: phases, routing, pods, Events, HPAs.

One informer (list, then watch; a dropped watch lists again) per collection of the
VoiceService's namespace. Every change is stamped with ``time.monotonic()`` as it
arrives, so histories line up with the clients' request records.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from voiceops_localcluster.node_agent import Informer, KubeClient

from .evaluate import ClusterView, EventSeen, PodSeen, RoutingSample, StatusSample

Obj = dict[str, Any]
TIER_LABEL = "voiceops.io/tier"
INSTANCE_LABEL = "app.kubernetes.io/instance"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
API = "/apis/voiceops.io/v1alpha1"


def pod_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_seen(pod: Obj) -> PodSeen:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    waiting = [((s.get("state") or {}).get("waiting") or {}).get("reason", "") for s in statuses]
    meta = pod["metadata"]
    return PodSeen(
        tier=(meta.get("labels") or {}).get(TIER_LABEL, ""),
        uid=meta.get("uid", ""),
        name=meta.get("name", ""),
        ready=pod_ready(pod) and not meta.get("deletionTimestamp"),
        restarts=sum(int(s.get("restartCount") or 0) for s in statuses),
        waiting_reason=next((w for w in waiting if w), ""),
    )


def status_sample(at: float, voiceservice: Obj) -> StatusSample:
    status = voiceservice.get("status") or {}
    ratio = (status.get("gpu") or {}).get("memoryUsedRatio")
    return StatusSample(
        at=at,
        phase=str(status.get("phase") or ""),
        active_tier=str(status.get("activeTier") or ""),
        reason=str((status.get("lastTransition") or {}).get("reason") or ""),
        memory_ratio=None if ratio is None else float(ratio),
    )


def desired_replicas(autoscalers: list[Obj]) -> tuple[tuple[str, int], ...]:
    """(tier, desiredReplicas) of each HPA, by tier."""
    found = []
    for hpa in autoscalers:
        tier = (hpa["metadata"].get("labels") or {}).get(TIER_LABEL, "?")
        found.append((tier, int((hpa.get("status") or {}).get("desiredReplicas") or 0)))
    return tuple(sorted(found))


def ready_endpoint_ips(slices: list[Obj]) -> set[str]:
    """Addresses of the ready endpoints in EndpointSlices (unset ``ready`` counts as ready)."""
    found: set[str] = set()
    for piece in slices:
        for endpoint in piece.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready", True) is False:
                continue
            found.update(endpoint.get("addresses") or [])
    return found


class Observer:
    """Watches one VoiceService's namespace; histories and a view of now."""

    def __init__(self, api: KubeClient, namespace: str, name: str) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.status_history: list[StatusSample] = []
        self.routing_history: list[RoutingSample] = []
        self.events_seen: list[EventSeen] = []
        self._event_counts: dict[str, int] = {}
        # When a container was seen to have died (its restart count went up): the crash
        # budget forgives requests in flight then.
        self.deaths: list[tuple[float, str]] = []  # (when seen, the pod's IP)
        # When a ready pod that the front Service selected turned unready without being
        # deleted (a crash, a degraded engine): to clients, the same as a death.
        self.dropouts: list[tuple[float, str]] = []
        self._restarts: dict[str, int] = {}
        self._ready: dict[str, bool] = {}
        base = f"/api/v1/namespaces/{namespace}"
        mine = {"labelSelector": f"{INSTANCE_LABEL}={name}"}
        self.voiceservices = Informer(
            api,
            f"{API}/namespaces/{namespace}/voiceservices",
            self._on_voiceservice,
            {"fieldSelector": f"metadata.name={name}"},
        )
        self.services = Informer(
            api, f"{base}/services", self._on_routing, {"fieldSelector": f"metadata.name={name}"}
        )
        self.slices = Informer(
            api,
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            self._on_routing,
            {"labelSelector": f"{SERVICE_NAME_LABEL}={name}"},
        )
        self.pods = Informer(api, f"{base}/pods", self._on_pod, mine)
        self.events = Informer(api, f"{base}/events", self._on_event)
        self.autoscalers = Informer(
            api,
            f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers",
            lambda *_: None,
            mine,
        )
        self._informers = [
            self.voiceservices, self.services, self.slices, self.pods, self.events,
            self.autoscalers,
        ]  # fmt: skip
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, within: float = 60.0) -> None:
        self._tasks = [asyncio.create_task(i.run()) for i in self._informers]
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in self._informers)), within)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # ------------------------------------------------------------------ now
    def voiceservice(self) -> Obj:
        return self.voiceservices.items.get((self.namespace, self.name)) or {}

    def selected_tier(self) -> str:
        service = self.services.items.get((self.namespace, self.name)) or {}
        selector = (service.get("spec") or {}).get("selector") or {}
        return str(selector.get(TIER_LABEL, "both")) if service else ""

    def pod_objects(self, tier: str | None = None, ready_only: bool = False) -> list[Obj]:
        """Pods of the VoiceService (of ``tier``) that are not being deleted."""
        found = []
        for pod in self.pods.items.values():
            if pod["metadata"].get("deletionTimestamp"):
                continue
            if tier is not None and (pod["metadata"].get("labels") or {}).get(TIER_LABEL) != tier:
                continue
            if ready_only and not pod_ready(pod):
                continue
            found.append(pod)
        return sorted(found, key=lambda p: p["metadata"]["name"])

    def endpoint_ips(self) -> frozenset[str]:
        return frozenset(ready_endpoint_ips(list(self.slices.items.values())))

    def endpoint_tiers(self) -> frozenset[str]:
        tiers_by_ip = {
            (p.get("status") or {}).get("podIP"): (p["metadata"].get("labels") or {}).get(
                TIER_LABEL, "?"
            )
            for p in self.pods.items.values()
        }
        return frozenset(tiers_by_ip.get(ip, "?") for ip in self.endpoint_ips())

    def view(self) -> ClusterView:
        status = self.voiceservice().get("status") or {}
        signals = ((status.get("healing") or {}).get("signals")) or {}
        return ClusterView(
            at=time.monotonic(),
            phase=str(status.get("phase") or ""),
            selected_tier=self.selected_tier(),
            reason=str((status.get("lastTransition") or {}).get("reason") or ""),
            endpoint_tiers=self.endpoint_tiers(),
            pods=tuple(pod_seen(p) for p in self.pods.items.values()),
            events=tuple(self.events_seen),
            signals=frozenset(k for k, v in signals.items() if v),
            model_version=_settled_model_version(status),
            autoscaled=desired_replicas(list(self.autoscalers.items.values())),
        )

    # ------------------------------------------------------------ callbacks
    def _on_voiceservice(self, kind: str, obj: Obj) -> None:
        if kind != "DELETED":
            self.status_history.append(status_sample(time.monotonic(), obj))

    def _on_pod(self, kind: str, obj: Obj) -> None:
        if kind != "DELETED":
            seen = pod_seen(obj)
            ip = (obj.get("status") or {}).get("podIP", "")
            if seen.restarts > self._restarts.get(seen.uid, seen.restarts):
                self.deaths.append((time.monotonic(), ip))
            selected = self.selected_tier() in (seen.tier, "both")
            deleting = bool(obj["metadata"].get("deletionTimestamp"))
            if self._ready.get(seen.uid) and not seen.ready and not deleting and selected:
                self.dropouts.append((time.monotonic(), ip))
            self._restarts[seen.uid] = seen.restarts
            self._ready[seen.uid] = seen.ready
        self._on_routing(kind, obj)

    def _on_routing(self, kind: str, obj: Obj) -> None:
        sample = RoutingSample(
            time.monotonic(), self.selected_tier(), self.endpoint_tiers(), self.endpoint_ips()
        )
        last = self.routing_history[-1] if self.routing_history else None
        if last is None or (last.selected, last.endpoint_tiers, last.endpoint_ips) != (
            sample.selected,
            sample.endpoint_tiers,
            sample.endpoint_ips,
        ):
            self.routing_history.append(sample)

    def _on_event(self, kind: str, obj: Obj) -> None:
        if kind == "DELETED":
            return
        about = obj.get("involvedObject") or {}
        name = str(about.get("name") or "")
        if name != self.name and not name.startswith(f"{self.name}-"):
            return
        uid = (obj.get("metadata") or {}).get("uid", "")
        count = int(obj.get("count") or 1)
        if self._event_counts.get(uid) == count:
            return  # the same occurrence again (a relist)
        self._event_counts[uid] = count
        self.events_seen.append(
            EventSeen(
                reason=str(obj.get("reason") or ""),
                type=str(obj.get("type") or ""),
                about=f"{about.get('kind', '')}/{name}",
                seen_at=time.monotonic(),
                message=str(obj.get("message") or "")[:300],
            )
        )


def _settled_model_version(status: Obj) -> str:
    """The version every GPU pod runs, or "" while a model update is under way."""
    model = status.get("model") or {}
    if model.get("state") != "Updated":
        return ""
    return str((model.get("current") or {}).get("version") or "")
