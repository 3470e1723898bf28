"""``/openapi/v3`` for ``kubectl explain`` and ``kubectl apply``'s client-side validation.

Custom resources publish their CRD's ``openAPIV3Schema``. Built-in kinds
publish a permissive schema (``x-kubernetes-preserve-unknown-fields``): the
emulator does not carry Kubernetes' own OpenAPI documents, so kubectl's
client-side validation accepts any built-in object and leaves the checking
to the emulator's server-side rules.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from .resources import ResourceType

Obj = dict[str, Any]


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _schema_name(rt: ResourceType, version: str) -> str:
    group = ".".join(reversed(rt.group.split("."))) if rt.group else "io.k8s.api.core"
    return f"{group}.{version}.{rt.kind}"


def group_versions(types: list[ResourceType]) -> dict[str, list[tuple[ResourceType, str]]]:
    found: dict[str, list[tuple[ResourceType, str]]] = {}
    for rt in types:
        for version in rt.versions:
            found.setdefault(_gv_path(rt.group, version), []).append((rt, version))
    return found


def document(entries: list[tuple[ResourceType, str]]) -> Obj:
    """The OpenAPI v3 document of one group/version."""
    schemas: Obj = {}
    paths: Obj = {}
    for rt, version in entries:
        paths.update(_paths(rt, version))
        if rt.is_crd and rt.schemas.get(version):
            schema = copy.deepcopy(rt.schemas[version])
        else:
            schema = {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "description": f"{rt.kind} (schema not published by the emulator)",
            }
        schema["x-kubernetes-group-version-kind"] = [
            {"group": rt.group, "version": version, "kind": rt.kind}
        ]
        schemas[_schema_name(rt, version)] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (voiceops-sim emulator)", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _operation(rt: ResourceType, version: str, action: str, name: str) -> Obj:
    return {
        "operationId": f"{action}{rt.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": version, "kind": rt.kind},
        "parameters": [
            {
                "name": "fieldValidation",
                "in": "query",
                "schema": {"type": "string"},
                "description": "Ignore, Warn or Strict: how unknown fields are treated.",
            },
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {
                "description": "OK",
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                },
            }
        },
    }


def _paths(rt: ResourceType, version: str) -> Obj:
    """Collection and item paths; kubectl looks for ``fieldValidation`` on them."""
    prefix = f"/{_gv_path(rt.group, version)}"
    scope = "/namespaces/{namespace}" if rt.namespaced else ""
    name = _schema_name(rt, version)
    collection = f"{prefix}{scope}/{rt.plural}"
    return {
        collection: {
            action: _operation(rt, version, verb, name)
            for action, verb in (("get", "list"), ("post", "post"))
        },
        f"{collection}/{{name}}": {
            action: _operation(rt, version, verb, name)
            for action, verb in (
                ("get", "get"),
                ("put", "put"),
                ("patch", "patch"),
                ("delete", "delete"),
            )
        },
    }


def index(types: list[ResourceType]) -> Obj:
    """The ``/openapi/v3`` discovery document: one entry per group/version."""
    paths = {}
    for path, entries in sorted(group_versions(types).items()):
        digest = hashlib.sha256(json.dumps(document(entries), sort_keys=True).encode())
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest.hexdigest()[:32]}"}
    return {"paths": paths}
