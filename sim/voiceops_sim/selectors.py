"""Label and field selectors, parsed like the API server parses them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

_KEY = r"[A-Za-z0-9_.\-/]+"
_SET_EXPR = re.compile(rf"^\s*(!?)\s*({_KEY})\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")
_EQ_EXPR = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*([A-Za-z0-9_.\-]*)\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present  # "!"


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``( ... )``."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in (p.strip() for p in parts) if p]


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse ``a=b,c!=d,e in (f,g),h notin (i),j,!k``; 400 on bad syntax."""
    if not text:
        return []
    requirements = []
    for part in _split_top_level(text):
        eq = _EQ_EXPR.match(part)
        if eq:
            key, op, value = eq.groups()
            requirements.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
            continue
        match = _SET_EXPR.match(part)
        if not match:
            raise bad_request(f"unable to parse requirement: {part!r} in labelSelector {text!r}")
        bang, key, op, values = match.groups()
        if op:
            if bang:
                raise bad_request(f"unable to parse requirement: {part!r}")
            vals = tuple(v.strip() for v in values.split(",") if v.strip())
            requirements.append(Requirement(key, op, vals))
        else:
            requirements.append(Requirement(key, "!" if bang else "exists"))
    return requirements


def selector_from_label_selector_object(selector: Mapping[str, Any] | None) -> list[Requirement]:
    """Requirements from a ``metav1.LabelSelector`` object (matchLabels + matchExpressions)."""
    if not selector:
        return []
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        reqs.append(
            Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ()))
        )
    return reqs


def labels_match(requirements: list[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in requirements)


def _field_value(obj: Mapping[str, Any], path: str) -> str | None:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool):
        return "true" if node else "false"
    return None if node is None else str(node)


def parse_field_selector(text: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate for ``metadata.name=x,status.phase!=Running`` (any dotted path)."""
    if not text:
        return lambda obj: True
    terms: list[tuple[str, bool, str]] = []
    for part in _split_top_level(text):
        match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not match:
            raise bad_request(f"invalid field selector: {part!r}")
        path, op, value = match.groups()
        terms.append((path, op != "!=", value))

    def predicate(obj: Mapping[str, Any]) -> bool:
        for path, equal, value in terms:
            actual = _field_value(obj, path)
            actual = "" if actual is None else actual
            if (actual == value) != equal:
                return False
        return True

    return predicate
