"""The spec reconcile: ordered steps that make the children match, then status.

I/O happens here through :class:`~voiceops_operator.kube.KubeApi`; what to build
and how to compare comes from the pure modules (build, diff, status). It is the
one writer of every child, routing included: the front Service's selector and
the fallback tier's size follow the routing the self-healing loop decided (its
status fields), and the loop asks for a reconcile (:meth:`Reconciler.route`)
when it decides a new one.

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
* the routing comes from the healing loop's last decision in this process when
  there is one (it wrote that decision to the status first, so it is never
  older than the status in the view; the view may not have it yet), else from
  the status (a restarted operator; self-healing off).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from voiceops_operator import build, diff, names, reasons
from voiceops_operator import status as st
from voiceops_operator.events import EventSink, Note
from voiceops_operator.kube import KubeApi, KubeError, StatusWrite, write_status
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


def _tier(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"][names.LABEL_TIER])


def _foreign_controller(obj: dict[str, Any], uid: str) -> dict[str, Any] | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("uid") != uid:
            return ref
    return None


@dataclass
class _Run:
    """State of one reconcile pass."""

    vs: VoiceService
    body: dict[str, Any]
    routing: build.Routing
    desired: list[dict[str, Any]]
    result: ReconcileResult = field(default_factory=ReconcileResult)
    deployments: dict[str, dict[str, Any] | None] = field(default_factory=dict)


class Reconciler:
    """Reconciles VoiceServices one at a time per object; requests coalesce.

    ``reads``: where objects are read from; the API itself when not given (tests
    and tools without kopf's watches). Writes, and the few reads that must be
    fresh, go to ``api``. ``events``: where the Events about what it did go.
    """

    def __init__(
        self,
        api: KubeApi,
        settings: OperatorSettings,
        events: EventSink,
        reads: ObjectReader | None = None,
    ) -> None:
        self.api = api
        self.reads: ObjectReader = reads if reads is not None else api
        self.settings = settings
        self.events = events
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._queued: set[tuple[str, str]] = set()
        # The healing loop's last routing decision per object (see the module doc).
        self._decided: dict[tuple[str, str], build.Routing] = {}

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
                return await self._reconcile_watched(key)
        finally:
            self._queued.discard(key)

    async def route(
        self, namespace: str, name: str, routing: build.Routing
    ) -> ReconcileResult | None:
        """The healing loop's new routing decision (already in the status): apply it now.

        Not absorbed by a waiting request: the loop tells the pods once this returns,
        so the children must follow the decision by then.
        """
        key = (namespace, name)
        self._decided[key] = routing
        async with self._lock(key):
            return await self._reconcile_watched(key)

    async def _reconcile_watched(self, key: tuple[str, str]) -> ReconcileResult | None:
        body = await self.reads.get(API_VERSION, KIND, *key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self._decided.pop(key, None)  # a loop that stops late must not leave one behind
            return None
        try:
            return await self._reconcile(body)
        except InvalidSpec:
            return None  # status already says so; nothing to retry

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)
        self._decided.pop((namespace, name), None)

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    # --- the pass ----------------------------------------------------------------------

    async def _reconcile(self, body: dict[str, Any]) -> ReconcileResult:
        try:
            vs = parse_voiceservice(body)
        except InvalidSpec as exc:
            await self._write_invalid(body, exc)
            raise
        decided = self._decided.get((vs.namespace, vs.name))
        if decided is not None:
            routing = build.routing_within(decided, vs.spec)
        else:
            routing = build.routing_from_status(parse_status(body.get("status")), vs.spec)
        model = parse_status(body.get("status")).model
        run = _Run(
            vs=vs,
            body=body,
            routing=routing,
            desired=build.build_all(vs, routing, self.settings, model),
        )
        steps: list[Callable[[_Run], Awaitable[None]]] = [
            self._network_policies,  # first: pods never start without their policy
            self._services,  # then routing: a new decision moves traffic before anything else
            self._config_maps,  # the model the GPU pods read when they start
            self._deployments,
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
        hpa_minimum = build.hpa_minimums(run.desired).get(name)
        view = diff.owned_view(obj, replicas_owned=hpa_minimum is None)
        if hpa_minimum is not None and kind == "Deployment" and _tier(obj) == "fallback":
            # Routing raised the fallback tier's HPA minimum: raising the Deployment to
            # it now is what the HPA controller does at its next sync, a sync sooner.
            # Scaling down stays the HPA's.
            stored = int((actual.get("spec") or {}).get("replicas") or 0)
            if stored < hpa_minimum:
                view["spec"]["replicas"] = hpa_minimum
        if not _owned_by(actual, run.vs.uid):
            # Adopt: keep other (non-controller) owners next to ours.
            others = actual["metadata"].get("ownerReferences") or []
            view["metadata"]["ownerReferences"] = [*others, *meta.get("ownerReferences", [])]
        if diff.matches(view, actual):
            return actual
        patch = diff.merge_patch(view, actual)
        patched = await self.api.patch(api_version, kind, ns, name, patch)
        run.result.updated.append(_ref(obj))
        return patched

    async def _ensure_kind(self, run: _Run, kind: str) -> None:
        """Ensure every desired child of one kind; they are independent, so concurrently."""

        async def ensure(obj: dict[str, Any]) -> None:
            stored = await self._ensure(run, obj)
            if kind == "Deployment":
                run.deployments[_tier(obj)] = stored

        results = await asyncio.gather(
            *(ensure(o) for o in run.desired if o["kind"] == kind), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _network_policies(self, run: _Run) -> None:
        await self._ensure_kind(run, "NetworkPolicy")

    async def _config_maps(self, run: _Run) -> None:
        await self._ensure_kind(run, "ConfigMap")

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

        expected = compute(body.get("status") or {})
        run.result.ready = st.condition_status(expected, st.READY) == "True"
        changes = [
            Note("Normal", verb, f"{verb.lower()} {ref}", "Reconcile")
            for verb, refs in (
                ("Created", run.result.created),
                ("Updated", run.result.updated),
                ("Deleted", run.result.deleted),
            )
            for ref in refs
        ]
        await self._post(body, changes)
        written = await self._patch_status(body, compute)
        run.result.status_written = written is not None
        if written is None:
            return
        was_ready = st.condition_status(written.before, st.READY)
        new_status = written.obj.get("status") or {}
        now_ready = st.condition_status(new_status, st.READY)
        if was_ready != now_ready:
            message = next(c["message"] for c in new_status["conditions"] if c["type"] == st.READY)
            if now_ready == "True":
                note = Note("Normal", "Ready", message, "Reconcile")
            else:
                note = Note("Warning", "NotReady", message, "Reconcile")
            await self._post(body, [note])

    async def _post(self, body: dict[str, Any], notes: list[Note]) -> None:
        await asyncio.gather(*(self.events(body, note) for note in notes))

    async def _patch_status(
        self,
        body: dict[str, Any],
        compute: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> StatusWrite | None:
        """Write compute(status) when it differs (kube.write_status); None when not written."""
        written = await write_status(
            self.api, body, lambda current: st.status_patch(current, compute(current))
        )
        return written if written is not None and written.patch else None

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
            await self._post(body, [Note("Warning", reasons.INVALID_SPEC, str(exc), "Reconcile")])

    async def _write_failed(self, body: dict[str, Any], vs: VoiceService, message: str) -> None:
        def compute(current: dict[str, Any]) -> dict[str, Any]:
            return st.failed_reconcile_status(
                current, generation=vs.generation, message=message, now=st.now_rfc3339()
            )

        try:
            if await self._patch_status(body, compute):
                note = Note("Warning", reasons.RECONCILE_FAILED, message, "Reconcile")
                await self._post(body, [note])
        except KubeError as exc:  # the original error matters more; log this one
            log.warning("could not record the failed reconcile of %s: %s", vs.name, exc)
