"""A small async Kubernetes REST client for the operator's children (dicts in, dicts out).

Authentication comes from kubernetes_asyncio's config loaders (in-cluster service
account, else kubeconfig). Transient failures (connection errors, 429, 5xx) are
retried a bounded number of times; everything else surfaces as KubeError.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from voiceops_operator import spec
from voiceops_operator.events import Note, event_body
from voiceops_operator.status import now_rfc3339

# (apiVersion, kind) → plural resource name, for every kind the operator touches.
RESOURCES: dict[tuple[str, str], str] = {
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("v1", "ConfigMap"): "configmaps",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    (spec.API_VERSION, spec.KIND): spec.PLURAL,
    ("v1", "Event"): "events",
}
MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "voiceops-operator/0.1.0 (spec-reconcile)"
HEALING_USER_AGENT = "voiceops-operator/0.1.0 (self-healing)"
_TRANSIENT = {429, 500, 502, 503, 504}
STATUS_WRITE_ATTEMPTS = 5  # one write plus retries after 409 Conflict
CONFLICT_BACKOFF_SECONDS = 0.05  # random jitter so two writers do not collide again

log = logging.getLogger(__name__)


class KubeError(Exception):
    """An API call that failed; `status` is the HTTP code (0 = no response)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


def resource_path(
    api_version: str, kind: str, namespace: str, name: str = "", subresource: str = ""
) -> str:
    plural = RESOURCES[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


@dataclasses.dataclass
class RequestCounts:
    reads: int = 0
    writes: int = 0


def _is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, KubeError) and exc.status == 409


def retrying_on_conflict() -> AsyncRetrying:
    """Attempts for a resourceVersion-guarded write: again on 409 Conflict, with jitter.

    Used by :func:`write_status`: each attempt after the first recomputes from a
    fresh read.
    """
    return AsyncRetrying(
        retry=retry_if_exception(_is_conflict),
        stop=stop_after_attempt(STATUS_WRITE_ATTEMPTS),
        wait=wait_random(0, CONFLICT_BACKOFF_SECONDS),
        reraise=True,
    )


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, KubeError):
        return exc.status in _TRANSIENT or exc.status == 0
    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError)


class KubeApi:
    """Get/create/patch/delete namespaced objects as dicts."""

    def __init__(self, api_client: client.ApiClient, timeout_seconds: float = 10.0) -> None:
        self._client = api_client
        self._timeout = timeout_seconds
        self.counts = RequestCounts()
        self.closed = False  # after close(): handlers kopf starts while stopping do nothing

    @classmethod
    async def connect(
        cls,
        timeout_seconds: float = 10.0,
        kubeconfig: str | None = None,
        user_agent: str = USER_AGENT,
    ) -> KubeApi:
        """A client from ``kubeconfig``, else in-cluster, else the default kubeconfig."""
        configuration = client.Configuration()
        if kubeconfig is not None:
            await config.load_kube_config(
                config_file=kubeconfig, client_configuration=configuration
            )
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                await config.load_kube_config(client_configuration=configuration)
        api_client = client.ApiClient(configuration)
        api_client.user_agent = user_agent
        return cls(api_client, timeout_seconds)

    async def close(self) -> None:
        self.closed = True
        await self._client.close()

    async def _call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.1, max=1.0),
            reraise=True,
        ):
            with attempt:
                return await self._call_once(method, path, body, content_type)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call_once(self, method: str, path: str, body: Any, content_type: str) -> Any:
        if method == "GET":
            self.counts.reads += 1
        else:
            self.counts.writes += 1
        try:
            return await self._client.call_api(
                path,
                method,
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                response_types_map={200: "object", 201: "object", 202: "object"},
                _return_http_data_only=True,
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            raise KubeError(exc.status or 0, _message(exc)) from None

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        try:
            return await self._call("GET", resource_path(api_version, kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta["namespace"])
        return await self._call("POST", path, obj)

    async def patch(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        subresource: str = "",
    ) -> dict[str, Any]:
        path = resource_path(api_version, kind, namespace, name, subresource)
        return await self._call("PATCH", path, patch, MERGE_PATCH)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            await self._call("DELETE", resource_path(api_version, kind, namespace, name), body)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _message(exc: ApiException) -> str:
    import json

    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            return str(json.loads(body).get("message") or body)
        except (ValueError, AttributeError):
            return body
    return str(exc.reason or "request failed")


# --- the VoiceService status: one guarded writer --------------------------------------


@dataclasses.dataclass(frozen=True)
class StatusWrite:
    """What :func:`write_status` did."""

    before: dict[str, Any]  # the status the patch was computed from
    patch: dict[str, Any]  # the merge patch sent; {} when there was nothing to write
    obj: dict[str, Any]  # the object as written, or as last read when nothing was


async def write_status(
    api: KubeApi,
    body: Mapping[str, Any],
    patch_for: Callable[[dict[str, Any]], dict[str, Any]],
) -> StatusWrite | None:
    """Write ``patch_for(status)`` to the VoiceService's status; None when it is gone.

    Both loops write parts of the status (their conditions in one list, which a
    merge patch replaces whole), so the patch carries the resourceVersion it was
    computed from: a concurrent write, or a ``body`` older than the object (a
    watch that has not caught up), gets 409 Conflict instead of clobbering
    anything; then the object is read and the patch recomputed, a bounded number
    of times (:func:`retrying_on_conflict`).
    """
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    obj: dict[str, Any] = dict(body)
    try:
        async for attempt in retrying_on_conflict():
            with attempt:
                version = obj["metadata"].get("resourceVersion")
                if version is None or attempt.retry_state.attempt_number > 1:
                    fresh = await api.get(spec.API_VERSION, spec.KIND, namespace, name)
                    if fresh is None:
                        return None
                    obj, version = fresh, fresh["metadata"].get("resourceVersion")
                current = dict(obj.get("status") or {})
                patch = patch_for(current)
                if not patch:
                    return StatusWrite(current, {}, obj)
                written = await api.patch(
                    spec.API_VERSION,
                    spec.KIND,
                    namespace,
                    name,
                    {"metadata": {"resourceVersion": version}, "status": patch},
                    "status",
                )
                return StatusWrite(current, patch, written)
    except KubeError as exc:
        if exc.status == 409:
            raise KubeError(409, f"the status of {name} kept changing; will retry") from exc
        raise
    raise AssertionError("unreachable")  # pragma: no cover


# --- Events: one way to post them --------------------------------------------------------


class EventPoster:
    """Posts the Events both loops write (:func:`~voiceops_operator.events.event_body`)."""

    def __init__(self, api: KubeApi, instance: str) -> None:
        self.api = api
        self.instance = instance  # the Events' reportingInstance (the operator's pod)

    async def __call__(self, body: Mapping[str, Any], note: Note) -> None:
        """Post one Event; one that cannot be posted is logged: what it reports stands."""
        try:
            await self.api.create(event_body(body, note, now_rfc3339(), self.instance))
        except KubeError as exc:
            meta = body["metadata"]
            log.warning(
                "%s/%s: could not post the Event %s: %s",
                meta["namespace"],
                meta["name"],
                note.reason,
                exc,
            )
