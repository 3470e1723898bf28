"""Resource types the emulator serves: the built-ins voiceops needs, plus CRDs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One served resource (all versions of a CRD share one store)."""

    group: str
    versions: tuple[str, ...]
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[str, ...] = ()
    # openAPIV3Schema per version (CRDs only): drives defaults, pruning and validation.
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False, hash=False)
    storage_version: str = ""
    is_crd: bool = False
    # additionalPrinterColumns per version (CRDs only): the columns of `kubectl get`.
    printer_columns: dict[str, list[dict[str, Any]]] = field(
        default_factory=dict, compare=False, hash=False
    )

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def preferred_version(self) -> str:
        return self.storage_version or self.versions[0]

    def api_version(self, version: str | None = None) -> str:
        ver = version or self.preferred_version
        return f"{self.group}/{ver}" if self.group else ver

    def singular_name(self) -> str:
        return self.singular or self.kind.lower()


def _builtin(
    group: str,
    version: str,
    plural: str,
    kind: str,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    subresources: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
) -> ResourceType:
    return ResourceType(
        group=group,
        versions=(version,),
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        singular=kind.lower(),
        short_names=short,
        categories=categories,
        subresources=subresources,
    )


def builtin_resources() -> list[ResourceType]:
    """The built-in resources served by the emulator (a subset of a real cluster)."""
    return [
        _builtin("", "v1", "namespaces", "Namespace", False, ("ns",), ("status", "finalize")),
        _builtin("", "v1", "pods", "Pod", True, ("po",), ("status", "log"), ("all",)),
        _builtin("", "v1", "services", "Service", True, ("svc",), ("status",), ("all",)),
        _builtin("", "v1", "events", "Event", True, ("ev",)),
        _builtin("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
        _builtin("", "v1", "secrets", "Secret", True),
        _builtin("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
        _builtin("", "v1", "endpoints", "Endpoints", True, ("ep",)),
        _builtin("", "v1", "nodes", "Node", False, ("no",), ("status",)),
        _builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            True,
            ("deploy",),
            ("status", "scale"),
            ("all",),
        ),
        _builtin("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("status", "scale")),
        _builtin(
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            True,
            ("hpa",),
            ("status",),
            ("all",),
        ),
        _builtin(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            True,
            ("pdb",),
            ("status",),
        ),
        _builtin(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "NetworkPolicy",
            True,
            ("netpol",),
        ),
        _builtin("events.k8s.io", "v1", "events", "Event", True, ("ev",)),
        _builtin("coordination.k8s.io", "v1", "leases", "Lease", True),
        _builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            False,
            ("crd", "crds"),
            ("status",),
        ),
    ]


class CrdError(ValueError):
    """A CustomResourceDefinition the emulator cannot serve."""


def resource_from_crd(crd: dict[str, Any]) -> ResourceType:
    """Build the served resource type from a CustomResourceDefinition body."""
    try:
        spec = crd["spec"]
        names = spec["names"]
        group = spec["group"]
        served = [v for v in spec["versions"] if v.get("served", True)]
    except (KeyError, TypeError) as exc:
        raise CrdError(f"CRD is missing spec.{exc}") from exc
    if not served:
        raise CrdError("CRD spec.versions: at least one version must be served")
    storage = next((v["name"] for v in served if v.get("storage")), served[0]["name"])
    subresources: set[str] = set()
    schemas: dict[str, dict[str, Any]] = {}
    columns: dict[str, list[dict[str, Any]]] = {}
    for ver in served:
        subs = ver.get("subresources") or {}
        if "status" in subs:
            subresources.add("status")
        if "scale" in subs:
            subresources.add("scale")
        schema = (ver.get("schema") or {}).get("openAPIV3Schema")
        if schema:
            schemas[ver["name"]] = schema
        columns[ver["name"]] = list(ver.get("additionalPrinterColumns") or [])
    expected = f"{names['plural']}.{group}"
    if crd.get("metadata", {}).get("name") not in (None, expected):
        raise CrdError(f"metadata.name: must be spec.names.plural+'.'+spec.group: {expected!r}")
    return ResourceType(
        group=group,
        versions=tuple(v["name"] for v in served),
        plural=names["plural"],
        kind=names["kind"],
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        singular=names.get("singular") or names["kind"].lower(),
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        subresources=tuple(sorted(subresources)),
        schemas=schemas,
        printer_columns=columns,
        storage_version=storage,
        is_crd=True,
    )
