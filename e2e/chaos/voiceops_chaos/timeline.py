"""One PNG timeline per scenario: phases, routing, every request, GPU memory.

Panels share the time axis (seconds since the load began): the VoiceService's phase
and the front Service's ready endpoints (their tier and count) as coloured bands;
each request's latency at its start, coloured by the engine that answered (failures
in red); the GPU memory the operator read (status.gpu.memoryUsedRatio). Dashed lines
mark the steps' actions.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.patches import Patch

from .evaluate import Answer, RoutingSample, StatusSample
from .runner import ScenarioResult

PHASE_COLOURS = {
    "Serving": "#4caf50",
    "Degraded": "#ffb300",
    "FailedOver": "#e53935",
    "Recovering": "#42a5f5",
    "Pending": "#9e9e9e",
    "": "#eeeeee",
}
TIER_COLOURS = {"gpu": "#4caf50", "fallback": "#e53935", "both": "#42a5f5", "none": "#616161"}
ENGINE_COLOURS = {"vits": "#1e88e5", "espeak": "#fb8c00"}
MARKERS = {"plain": "o", "openai": "^", "spike": "."}


def _bands(changes: list[tuple[float, str]], end: float) -> list[tuple[float, float, str]]:
    """(start, end, label) spans from (time, label) changes; a label repeated goes on."""
    spans: list[tuple[float, float, str]] = []
    for n, (at, label) in enumerate(changes):
        until = changes[n + 1][0] if n + 1 < len(changes) else end
        if until <= at:
            continue
        if spans and spans[-1][2] == label and spans[-1][1] >= at:
            spans[-1] = (spans[-1][0], until, label)
        else:
            spans.append((at, until, label))
    return spans


def _phase_changes(history: list[StatusSample], t0: float) -> list[tuple[float, str]]:
    return [(max(s.at - t0, 0.0), s.phase) for s in history]


def _routing_changes(history: list[RoutingSample], t0: float) -> list[tuple[float, str]]:
    """(time, "tier count") changes: a scale-out shows as "gpu 1" → "gpu 2"."""
    out = []
    for r in history:
        tiers = set(r.endpoint_tiers) - {"?"}
        label = "both" if tiers == {"gpu", "fallback"} else (next(iter(tiers)) if tiers else "none")
        out.append((max(r.at - t0, 0.0), f"{label} {len(r.endpoint_ips)}"))
    return out


def draw(result: ScenarioResult, path: Path) -> None:
    t0 = result.started
    end = max(result.ended - t0, 1.0)
    fig, axes = plt.subplots(
        4, 1, figsize=(10, 6.2), dpi=72, sharex=True,
        gridspec_kw={"height_ratios": [0.5, 0.5, 3, 1.2]},
    )  # fmt: skip
    phase_ax, route_ax, req_ax, mem_ax = axes
    for ax, spans, colours, title in (
        (phase_ax, _bands(_phase_changes(result.status_history, t0), end), PHASE_COLOURS, "phase"),
        (route_ax, _bands(_routing_changes(result.routing_history, t0), end), TIER_COLOURS,
         "endpoints"),
    ):  # fmt: skip
        for start, stop, label in spans:
            ax.axvspan(start, stop, color=colours.get(label.split(" ")[0], "#bdbdbd"), lw=0)
            ax.axvline(start, color="white", lw=1.5)  # bands of one colour stay apart
            if stop - start > end * 0.06:
                ax.text((start + stop) / 2, 0.5, label, ha="center", va="center", fontsize=8)
        ax.set_yticks([])
        ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    _requests(req_ax, result.answers, t0)
    _memory(mem_ax, result.status_history, t0, end)
    for step in result.steps:
        for ax in axes:
            ax.axvline(step.action_at - t0, color="black", ls="--", lw=0.8)
        label = " " + step.name.split(": ", 1)[-1]
        where = req_ax.get_xaxis_transform()
        req_ax.text(step.action_at - t0, 1.0, label, transform=where, fontsize=7, va="top",
                    rotation=90)  # fmt: skip
    mem_ax.set_xlim(0, end)
    mem_ax.set_xlabel("seconds since the load began")
    fig.suptitle(f"{result.id}: {result.title} ({result.status})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _requests(ax: plt.Axes, answers: list[Answer], t0: float) -> None:
    for client, marker in MARKERS.items():
        mine = [a for a in answers if a.client == client]
        if not mine:
            continue
        for engine, colour in ENGINE_COLOURS.items():
            hits = [a for a in mine if a.ok and a.engine == engine]
            if hits:
                ax.scatter([a.started - t0 for a in hits], [a.seconds for a in hits], s=9,
                           marker=marker, color=colour, alpha=0.6, lw=0)  # fmt: skip
        other = [a for a in mine if a.ok and a.engine not in ENGINE_COLOURS]
        if other:
            ax.scatter([a.started - t0 for a in other], [a.seconds for a in other], s=9,
                       marker=marker, color="#8e24aa", alpha=0.6, lw=0)  # fmt: skip
        throttled = [a for a in mine if a.status == 429]
        if throttled:
            ax.scatter([a.started - t0 for a in throttled], [a.seconds for a in throttled], s=12,
                       marker=marker, color="#9e9e9e", alpha=0.5, lw=0)  # fmt: skip
        failed = [a for a in mine if not a.ok and a.status != 429]
        if failed:
            ax.scatter([a.started - t0 for a in failed], [max(a.seconds, 1e-3) for a in failed],
                       s=28, marker="x", color="#d50000")  # fmt: skip
    ax.set_yscale("log")
    ax.set_ylabel("latency (s)")
    legend = [Patch(color=c, label=f"answered by {e}") for e, c in ENGINE_COLOURS.items()]
    legend += [Patch(color="#9e9e9e", label="429"), Patch(color="#d50000", label="failed")]
    ax.legend(handles=legend, fontsize=7, loc="upper left", ncol=4)
    ax.grid(alpha=0.3)


def _memory(ax: plt.Axes, history: list[StatusSample], t0: float, end: float) -> None:
    points = [(max(s.at - t0, 0.0), s.memory_ratio) for s in history if s.memory_ratio is not None]
    if points:
        xs = [p[0] for p in points] + [end]
        ys = [p[1] for p in points] + [points[-1][1]]
        ax.step(xs, ys, where="post", color="#6d4c41")
    for level, label in ((0.90, "high"), (0.97, "critical")):
        ax.axhline(level, color="#bdbdbd", lw=0.8, ls=":")
        ax.text(0, level, label, fontsize=6, va="bottom", color="#757575")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("GPU memory", fontsize=8)
