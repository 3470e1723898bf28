"""Server-side apply, approximated.

Real server-side apply tracks field ownership per manager (``managedFields``)
and reports conflicts between managers. The emulator approximates it the way
``kubectl apply`` (client-side) works: it remembers the last configuration
each field manager applied to each object, removes the fields that manager
applied before and no longer applies, then strategic-merges the new
configuration. No ownership conflicts are reported (``force`` is accepted and
ignored) and ``managedFields`` are not written.
"""

from __future__ import annotations

import copy
from typing import Any

from .patches import MERGE_KEYS, strategic_merge_patch

Obj = dict[str, Any]


def _keyed(items: list[Any], field: str) -> tuple[str | None, dict[Any, Any]]:
    for key in MERGE_KEYS.get(field, ()):
        if items and all(isinstance(i, dict) and key in i for i in items):
            return key, {i[key]: i for i in items}
    return None, {}


def remove_unapplied(live: Any, previous: Any, applied: Any) -> Any:
    """Drop from ``live`` what ``previous`` set and ``applied`` no longer sets."""
    if not isinstance(live, dict) or not isinstance(previous, dict):
        return live
    applied = applied if isinstance(applied, dict) else {}
    result = copy.deepcopy(live)
    for key, prev_value in previous.items():
        if key not in applied:
            result.pop(key, None)
        elif isinstance(prev_value, dict) and key in result:
            result[key] = remove_unapplied(result[key], prev_value, applied[key])
        elif isinstance(prev_value, list) and isinstance(result.get(key), list):
            merge_key, prev_items = _keyed(prev_value, key)
            if merge_key is None:
                continue
            _, new_items = _keyed(applied[key] if isinstance(applied[key], list) else [], key)
            kept = []
            for item in result[key]:
                ident = item.get(merge_key) if isinstance(item, dict) else None
                if ident in prev_items and ident not in new_items:
                    continue
                if ident in prev_items and ident in new_items:
                    item = remove_unapplied(item, prev_items[ident], new_items[ident])
                kept.append(item)
            result[key] = kept
    return result


def apply_configuration(live: Obj, previous: Obj | None, applied: Obj) -> Obj:
    """The object after ``applied`` is server-side applied over ``live``."""
    base = remove_unapplied(live, previous, applied) if previous else copy.deepcopy(live)
    return strategic_merge_patch(base, applied)
