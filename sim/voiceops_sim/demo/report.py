"""What the demo shows and keeps: terminal lines, the timeline, the live cluster view.

``say`` prints one line of the story; ``Timeline`` records every action, phase
change, Event and request with timestamps (``timeline.json``); ``ClusterWatcher``
prints the VoiceService's ``kubectl get`` columns and new Events as they change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..apiserver import KubeApiEmulator, load_yaml_documents
from ..store import WatchEvent
from ..tables import json_path
from .options import CRD_FILE

Obj = dict[str, Any]

COLUMN_WIDTHS = {"Ready": 18, "Phase": 10, "Tier": 8, "GPU-Mem": 7}


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


class ClusterWatcher:
    """Prints the VoiceService's printer-column view and new Events as they change."""

    def __init__(self, emu: KubeApiEmulator, ns: str, name: str, timeline: Timeline) -> None:
        self.emu, self.ns, self.name, self.timeline = emu, ns, name, timeline
        crd = load_yaml_documents(CRD_FILE)[0]
        version = next(v for v in crd["spec"]["versions"] if v.get("served"))
        self.columns = [
            c for c in version.get("additionalPrinterColumns") or [] if c.get("type") != "date"
        ]
        self.last_row: tuple[str, ...] | None = None
        self.last_phase = ""
        self.seen_events: set[str] = set()
        self.header_printed = False
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self.emu.subscribe(self._on_change)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def row(self, vs: Obj) -> tuple[str, ...]:
        values = []
        for column in self.columns:
            value = json_path(vs, column["jsonPath"])
            if column.get("type") == "number" and isinstance(value, int | float):
                value = f"{value:.2f}"
            values.append("" if value is None else str(value))
        return tuple(values)

    def _on_change(self, event: WatchEvent) -> None:
        # Called synchronously on every committed change: cheap checks only.
        vs = self.emu.get("voiceservices", self.name, self.ns)
        if vs is not None:
            row = self.row(vs)
            if row != self.last_row and any(row):
                self.last_row = row
                self._print_row(row)
            phase = ((vs.get("status") or {}).get("phase")) or ""
            if phase and phase != self.last_phase:
                self.last_phase = phase
                tier = (vs.get("status") or {}).get("activeTier") or "?"
                self.timeline.add("phase", f"phase {phase} (traffic → {tier})", phase=phase)
        for ev in self.emu.list("events", self.ns):
            uid = ev["metadata"].get("uid") or ev["metadata"]["name"]
            if uid in self.seen_events:
                continue
            self.seen_events.add(uid)
            about = ev.get("involvedObject") or {}
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
