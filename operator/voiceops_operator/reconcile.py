"""The spec reconcile: ordered steps that make the children match, then status.

I/O happens here through :class:`~voiceops_operator.kube.KubeApi`; what to build
and how to compare comes from the pure modules (build, diff, status).

Reads come from an :class:`~voiceops_operator.watched.ObjectReader`: in the
operator, the kopf indexes over its watches (no request), so a pass over an
unchanged VoiceService sends nothing at all. A view from the watches may lag
the API server by the watch's latency; every write stays correct against a
lagging view:

* a child missing from the view is created; 409 AlreadyExists (our own create
  not seen yet, or an object we do not own) reads it from the API and goes on;
* a child whose view is older than our own patch differs from the desired
  state at most until its watch event arrives: the merge patch sent again then
  sets what is already stored, which the API server takes as a no-op (no new
  resourceVersion, no watch event), so it cannot loop;
* the status is written with the resourceVersion it was computed from; a view
  older than the object (our own last write not seen yet, or another writer's)
  gets 409 Conflict, and only then is the object read (GET) and the status
  recomputed;
* before a patch that would move traffic (front Service, fallback tier), the
  routing is re-read from a fresh GET: the healing loop may have moved it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from voiceops_operator import build, diff, names, reasons
from voiceops_operator import status as st
from voiceops_operator.kube import KubeApi, KubeError, retrying_on_conflict
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import (
    API_VERSION,
    KIND,
    InvalidSpec,
    VoiceService,
    parse_status,
    parse_voiceservice,
)
from voiceops_operator.watched import ObjectReader

log = logging.getLogger(__name__)


class EventSink(Protocol):
    def __call__(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


class ChildConflict(Exception):
    """A child's name is taken by an object another controller owns."""


@dataclass
class ReconcileResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    status_written: bool = False
    ready: bool = False

    @property
    def writes(self) -> int:
        return len(self.created) + len(self.updated) + len(self.deleted) + self.status_written


def _ref(obj: dict[str, Any]) -> str:
    return f"{obj['kind']} {obj['metadata']['name']}"


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def _foreign_controller(obj: dict[str, Any], uid: str) -> dict[str, Any] | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("uid") != uid:
            return ref
    return None


def _follows_routing(name: str, obj: dict[str, Any]) -> bool:
    """Children whose desired state depends on the routing the healing loop decides."""
    key = (obj["kind"], obj["metadata"]["name"])
    return key in {
        ("Service", names.front_service_name(name)),
        ("Deployment", names.deployment_name(name, "fallback")),
        ("HorizontalPodAutoscaler", names.hpa_name(name, "fallback")),
    }


def _resource_version(obj: dict[str, Any]) -> str | None:
    return obj["metadata"].get("resourceVersion")


@dataclass
class _Run:
    """State of one reconcile pass."""

    vs: VoiceService
    body: dict[str, Any]
    routing: build.Routing
    desired: list[dict[str, Any]]
    routing_refreshed: bool = False
    result: ReconcileResult = field(default_factory=ReconcileResult)
    deployments: dict[str, dict[str, Any] | None] = field(default_factory=dict)


class Reconciler:
    """Reconciles VoiceServices one at a time per object; requests coalesce.

    ``reads``: where objects are read from; the API itself when not given (tests
    and tools without kopf's watches). Writes, and the few reads that must be
    fresh, go to ``api``.
    """

    def __init__(
        self,
        api: KubeApi,
        settings: OperatorSettings,
        emit: EventSink,
        reads: ObjectReader | None = None,
    ) -> None:
        self.api = api
        self.reads: ObjectReader = reads if reads is not None else api
        self.settings = settings
        self.emit = emit
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._queued: set[tuple[str, str]] = set()

    # --- entry points ---------------------------------------------------------------

    async def reconcile_body(self, body: dict[str, Any]) -> ReconcileResult:
        """Reconcile the object as given (from a kopf handler)."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        async with self._lock(key):
            return await self._reconcile(body)

    async def request(self, namespace: str, name: str) -> ReconcileResult | None:
        """Re-reconcile the object as last read; a request already waiting absorbs this one."""
        key = (namespace, name)
        if key in self._queued:
            return None
        self._queued.add(key)
        try:
            async with self._lock(key):
                self._queued.discard(key)
                body = await self.reads.get(API_VERSION, KIND, namespace, name)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    return None
                try:
                    return await self._reconcile(body)
                except InvalidSpec:
                    return None  # status already says so; nothing to retry
        finally:
            self._queued.discard(key)

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    # --- the pass ----------------------------------------------------------------------

    async def _reconcile(self, body: dict[str, Any]) -> ReconcileResult:
        try:
            vs = parse_voiceservice(body)
        except InvalidSpec as exc:
            await self._write_invalid(body, exc)
            raise
        current_status = body.get("status") or {}
        routing = build.routing_from_status(parse_status(current_status), vs.spec)
        run = _Run(
            vs=vs,
            body=body,
            routing=routing,
            desired=build.build_all(vs, routing, self.settings),
        )
        steps: list[Callable[[_Run], Awaitable[None]]] = [
            self._network_policies,  # first: pods never start without their policy
            self._deployments,
            self._services,
            self._autoscalers,
            self._disruption_budgets,
            self._remove_undesired,
        ]
        try:
            for step in steps:
                await step(run)  # stop at the first error: later steps may depend on it
        except (KubeError, ChildConflict) as exc:
            await self._write_failed(body, vs, str(exc))
            raise
        await self._write_status(run, run.routing.active_tier)
        return run.result

    async def _ensure(self, run: _Run, obj: dict[str, Any]) -> dict[str, Any]:
        """Create the child, or patch the fields we own when they differ."""
        meta = obj["metadata"]
        api_version, kind, ns, name = (
            obj["apiVersion"],
            obj["kind"],
            meta["namespace"],
            meta["name"],
        )
        actual = await self.reads.get(api_version, kind, ns, name)
        if actual is None:
            try:
                created = await self.api.create(obj)
            except KubeError as exc:
                if exc.status != 409:
                    raise
                # It exists after all (our create not seen yet, or not labelled as
                # ours so not watched): read it for real.
                actual = await self.api.get(api_version, kind, ns, name)
                if actual is None:
                    raise
            else:
                run.result.created.append(_ref(obj))
                return created
        foreign = _foreign_controller(actual, run.vs.uid)
        if foreign:
            raise ChildConflict(
                f"{kind} {name} is controlled by {foreign.get('kind')} {foreign.get('name')}; "
                "rename or delete it so the operator can create its own"
            )
        replicas_owned = name not in build.hpa_targets(run.desired)
        view = diff.owned_view(obj, replicas_owned=replicas_owned)
        if not _owned_by(actual, run.vs.uid):
            # Adopt: keep other (non-controller) owners next to ours.
            others = actual["metadata"].get("ownerReferences") or []
            view["metadata"]["ownerReferences"] = [*others, *meta.get("ownerReferences", [])]
        if diff.matches(view, actual):
            return actual
        if _follows_routing(run.vs.name, obj) and await self._refresh_routing(run):
            # The self-healing loop moved traffic after this pass read the status:
            # follow its newer decision instead of undoing it.
            obj = next(o for o in run.desired if (o["kind"], o["metadata"]["name"]) == (kind, name))
            return await self._ensure(run, obj)
        patch = diff.merge_patch(view, actual)
        patched = await self.api.patch(api_version, kind, ns, name, patch)
        run.result.updated.append(_ref(obj))
        return patched

    async def _refresh_routing(self, run: _Run) -> bool:
        """Re-read the routing from a fresh status; True when it changed.

        A GET, not the watch: the healing loop writes the status and then the
        children, whose watch events may come before the status's.
        """
        if run.routing_refreshed:
            return False
        run.routing_refreshed = True
        meta = run.body["metadata"]
        fresh = await self.api.get(API_VERSION, KIND, meta["namespace"], meta["name"])
        if fresh is None:
            return False
        routing = build.routing_from_status(parse_status(fresh.get("status")), run.vs.spec)
        if routing == run.routing:
            return False
        run.routing = routing
        run.desired = build.build_all(run.vs, routing, self.settings)
        return True

    async def _ensure_kind(self, run: _Run, kind: str) -> None:
        """Ensure every desired child of one kind; they are independent, so concurrently."""
        child_names = [o["metadata"]["name"] for o in run.desired if o["kind"] == kind]

        async def ensure_named(name: str) -> None:
            # Look up by name: a routing refresh may have rebuilt run.desired.
            obj = next(
                o for o in run.desired if o["kind"] == kind and o["metadata"]["name"] == name
            )
            stored = await self._ensure(run, obj)
            if kind == "Deployment":
                run.deployments[obj["metadata"]["labels"][names.LABEL_TIER]] = stored

        results = await asyncio.gather(
            *(ensure_named(n) for n in child_names), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _network_policies(self, run: _Run) -> None:
        await self._ensure_kind(run, "NetworkPolicy")

    async def _deployments(self, run: _Run) -> None:
        await self._ensure_kind(run, "Deployment")

    async def _services(self, run: _Run) -> None:
        await self._ensure_kind(run, "Service")

    async def _autoscalers(self, run: _Run) -> None:
        await self._ensure_kind(run, "HorizontalPodAutoscaler")

    async def _disruption_budgets(self, run: _Run) -> None:
        await self._ensure_kind(run, "PodDisruptionBudget")

    async def _remove_undesired(self, run: _Run) -> None:
        """Delete children the spec no longer asks for (autoscaling, fallback or policy off)."""
        wanted = {(o["kind"], o["metadata"]["name"]) for o in run.desired}
        for api_version, kind, name in build.possible_children(run.vs.name):
            if (kind, name) in wanted:
                continue
            actual = await self.reads.get(api_version, kind, run.vs.namespace, name)
            if actual is None or not _owned_by(actual, run.vs.uid):
                continue  # never delete what we do not own
            if await self.api.delete(api_version, kind, run.vs.namespace, name):
                run.result.deleted.append(f"{kind} {name}")

    # --- status and events --------------------------------------------------------------

    async def _write_status(self, run: _Run, active_tier: str) -> None:
        body, vs = run.body, run.vs
        fallback = None
        if vs.spec.fallback.enabled:
            fallback = st.TierCounts.from_deployment(run.deployments.get("fallback"))
        gpu = st.TierCounts.from_deployment(run.deployments.get("gpu"))

        def compute(current: dict[str, Any]) -> dict[str, Any]:
            return st.compute_status(
                current,
                generation=vs.generation,
                active_tier=active_tier,
                gpu=gpu,
                fallback=fallback,
                now=st.now_rfc3339(),
                writes_phase=not self.settings.self_healing,
            )

        current = body.get("status") or {}
        new = compute(current)
        run.result.ready = st.condition_status(new, st.READY) == "True"
        for verb, refs in (
            ("Created", run.result.created),
            ("Updated", run.result.updated),
            ("Deleted", run.result.deleted),
        ):
            for ref in refs:
                self.emit(body, "Normal", verb, f"{verb.lower()} {ref}")
        written = await self._patch_status(body, compute)
        run.result.status_written = written is not None
        if written is not None:
            was_ready = st.condition_status(written[0], st.READY)
            now_ready = st.condition_status(written[1], st.READY)
            if was_ready != now_ready:
                message = next(
                    c["message"] for c in written[1]["conditions"] if c["type"] == st.READY
                )
                kind = "Normal" if now_ready == "True" else "Warning"
                self.emit(body, kind, "Ready" if now_ready == "True" else "NotReady", message)

    async def _patch_status(
        self,
        body: dict[str, Any],
        compute: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Write compute(status) when it differs; returns (old, new) when written.

        The self-healing loop writes the same status (its own conditions in the same
        list), so the patch carries the resourceVersion it was computed from: a
        concurrent change, or a body older than the object, gets 409 Conflict, and
        only then is the object read again and the status recomputed (tenacity)
        instead of clobbering it.
        """
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        rv, current = _resource_version(body), body.get("status") or {}
        try:
            async for attempt in retrying_on_conflict():
                with attempt:
                    if rv is None or attempt.retry_state.attempt_number > 1:
                        fresh = await self.api.get(API_VERSION, KIND, ns, name)
                        if fresh is None:
                            return None
                        rv, current = _resource_version(fresh), fresh.get("status") or {}
                    new = compute(current)
                    patch = st.status_patch(current, new)
                    if not patch:
                        return None
                    await self.api.patch(
                        API_VERSION,
                        KIND,
                        ns,
                        name,
                        {"metadata": {"resourceVersion": rv}, "status": patch},
                        "status",
                    )
                    return current, new
        except KubeError as exc:
            if exc.status == 409:
                raise KubeError(409, f"status of {name} kept changing; will retry") from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write_invalid(self, body: dict[str, Any], exc: InvalidSpec) -> None:
        def compute(current: dict[str, Any]) -> dict[str, Any]:
            return st.invalid_spec_status(
                current,
                generation=int(body["metadata"].get("generation") or 0),
                message=str(exc),
                now=st.now_rfc3339(),
                writes_phase=not self.settings.self_healing,
            )

        if await self._patch_status(body, compute):
            self.emit(body, "Warning", reasons.INVALID_SPEC, str(exc))

    async def _write_failed(self, body: dict[str, Any], vs: VoiceService, message: str) -> None:
        def compute(current: dict[str, Any]) -> dict[str, Any]:
            return st.failed_reconcile_status(
                current, generation=vs.generation, message=message, now=st.now_rfc3339()
            )

        try:
            if await self._patch_status(body, compute):
                self.emit(body, "Warning", reasons.RECONCILE_FAILED, message)
        except KubeError as exc:  # the original error matters more; log this one
            log.warning("could not record the failed reconcile of %s: %s", vs.name, exc)
