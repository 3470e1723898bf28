"""The three patch formats of the API server.

* JSON merge patch (RFC 7386): exact.
* JSON patch (RFC 6902): exact (add, remove, replace, move, copy, test).
* Strategic merge patch: an approximation. It is a merge patch, except that
  lists of objects with a known merge key are merged item by item instead of
  replaced (``containers``/``env``/``volumes``/... by ``name``, container
  ``ports`` by ``containerPort``, Service ``ports`` by ``port``,
  ``volumeMounts`` by ``mountPath``, ``conditions`` by ``type``,
  ``ownerReferences`` by ``uid``; ``finalizers`` merged as a set), and the
  directives ``$patch: replace|delete`` and ``$setElementOrder/...`` (ignored)
  are understood. Real Kubernetes reads merge keys from Go struct tags; this
  table covers the fields voiceops objects use.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError, bad_request

MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "imagePullSecrets": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "ports": ("containerPort", "port"),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey",),
    "containerStatuses": ("name",),
    "initContainerStatuses": ("name",),
}
_SET_LISTS = {"finalizers"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; returns a new value."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key_for(field: str, items: list[Any]) -> str | None:
    candidates = MERGE_KEYS.get(field)
    if not candidates:
        return None
    dicts = [i for i in items if isinstance(i, dict)]
    for key in candidates:
        if dicts and all(key in i for i in dicts):
            return key
    return None


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Approximate strategic merge patch (see the module docstring)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [x for x in result.get(field) or [] if x not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    return result


def _merge_list(field: str, current: Any, patch_items: list[Any]) -> list[Any]:
    current = current if isinstance(current, list) else []
    if field in _SET_LISTS:
        merged = list(current)
        merged.extend(x for x in patch_items if x not in merged)
        return merged
    merge_key = _merge_key_for(field, patch_items)
    if merge_key is None:
        return [copy.deepcopy(x) for x in patch_items if x != {"$patch": "replace"}]
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch_items):
        return [
            copy.deepcopy(i)
            for i in patch_items
            if not (isinstance(i, dict) and i.get("$patch") == "replace")
        ]
    result = [copy.deepcopy(x) for x in current]
    for item in patch_items:
        if not isinstance(item, dict):
            continue
        index = next(
            (
                n
                for n, x in enumerate(result)
                if isinstance(x, dict) and x.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
            continue
        if index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _unprocessable(f"invalid JSON pointer {path!r}: must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _unprocessable(message: str) -> ApiError:
    return ApiError(422, message, reason="Invalid")


def _parent(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _unprocessable(f"jsonpatch: path {path!r} does not exist")
    return node, parts[-1]


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent, last = _parent(doc, parts, path)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise _unprocessable(f"jsonpatch: path {path!r} does not exist")


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, last = _parent(doc, parts, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise _unprocessable(f"jsonpatch add: index out of range at {path!r}")
    else:
        raise _unprocessable(f"jsonpatch add: parent of {path!r} is not a container")
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise _unprocessable("jsonpatch remove: cannot remove the whole document")
    parent, last = _parent(doc, parts, path)
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        parent.pop(int(last))
    else:
        raise _unprocessable(f"jsonpatch remove: path {path!r} does not exist")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch; 400 if the body is not a list, 422 if an op fails."""
    if not isinstance(operations, list):
        raise bad_request(
            "json patch body must be a JSON array of operations "
            "(for a JSON object use application/merge-patch+json)"
        )
    doc = copy.deepcopy(target)
    for number, op in enumerate(operations):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"json patch operation {number} needs 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f"json patch operation {number} ({kind}) needs 'value'")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _remove(doc, path) if _pointer(path) else doc
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            value = copy.deepcopy(_get(doc, op.get("from", "")))
            if kind == "move":
                doc = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise _unprocessable(
                    f"the server rejected our request due to an error in our request: "
                    f"testing value {path} failed"
                )
        else:
            raise bad_request(f"json patch operation {number}: unknown op {kind!r}")
    return doc
