"""The emulator's HTTP surface: URL parsing, verbs, watch streams, discovery.

Everything here translates between HTTP and :class:`~voiceops_sim.store.ObjectStore`;
the semantics live in the store.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import yaml
from aiohttp import web

from . import openapi, patches
from .errors import ApiError, bad_request
from .resources import ResourceType
from .selectors import parse_field_selector, parse_label_selector
from .store import Obj, WatchEvent, WatchFilter
from .tables import to_table

if TYPE_CHECKING:
    from .apiserver import KubeApiEmulator

log = logging.getLogger(__name__)

JSON = "application/json"
PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+json": "apply",
}
KUBE_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-voiceops-sim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "n/a (Python emulator)",
    "compiler": "python",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class RequestRecord:
    """One request the emulator answered (for counting API calls in tests/benchmarks)."""

    time: float
    method: str
    verb: str  # get list watch create update patch delete deletecollection discovery
    path: str
    group: str = ""
    resource: str = ""
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    status: int = 0
    content_type: str = ""
    user_agent: str = ""


@dataclass
class Target:
    """What a resource URL points at."""

    rt: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass(eq=False)
class _Watcher:
    key: tuple[str, str]
    wanted: WatchFilter
    queue: asyncio.Queue[tuple[str, Obj]] = field(default_factory=asyncio.Queue)

    def offer(self, event: WatchEvent) -> None:
        kind = self.wanted.translate(event)
        if kind is not None:
            self.queue.put_nowait((kind, event.obj))


def _status_response(error: ApiError) -> web.Response:
    return web.json_response(error.status(), status=error.code)


class HttpApi:
    """aiohttp handlers bound to one emulator."""

    def __init__(self, emulator: KubeApiEmulator) -> None:
        self.emu = emulator
        self.store = emulator.store
        self.watchers: set[_Watcher] = set()
        self.closing = asyncio.Event()
        self.store.listeners.append(self._dispatch)

    def open_watches(self, resource: str | None = None) -> int:
        return sum(1 for w in self.watchers if resource is None or w.key[1] == resource)

    def _dispatch(self, event: WatchEvent) -> None:
        for watcher in list(self.watchers):
            if watcher.key == event.resource.key:
                watcher.offer(event)

    # ------------------------------------------------------------- entrance
    async def handle(self, request: web.Request) -> web.StreamResponse:
        record: dict[str, Any] = {
            "time": time.time(),
            "method": request.method,
            "verb": "discovery",
            "path": request.path,
            "content_type": request.headers.get("Content-Type", ""),
            "user_agent": request.headers.get("User-Agent", ""),
        }
        try:
            self._authorize(request)
            response = await self._route(request, record)
        except ApiError as error:
            response = _status_response(error)
        except Exception as exc:  # an emulator bug: answer 500 and say so, never hang
            log.exception("emulator failed on %s %s", request.method, request.path_qs)
            response = _status_response(ApiError(500, f"emulator internal error: {exc!r}"))
        if not record.pop("recorded", False):
            record["status"] = response.status
            self.emu.record_request(RequestRecord(**record))
        return response

    def _authorize(self, request: web.Request) -> None:
        token = self.emu.token
        if token and request.headers.get("Authorization") != f"Bearer {token}":
            raise ApiError(401, "Unauthorized", reason="Unauthorized")

    async def _route(self, request: web.Request, record: dict[str, Any]) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts in (["version"], ["version", ""]):
            return web.json_response(KUBE_VERSION)
        if parts in (["healthz"], ["readyz"], ["livez"]):
            return web.Response(text="ok")
        if parts[:2] == ["openapi", "v3"]:
            return self._openapi(parts[2:])
        if parts == ["api"]:
            return web.json_response(self._api_versions(request))
        if parts == ["apis"]:
            return web.json_response(self._api_groups())
        if parts[:1] == ["api"] and len(parts) == 2:
            return web.json_response(self._resource_list("", parts[1]))
        if parts[:1] == ["apis"] and len(parts) == 2:
            return web.json_response(self._api_group(parts[1]))
        if parts[:1] == ["apis"] and len(parts) == 3:
            return web.json_response(self._resource_list(parts[1], parts[2]))
        if parts[:1] == ["api"] and len(parts) > 2:
            target = self._target("", parts[1], parts[2:])
        elif parts[:1] == ["apis"] and len(parts) > 3:
            target = self._target(parts[1], parts[2], parts[3:])
        else:
            raise ApiError(
                404, "the server could not find the requested resource", reason="NotFound"
            )
        record.update(
            group=target.rt.group,
            resource=target.rt.plural,
            namespace=target.namespace or "",
            name=target.name or "",
            subresource=target.subresource or "",
        )
        query = dict(parse_qsl(request.query_string, keep_blank_values=True))
        if target.name is None:
            return await self._collection(request, target, query, record)
        return await self._item(request, target, query, record)

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        namespace: str | None = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        rt = self.store.types.get((group, plural))
        if rt is None or version not in rt.versions or len(rest) > 3:
            raise ApiError(
                404, "the server could not find the requested resource", reason="NotFound"
            )
        if namespace is not None and not rt.namespaced:
            raise ApiError(
                404, "the server could not find the requested resource", reason="NotFound"
            )
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in rt.subresources:
            raise ApiError(
                404, "the server could not find the requested resource", reason="NotFound"
            )
        if rt.namespaced and name is not None and namespace is None:
            raise ApiError(
                404, "the server could not find the requested resource", reason="NotFound"
            )
        return Target(rt, version, namespace, name, sub)

    # ------------------------------------------------------------ discovery
    def _openapi(self, rest: list[str]) -> web.Response:
        types = list(self.store.types.values())
        if not rest:
            return web.json_response(openapi.index(types))
        entries = openapi.group_versions(types).get("/".join(rest))
        if not entries:
            raise ApiError(
                404, "the server could not find the requested resource", reason="NotFound"
            )
        return web.json_response(openapi.document(entries))

    def _api_versions(self, request: web.Request) -> Obj:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}
            ],
        }

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rt in self.store.types.values():
            if rt.group:
                versions = groups.setdefault(rt.group, [])
                versions.extend(v for v in rt.versions if v not in versions)
        return groups

    def _group_entry(self, group: str, versions: list[str]) -> Obj:
        preferred = next(
            (rt.preferred_version for rt in self.store.types.values() if rt.group == group),
            versions[0],
        )
        return {
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{preferred}", "version": preferred},
        }

    def _api_groups(self) -> Obj:
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [self._group_entry(g, v) for g, v in sorted(self._groups().items())],
        }

    def _api_group(self, group: str) -> Obj:
        versions = self._groups().get(group)
        if not versions:
            raise ApiError(
                404, "the server could not find the requested resource", reason="NotFound"
            )
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_entry(group, versions)}

    def _resource_list(self, group: str, version: str) -> Obj:
        resources = []
        for rt in sorted(self.store.types.values(), key=lambda r: r.plural):
            if rt.group != group or version not in rt.versions:
                continue
            entry: Obj = {
                "name": rt.plural,
                "singularName": rt.singular_name(),
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(rt.verbs),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            for sub in rt.subresources:
                sub_entry: Obj = {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
                if sub == "scale":
                    sub_entry.update(group="autoscaling", version="v1", kind="Scale")
                if sub == "log":
                    sub_entry.update(kind="Pod", verbs=["get"])
                resources.append(sub_entry)
        if not resources:
            raise ApiError(
                404, "the server could not find the requested resource", reason="NotFound"
            )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # ---------------------------------------------------------- collections
    def _filter(self, target: Target, query: dict[str, str]) -> WatchFilter:
        return WatchFilter(
            namespace=target.namespace if target.rt.namespaced else None,
            labels=parse_label_selector(query.get("labelSelector")),
            fields=parse_field_selector(query.get("fieldSelector")),
        )

    async def _collection(
        self, request: web.Request, target: Target, query: dict[str, str], record: dict[str, Any]
    ) -> web.StreamResponse:
        if target.rt.namespaced and target.namespace is None and request.method != "GET":
            raise ApiError(
                405,
                f"{request.method} needs a namespace in the URL for {target.rt.plural}",
                reason="MethodNotAllowed",
            )
        if request.method == "GET":
            if _truthy(query.get("watch")):
                record.update(verb="watch", status=200)
                self.emu.record_request(RequestRecord(**record))
                record["recorded"] = True
                return await self._watch(request, target, query)
            record["verb"] = "list"
            body = self._list(target, query)
            if _wants_table(request):
                table = to_table(
                    target.rt,
                    target.version,
                    body["items"],
                    body["metadata"]["resourceVersion"],
                    query.get("includeObject", "PartialObjectMetadata"),
                )
                table["metadata"].update(
                    {k: v for k, v in body["metadata"].items() if k != "resourceVersion"}
                )
                return web.json_response(table)
            return web.json_response(body)
        if request.method == "POST":
            record["verb"] = "create"
            body = await _read_body(request)
            created = self.store.create(
                target.rt, target.namespace, body, dry_run=_dry_run(query), strict=_strict(query)
            )
            return self._written(self._present(created, target.version), status=201)
        if request.method == "DELETE":
            record["verb"] = "deletecollection"
            wanted = self._filter(target, query)
            items = self.store.list(target.rt, wanted)
            for obj in items:
                meta = obj["metadata"]
                if self.store.find(target.rt, meta.get("namespace"), meta["name"]) is not None:
                    self.store.delete(
                        target.rt,
                        meta.get("namespace"),
                        meta["name"],
                        propagation=query.get("propagationPolicy"),
                    )
            return web.json_response(self._list_body(target, items))
        raise ApiError(405, f"method {request.method} not allowed", reason="MethodNotAllowed")

    def _written(self, body: Obj, status: int = 200) -> web.Response:
        """A write's answer, with the API server's ``Warning`` headers for pruned fields."""
        headers = [
            ("Warning", '299 - "{}"'.format(warning.replace('"', '\\"')))
            for warning in self.store.warnings
        ]
        return web.json_response(body, status=status, headers=headers)

    def _present(self, obj: Obj, version: str) -> Obj:
        if obj.get("apiVersion", "").endswith(f"/{version}") or obj.get("apiVersion") == version:
            return obj
        group = obj["apiVersion"].rsplit("/", 1)[0] if "/" in obj["apiVersion"] else ""
        return {**obj, "apiVersion": f"{group}/{version}" if group else version}

    def _list_body(self, target: Target, items: list[Obj], cont: str = "") -> Obj:
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        if cont:
            meta["continue"] = cont
        return {
            "kind": f"{target.rt.kind}List",
            "apiVersion": target.rt.api_version(target.version),
            "metadata": meta,
            "items": [self._present(o, target.version) for o in items],
        }

    def _list(self, target: Target, query: dict[str, str]) -> Obj:
        items = self.store.list(target.rt, self._filter(target, query))
        start = 0
        if query.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(query["continue"]))
                start = int(token["start"])
            except (ValueError, KeyError, TypeError) as exc:
                raise bad_request("continue: invalid continue token") from exc
        limit = int(query.get("limit") or 0)
        if limit > 0:
            page = items[start : start + limit]
            more = start + limit < len(items)
            cont = (
                base64.urlsafe_b64encode(
                    json.dumps({"start": start + limit, "rv": self.store.rv}).encode()
                ).decode()
                if more
                else ""
            )
            body = self._list_body(target, page, cont)
            if more:
                body["metadata"]["remainingItemCount"] = len(items) - start - limit
            return body
        return self._list_body(target, items[start:])

    async def _watch(
        self, request: web.Request, target: Target, query: dict[str, str]
    ) -> web.StreamResponse:
        wanted = self._filter(target, query)
        rv_text = query.get("resourceVersion", "")
        send_initial = _truthy(query.get("sendInitialEvents"))
        bookmarks = _truthy(query.get("allowWatchBookmarks"))
        timeout = float(query.get("timeoutSeconds") or self.emu.default_watch_timeout)
        deadline = asyncio.get_running_loop().time() + timeout
        initial: list[tuple[str, Obj]] = []
        gone: ApiError | None = None
        # From here to registering the watcher there is no await: nothing can slip between.
        if rv_text in ("", "0") or send_initial:
            initial = [("ADDED", o) for o in self.store.list(target.rt, wanted)]
        else:
            try:
                since = int(rv_text)
            except ValueError as exc:
                raise bad_request(f"resourceVersion: invalid value {rv_text!r}") from exc
            try:
                events = self.store.events_since(target.rt, since)
            except ApiError as error:
                gone = error
                events = []
            for event in events:
                kind = wanted.translate(event)
                if kind is not None:
                    initial.append((kind, event.obj))
        table = _wants_table(request)
        include = query.get("includeObject", "PartialObjectMetadata")

        def shown(obj: Obj) -> Obj:
            obj = self._present(obj, target.version)
            if table and obj.get("metadata", {}).get("name"):
                return to_table(
                    target.rt,
                    target.version,
                    [obj],
                    obj["metadata"].get("resourceVersion", ""),
                    include,
                )
            return obj

        watcher = _Watcher(target.rt.key, wanted)
        if gone is None:
            self.watchers.add(watcher)
        response = web.StreamResponse(headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            if gone is not None:
                await _send(response, "ERROR", gone.status())
                return response
            for kind, obj in initial:
                await _send(response, kind, shown(obj))
            if send_initial and bookmarks:
                await _send(response, "BOOKMARK", self._bookmark(target, initial_end=True))
            await self._stream(response, watcher, target, deadline, bookmarks, shown)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers.discard(watcher)
        return response

    async def _stream(
        self,
        response: web.StreamResponse,
        watcher: _Watcher,
        target: Target,
        deadline: float,
        bookmarks: bool,
        shown: Callable[[Obj], Obj],
    ) -> None:
        loop = asyncio.get_running_loop()
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            while not self.closing.is_set():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                getter = asyncio.ensure_future(watcher.queue.get())
                done, _ = await asyncio.wait(
                    {getter, closing},
                    timeout=min(remaining, self.emu.bookmark_interval),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if getter in done:
                    kind, obj = getter.result()
                    await _send(response, kind, shown(obj))
                    continue
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await getter
                if bookmarks and not self.closing.is_set() and watcher.queue.empty():
                    await _send(response, "BOOKMARK", self._bookmark(target))
        finally:
            closing.cancel()

    def _bookmark(self, target: Target, *, initial_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "kind": target.rt.kind,
            "apiVersion": target.rt.api_version(target.version),
            "metadata": meta,
        }

    # ---------------------------------------------------------------- items
    async def _item(
        self, request: web.Request, target: Target, query: dict[str, str], record: dict[str, Any]
    ) -> web.StreamResponse:
        rt, ns, name, sub = target.rt, target.namespace, target.name or "", target.subresource
        dry = _dry_run(query)
        if sub == "log":
            record["verb"] = "get"
            return self._pod_log(ns or "", name, query)
        if sub == "scale":
            return await self._scale(request, target, record)
        if request.method == "GET":
            record["verb"] = "get"
            obj = self._present(self.store.get(rt, ns, name), target.version)
            if _wants_table(request):
                return web.json_response(
                    to_table(
                        rt,
                        target.version,
                        [obj],
                        obj["metadata"]["resourceVersion"],
                        query.get("includeObject", "PartialObjectMetadata"),
                    )
                )
            return web.json_response(obj)
        if request.method == "PUT":
            record["verb"] = "update"
            body = await _read_body(request)
            updated = self.store.update(
                rt, ns, name, body, subresource=sub, dry_run=dry, strict=_strict(query)
            )
            return self._written(self._present(updated, target.version))
        if request.method == "PATCH":
            record["verb"] = "patch"
            return await self._patch(request, target, query)
        if request.method == "DELETE":
            record["verb"] = "delete"
            options = await _read_body(request, optional=True) or {}
            policy = query.get("propagationPolicy") or options.get("propagationPolicy")
            if options.get("orphanDependents") is True and not policy:
                policy = "Orphan"
            deleted = self.store.delete(
                rt,
                ns,
                name,
                propagation=policy,
                preconditions=options.get("preconditions"),
                dry_run=dry or options.get("dryRun") == ["All"],
            )
            return web.json_response(self._present(deleted, target.version))
        raise ApiError(405, f"method {request.method} not allowed", reason="MethodNotAllowed")

    async def _patch(
        self, request: web.Request, target: Target, query: dict[str, str]
    ) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        kind = PATCH_TYPES.get(content_type)
        if kind is None:
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(PATCH_TYPES)}",
            )
        if kind == "strategic" and target.rt.is_crd:
            raise ApiError(
                415,
                "strategic merge patch is not supported for custom resources "
                f"({target.rt.plural}.{target.rt.group}); use application/merge-patch+json",
            )
        raw = await request.read()
        if kind == "apply":
            return web.json_response(
                self._present(self.emu.server_side_apply(target, raw, query), target.version)
            )
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            raise bad_request(f"the patch body is not valid JSON: {exc}") from exc
        if kind != "json" and not isinstance(body, dict):
            raise bad_request(f"a {content_type} body must be a JSON object")
        mutate: Callable[[Obj], Obj]
        if kind == "merge":
            mutate = lambda obj: patches.merge_patch(obj, body)  # noqa: E731
        elif kind == "strategic":
            mutate = lambda obj: patches.strategic_merge_patch(obj, body)  # noqa: E731
        else:
            mutate = lambda obj: patches.json_patch(obj, body)  # noqa: E731
        patched = self.store.replace_with(
            target.rt,
            target.namespace,
            target.name or "",
            mutate,
            subresource=target.subresource,
            dry_run=_dry_run(query),
            strict=_strict(query),
        )
        return self._written(self._present(patched, target.version))

    async def _scale(
        self, request: web.Request, target: Target, record: dict[str, Any]
    ) -> web.StreamResponse:
        rt, ns, name = target.rt, target.namespace, target.name or ""
        if request.method in ("PUT", "PATCH"):
            record["verb"] = "update" if request.method == "PUT" else "patch"
            body = await _read_body(request)
            if request.method == "PATCH":
                content = request.headers.get("Content-Type", "").split(";")[0]
                current = _scale_of(self.store.get(rt, ns, name))
                if content == "application/json-patch+json":
                    body = patches.json_patch(current, body)
                else:
                    body = patches.merge_patch(current, body)
            replicas = (body.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(
                    422,
                    f'Scale.autoscaling "{name}" is invalid: spec.replicas: '
                    f"Invalid value: {replicas}: must be greater than or equal to 0",
                )
            self.store.replace_with(
                rt, ns, name, lambda obj: {**obj, "spec": {**obj["spec"], "replicas": replicas}}
            )
        else:
            record["verb"] = "get"
        return web.json_response(_scale_of(self.store.get(rt, ns, name)))

    def _pod_log(self, namespace: str, name: str, query: dict[str, str]) -> web.Response:
        self.store.get(self.store.types[("", "pods")], namespace, name)
        provider = self.emu.pod_log_provider
        text = provider(namespace, name, query.get("container")) if provider else None
        if text is None:
            raise ApiError(
                400,
                f'container logs for pod "{name}" are not available in the '
                "emulator (no simulated kubelet runs it)",
            )
        if query.get("tailLines"):
            text = "\n".join(text.splitlines()[-int(query["tailLines"]) :]) + "\n"
        return web.Response(text=text, content_type="text/plain")


def _scale_of(obj: Obj) -> Obj:
    meta = obj["metadata"]
    selector = (obj.get("spec") or {}).get("selector") or {}
    labels = ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items())
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": labels},
    }


def _wants_table(request: web.Request) -> bool:
    """``kubectl get`` asks for ``application/json;as=Table;...`` first."""
    accept = request.headers.get("Accept", "")
    first = accept.split(",")[0]
    return "as=Table" in first


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _strict(query: dict[str, str]) -> bool:
    """``fieldValidation=Strict``: unknown fields are an error instead of being pruned."""
    return query.get("fieldValidation", "").lower() == "strict"


def _dry_run(query: dict[str, str]) -> bool:
    return query.get("dryRun") == "All"


async def _read_body(request: web.Request, *, optional: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip():
        if optional:
            return None
        raise bad_request("the request needs a body")
    content_type = request.headers.get("Content-Type", JSON).split(";")[0].strip()
    if "protobuf" in content_type or "cbor" in content_type:
        # Clients (client-go, kubectl) fall back to JSON on a 415.
        raise ApiError(
            415,
            f"the body of the request was in an unknown format - accepted media types include: "
            f"application/json, application/yaml (not {content_type})",
        )
    try:
        if content_type.endswith("yaml"):
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"the request body could not be decoded: {exc}") from exc


async def _send(response: web.StreamResponse, kind: str, obj: Obj) -> None:
    line = json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n"
    await response.write(line.encode())
