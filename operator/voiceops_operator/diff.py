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
from collections.abc import Callable, Mapping
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


def equal(desired: Any, actual: Any, path: Path) -> bool:
    """Exact equality: for fields whose every value is ours (the status), not a child's."""
    return bool(desired == actual)


def merge_patch(
    desired: Mapping[str, Any],
    actual: Any,
    path: Path = (),
    *,
    same: Callable[[Any, Any, Path], bool] = matches,
    owned_whole: Callable[[Path], bool] = is_owned_whole,
) -> dict[str, Any]:
    """A JSON merge patch that makes ``actual`` agree with ``desired``; {} when it does.

    Maps are compared key by key; other values (lists too) are sent whole when
    ``same`` says they differ. A None in ``desired`` means "absent": a null in the
    patch when ``actual`` has the key, nothing otherwise; an object created where
    there is none leaves out its absent keys (and is left out when nothing is
    left of it). Keys of ``actual`` that ``desired`` lacks are removed (null) in
    the maps ``owned_whole`` names.

    The defaults compare a desired child with the stored one (see the module
    doc); the status writers pass ``same=equal`` and say which maps they own.
    """
    patch: dict[str, Any] = {}
    have = actual if isinstance(actual, Mapping) else {}
    for key, value in desired.items():
        here = (*path, key)
        current = have.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            sub = merge_patch(value, current, here, same=same, owned_whole=owned_whole)
            if sub:
                patch[key] = sub
        elif isinstance(value, dict):
            created = _without_absent(value)
            if created or current is not None:
                patch[key] = created
        elif not same(value, current, here):
            patch[key] = value
    if owned_whole(path) and isinstance(actual, Mapping):
        for key in actual:
            if key not in desired:
                patch[key] = None
    return patch


def _without_absent(value: Mapping[str, Any]) -> dict[str, Any]:
    """An object to create: its None values left out, and objects made empty by that."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict) and item:
            item = _without_absent(item)
            if not item:
                continue
        if item is not None:
            out[key] = item
    return out


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
    if "data" in obj:  # a ConfigMap
        view["data"] = obj["data"]
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
