"""The emulator's object store: the API server's write semantics, minus etcd.

All methods are synchronous and run on the event loop's thread, so each
call is atomic with respect to watchers (no lock needed). Stored objects are
never mutated in place: every write stores a new dict, so watch events may
share them. Callers outside this module get deep copies.
"""

from __future__ import annotations

import copy
import datetime
import random
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import builtin_rules
from . import schema as crd_schema
from .cel import evaluate_rules
from .errors import ApiError, already_exists, bad_request, conflict, invalid, not_found
from .resources import ResourceType, builtin_resources, resource_from_crd
from .selectors import Requirement, labels_match

Obj = dict[str, Any]
ObjKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped
ChangeListener = Callable[["WatchEvent"], None]

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what the API server uses for generateName
_SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def now_rfc3339() -> str:
    """Current UTC time as the API server writes timestamps (seconds, ``Z``)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WatchEvent:
    """One committed change. ``old`` is the previous state (None for ADDED)."""

    type: str  # ADDED | MODIFIED | DELETED
    resource: ResourceType
    obj: Obj
    old: Obj | None
    rv: int


@dataclass
class WatchFilter:
    """What one watcher wants to see."""

    namespace: str | None = None
    labels: list[Requirement] = field(default_factory=list)
    fields: Callable[[Obj], bool] = lambda obj: True

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace", "") != self.namespace:
            return False
        return labels_match(self.labels, meta.get("labels")) and self.fields(obj)

    def translate(self, event: WatchEvent) -> str | None:
        """The event type this watcher sees (selector-aware), or None to skip it."""
        now_in = event.type != "DELETED" and self.matches(event.obj)
        was_in = self.matches(event.old) if event.old is not None else False
        if event.type == "DELETED":
            return "DELETED" if self.matches(event.obj) else None
        if now_in and was_in:
            return "MODIFIED"
        if now_in:
            return "ADDED"
        if was_in:
            return "DELETED"
        return None


def _spec_part(obj: Obj) -> Obj:
    """Everything that bumps ``metadata.generation`` when it changes."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise bad_request("metadata: must be an object")
    return meta


class ObjectStore:
    """Objects by resource type, a global resourceVersion, and bounded watch history."""

    def __init__(self, *, history_limit: int = 5000, require_namespaces: bool = True) -> None:
        self.history_limit = history_limit
        self.require_namespaces = require_namespaces
        self.types: dict[tuple[str, str], ResourceType] = {}
        self.objects: dict[tuple[str, str], dict[ObjKey, Obj]] = {}
        self.history: dict[tuple[str, str], deque[WatchEvent]] = {}
        self.compacted_rv: dict[tuple[str, str], int] = {}
        self.listeners: list[ChangeListener] = []
        self.uids: dict[str, tuple[tuple[str, str], ObjKey]] = {}
        self.rv = 1000
        # Warnings of the latest write (pruned unknown fields), read by the HTTP layer at once.
        self.warnings: list[str] = []
        self._ip_counter = 0
        for rt in builtin_resources():
            self.register(rt)
        for ns in _SYSTEM_NAMESPACES:
            self.create(self.types[("", "namespaces")], None, {"metadata": {"name": ns}})

    # ----------------------------------------------------------------- types
    def register(self, rt: ResourceType) -> None:
        """Serve a resource type (idempotent; a changed CRD replaces its type)."""
        self.types[rt.key] = rt
        self.objects.setdefault(rt.key, {})
        self.history.setdefault(rt.key, deque())
        self.compacted_rv.setdefault(rt.key, 0)

    def unregister(self, key: tuple[str, str]) -> None:
        for obj in list(self.objects.get(key, {}).values()):
            self._remove(self.types[key], obj)
        self.types.pop(key, None)

    def resolve(self, name: str, group: str | None = None) -> ResourceType:
        """Find a type by plural, kind, singular or short name (``plural.group`` allowed)."""
        candidates = list(self.types.values())
        if group is None and "." in name:
            name, group = name.split(".", 1)
        lowered = name.lower()
        for rt in candidates:
            if group is not None and rt.group != group:
                continue
            names = {rt.plural, rt.kind.lower(), rt.singular_name(), *rt.short_names}
            if lowered in names:
                return rt
        raise KeyError(f"unknown resource {name!r}" + (f" in group {group!r}" if group else ""))

    def resolve_kind(self, api_version: str, kind: str) -> ResourceType:
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        for rt in self.types.values():
            if rt.group == group and rt.kind == kind:
                return rt
        raise KeyError(f"no resource for apiVersion={api_version!r} kind={kind!r}")

    # ------------------------------------------------------------------ reads
    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.objects[rt.key].get((namespace or "", name))
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return obj

    def find(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        return self.objects[rt.key].get((namespace or "", name))

    def list(self, rt: ResourceType, wanted: WatchFilter | None = None) -> list[Obj]:
        items = self.objects[rt.key]
        result = [items[k] for k in sorted(items)]
        return [o for o in result if wanted is None or wanted.matches(o)]

    def events_since(self, rt: ResourceType, rv: int) -> list[WatchEvent]:
        """Committed events after ``rv``; 410 Gone if the history no longer reaches back."""
        if rv < self.compacted_rv[rt.key]:
            raise ApiError(
                410,
                f"too old resource version: {rv} ({self.compacted_rv[rt.key] + 1})",
                reason="Expired",
            )
        return [e for e in self.history[rt.key] if e.rv > rv]

    def compact(self) -> None:
        """Forget all watch history (a later resume from an older RV gets 410 Gone)."""
        for key, events in self.history.items():
            self.compacted_rv[key] = self.rv
            events.clear()

    # ----------------------------------------------------------------- writes
    def create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: Any,
        *,
        dry_run: bool = False,
        strict: bool = False,
    ) -> Obj:
        self.warnings = []
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        _meta(obj)
        self._check_kind(rt, obj)
        ns = self._namespace_for_create(rt, namespace, meta)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise invalid(
                    rt.kind,
                    rt.group,
                    "",
                    [("metadata.name", "Required value: name or generateName is required")],
                )
            suffix = "".join(random.choices(_NAME_CHARS, k=5))
            meta["name"] = f"{prefix}{suffix}"
        name = meta["name"]
        if (ns, name) in self.objects[rt.key]:
            raise already_exists(rt.plural, rt.group, name)
        obj["apiVersion"] = rt.api_version()
        obj["kind"] = rt.kind
        for transient in ("resourceVersion", "uid", "deletionTimestamp", "selfLink"):
            meta.pop(transient, None)
        meta.pop("deletionGracePeriodSeconds", None)
        meta.pop("managedFields", None)
        if rt.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if rt.has_status:
            obj.pop("status", None)
        obj = self._admit(rt, obj, None, strict=strict)
        if dry_run:
            return obj
        return self._commit(rt, obj, None)

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        strict: bool = False,
    ) -> Obj:
        """PUT semantics: optimistic concurrency on ``metadata.resourceVersion``."""
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        old = self.get(rt, namespace, name)
        body_meta = _meta(body) if "metadata" in body else {}
        if body_meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({body_meta.get('name')}) does not match the name "
                f"on the URL ({name})"
            )
        rv = body_meta.get("resourceVersion")
        if rv not in (None, "") and str(rv) != old["metadata"]["resourceVersion"]:
            raise conflict(
                rt.plural,
                rt.group,
                name,
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )
        return self._write(rt, old, copy.deepcopy(body), subresource, dry_run, strict)

    def replace_with(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        mutate: Callable[[Obj], Obj],
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        strict: bool = False,
    ) -> Obj:
        """PATCH semantics: ``mutate`` maps a copy of the live object to the new one."""
        old = self.get(rt, namespace, name)
        new = mutate(copy.deepcopy(old))
        if not isinstance(new, dict):
            raise bad_request("the patched object must be a JSON object")
        new_meta = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
        rv = new_meta.get("resourceVersion")
        if rv not in (None, "") and str(rv) != old["metadata"]["resourceVersion"]:
            raise conflict(
                rt.plural,
                rt.group,
                name,
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )
        if new_meta.get("name", name) != name:
            raise bad_request("metadata.name: the name of a patched object cannot change")
        return self._write(rt, old, new, subresource, dry_run, strict)

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        propagation: str | None = None,
        preconditions: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """Delete now, or mark for deletion while finalizers remain. Returns the object."""
        old = self.get(rt, namespace, name)
        meta = old["metadata"]
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise conflict(
                rt.plural,
                rt.group,
                name,
                f"Precondition failed: UID in precondition: "
                f"{pre['uid']}, UID in object meta: {meta['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(
                rt.plural,
                rt.group,
                name,
                "Precondition failed: ResourceVersion in "
                f"precondition: {pre['resourceVersion']}, ResourceVersion in object "
                f"meta: {meta['resourceVersion']}",
            )
        policy = propagation or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise bad_request(
                f"propagationPolicy: Unsupported value: {policy!r}: supported "
                'values: "Foreground", "Background", "Orphan"'
            )
        if dry_run:
            return copy.deepcopy(old)
        if rt.key == ("", "namespaces"):
            return self._delete_namespace(rt, old)
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Foreground" and self._dependents(meta["uid"]):
            finalizers = (
                [*finalizers, "foregroundDeletion"]
                if ("foregroundDeletion" not in finalizers)
                else finalizers
            )
        if not finalizers:
            self._remove(rt, old, orphan=policy == "Orphan")
            return copy.deepcopy(old)
        if meta.get("deletionTimestamp"):
            return copy.deepcopy(old)
        new = copy.deepcopy(old)
        new["metadata"]["deletionTimestamp"] = now_rfc3339()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new["metadata"]["finalizers"] = finalizers
        new["metadata"]["generation"] = meta.get("generation", 1) + 1
        committed = self._commit(rt, new, old)
        if policy == "Foreground":
            for dep_rt, dep in self._dependents(meta["uid"]):
                self._gc_dependent(dep_rt, dep, meta["uid"], "Foreground")
            self._recheck_foreground(committed["metadata"]["uid"])
        return copy.deepcopy(self.find(rt, namespace, name) or committed)

    def put_raw(self, obj: Obj) -> Obj:
        """Store an object as given (status included, no admission): a test's hand on etcd."""
        rt = self.resolve_kind(obj["apiVersion"], obj["kind"])
        new = copy.deepcopy(obj)
        meta = new.setdefault("metadata", {})
        ns = meta.get("namespace", "") if rt.namespaced else ""
        if rt.namespaced and not ns:
            raise bad_request("metadata.namespace: required for a namespaced resource")
        old = self.objects[rt.key].get((ns, meta["name"]))
        if old is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_rfc3339())
            meta.setdefault("generation", 1)
        else:
            for kept in ("uid", "creationTimestamp"):
                meta[kept] = old["metadata"][kept]
            meta.setdefault("generation", old["metadata"].get("generation", 1))
        meta.pop("resourceVersion", None)
        if old is not None and self._same(new, old):
            return copy.deepcopy(old)
        return copy.deepcopy(self._commit(rt, new, old))

    def allocate_cluster_ip(self) -> str:
        self._ip_counter += 1
        return f"10.96.{self._ip_counter // 250}.{self._ip_counter % 250 + 1}"

    # -------------------------------------------------------------- internals
    def _check_kind(self, rt: ResourceType, obj: Obj) -> None:
        kind = obj.get("kind")
        if kind not in (None, "", rt.kind):
            raise bad_request(
                f"the kind of the object ({kind}) does not match the kind of "
                f"the resource ({rt.kind})"
            )

    def _namespace_for_create(self, rt: ResourceType, namespace: str | None, meta: Obj) -> str:
        if not rt.namespaced:
            return ""
        body_ns = meta.get("namespace")
        if namespace and body_ns and body_ns != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        ns = namespace or body_ns
        if not ns:
            raise bad_request("a namespaced resource needs a namespace (URL or metadata)")
        if self.require_namespaces:
            ns_obj = self.find(self.types[("", "namespaces")], None, ns)
            if ns_obj is None:
                raise not_found("namespaces", "", ns)
            if ns_obj["metadata"].get("deletionTimestamp"):
                raise ApiError(
                    403,
                    f"{rt.plural} is forbidden: unable to create new content in namespace "
                    f"{ns} because it is being terminated",
                    reason="Forbidden",
                )
        return ns

    def _write(
        self,
        rt: ResourceType,
        old: Obj,
        new: Obj,
        subresource: str | None,
        dry_run: bool,
        strict: bool = False,
    ) -> Obj:
        self.warnings = []
        old_meta = old["metadata"]
        if subresource == "status":
            status = new.get("status")
            new = {k: copy.deepcopy(v) for k, v in old.items() if k != "status"}
            if status is not None:
                new["status"] = status
        elif subresource not in (None, ""):
            raise ApiError(
                404,
                f"the server could not find the requested resource ({subresource} subresource)",
                reason="NotFound",
            )
        else:
            new.setdefault("metadata", {})
            _meta(new)
            if rt.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        meta = new["metadata"]
        for immutable in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "namespace",
            "deletionGracePeriodSeconds",
            "generation",
            "name",
        ):
            if immutable in old_meta:
                meta[immutable] = old_meta[immutable]
            else:
                meta.pop(immutable, None)
        meta.pop("resourceVersion", None)
        meta.pop("managedFields", None)
        new["apiVersion"] = old["apiVersion"]
        new["kind"] = old["kind"]
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise invalid(
                    rt.kind,
                    rt.group,
                    old_meta["name"],
                    [
                        (
                            "metadata.finalizers",
                            f"Forbidden: no new finalizers can be added if the object is being "
                            f"deleted, found new finalizers {sorted(added)}",
                        )
                    ],
                )
        new = self._admit(rt, new, old, strict=strict)
        meta = new["metadata"]
        if _spec_part(new) != _spec_part(old):
            meta["generation"] = old_meta.get("generation", 1) + 1
        if self._same(new, old):
            return copy.deepcopy(old)
        if dry_run:
            return new
        committed = self._commit(rt, new, old)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(rt, committed)
        return copy.deepcopy(committed)

    @staticmethod
    def _same(new: Obj, old: Obj) -> bool:
        strip = {k: v for k, v in old["metadata"].items() if k != "resourceVersion"}
        new_strip = {k: v for k, v in new["metadata"].items() if k != "resourceVersion"}
        if not new_strip.get("finalizers"):
            new_strip.pop("finalizers", None)
        if not strip.get("finalizers"):
            strip.pop("finalizers", None)
        return strip == new_strip and {k: v for k, v in new.items() if k != "metadata"} == {
            k: v for k, v in old.items() if k != "metadata"
        }

    def _admit(self, rt: ResourceType, obj: Obj, old: Obj | None, *, strict: bool = False) -> Obj:
        """Defaults and validation: the CRD schema for custom resources, rules for built-ins."""
        name = obj["metadata"].get("name", "")
        causes = builtin_rules.validate_metadata(rt, obj)
        if rt.is_crd:
            schema = rt.schemas.get(rt.preferred_version)
            if schema:
                dropped: list[str] = []
                obj = crd_schema.prune(schema, obj, root=True, dropped=dropped)
                self.warnings = [f'unknown field "{field}"' for field in dropped]
                if strict and dropped:
                    raise bad_request(
                        "strict decoding error: "
                        + ", ".join(f'unknown field "{field}"' for field in dropped)
                    )
                obj = crd_schema.apply_defaults(schema, obj)
                causes += crd_schema.validate(schema, _without_metadata(obj))
                if not causes:
                    causes += evaluate_rules(schema, obj, old)
        else:
            obj = builtin_rules.apply_defaults(self, rt, obj, old)
            causes += builtin_rules.validate(rt, obj, old)
        if causes:
            raise invalid(rt.kind, rt.group, name, causes)
        if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            obj = self._admit_crd(obj)
        return obj

    def _admit_crd(self, crd: Obj) -> Obj:
        try:
            rt = resource_from_crd(crd)
        except (ValueError, KeyError, TypeError) as exc:
            raise invalid(
                "CustomResourceDefinition",
                "apiextensions.k8s.io",
                crd["metadata"].get("name", ""),
                [("spec", str(exc))],
            ) from exc
        crd = copy.deepcopy(crd)
        crd["status"] = {
            "acceptedNames": copy.deepcopy(crd["spec"]["names"]),
            "storedVersions": [rt.preferred_version],
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": r,
                    "message": m,
                    "lastTransitionTime": now_rfc3339(),
                }
                for t, r, m in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
        }
        return crd

    def _commit(self, rt: ResourceType, new: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        ns = new["metadata"].get("namespace", "") if rt.namespaced else ""
        self.objects[rt.key][(ns, new["metadata"]["name"])] = new
        self.uids[new["metadata"]["uid"]] = (rt.key, (ns, new["metadata"]["name"]))
        self._emit(WatchEvent("ADDED" if old is None else "MODIFIED", rt, new, old, self.rv))
        if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self.register(resource_from_crd(new))
        return new

    def _emit(self, event: WatchEvent) -> None:
        history = self.history[event.resource.key]
        history.append(event)
        while len(history) > self.history_limit:
            dropped = history.popleft()
            self.compacted_rv[event.resource.key] = dropped.rv
        for listener in list(self.listeners):
            listener(event)

    def _remove(self, rt: ResourceType, obj: Obj, *, orphan: bool = False) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace", "") if rt.namespaced else ""
        if self.objects[rt.key].pop((ns, meta["name"]), None) is None:
            return
        self.uids.pop(meta["uid"], None)
        self.rv += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(WatchEvent("DELETED", rt, gone, obj, self.rv))
        if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            served = resource_from_crd(obj)
            if served.key in self.types:
                self.unregister(served.key)
        for dep_rt, dep in self._dependents(meta["uid"]):
            self._gc_dependent(dep_rt, dep, meta["uid"], "Orphan" if orphan else "Background")
        for ref in meta.get("ownerReferences") or []:
            self._recheck_foreground(ref.get("uid", ""))
        if ns:
            self._recheck_namespace(ns)

    def _dependents(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        found = []
        for key, items in self.objects.items():
            for obj in items.values():
                refs = obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    found.append((self.types[key], obj))
        return found

    def _gc_dependent(self, rt: ResourceType, dep: Obj, owner_uid: str, policy: str) -> None:
        """Garbage-collect one dependent of a deleted (or foreground-deleting) owner."""
        refs = dep["metadata"].get("ownerReferences") or []
        others = [r for r in refs if r.get("uid") != owner_uid and r.get("uid") in self.uids]
        ns = dep["metadata"].get("namespace")
        if policy == "Orphan" or others:
            kept = [r for r in refs if r.get("uid") != owner_uid]
            new = copy.deepcopy(dep)
            if kept:
                new["metadata"]["ownerReferences"] = kept
            else:
                new["metadata"].pop("ownerReferences", None)
            self._commit(rt, new, dep)
            return
        if self.find(rt, ns, dep["metadata"]["name"]) is not None:
            self.delete(
                rt,
                ns,
                dep["metadata"]["name"],
                propagation="Foreground" if policy == "Foreground" else "Background",
            )

    def _recheck_foreground(self, owner_uid: str) -> None:
        where = self.uids.get(owner_uid)
        if where is None:
            return
        key, (ns, name) = where
        owner = self.objects[key][(ns, name)]
        finalizers = owner["metadata"].get("finalizers") or []
        if "foregroundDeletion" not in finalizers or self._dependents(owner_uid):
            return
        new = copy.deepcopy(owner)
        new["metadata"]["finalizers"] = [f for f in finalizers if f != "foregroundDeletion"]
        committed = self._commit(self.types[key], new, owner)
        if not committed["metadata"]["finalizers"]:
            self._remove(self.types[key], committed)

    def _delete_namespace(self, rt: ResourceType, ns_obj: Obj) -> Obj:
        name = ns_obj["metadata"]["name"]
        if not ns_obj["metadata"].get("deletionTimestamp"):
            new = copy.deepcopy(ns_obj)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new.setdefault("status", {})["phase"] = "Terminating"
            ns_obj = self._commit(rt, new, ns_obj)
            for key in list(self.objects):
                other = self.types[key]
                if not other.namespaced:
                    continue
                for obj in [o for (ons, _), o in self.objects[key].items() if ons == name]:
                    if self.find(other, name, obj["metadata"]["name"]) is not None:
                        self.delete(other, name, obj["metadata"]["name"])
        self._recheck_namespace(name)
        return copy.deepcopy(self.find(rt, None, name) or ns_obj)

    def _recheck_namespace(self, name: str) -> None:
        ns_rt = self.types[("", "namespaces")]
        ns_obj = self.find(ns_rt, None, name)
        if ns_obj is None or not ns_obj["metadata"].get("deletionTimestamp"):
            return
        if ns_obj["metadata"].get("finalizers"):
            return
        for key, items in self.objects.items():
            if self.types[key].namespaced and any(ons == name for ons, _ in items):
                return
        self._remove(ns_rt, ns_obj)

    def all_objects(self) -> Iterable[tuple[ResourceType, Obj]]:
        for key, items in self.objects.items():
            for obj in items.values():
                yield self.types[key], obj


def _without_metadata(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")}
