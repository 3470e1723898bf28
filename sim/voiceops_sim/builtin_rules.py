"""Defaulting and validation the real API server applies to built-in kinds.

A subset: the defaults a client sees echoed back on the objects voiceops
writes (Deployment, Pod template, Service, HPA, Namespace), so an operator
that compares desired with live state meets them here as on a real cluster,
and the validation rules most likely to catch a wrong object (names, label
values, Deployment selector vs. template labels and its immutability, Service
ports, HPA replica bounds, PDB minAvailable/maxUnavailable, NetworkPolicy
peers and ports). NetworkPolicies are stored, not enforced: no traffic is cut.
"""

from __future__ import annotations

import base64
import copy
import re
from typing import TYPE_CHECKING, Any

from .resources import ResourceType
from .schema import Cause
from .selectors import labels_match, selector_from_label_selector_object

if TYPE_CHECKING:
    from .store import ObjectStore

Obj = dict[str, Any]

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def validate_metadata(rt: ResourceType, obj: Obj) -> list[Cause]:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    causes: list[Cause] = []
    if rt.key in (("", "namespaces"), ("", "services")):
        pattern, limit, what = (
            (_DNS_LABEL, 63, "RFC 1123 label")
            if rt.plural == "namespaces"
            else (_DNS_1035, 63, "RFC 1035 label")
        )
    else:
        pattern, limit, what = _DNS_SUBDOMAIN, 253, "RFC 1123 subdomain"
    if name and (len(name) > limit or not pattern.match(name)):
        causes.append(
            (
                "metadata.name",
                f'Invalid value: "{name}": a lowercase {what} must '
                f"consist of lower case alphanumeric characters, '-' or '.' and be at "
                f"most {limit} characters",
            )
        )
    for key, value in (meta.get("labels") or {}).items():
        causes.extend(_label_causes("metadata.labels", key, value))
    for key, value in (meta.get("annotations") or {}).items():
        if not isinstance(value, str):
            causes.append((f"metadata.annotations.{key}", "Invalid value: must be a string"))
    return causes


def _label_causes(field: str, key: str, value: Any) -> list[Cause]:
    causes: list[Cause] = []
    name = key.rsplit("/", 1)[-1]
    if len(name) > 63 or not _LABEL_NAME.match(name):
        causes.append(
            (
                field,
                f'Invalid value: "{key}": name part must consist of '
                "alphanumeric characters, '-', '_' or '.', at most 63 characters",
            )
        )
    if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
        causes.append(
            (
                field,
                f'Invalid value: "{value}": a valid label must be an empty '
                "string or consist of alphanumeric characters, '-', '_' or '.', "
                "at most 63 characters",
            )
        )
    return causes


# ------------------------------------------------------------------ defaults
def _default_probe(probe: Obj) -> None:
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("scheme", "HTTP")


def _default_container(container: Obj) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = container.get("image", "")
    tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
    latest = image.endswith(":latest") or not tagged
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        if isinstance(container.get(probe_name), dict):
            _default_probe(container[probe_name])
    for env in container.get("env") or []:
        field_ref = (env.get("valueFrom") or {}).get("fieldRef")
        if isinstance(field_ref, dict):
            field_ref.setdefault("apiVersion", "v1")


def default_pod_spec(spec: Obj) -> None:
    """Defaults of ``PodSpec`` (also used for Deployment pod templates)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                _default_container(container)


def apply_defaults(store: ObjectStore, rt: ResourceType, obj: Obj, old: Obj | None) -> Obj:
    obj = copy.deepcopy(obj)
    spec = obj.get("spec")
    if rt.key == ("", "namespaces"):
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"][
            "name"
        ]
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        if old is None:
            obj["status"] = {"phase": "Active"}
    elif rt.key == ("", "pods"):
        if isinstance(spec, dict):
            default_pod_spec(spec)
            spec.setdefault("enableServiceLinks", True)
            spec.setdefault("priority", 0)
        if old is None:
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec or {})}
    elif rt.key == ("apps", "deployments") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
        template_spec = (spec.get("template") or {}).get("spec")
        if isinstance(template_spec, dict):
            default_pod_spec(template_spec)
    elif rt.key == ("", "services") and isinstance(spec, dict):
        _default_service(store, spec, old)
        if old is None:
            obj["status"] = {"loadBalancer": {}}
    elif rt.key == ("", "secrets"):
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict):  # write-only: folded into base64 data
            data = obj.setdefault("data", {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
    elif rt.key == ("networking.k8s.io", "networkpolicies") and isinstance(spec, dict):
        _default_network_policy(spec)
    elif rt.key == ("autoscaling", "horizontalpodautoscalers") and isinstance(spec, dict):
        spec.setdefault("minReplicas", 1)
        if not spec.get("metrics"):
            spec["metrics"] = [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ]
    return obj


def _default_network_policy(spec: Obj) -> None:
    # As kube-apiserver: policyTypes from the rules present, ports default to TCP.
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress", *(["Egress"] if spec.get("egress") else [])]
    for direction in ("ingress", "egress"):
        for rule in spec.get(direction) or []:
            for port in (rule or {}).get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


def _default_service(store: ObjectStore, spec: Obj, old: Obj | None) -> None:
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    old_spec = (old or {}).get("spec") or {}
    if "clusterIP" not in spec:
        spec["clusterIP"] = old_spec.get("clusterIP") or store.allocate_cluster_ip()
    if spec["clusterIP"] != "None":
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def _qos_class(spec: Obj) -> str:
    containers = spec.get("containers") or []
    resources = [c.get("resources") or {} for c in containers if isinstance(c, dict)]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k)
        and (r.get("requests") or r.get("limits") or {}).get(k) == (r.get("limits") or {}).get(k)
        for r in resources
        for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


# ---------------------------------------------------------------- validation
def validate(rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec")
    if rt.key == ("apps", "deployments"):
        return _validate_deployment(spec, (old or {}).get("spec"))
    if rt.key == ("", "services"):
        return _validate_service(spec or {}, (old or {}).get("spec"))
    if rt.key == ("", "pods"):
        return _validate_pod_spec(spec, "spec")
    if rt.key == ("autoscaling", "horizontalpodautoscalers"):
        return _validate_hpa(spec or {})
    if rt.key == ("networking.k8s.io", "networkpolicies"):
        return _validate_network_policy(spec)
    if rt.key == ("policy", "poddisruptionbudgets"):
        spec = spec or {}
        if "minAvailable" in spec and "maxUnavailable" in spec:
            return [("spec", "Invalid value: minAvailable and maxUnavailable cannot be both set")]
    return []


def _validate_pod_spec(spec: Any, field: str) -> list[Cause]:
    if not isinstance(spec, dict):
        return [(field, "Required value")]
    containers = spec.get("containers")
    if not containers:
        return [(f"{field}.containers", "Required value")]
    causes: list[Cause] = []
    seen: set[str] = set()
    for number, container in enumerate(containers):
        where = f"{field}.containers[{number}]"
        if not isinstance(container, dict):
            causes.append((where, "Invalid value: must be an object"))
            continue
        name = container.get("name")
        if not name:
            causes.append((f"{where}.name", "Required value"))
        elif name in seen:
            causes.append((f"{where}.name", f'Duplicate value: "{name}"'))
        else:
            seen.add(name)
        if not container.get("image"):
            causes.append((f"{where}.image", "Required value"))
        for pnum, port in enumerate(container.get("ports") or []):
            value = port.get("containerPort")
            if not isinstance(value, int) or not 0 < value < 65536:
                causes.append(
                    (
                        f"{where}.ports[{pnum}].containerPort",
                        f"Invalid value: {value}: must be between 1 and 65535, inclusive",
                    )
                )
    return causes


def _validate_deployment(spec: Any, old_spec: Any) -> list[Cause]:
    if not isinstance(spec, dict):
        return [("spec", "Required value")]
    causes: list[Cause] = []
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 0:
        causes.append(
            ("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")
        )
    selector = spec.get("selector")
    template = spec.get("template") or {}
    if not selector:
        causes.append(("spec.selector", "Required value"))
    else:
        reqs = selector_from_label_selector_object(selector)
        if not reqs:
            causes.append(
                ("spec.selector", "Invalid value: empty selector is invalid for deployment")
            )
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not labels_match(reqs, labels):
            causes.append(
                (
                    "spec.template.metadata.labels",
                    f"Invalid value: {labels}: `selector` does not match template `labels`",
                )
            )
        if isinstance(old_spec, dict) and old_spec.get("selector") not in (None, selector):
            causes.append(("spec.selector", f"Invalid value: {selector}: field is immutable"))
    causes += _validate_pod_spec(template.get("spec"), "spec.template.spec")
    if template.get("spec", {}).get("restartPolicy", "Always") != "Always":
        causes.append(
            ("spec.template.spec.restartPolicy", 'Unsupported value: supported values: "Always"')
        )
    return causes


def _validate_service(spec: Obj, old_spec: Any) -> list[Cause]:
    causes: list[Cause] = []
    ports = spec.get("ports") or []
    if (
        spec.get("type", "ClusterIP") != "ExternalName"
        and not ports
        and spec.get("clusterIP") != "None"
    ):
        causes.append(("spec.ports", "Required value"))
    names = [p.get("name") for p in ports]
    for number, port in enumerate(ports):
        value = port.get("port")
        if not isinstance(value, int) or not 0 < value < 65536:
            causes.append(
                (
                    f"spec.ports[{number}].port",
                    f"Invalid value: {value}: must be between 1 and 65535, inclusive",
                )
            )
        if len(ports) > 1 and not port.get("name"):
            causes.append((f"spec.ports[{number}].name", "Required value"))
    if len([n for n in names if n]) != len({n for n in names if n}):
        causes.append(("spec.ports", "Duplicate value: port names must be unique"))
    if (
        isinstance(old_spec, dict)
        and old_spec.get("clusterIP")
        and spec.get("clusterIP") != old_spec["clusterIP"]
    ):
        causes.append(
            ("spec.clusterIP", f'Invalid value: "{spec.get("clusterIP")}": field is immutable')
        )
    return causes


def _validate_hpa(spec: Obj) -> list[Cause]:
    causes: list[Cause] = []
    ref = spec.get("scaleTargetRef") or {}
    if not ref.get("kind") or not ref.get("name"):
        causes.append(("spec.scaleTargetRef", "Required value: kind and name are required"))
    low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
    if not isinstance(high, int) or high < 1:
        causes.append(
            ("spec.maxReplicas", f"Invalid value: {high}: must be greater than or equal to 1")
        )
    elif isinstance(low, int) and low > high:
        causes.append(
            ("spec.minReplicas", f"Invalid value: {low}: must be less than or equal to maxReplicas")
        )
    if isinstance(low, int) and low < 1:
        causes.append(
            ("spec.minReplicas", f"Invalid value: {low}: must be greater than or equal to 1")
        )
    return causes


_POLICY_TYPES = ("Ingress", "Egress")
_PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")
_PEERS = {"ingress": "from", "egress": "to"}


def _validate_network_policy(spec: Any) -> list[Cause]:
    if not isinstance(spec, dict):
        return [("spec", "Required value")]
    causes: list[Cause] = []
    if not isinstance(spec.get("podSelector"), dict):
        causes.append(("spec.podSelector", "Required value"))
    for number, kind in enumerate(spec.get("policyTypes") or []):
        if kind not in _POLICY_TYPES:
            causes.append(
                (
                    f"spec.policyTypes[{number}]",
                    f'Unsupported value: "{kind}": supported values: "Ingress", "Egress"',
                )
            )
    for direction, peers_key in _PEERS.items():
        for rnum, rule in enumerate(spec.get(direction) or []):
            where = f"spec.{direction}[{rnum}]"
            for pnum, port in enumerate((rule or {}).get("ports") or []):
                protocol = port.get("protocol", "TCP")
                if protocol not in _PORT_PROTOCOLS:
                    causes.append(
                        (
                            f"{where}.ports[{pnum}].protocol",
                            f'Unsupported value: "{protocol}": supported values: '
                            '"SCTP", "TCP", "UDP"',
                        )
                    )
            for pnum, peer in enumerate((rule or {}).get(peers_key) or []):
                causes.extend(_network_policy_peer_causes(peer, f"{where}.{peers_key}[{pnum}]"))
    return causes


def _network_policy_peer_causes(peer: Any, where: str) -> list[Cause]:
    if not isinstance(peer, dict):
        return [(where, "Invalid value: must be an object")]
    selectors = [k for k in ("podSelector", "namespaceSelector") if peer.get(k) is not None]
    if peer.get("ipBlock") is None:
        if not selectors:
            return [(where, "Required value: must specify a peer")]
        return []
    if selectors:
        return [(where, "Forbidden: may not specify more than 1 peer type")]
    if not peer["ipBlock"].get("cidr"):
        return [(f"{where}.ipBlock.cidr", "Required value")]
    return []
