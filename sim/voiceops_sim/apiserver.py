"""KubeApiEmulator: a Kubernetes API server emulator over real HTTP (a TEST DOUBLE).

It is not Kubernetes: no etcd, no admission webhooks, no RBAC (any bearer
token is accepted unless ``token=`` is given), no protobuf/CBOR bodies (415;
kubectl's typed generators such as ``kubectl create deployment`` send
protobuf, ``kubectl apply/create -f`` work), no aggregated discovery, no
managedFields. It implements the REST semantics kopf, kubernetes_asyncio and
kubectl rely on: discovery; LIST with label/field selectors and pagination;
WATCH with resume from a bounded history (ERROR 410 Gone when too old),
bookmarks, ``sendInitialEvents``, selector-aware ADDED/DELETED; create
(generateName, uid, generation), update with optimistic concurrency, patch
(merge, JSON patch, approximate strategic merge and server-side apply),
delete (finalizers, propagationPolicy, preconditions), garbage collection by
owner UID (Background, Foreground, Orphan), namespace lifecycle; status and
scale subresources; ``metadata.generation``; no-op writes change nothing;
CRD structural schemas (pruning, defaults, validation, ``fieldValidation=
Strict``, CEL rules when ``cel-python`` is installed); built-in defaults and
validations (:mod:`voiceops_sim.builtin_rules`); ``as=Table`` output with a
CRD's printer columns; ``/openapi/v3`` (CRD schemas) for ``kubectl explain``
and ``kubectl apply`` validation; pod logs when a simulated kubelet runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import apply as ssa
from .errors import ApiError, bad_request
from .http_api import HttpApi, RequestRecord, Target
from .kubeconfig import write_kubeconfig
from .selectors import parse_field_selector, parse_label_selector
from .store import Obj, ObjectStore, WatchEvent, WatchFilter

log = logging.getLogger(__name__)

PodLogProvider = Callable[[str, str, str | None], str | None]


def load_yaml_documents(path: str | Path) -> list[Obj]:
    """All non-empty YAML documents in a file."""
    with open(path, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


class KubeApiEmulator:
    """An in-process Kubernetes API server emulator (test double) served over HTTP.

    Usage::

        emu = KubeApiEmulator(crd_files=["crds/voiceservice.yaml"])
        await emu.start()                      # 127.0.0.1, a free port
        emu.write_kubeconfig(tmp_path / "kubeconfig")
        ...                                    # point kopf / kubernetes_asyncio at it
        emu.get("deployments", "tts-gpu", "default")
        emu.request_counts()                   # Counter by verb
        await emu.stop()
    """

    def __init__(
        self,
        crd_files: Iterable[str | Path] = (),
        *,
        token: str | None = None,
        require_namespaces: bool = True,
        namespaces: Iterable[str] = (),
        history_limit: int = 5000,
        bookmark_interval: float = 5.0,
        default_watch_timeout: float = 1800.0,
    ) -> None:
        self.store = ObjectStore(history_limit=history_limit, require_namespaces=require_namespaces)
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.requests: list[RequestRecord] = []
        self.pod_log_provider: PodLogProvider | None = None
        self._applied: dict[tuple[str, str, str], Obj] = {}
        self._changed: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._http: HttpApi | None = None
        self.url = ""
        self.store.listeners.append(self._on_change)
        for path in crd_files:
            self.load_crd_file(path)
        for ns in namespaces:
            self.ensure_namespace(ns)

    # -------------------------------------------------------------- lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve over HTTP; returns the base URL (also in ``self.url``)."""
        self._changed = asyncio.Event()
        self._http = HttpApi(self)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._http.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = site._server.sockets if site._server else []
        bound_port = sockets[0].getsockname()[1] if sockets else port
        self.url = f"http://{host}:{bound_port}"
        log.info("Kubernetes API emulator serving at %s", self.url)
        return self.url

    async def stop(self) -> None:
        """Close every watch stream and stop serving."""
        if self._http is not None:
            self._http.closing.set()
            if self._http._dispatch in self.store.listeners:
                self.store.listeners.remove(self._http._dispatch)
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
        self._http = None

    async def __aenter__(self) -> KubeApiEmulator:
        if not self.url:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write a kubeconfig (plain HTTP, token user) for kopf, kubernetes_asyncio, kubectl."""
        if not self.url:
            raise RuntimeError("start() the emulator before writing a kubeconfig")
        return write_kubeconfig(path, self.url, self.token or "voiceops-sim-token", namespace)

    # -------------------------------------------------------------------- CRDs
    def load_crd_file(self, path: str | Path) -> list[Obj]:
        """Create every CustomResourceDefinition in a YAML file (others are ignored)."""
        loaded = []
        for doc in load_yaml_documents(path):
            if doc.get("kind") == "CustomResourceDefinition":
                loaded.append(self.add_crd(doc))
        if not loaded:
            raise ValueError(f"{path}: no CustomResourceDefinition found")
        return loaded

    def add_crd(self, crd: Obj) -> Obj:
        """Create (or replace) a CRD; its resource is served at once."""
        rt = self.store.types[("apiextensions.k8s.io", "customresourcedefinitions")]
        name = crd.get("metadata", {}).get("name", "")
        if self.store.find(rt, None, name) is not None:
            return self.store.update(
                rt,
                None,
                name,
                {**crd, "metadata": {**crd.get("metadata", {}), "resourceVersion": None}},
            )
        return copy.deepcopy(self.store.create(rt, None, crd))

    # ------------------------------------------------------- direct access
    def ensure_namespace(self, name: str) -> Obj:
        rt = self.store.types[("", "namespaces")]
        found = self.store.find(rt, None, name)
        if found is not None:
            return copy.deepcopy(found)
        return copy.deepcopy(self.store.create(rt, None, {"metadata": {"name": name}}))

    def get(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        """A copy of one object, or None. ``resource``: plural, kind, short name or plural.group."""
        rt = self.store.resolve(resource)
        found = self.store.find(rt, namespace if rt.namespaced else None, name)
        return copy.deepcopy(found) if found is not None else None

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        """Copies of the matching objects, sorted by namespace and name."""
        rt = self.store.resolve(resource)
        wanted = WatchFilter(
            namespace=namespace if rt.namespaced else None,
            labels=parse_label_selector(label_selector),
            fields=parse_field_selector(field_selector),
        )
        return copy.deepcopy(self.store.list(rt, wanted))

    def create(self, obj: Obj) -> Obj:
        """Create through the normal API path (defaults, validation, status dropped)."""
        rt = self.store.resolve_kind(obj["apiVersion"], obj["kind"])
        return copy.deepcopy(self.store.create(rt, obj.get("metadata", {}).get("namespace"), obj))

    def put_object(self, obj: Obj) -> Obj:
        """Store an object exactly as given, status included (no validation): test setup."""
        return self.store.put_raw(obj)

    def patch(
        self,
        resource: str,
        name: str,
        namespace: str | None,
        patch: Obj,
        *,
        subresource: str | None = None,
    ) -> Obj:
        """Merge-patch an object (``subresource="status"`` to write status)."""
        from .patches import merge_patch

        rt = self.store.resolve(resource)
        return self.store.replace_with(
            rt, namespace, name, lambda obj: merge_patch(obj, patch), subresource=subresource
        )

    def delete(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        *,
        propagation: str | None = None,
    ) -> Obj:
        rt = self.store.resolve(resource)
        return self.store.delete(rt, namespace, name, propagation=propagation)

    def open_watches(self, resource: str | None = None) -> int:
        """How many watch streams are open now (optionally for one plural resource)."""
        return self._http.open_watches(resource) if self._http is not None else 0

    def compact(self) -> None:
        """Forget the watch history: resuming a watch from an older RV now gets 410 Gone."""
        self.store.compact()

    def subscribe(self, listener: Callable[[WatchEvent], None]) -> Callable[[], None]:
        """Call ``listener`` synchronously on every committed change; returns unsubscribe."""
        self.store.listeners.append(listener)
        return lambda: (
            self.store.listeners.remove(listener) if listener in (self.store.listeners) else None
        )

    async def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 10.0,  # noqa: ASYNC109 - a polling deadline, like asyncio.wait_for's
        message: str = "",
    ) -> Any:
        """Await until ``predicate()`` is truthy (re-checked on every change); TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._changed is None:
            self._changed = asyncio.Event()
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(message or f"condition not met within {timeout}s")
            self._changed.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that lands as the event fires (a Ctrl-C of the demo went unnoticed).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.2)):
                    await self._changed.wait()

    def _on_change(self, event: WatchEvent) -> None:
        if self._changed is not None:
            self._changed.set()

    # ------------------------------------------------------------ request log
    def record_request(self, record: RequestRecord) -> None:
        self.requests.append(record)

    def request_counts(
        self, *, since: float | None = None, resource: str | None = None
    ) -> collections.Counter[str]:
        """Requests by verb (optionally only after ``since`` = time.time(), one resource)."""
        return collections.Counter(
            r.verb
            for r in self.requests
            if (since is None or r.time >= since) and (resource is None or r.resource == resource)
        )

    def write_requests(self, since: float | None = None) -> list[RequestRecord]:
        """The mutating requests (create/update/patch/delete) answered since ``since``."""
        return [
            r
            for r in self.requests
            if r.verb in ("create", "update", "patch", "delete", "deletecollection")
            and (since is None or r.time >= since)
        ]

    def reset_request_log(self) -> float:
        """Clear the request log; returns the time it was cleared."""
        self.requests.clear()
        return time.time()

    # ------------------------------------------------------- server-side apply
    def server_side_apply(self, target: Target, raw: bytes, query: dict[str, str]) -> Obj:
        """Approximate server-side apply (see :mod:`voiceops_sim.apply`)."""
        manager = query.get("fieldManager")
        if not manager:
            raise bad_request(
                "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests"
            )
        try:
            applied = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise bad_request(f"the apply body is not valid YAML/JSON: {exc}") from exc
        if (
            not isinstance(applied, dict)
            or not applied.get("apiVersion")
            or not applied.get("kind")
        ):
            raise bad_request("an apply configuration needs apiVersion, kind and metadata.name")
        name = target.name or ""
        if applied.get("metadata", {}).get("name", name) != name:
            raise bad_request("metadata.name in the apply body does not match the URL")
        live = self.store.find(target.rt, target.namespace, name)
        sub = target.subresource or ""
        if live is None:
            if sub:
                raise ApiError(404, f'{target.rt.plural} "{name}" not found', reason="NotFound")
            body = copy.deepcopy(applied)
            body.setdefault("metadata", {})["name"] = name
            created = self.store.create(
                target.rt, target.namespace, body, dry_run=query.get("dryRun") == "All"
            )
            self._applied[(created["metadata"]["uid"], manager, sub)] = applied
            return copy.deepcopy(created)
        key = (live["metadata"]["uid"], manager, sub)
        previous = self._applied.get(key)
        result = self.store.replace_with(
            target.rt,
            target.namespace,
            name,
            lambda obj: ssa.apply_configuration(obj, previous, applied),
            subresource=target.subresource,
            dry_run=query.get("dryRun") == "All",
        )
        if query.get("dryRun") != "All":
            self._applied[key] = applied
        return result
