"""Pure helpers: WAV duration and loudness, facts about Kubernetes objects, plain tables.

No I/O and no state: they read what they are given and return text or numbers.
"""

from __future__ import annotations

import array
import io
import math
import re
import sys
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voiceops_contract import pod as pod_contract

Obj = dict[str, Any]


@dataclass(frozen=True)
class WavFacts:
    seconds: float
    sample_rate: int
    rms: float  # of int16 samples, 0..32767


def wav_facts(data: bytes) -> WavFacts:
    """Duration and loudness of a 16-bit mono/stereo WAV; ValueError if it is not one."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            if wav.getsampwidth() != 2:
                raise ValueError(f"expected 16-bit samples, got {8 * wav.getsampwidth()}-bit")
            frames = wav.readframes(wav.getnframes())
            rate = wav.getframerate()
            count = wav.getnframes()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a WAV file: {exc}") from None
    samples = array.array("h")
    samples.frombytes(frames[: len(frames) - len(frames) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    rms = math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0
    return WavFacts(seconds=count / rate if rate else 0.0, sample_rate=rate, rms=rms)


def printer_value(obj: Obj, json_path: str) -> Any:
    """What a CRD printer column's ``jsonPath`` selects, for the paths our CRD uses.

    ``.a.b.c`` walks fields; ``.list[?(@.key=="value")].field`` picks the first list
    item with that key's value. None when something on the way is missing.
    """
    value: Any = obj
    for step in re.findall(r'\.(\w[\w-]*)(?:\[\?\(@\.(\w+)=="([^"]*)"\)\])?', json_path):
        field, key, wanted = step
        value = value.get(field) if isinstance(value, dict) else None
        if key:
            items = value if isinstance(value, list) else []
            value = next((i for i in items if isinstance(i, dict) and i.get(key) == wanted), None)
        if value is None:
            return None
    return value


def pod_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_state(pod: Obj) -> str:
    """A ``kubectl get pods`` STATUS-like word."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return str(waiting["reason"])
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return str(cond.get("reason") or "Pending")
    return str(status.get("phase") or "Pending")


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def container_port(pod: Obj, name: str = "http") -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name:
                return int(port["containerPort"])
    return pod_contract.DEFAULT_PORT


def describe(plural: str, obj: Obj) -> str:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if plural == "deployments":
        return f"ready {status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}"
    if plural == "services":
        selector = ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items())
        ports = ",".join(str(p.get("port")) for p in spec.get("ports") or [])
        return f"port {ports}  selector {selector}"
    if plural == "horizontalpodautoscalers":
        return f"min {spec.get('minReplicas')} max {spec.get('maxReplicas')}"
    if plural == "poddisruptionbudgets":
        return "  ".join(f"{k} {spec[k]}" for k in ("minAvailable", "maxUnavailable") if k in spec)
    if plural == "networkpolicies":
        ports = ",".join(
            f"{p.get('port')}/{p.get('protocol', 'TCP')}"
            for rule in spec.get("ingress") or []
            for p in rule.get("ports") or []
        )
        sources = sum(len(rule.get("from") or []) for rule in spec.get("ingress") or [])
        egress = [r for r in spec.get("egress") or [] if isinstance(r, dict)]
        origin = f"{sources} peers" if sources else "any source"
        return f"ingress {ports} from {origin}  egress {'any' if {} in egress else 'DNS only'}"
    return ""
