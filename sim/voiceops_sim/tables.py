"""``as=Table`` responses (what ``kubectl get`` asks for): columns and rows.

CRDs get their ``additionalPrinterColumns`` (JSONPath subset: ``.a.b``,
``.a[0]``, ``.a[?(@.k=="v")].b``); a few built-ins get the columns kubectl
users know; everything else gets Name and Age.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

from .resources import ResourceType

Obj = dict[str, Any]

_FILTER = re.compile(r'^\[\?\(@\.([A-Za-z0-9_.]+)\s*==\s*["\']([^"\']*)["\']\)\]')
_INDEX = re.compile(r"^\[(\d+)\]")
_FIELD = re.compile(r"^\.([A-Za-z0-9_\-]+)")


def json_path(obj: Any, path: str) -> Any:
    """Evaluate the JSONPath subset printer columns use; None when nothing matches."""
    nodes = [obj]
    rest = path.strip()
    if rest.startswith("{") and rest.endswith("}"):
        rest = rest[1:-1]
    while rest and nodes:
        if match := _FIELD.match(rest):
            key = match.group(1)
            nodes = [n[key] for n in nodes if isinstance(n, dict) and key in n]
        elif match := _INDEX.match(rest):
            i = int(match.group(1))
            nodes = [n[i] for n in nodes if isinstance(n, list) and i < len(n)]
        elif match := _FILTER.match(rest):
            key, value = match.groups()
            nodes = [
                item
                for n in nodes
                if isinstance(n, list)
                for item in n
                if str(json_path(item, "." + key)) == value
            ]
        else:
            return None
        rest = rest[match.end() :]
    if not nodes:
        return None
    return nodes[0] if len(nodes) == 1 else ",".join(str(n) for n in nodes)


def human_age(timestamp: str | None) -> str:
    """``kubectl``-style age (``45s``, ``12m``, ``5h``, ``3d``)."""
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _ready_containers(pod: Obj) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(pod: Obj) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return waiting["reason"]
    return (pod.get("status") or {}).get("phase", "Pending")


def _restarts(pod: Obj) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount", 0)) for s in statuses)


def _deploy_ready(dep: Obj) -> str:
    status = dep.get("status") or {}
    return f"{status.get('readyReplicas', 0)}/{(dep.get('spec') or {}).get('replicas', 1)}"


Column = tuple[str, str, Callable[[Obj], Any]]

_BUILTIN: dict[tuple[str, str], list[Column]] = {
    ("", "pods"): [
        ("Ready", "string", _ready_containers),
        ("Status", "string", _pod_status),
        ("Restarts", "integer", _restarts),
        ("IP", "string", lambda o: (o.get("status") or {}).get("podIP", "<none>")),
        ("Node", "string", lambda o: (o.get("spec") or {}).get("nodeName", "<none>")),
    ],
    ("apps", "deployments"): [
        ("Ready", "string", _deploy_ready),
        ("Up-to-date", "integer", lambda o: (o.get("status") or {}).get("updatedReplicas", 0)),
        ("Available", "integer", lambda o: (o.get("status") or {}).get("availableReplicas", 0)),
    ],
    ("", "services"): [
        ("Type", "string", lambda o: (o.get("spec") or {}).get("type", "")),
        ("Cluster-IP", "string", lambda o: (o.get("spec") or {}).get("clusterIP", "")),
        (
            "Ports",
            "string",
            lambda o: ",".join(
                f"{p.get('port')}/{p.get('protocol', 'TCP')}"
                for p in (o.get("spec") or {}).get("ports") or []
            ),
        ),
        (
            "Selector",
            "string",
            lambda o: ",".join(
                f"{k}={v}" for k, v in ((o.get("spec") or {}).get("selector") or {}).items()
            ),
        ),
    ],
    ("autoscaling", "horizontalpodautoscalers"): [
        (
            "Reference",
            "string",
            lambda o: "{}/{}".format(
                (o.get("spec") or {}).get("scaleTargetRef", {}).get("kind", ""),
                (o.get("spec") or {}).get("scaleTargetRef", {}).get("name", ""),
            ),
        ),
        ("MinPods", "integer", lambda o: (o.get("spec") or {}).get("minReplicas", 1)),
        ("MaxPods", "integer", lambda o: (o.get("spec") or {}).get("maxReplicas")),
        ("Replicas", "integer", lambda o: (o.get("status") or {}).get("currentReplicas", 0)),
    ],
    ("", "nodes"): [
        (
            "Status",
            "string",
            lambda o: (
                "SchedulingDisabled" if (o.get("spec") or {}).get("unschedulable") else "Ready"
            ),
        ),
        (
            "GPUs",
            "string",
            lambda o: (o.get("status") or {}).get("allocatable", {}).get("nvidia.com/gpu", "0"),
        ),
    ],
    ("", "namespaces"): [
        ("Status", "string", lambda o: (o.get("status") or {}).get("phase", "")),
    ],
    ("", "events"): [
        ("Type", "string", lambda o: o.get("type", "")),
        ("Reason", "string", lambda o: o.get("reason", "")),
        (
            "Object",
            "string",
            lambda o: "{}/{}".format(
                str(o.get("involvedObject", {}).get("kind", "")).lower(),
                o.get("involvedObject", {}).get("name", ""),
            ),
        ),
        ("Message", "string", lambda o: o.get("message", "")),
    ],
}


def to_table(
    rt: ResourceType,
    version: str,
    items: list[Obj],
    resource_version: str,
    include_object: str = "PartialObjectMetadata",
) -> Obj:
    """A ``meta.k8s.io/v1`` Table for ``items``."""
    name_col = {
        "name": "Name",
        "type": "string",
        "format": "name",
        "priority": 0,
        "description": "Name must be unique within a namespace.",
    }
    if rt.is_crd and rt.printer_columns.get(version):
        specs = rt.printer_columns[version]
        columns = [name_col] + [
            {
                "name": c["name"],
                "type": c.get("type", "string"),
                "format": c.get("format", ""),
                "description": c.get("description", ""),
                "priority": c.get("priority", 0),
            }
            for c in specs
        ]

        def cells(obj: Obj) -> list[Any]:
            row: list[Any] = [obj["metadata"]["name"]]
            for spec in specs:
                value = json_path(obj, spec["jsonPath"])
                if spec.get("type") == "date":
                    value = human_age(value) if value else "<unknown>"
                row.append(value)
            return row
    else:
        extra = _BUILTIN.get(rt.key, [])
        columns = (
            [name_col]
            + [
                {"name": n, "type": t, "format": "", "description": "", "priority": 0}
                for n, t, _ in extra
            ]
            + [
                {
                    "name": "Age",
                    "type": "string",
                    "format": "",
                    "priority": 0,
                    "description": "Time since creation.",
                }
            ]
        )

        def cells(obj: Obj) -> list[Any]:
            return [
                obj["metadata"]["name"],
                *(f(obj) for _, _, f in extra),
                human_age(obj["metadata"].get("creationTimestamp")),
            ]

    rows = []
    for obj in items:
        row: Obj = {"cells": cells(obj)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }
