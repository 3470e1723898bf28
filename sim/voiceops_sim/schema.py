"""CRD structural-schema handling: pruning, defaulting and validation.

Follows the API server's order: unknown fields are pruned, nulls in
non-nullable fields dropped, ``default``s applied, then the value is validated.
Supported keywords: type, nullable, enum, minimum/maximum (+ exclusive),
minLength/maxLength, pattern, minItems/maxItems, uniqueItems,
minProperties/maxProperties, required, properties, additionalProperties,
items, allOf/anyOf/oneOf/not (for validation only),
x-kubernetes-int-or-string, x-kubernetes-preserve-unknown-fields,
x-kubernetes-embedded-resource. ``x-kubernetes-validations`` (CEL) are
evaluated by :mod:`voiceops_sim.cel` when the ``cel-python`` package is
importable and skipped otherwise; ``format`` is not checked.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

Cause = tuple[str, str]  # (field path, message)

_ROOT_KEPT = {"apiVersion", "kind", "metadata"}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_object_schema(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object" or "properties" in schema


def prune(
    schema: dict[str, Any],
    value: Any,
    *,
    root: bool = False,
    path: str = "",
    dropped: list[str] | None = None,
) -> Any:
    """Drop fields the schema does not declare (unless it preserves unknown fields).

    The paths of dropped fields are appended to ``dropped`` (for ``fieldValidation``).
    """
    if isinstance(value, dict) and _is_object_schema(schema):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        embedded = schema.get("x-kubernetes-embedded-resource", False)
        result = {}
        for key, item in value.items():
            where = _join(path, key)
            if (root or embedded) and key in _ROOT_KEPT:
                result[key] = item
            elif key in props:
                result[key] = prune(props[key], item, path=where, dropped=dropped)
            elif isinstance(additional, dict):
                result[key] = prune(additional, item, path=where, dropped=dropped)
            elif preserve or additional is True:
                result[key] = item
            elif dropped is not None:
                dropped.append(where)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [
            prune(schema["items"], item, path=f"{path}[{n}]", dropped=dropped)
            for n, item in enumerate(value)
        ]
    return value


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill missing properties from ``default``; drop nulls where not nullable."""
    if isinstance(value, dict) and _is_object_schema(schema):
        result = dict(value)
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key in result and result[key] is None and not sub.get("nullable", False):
                del result[key]
            if key not in result and "default" in sub:
                result[key] = copy.deepcopy(sub["default"])
            if key in result:
                result[key] = apply_defaults(sub, result[key])
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key in list(result):
                if key not in props:
                    result[key] = apply_defaults(additional, result[key])
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def _show(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


def _type_ok(expected: str, value: Any) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def validate(schema: dict[str, Any], value: Any, path: str = "") -> list[Cause]:
    """All schema violations of ``value`` as ``(field, message)`` pairs."""
    field = path or "<root>"
    if value is None:
        if schema.get("nullable", False):
            return []
        return [
            (
                field,
                f'Invalid value: "null": {field} in body must be of type '
                f'{schema.get("type", "object")}: "null"',
            )
        ]
    causes: list[Cause] = []
    expected = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or _type_ok("integer", value)):
            return [
                (
                    field,
                    f"Invalid value: {_show(value)}: {field} in body must be of type "
                    "integer or string",
                )
            ]
    elif expected and not _type_ok(expected, value):
        actual = {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
            type(value), "number"
        )
        return [
            (
                field,
                f"Invalid value: {_show(value)}: {field} in body must be of type "
                f'{expected}: "{actual}"',
            )
        ]
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_show(v) for v in schema["enum"])
        causes.append((field, f"Unsupported value: {_show(value)}: supported values: {allowed}"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        causes.extend(_number_causes(schema, value, field))
    if isinstance(value, str):
        causes.extend(_string_causes(schema, value, field))
    if isinstance(value, list):
        causes.extend(_array_causes(schema, value, field))
    if isinstance(value, dict):
        causes.extend(_object_causes(schema, value, path))
    causes.extend(_combinator_causes(schema, value, path))
    return causes


def _number_causes(schema: dict[str, Any], value: float, field: str) -> list[Cause]:
    causes = []
    if "minimum" in schema:
        low = schema["minimum"]
        if schema.get("exclusiveMinimum") is True and value <= low:
            causes.append(
                (
                    field,
                    f"Invalid value: {_show(value)}: {field} in body should be greater than {low}",
                )
            )
        elif value < low:
            causes.append(
                (
                    field,
                    f"Invalid value: {_show(value)}: {field} in body should be "
                    f"greater than or equal to {low}",
                )
            )
    if "maximum" in schema:
        high = schema["maximum"]
        if schema.get("exclusiveMaximum") is True and value >= high:
            causes.append(
                (
                    field,
                    f"Invalid value: {_show(value)}: {field} in body should be less than {high}",
                )
            )
        elif value > high:
            causes.append(
                (
                    field,
                    f"Invalid value: {_show(value)}: {field} in body should be "
                    f"less than or equal to {high}",
                )
            )
    if "multipleOf" in schema and value % schema["multipleOf"]:
        causes.append(
            (
                field,
                f"Invalid value: {_show(value)}: {field} in body should be a "
                f"multiple of {schema['multipleOf']}",
            )
        )
    return causes


def _string_causes(schema: dict[str, Any], value: str, field: str) -> list[Cause]:
    causes = []
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        causes.append((field, f"Too long: may not be more than {schema['maxLength']} bytes"))
    if "minLength" in schema and len(value) < schema["minLength"]:
        causes.append(
            (
                field,
                f"Invalid value: {_show(value)}: {field} in body should be at "
                f"least {schema['minLength']} chars long",
            )
        )
    if "pattern" in schema and not re.search(schema["pattern"], value):
        causes.append(
            (
                field,
                f"Invalid value: {_show(value)}: {field} in body should match "
                f"'{schema['pattern']}'",
            )
        )
    return causes


def _array_causes(schema: dict[str, Any], value: list[Any], path: str) -> list[Cause]:
    field = path or "<root>"
    causes = []
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        causes.append(
            (field, f"Too many: {len(value)}: must have at most {schema['maxItems']} items")
        )
    if "minItems" in schema and len(value) < schema["minItems"]:
        causes.append(
            (
                field,
                f"Invalid value: {len(value)}: {field} in body should have at "
                f"least {schema['minItems']} items",
            )
        )
    if schema.get("uniqueItems"):
        seen = [json.dumps(v, sort_keys=True) for v in value]
        if len(set(seen)) != len(seen):
            causes.append(
                (field, f"Duplicate value: {field} in body shall not contain repeated values")
            )
    items = schema.get("items")
    if isinstance(items, dict):
        for number, item in enumerate(value):
            causes.extend(validate(items, item, f"{path}[{number}]"))
    return causes


def _object_causes(schema: dict[str, Any], value: dict[str, Any], path: str) -> list[Cause]:
    causes = []
    for key in schema.get("required") or []:
        if key not in value:
            causes.append((_join(path, key), "Required value"))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        causes.append(
            (
                path or "<root>",
                f"Too many: {len(value)}: must have at most {schema['maxProperties']} items",
            )
        )
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        causes.append(
            (
                path or "<root>",
                f"Invalid value: {len(value)}: {path} in body should "
                f"have at least {schema['minProperties']} properties",
            )
        )
    props = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if key in props:
            causes.extend(validate(props[key], item, _join(path, key)))
        elif isinstance(additional, dict):
            causes.extend(validate(additional, item, _join(path, key)))
    return causes


def _combinator_causes(schema: dict[str, Any], value: Any, path: str) -> list[Cause]:
    field = path or "<root>"
    causes: list[Cause] = []
    for sub in schema.get("allOf") or []:
        causes.extend(validate(sub, value, path))
    if "anyOf" in schema and all(validate(s, value, path) for s in schema["anyOf"]):
        causes.append(
            (
                field,
                f"Invalid value: {_show(value)}: {field} in body must match "
                "at least one schema in anyOf",
            )
        )
    if "oneOf" in schema:
        matching = sum(1 for s in schema["oneOf"] if not validate(s, value, path))
        if matching != 1:
            causes.append(
                (
                    field,
                    f"Invalid value: {_show(value)}: {field} in body must "
                    "match exactly one schema in oneOf",
                )
            )
    if "not" in schema and not validate(schema["not"], value, path):
        causes.append(
            (
                field,
                f"Invalid value: {_show(value)}: {field} in body must not match the schema in not",
            )
        )
    return causes
