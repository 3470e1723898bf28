"""kopf wiring: the only place that registers handlers. Thin: parse, reconcile, report.

Handlers are registered into a given registry by :func:`register` (no import-time
side effects), so the CLI, tests and the self-healing module share one setup. Its
one startup hook builds the :class:`~voiceops_operator.context.OperatorContext`
every handler uses (the self-healing loop's runtime too, when it is on).

The reconcile reads the VoiceServices and their children from kopf indexes over
the watches below (:mod:`~voiceops_operator.watched`), not from the API server.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import kopf

from voiceops_operator import kube, names, spec
from voiceops_operator.context import OperatorContext, build_context, context_of
from voiceops_operator.healing import pods_from_index
from voiceops_operator.kube import KubeError
from voiceops_operator.model_updater import run_updates
from voiceops_operator.reconcile import ChildConflict
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.watched import IndexKey, index_entry

PREFIX = "voiceops.io"
FINALIZER = f"{PREFIX}/finalizer"
RETRY_DELAY_SECONDS = 5.0
MANAGED = {names.LABEL_MANAGED_BY: names.MANAGED_BY}
# Children watched for drift (group, version, plural).
CHILD_RESOURCES: tuple[tuple[str, str, str], ...] = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "networkpolicies"),
)
VOICESERVICE_RESOURCE = (spec.GROUP, spec.VERSION, spec.PLURAL)
# The pods of every VoiceService, indexed (the healing loop's and the model updates' kwarg).
POD_INDEX = "voiceops_pods"

log = logging.getLogger(__name__)


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    """kopf settings: our prefixes, watch timeouts, event posting, peering."""
    kopf_settings.persistence.finalizer = FINALIZER
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    kopf_settings.watching.server_timeout = settings.watch_server_timeout_seconds
    kopf_settings.watching.client_timeout = settings.watch_client_timeout_seconds
    kopf_settings.watching.connect_timeout = settings.api_timeout_seconds
    # A timer or daemon still running when its object is deleted is re-checked this often
    # (kopf's default is 60 s, which held deletions of VoiceServices for a minute).
    kopf_settings.background.cancellation_polling = 1.0
    # kopf's own Events (a handler failed, retries): ours go through kube.EventPoster.
    kopf_settings.posting.level = logging.INFO
    kopf_settings.posting.reporting_component = "voiceops-operator"
    if settings.peering:
        kopf_settings.peering.name = settings.peering
        kopf_settings.peering.priority = settings.priority
        kopf_settings.peering.standalone = False
    else:
        kopf_settings.peering.standalone = True


def index_id(plural: str) -> str:
    """The kopf index of one watched resource (also its handlers' kwarg name)."""
    return f"voiceops_{plural}"


def indexed_kinds() -> dict[tuple[str, str], str]:
    """(apiVersion, kind) → index id, for every kind the reconcile reads."""
    kind_by_plural = {plural: kind for (_, kind), plural in kube.RESOURCES.items()}
    return {
        (f"{group}/{version}" if group else version, kind_by_plural[plural]): index_id(plural)
        for group, version, plural in (*CHILD_RESOURCES, VOICESERVICE_RESOURCE)
    }


async def _by_name(body: kopf.Body, **_: Any) -> dict[IndexKey, dict[str, Any]]:
    return index_entry(body)


@contextlib.contextmanager
def _timed(context: OperatorContext) -> Iterator[None]:
    """Observe the spec reconcile's duration when the operator's metrics exist."""
    started = time.monotonic()
    try:
        yield
    finally:
        if context.metrics is not None:
            duration = time.monotonic() - started
            context.metrics.reconcile_duration.labels(loop="spec").observe(duration)


async def _reconcile(body: kopf.Body, context: OperatorContext) -> None:
    try:
        with _timed(context):
            await context.reconciler.reconcile_body(dict(body))
    except spec.InvalidSpec as exc:
        # Status and an Event already say what is wrong; do not retry until the spec changes.
        raise kopf.PermanentError(str(exc)) from exc
    except (KubeError, ChildConflict) as exc:
        raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_SECONDS) from exc


def _owner_name(body: kopf.Body) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == spec.KIND and ref.get("apiVersion") == spec.API_VERSION:
            return ref.get("name")
    return None


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Register every spec-reconcile handler into `registry`."""
    resource = VOICESERVICE_RESOURCE

    # Indexes over the watches the operator has anyway (the VoiceServices; the
    # children, for drift repair): the reconcile's reads. kopf fills them all
    # before any handler runs.
    kopf.index(*resource, registry=registry, id=index_id(spec.PLURAL))(_by_name)
    for group, version, plural in CHILD_RESOURCES:
        kopf.index(group, version, plural, labels=MANAGED, registry=registry, id=index_id(plural))(
            _by_name
        )

    @kopf.index(
        "",
        "v1",
        "pods",
        registry=registry,
        id=POD_INDEX,
        labels={names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_INSTANCE: kopf.PRESENT},
    )
    async def voiceops_pods(
        namespace: str, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Pods by (namespace, VoiceService), for the healing loop and the model updates:
        kopf fills every index before daemons start."""
        return {(namespace, labels[names.LABEL_INSTANCE]): dict(body)}

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
        configure_kopf(settings, operator_settings)
        # kopf passes every index (empty until its resource is listed) to every
        # handler by its id; the same index objects stay live for the whole run.
        indexes = {kind: kwargs[i] for kind, i in indexed_kinds().items()}
        memo.context = await build_context(operator_settings, indexes)

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In-cluster service account, else kubeconfig (through kubernetes_asyncio).
        return await kopf.login_via_async_client(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        context: OperatorContext | None = getattr(memo, "context", None)
        if context is not None:
            await context.close()

    operator_settings = settings

    @kopf.on.resume(*resource, registry=registry, backoff=RETRY_DELAY_SECONDS)
    @kopf.on.create(*resource, registry=registry, backoff=RETRY_DELAY_SECONDS)
    @kopf.on.update(*resource, registry=registry, backoff=RETRY_DELAY_SECONDS)
    async def reconcile_voiceservice(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await _reconcile(body, context_of(memo))

    @kopf.timer(
        *resource,
        registry=registry,
        interval=settings.resync_interval_seconds,
        initial_delay=settings.resync_interval_seconds,
    )
    async def resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        # Level-triggered safety net: anything missed by the watches converges here.
        meta = body["metadata"]
        context = context_of(memo)
        if context.stopping:
            return
        try:
            with _timed(context):
                await context.reconciler.request(meta["namespace"], meta["name"])
        except (KubeError, ChildConflict) as exc:
            log.warning("resync of %s/%s failed: %s", meta["namespace"], meta["name"], exc)

    @kopf.daemon(
        *resource,
        registry=registry,
        id="model-update",
        cancellation_backoff=1.0,
        cancellation_timeout=5.0,
    )
    async def model_update_daemon(
        stopped: kopf.DaemonStopped,
        name: str,
        namespace: str,
        body: kopf.Body,
        memo: kopf.Memo,
        voiceops_pods: kopf.Index[tuple[str, str], dict[str, Any]],
        **_: Any,
    ) -> None:
        context = context_of(memo)
        if context.stopping:
            return
        pods = pods_from_index(voiceops_pods, namespace, name)
        await run_updates(context.models, body, pods, stopped)

    @kopf.on.delete(*resource, registry=registry, optional=True)
    async def forget(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        meta = body["metadata"]
        context_of(memo).reconciler.forget(meta["namespace"], meta["name"])

    for group, version, plural in CHILD_RESOURCES:

        @kopf.on.event(
            group, version, plural, labels=MANAGED, registry=registry, id=f"drift-{plural}"
        )
        async def child_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
            # Drift repair: a child changed or vanished; re-reconcile its owner.
            owner = _owner_name(body)
            namespace = body.get("metadata", {}).get("namespace")
            context = context_of(memo)
            if not owner or not namespace or context.stopping:
                return
            try:
                with _timed(context):
                    await context.reconciler.request(namespace, owner)
            except (KubeError, ChildConflict) as exc:
                log.warning("drift repair of %s/%s failed: %s", namespace, owner, exc)
