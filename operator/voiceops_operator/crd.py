"""The VoiceService CustomResourceDefinition, generated from the pydantic models.

``crds/voiceservice.yaml`` is the output of :func:`build_crd` (``voiceops-operator
crd``); a test keeps the committed file equal to it. Pure: no I/O.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from pydantic import BaseModel

from voiceops_operator import names
from voiceops_operator import spec as s

READY_CONDITION_PATH = '.status.conditions[?(@.type=="Ready")].status'


def _model_classes(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from root, by class name (the key pydantic uses in $defs)."""
    found: dict[str, type[BaseModel]] = {}
    pending = [root]
    while pending:
        model = pending.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for field in model.model_fields.values():
            for arg in _type_args(field.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    pending.append(arg)
    return found


def _type_args(annotation: Any) -> list[Any]:
    args = [annotation]
    for arg in getattr(annotation, "__args__", ()) or ():
        args.extend(_type_args(arg))
    return args


def _rules_of(model: type[BaseModel]) -> list[dict[str, str]]:
    rules = getattr(model, "__rules__", ())
    return [
        {
            "rule": r.rule,
            "message": r.message,
            # No fieldPath: the error names the object the rule sits on.
            **({"fieldPath": r.field} if r.field else {}),
            "reason": "FieldValueInvalid",
        }
        for r in rules
    ]


def _resolve(node: Any, defs: dict[str, Any], classes: dict[str, type[BaseModel]]) -> Any:
    """Inline $refs, drop nulls and titles, attach CEL rules: a structural schema."""
    if isinstance(node, list):
        return [_resolve(n, defs, classes) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    rules: list[dict[str, str]] = []
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        target = dict(defs[name])
        if name in classes:
            rules = _rules_of(classes[name])
        target.update(node)  # field-level description/default win over the model's
        node = target
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) == 1:
            del node["anyOf"]
            branch = _resolve(branches[0], defs, classes)
            node = {**branch, **{k: v for k, v in node.items() if k != "default" or v is not None}}
            if node.get("default", 0) is None:
                del node["default"]
    node.pop("title", None)
    if node.get("additionalProperties") is False:
        # Structural schemas forbid additionalProperties next to properties; the
        # API server prunes (and with strict field validation refuses) unknown fields.
        del node["additionalProperties"]
    out = {key: _resolve(value, defs, classes) for key, value in node.items()}
    if "properties" in out:
        out["properties"] = {
            key: _resolve(value, defs, classes) for key, value in node["properties"].items()
        }
    if rules:
        out["x-kubernetes-validations"] = rules
    return out


def _compact_object_defaults(node: Any) -> Any:
    """An object default equal to what its children's defaults produce becomes {}."""
    if isinstance(node, list):
        return [_compact_object_defaults(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _compact_object_defaults(v) for k, v in node.items()}
    if "properties" in out and isinstance(out.get("default"), dict):
        produced = _without_empty(apply_defaults({}, out))
        if produced == _without_empty(apply_defaults(copy.deepcopy(out["default"]), out)):
            out["default"] = {}
    return out


def _without_empty(node: Any) -> Any:
    # Empty maps and lists come from default_factory, which the schema cannot show.
    if isinstance(node, dict):
        cleaned = {k: _without_empty(v) for k, v in node.items()}
        return {k: v for k, v in cleaned.items() if v not in ({}, [])}
    return node


def _strip_defaults(node: Any) -> Any:
    if isinstance(node, list):
        return [_strip_defaults(n) for n in node]
    if not isinstance(node, dict):
        return node
    return {k: _strip_defaults(v) for k, v in node.items() if k != "default"}


def _order(node: Any) -> Any:
    """Stable key order for a readable YAML file: description and type first."""
    if isinstance(node, list):
        return [_order(n) for n in node]
    if not isinstance(node, dict):
        return node
    first = [k for k in ("description", "type") if k in node]
    rest = sorted(k for k in node if k not in first)
    ordered = {k: _order(node[k]) for k in first + rest}
    if "properties" in node:
        ordered["properties"] = {k: _order(v) for k, v in node["properties"].items()}
    return ordered


def model_schema(model: type[BaseModel], *, with_defaults: bool = True) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model (spec or status)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    classes = _model_classes(model)
    schema = _resolve(raw, defs, classes)
    root_rules = _rules_of(model)
    if root_rules:
        schema["x-kubernetes-validations"] = root_rules
    if with_defaults:
        schema = _compact_object_defaults(_guard_defaulted_fields(schema))
    else:
        schema = _strip_defaults(schema)
    return schema


_FIELD_CHAIN = re.compile(r"\bself((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _guard_defaulted_fields(node: Any) -> Any:
    """Each rule holds vacuously while a field it reads that has a default is absent.

    The API server checks every schema default against the rules when the CRD is
    created, on the default as written: ``spec.failover``'s default ``{}`` has no
    ``memoryHighRatio`` yet, so ``self.memoryHighRatio < ...`` fails with "no such
    key". Objects always have those fields (defaults are applied before rules run),
    so the guard changes nothing for them. Fields without a default are not guarded:
    rules that read them check ``has()`` themselves.
    """
    if isinstance(node, list):
        return [_guard_defaulted_fields(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _guard_defaulted_fields(v) for k, v in node.items()}
    if "properties" in node:
        out["properties"] = {k: _guard_defaulted_fields(v) for k, v in node["properties"].items()}
    if "x-kubernetes-validations" in node:
        out["x-kubernetes-validations"] = [
            {**rule, "rule": _guarded(rule["rule"], node)}
            for rule in node["x-kubernetes-validations"]
        ]
    return out


def _guarded(rule: str, node: dict[str, Any]) -> str:
    guards: list[str] = []
    for match in _FIELD_CHAIN.finditer(rule):
        parts = match.group(1).lstrip(".").split(".")
        if rule[match.end() : match.end() + 1] == "(":
            parts = parts[:-1]  # a method call (.all, .matches), not a field
        schema, path = node, "self"
        for part in parts:
            schema = (schema.get("properties") or {}).get(part) or {}
            if "default" not in schema:
                break
            path = f"{path}.{part}"
            if f"has({path})" not in guards:
                guards.append(f"has({path})")
    if not guards:
        return rule
    return f"!({' && '.join(guards)}) || ({rule})"


def _status_schema() -> dict[str, Any]:
    status = model_schema(s.VoiceServiceStatus, with_defaults=False)
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions["maxItems"] = 16
    return status


def openapi_schema() -> dict[str, Any]:
    """The whole object's schema (apiVersion, kind, metadata, spec, status)."""
    spec_schema = model_schema(s.VoiceServiceSpec)
    spec_schema["default"] = {}
    return {
        "description": "VoiceService runs a text-to-speech model as a self-healing service: "
        "a GPU serving tier, a warm CPU fallback tier and routing between them.",
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion of this object (voiceops.io/v1alpha1).",
                "type": "string",
            },
            "kind": {"description": "Kind of this object (VoiceService).", "type": "string"},
            # The API server refuses anything else here (a real one said so; see
            # tests/operator/test_operator_spec_reconcile.py).
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": _status_schema(),
        },
        "x-kubernetes-validations": [
            {"rule": rule, "message": message} for rule, message in s.ROOT_RULES
        ],
    }


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Tier",
        "type": "string",
        "jsonPath": ".status.activeTier",
        "description": "Tier the front Service routes to.",
    },
    {
        "name": "Phase",
        "type": "string",
        "jsonPath": ".status.phase",
        "description": "Pending, Serving, Degraded, FailedOver or Recovering.",
    },
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": ".status.ready",
        "description": "Ready pods per tier.",
    },
    {
        "name": "GPU-Mem",
        "type": "number",
        "jsonPath": ".status.gpu.memoryUsedRatio",
        "description": "Highest GPU memory used/total over the GPU pods.",
    },
    {
        "name": "Model",
        "type": "string",
        "jsonPath": ".status.model.current.version",
        "description": "The model version every GPU pod runs.",
    },
    {
        "name": "Model-Update",
        "type": "string",
        "jsonPath": ".status.model.state",
        "priority": 1,
        "description": "Updated, Updating, RollingBack, Failed or Rolling (kubectl get -o wide).",
    },
    {
        "name": "Available",
        "type": "string",
        "jsonPath": READY_CONDITION_PATH,
        "description": "The Ready condition: the serving tier has ready pods.",
    },
    {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    },
]


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{s.PLURAL}.{s.GROUP}",
            "labels": {
                names.LABEL_NAME: names.PART_OF,
                names.LABEL_PART_OF: names.PART_OF,
            },
        },
        "spec": {
            "group": s.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": s.KIND,
                "listKind": f"{s.KIND}List",
                "plural": s.PLURAL,
                "singular": s.SINGULAR,
                "shortNames": list(s.SHORT_NAMES),
                "categories": ["voiceops"],
            },
            "versions": [
                {
                    "name": s.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": _order(openapi_schema())},
                }
            ],
        },
    }


def apply_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting as the API server does it (absent fields get `default`)."""
    if isinstance(obj, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                obj[key] = apply_defaults(obj[key], sub)
    elif isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key in obj:
            obj[key] = apply_defaults(obj[key], schema["additionalProperties"])
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in obj]
    return obj
