"""Desired vs actual, on the fields the operator owns. Pure.

A child matches when every field we set has the same value in the stored object.
Fields the API server or other controllers add (defaults, clusterIP, status,
annotations of `kubectl rollout restart`) are not ours and never cause a write.
Go's `omitempty` drops zero values, so a desired zero matches an absent field.
A few maps are owned whole (selectors, node selectors, resource lists,
NetworkPolicy rules): keys there that we no longer set are removed with `null`
in the merge patch (lists are replaced whole).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

Path = tuple[str, ...]

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY_KEYS = {"sizeLimit", "averageValue"}


def parse_quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity as a number ("500m" → 0.5), None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    match = _QUANTITY.match(value.strip())
    if not match:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    try:
        base = Decimal(number)
        if suffix not in _SUFFIX:  # an exponent (1e3, 1E-3); E and Ei are exa and exbi
            return base * (Decimal(10) ** int(suffix[1:]))
        return base * _SUFFIX[suffix]
    except (InvalidOperation, KeyError, ValueError):
        return None


def _is_quantity_path(path: Path) -> bool:
    return (len(path) >= 2 and path[-2] in ("limits", "requests")) or (
        bool(path) and path[-1] in _QUANTITY_KEYS
    )


_NETWORK_POLICY_OWNED = {("spec", "podSelector"), ("spec", "ingress"), ("spec", "egress")}


def is_owned_whole(path: Path) -> bool:
    """Maps where keys we stop setting must go (not just keys we set must match)."""
    if not path:
        return False
    return (
        path == ("spec", "selector")  # Service selector: routing drops the tier key
        or path[-1] == "nodeSelector"
        or (len(path) >= 2 and path[-2] == "resources" and path[-1] in ("limits", "requests"))
        # A NetworkPolicy is owned whole below these: a `from` we stop setting (any
        # source again), the ports of a DNS-only egress rule turned allow-all ({}),
        # a hand-added selector label; and `podSelector: {}` (every pod) is no zero.
        or path[:2] in _NETWORK_POLICY_OWNED
    )


def _is_zero(value: Any) -> bool:
    return value is None or value is False or value in ("", 0, {}, [])


def _scalar_equal(desired: Any, actual: Any, path: Path) -> bool:
    if desired == actual and type(desired) is type(actual):
        return True
    if _is_quantity_path(path):
        d, a = parse_quantity(desired), parse_quantity(actual)
        return d is not None and d == a
    return False


def matches(desired: Any, actual: Any, path: Path = ()) -> bool:
    """True when `actual` already has every value of `desired` (see module doc)."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return not desired and actual is None
        for key, value in desired.items():
            if key not in actual:
                if not _is_zero(value):
                    return False
                continue
            if not matches(value, actual[key], (*path, key)):
                return False
        if is_owned_whole(path):
            return set(actual) <= set(desired)
        return True
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return not desired and actual is None
        return all(matches(d, a, path) for d, a in zip(desired, actual, strict=True))
    return _scalar_equal(desired, actual, path)


def merge_patch(desired: dict[str, Any], actual: dict[str, Any], path: Path = ()) -> dict:
    """A JSON merge patch that makes `actual` match `desired` on the owned fields."""
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        current = actual.get(key) if isinstance(actual, dict) else None
        if isinstance(value, dict) and isinstance(current, dict):
            sub = merge_patch(value, current, (*path, key))
            if sub or not matches(value, current, (*path, key)):
                patch[key] = sub
        elif not matches(value, current, (*path, key)):
            patch[key] = value
    if is_owned_whole(path) and isinstance(actual, dict):
        for key in actual:
            if key not in desired:
                patch[key] = None
    return patch


def owned_view(obj: dict[str, Any], *, replicas_owned: bool) -> dict[str, Any]:
    """The part of a desired child the operator enforces on update.

    Create sends the whole object; updates leave spec.replicas alone when an HPA
    scales the Deployment (the HPA owns it then).
    """
    view = {
        "metadata": {
            "labels": obj["metadata"].get("labels", {}),
            **(
                {"ownerReferences": obj["metadata"]["ownerReferences"]}
                if "ownerReferences" in obj["metadata"]
                else {}
            ),
        },
    }
    if "spec" in obj:
        spec = dict(obj["spec"])
        if not replicas_owned:
            spec.pop("replicas", None)
        template = spec.get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            # Placement is ours even where we set none: a hand-added node selector
            # or toleration on a tier is drift.
            pod_spec = {"nodeSelector": {}, "tolerations": [], **template["spec"]}
            spec["template"] = {**template, "spec": pod_spec}
        view["spec"] = spec
    return view
