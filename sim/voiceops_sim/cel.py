"""CEL ``x-kubernetes-validations`` rules, evaluated with ``cel-python`` when present.

``cel-python`` is an optional dependency of the emulator: without it the rules
are skipped (the schema checks still run). Values are typed from the schema
(``number`` → double, ``integer`` → int) as the API server types them.
Transition rules (those naming ``oldSelf``) run only on updates. Rules that
cel-python cannot compile or evaluate (Kubernetes-only library functions such
as ``quantity()``) are skipped with a warning rather than failing the object.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from .schema import Cause

log = logging.getLogger(__name__)

try:  # optional: the emulator works without it, minus CEL rules
    import celpy
    from celpy import celtypes
except ImportError:  # pragma: no cover - depends on the environment
    celpy = None
    celtypes = None


def cel_available() -> bool:
    return celpy is not None


@lru_cache(maxsize=512)
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _to_cel(schema: dict[str, Any], value: Any) -> Any:
    kind = schema.get("type")
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        sub_default = additional if isinstance(additional, dict) else {}
        return celtypes.MapType(
            {
                celtypes.StringType(k): _to_cel(props.get(k, sub_default), v)
                for k, v in value.items()
            }
        )
    if isinstance(value, list):
        items = schema.get("items") or {}
        return celtypes.ListType([_to_cel(items, v) for v in value])
    if isinstance(value, str):
        return celtypes.StringType(value)
    if kind == "number" or isinstance(value, float):
        return celtypes.DoubleType(float(value))
    if isinstance(value, int):
        return celtypes.IntType(value)
    return celpy.json_to_cel(value)


def _walk(schema: dict[str, Any], value: Any, old: Any, path: str, causes: list[Cause]) -> None:
    if value is None:
        return
    for rule in schema.get("x-kubernetes-validations") or []:
        _check(rule, schema, value, old, path, causes)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key) if key in props else additional
            if isinstance(sub, dict):
                old_item = old.get(key) if isinstance(old, dict) else None
                _walk(sub, item, old_item, f"{path}.{key}" if path else key, causes)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for number, item in enumerate(value):
            _walk(schema["items"], item, None, f"{path}[{number}]", causes)


def _check(
    rule: dict[str, Any],
    schema: dict[str, Any],
    value: Any,
    old: Any,
    path: str,
    causes: list[Cause],
) -> None:
    text = rule.get("rule", "")
    transition = "oldSelf" in text
    if transition and old is None:
        return
    activation = {"self": _to_cel(schema, value)}
    if transition:
        activation["oldSelf"] = _to_cel(schema, old)
    try:
        result = _program(text).evaluate(activation)
    except Exception as exc:  # cel-python raises assorted types for unsupported features
        log.warning("CEL rule %r at %s skipped by the emulator: %s", text, path or "<root>", exc)
        return
    if isinstance(result, Exception) or bool(result):
        return
    field = path + rule.get("fieldPath", "") if rule.get("fieldPath") else path
    message = rule.get("message") or f"failed rule: {text}"
    shown = (
        '"object"'
        if isinstance(value, dict)
        else '"array"'
        if isinstance(value, list)
        else (f'"{value}"' if isinstance(value, str) else str(value))
    )
    causes.append((field or "<root>", f"Invalid value: {shown}: {message}"))


def evaluate_rules(
    schema: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None
) -> list[Cause]:
    """Every failing CEL rule in ``obj`` as ``(field, message)``; [] without cel-python."""
    if celpy is None:
        return []
    causes: list[Cause] = []
    props = schema.get("properties") or {}
    for key, value in obj.items():
        if key in props and key not in ("metadata", "apiVersion", "kind"):
            old_value = (old or {}).get(key) if old is not None else None
            _walk(props[key], value, old_value, key, causes)
    for rule in schema.get("x-kubernetes-validations") or []:
        _check(rule, schema, obj, old, "", causes)
    return causes
