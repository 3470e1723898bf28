"""What the demo shows and keeps: terminal lines, the timeline, the live cluster view.

``say`` prints one line of the story; ``Timeline`` records every action, phase
change, Event and request with timestamps (``timeline.json``); ``ClusterWatcher``
prints the VoiceService's ``kubectl get`` columns and notable Events as the API
server's watches deliver them (it is the callback of two ``Informer``s).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .facts import printer_value
from .options import CRD_FILE

Obj = dict[str, Any]

COLUMN_WIDTHS = {"Ready": 18, "Phase": 10, "Tier": 8, "GPU-Mem": 7}
# Children whose Warnings tell the story (FailedScheduling, FailedCreate); not, e.g., the
# endpoints controller's harmless "already exists" race on a new Service.
WARNING_KINDS = ("Pod", "ReplicaSet", "Deployment")


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


# ---------------------------------------------------------------- timeline


@dataclass
class TimelineEntry:
    at: float  # seconds since the demo started
    wall: str  # UTC clock time
    kind: str  # phase | event | action | request
    text: str
    phase: str = ""


@dataclass
class Timeline:
    """Everything that happened, with timestamps; written to ``timeline.json``."""

    started: float = field(default_factory=time.monotonic)
    entries: list[TimelineEntry] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)

    def add(self, kind: str, text: str, phase: str = "") -> TimelineEntry:
        entry = TimelineEntry(
            at=round(time.monotonic() - self.started, 3),
            wall=time.strftime("%H:%M:%S", time.gmtime()),
            kind=kind,
            text=text,
            phase=phase,
        )
        self.entries.append(entry)
        return entry

    def last_phase_entry(self, phase: str) -> TimelineEntry | None:
        return next((e for e in reversed(self.entries) if e.phase == phase), None)

    def phases(self) -> list[str]:
        return [e.phase for e in self.entries if e.kind == "phase"]

    def to_json(self) -> str:
        return json.dumps(
            {
                "entries": [asdict(e) for e in self.entries],
                "phases": self.phases(),
                "latencies": [{"decision": d, "seconds": s} for d, s in self.latencies],
            },
            indent=2,
        )


def say(text: str = "") -> None:
    print(text, flush=True)


# ------------------------------------------------------------ the watcher


def printer_columns(crd_file: Path = CRD_FILE) -> list[Obj]:
    """The served version's printer columns as plain ``kubectl get`` shows them (no
    ``-o wide`` ones), less the dates (an Age column only churns)."""
    crd = yaml.safe_load(crd_file.read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("served"))
    return [
        c
        for c in version.get("additionalPrinterColumns") or []
        if c.get("type") != "date" and not c.get("priority")
    ]


class ClusterWatcher:
    """Prints the VoiceService's printer-column view and notable Events as they change.

    ``on_voiceservice`` and ``on_event`` are ``Informer`` callbacks (``kind``, object):
    called in the informer's task for every listed or watched change.
    """

    def __init__(self, name: str, timeline: Timeline) -> None:
        self.name, self.timeline = name, timeline
        self.columns = printer_columns()
        self.last_row: tuple[str, ...] | None = None
        self.last_phase = ""
        self.seen_events: set[str] = set()
        self.header_printed = False

    def row(self, vs: Obj) -> tuple[str, ...]:
        values = []
        for column in self.columns:
            value = printer_value(vs, column["jsonPath"])
            if column.get("type") == "number" and isinstance(value, int | float):
                value = f"{value:.2f}"
            values.append("" if value is None else str(value))
        return tuple(values)

    def on_voiceservice(self, kind: str, vs: Obj) -> None:
        if kind == "DELETED" or (vs.get("metadata") or {}).get("name") != self.name:
            return
        row = self.row(vs)
        if row != self.last_row and any(row):
            self.last_row = row
            self._print_row(row)
        status = vs.get("status") or {}
        phase = status.get("phase") or ""
        if phase and phase != self.last_phase:
            self.last_phase = phase
            tier = status.get("activeTier") or "?"
            self.timeline.add("phase", f"phase {phase} (traffic → {tier})", phase=phase)

    def on_event(self, kind: str, ev: Obj) -> None:
        """Events about the VoiceService, and Warnings about its children (FailedScheduling)."""
        uid = ev["metadata"].get("uid") or ev["metadata"]["name"]
        if kind == "DELETED" or uid in self.seen_events:
            return  # a repeated Event is the same object with a higher count
        self.seen_events.add(uid)
        about = ev.get("involvedObject") or {}
        ours = str(about.get("name") or "").startswith(self.name)
        child_warning = ours and about.get("kind") in WARNING_KINDS and ev.get("type") == "Warning"
        if about.get("kind") != "VoiceService" and not child_warning:
            return  # the controllers' Normal Events (ScalingReplicaSet, Scheduled, ...)
        who = f"{about.get('kind')}/{about.get('name')}"
        text = f"Event {ev.get('type')} {ev.get('reason')} on {who}: {ev.get('message')}"
        self.timeline.add("event", text)
        say(f"  {self._stamp()}  {text}")

    def _print_row(self, row: tuple[str, ...]) -> None:
        cells = [self.name, *row]
        widths = [max(len(self.name), 4), *(COLUMN_WIDTHS.get(c["name"], 10) for c in self.columns)]
        if not self.header_printed:
            self.header_printed = True
            names = ["NAME", *(c["name"].upper() for c in self.columns)]
            say(f"  {'':10}  " + _row(names, widths))
        say(f"  {self._stamp()}  " + _row(cells, widths))

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.timeline.started:7.1f}s]"
