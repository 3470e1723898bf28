"""The report of one run: ``report.json``, ``report.md`` and a timeline PNG per scenario.

``goals()`` is pure: it reads the scenario results against the issue's goals
(predictive faults lose nothing over enough requests, crash faults lose at most the
raw client's requests in flight, traffic moves within the window plus a second, no
scenario leaves anything behind).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .evaluate import CLIENT_KINDS, failure_cause, percentile
from .runner import ScenarioResult

PREDICTIVE_REQUESTS_GOAL = 1000
FAILED_REQUESTS_SHOWN = 100  # per scenario, in report.json


@dataclass(frozen=True)
class RunInfo:
    target: str
    started: str  # wall clock, ISO 8601
    duration_seconds: float  # the --duration setting
    clients: int
    rate: float
    window_seconds: float | None  # spec.failover.windowSeconds
    notes: list[str] = field(default_factory=list)
    teardown_leftovers: list[str] | None = None  # None: not checked (not our cluster)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def fault_to_phase(result: ScenarioResult) -> list[dict[str, Any]]:
    return [
        {"step": t.name, "phase": phase, "seconds": _round(seconds)}
        for t in result.steps
        for phase, seconds in t.phases_seconds.items()
    ]


def traffic_moved(result: ScenarioResult) -> list[dict[str, Any]]:
    return [
        {
            "step": t.name,
            "counts_for_goal": t.traffic_goal,
            "endpoints_seconds": _round(t.traffic_moved_seconds),
            "clients_seconds": {k: _round(v) for k, v in t.clients_moved_seconds.items()},
        }
        for t in result.steps
        if t.traffic_moved_seconds is not None or t.clients_moved_seconds
    ]


def scenario_json(result: ScenarioResult, timeline: str | None) -> dict[str, Any]:
    return {
        "id": result.id,
        "title": result.title,
        "target": result.target,
        "budget": result.budget,
        "fault_class": result.fault_class,
        "status": result.status,
        "problems": result.problems,
        "notes": result.notes,
        "seconds": _round(result.ended - result.started if result.ended else None, 1),
        "clients": {
            client: {
                "requests": s.requests,
                "failures": s.failures,
                "failures_by_cause": s.causes,
                "p50_seconds": _round(s.p50_seconds),
                "p99_seconds": _round(s.p99_seconds),
                "answered_by": s.engines,
            }
            for client, s in result.summary.items()
        },
        "fault_to_phase": fault_to_phase(result),
        "fault_to_traffic_moved": traffic_moved(result),
        "time_to_recover_seconds": _round(result.recovery_seconds),
        "steps": [
            {
                "step": t.name,
                "done": t.done,
                "expectations": t.expectations,
            }
            for t in result.steps
        ],
        "disruptions": [
            {
                "at_seconds": round(d.at - result.started, 3),
                "seen_late_by_up_to": d.slack,
                "traffic_moved_at_seconds": None
                if d.exposed_until is None
                else round(d.exposed_until - result.started, 3),
            }
            for d in result.disruptions
        ],
        "failed_requests": [
            {
                "at_seconds": round(a.started - result.started, 3),
                "client": a.client,
                "seconds": round(a.seconds, 3),
                "cause": failure_cause(a),
                "error": a.error[:200],
            }
            for a in result.answers
            if not a.ok and a.status != 429
        ][:FAILED_REQUESTS_SHOWN],
        "leftovers": result.leftovers,
        "timeline": timeline,
    }


def goals(
    results: Sequence[ScenarioResult],
    window_seconds: float | None,
    teardown_leftovers: list[str] | None,
) -> dict[str, Any]:
    """The issue's goals, measured over the scenarios that ran (skipped ones do not count)."""
    ran = [r for r in results if r.status != "skipped"]
    predictive = [r for r in ran if r.fault_class == "predictive"]
    crash = [r for r in ran if r.fault_class == "crash"]
    requests = {k: sum(r.summary[k].requests for r in predictive if k in r.summary)
                for k in CLIENT_KINDS}  # fmt: skip
    failures = {k: sum(r.summary[k].failures for r in predictive if k in r.summary)
                for k in CLIENT_KINDS}  # fmt: skip
    moved = [t.traffic_moved_seconds for r in ran for t in r.steps
             if t.traffic_goal and t.traffic_moved_seconds is not None]  # fmt: skip
    # A fault whose traffic never moved counts as missing the goal, not as absent.
    never = [f"{r.id}: {t.name}" for r in ran for t in r.steps
             if t.traffic_goal and t.traffic_moved_seconds is None]  # fmt: skip
    p95 = percentile(moved, 0.95)
    limit = None if window_seconds is None else window_seconds + 1.0
    leftovers = [f"{r.id}: {x}" for r in ran for x in r.leftovers] + (teardown_leftovers or [])
    return {
        "predictive": {
            "scenarios": [r.id for r in predictive],
            "requests": requests,
            "failures": failures,
            "requests_goal_per_client_kind": PREDICTIVE_REQUESTS_GOAL,
            "met": bool(predictive)
            and all(v == 0 for v in failures.values())
            and all(v >= PREDICTIVE_REQUESTS_GOAL for v in requests.values()),
        },
        "crash": {
            "scenarios": {
                r.id: {
                    "plain_failures": r.summary["plain"].failures if "plain" in r.summary else 0,
                    "plain_in_flight_at_death": r.crash_losses.in_flight if r.crash_losses else 0,
                    "plain_sent_to_dead_pod": r.crash_losses.sent_to_dead_pod
                    if r.crash_losses
                    else 0,
                    "openai_failures": r.summary["openai"].failures if "openai" in r.summary else 0,
                    "within_budget": r.verdict.ok,
                }
                for r in crash
            },
            # The budget the runner asserts: what the dead pod cost (in flight, or sent
            # before the front Service's endpoints had moved to a live pod).
            "met": bool(crash) and all(r.verdict.ok for r in crash),
            # The goal as the issue words it: only the requests in flight.
            "met_in_flight_only": bool(crash)
            and all(
                r.verdict.ok and (r.crash_losses is None or r.crash_losses.sent_to_dead_pod == 0)
                for r in crash
            ),
        },
        "traffic_moved": {
            "measurements": len(moved),
            "p95_seconds": _round(p95),
            "max_seconds": _round(max(moved, default=None)),
            "never_moved": never,
            "limit_seconds": limit,
            "met": p95 is not None and limit is not None and p95 <= limit and not never,
        },
        "leftovers": {
            "found": leftovers,
            "teardown_checked": teardown_leftovers is not None,
            "met": not leftovers,
        },
    }


def _cell(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(info: RunInfo, results: Sequence[ScenarioResult], goal: dict[str, Any]) -> str:
    lines = [
        "# Chaos report",
        "",
        f"Target **{info.target}**, started {info.started}; load: {info.clients} raw + "
        f"{info.clients} openai client(s)"
        + (f", each at most {info.rate:g} requests/s" if info.rate else ", back to back")
        + f"; at least {info.duration_seconds:g} s of load per scenario"
        + (f"; failover window {info.window_seconds:g} s." if info.window_seconds else "."),
        "",
        "| scenario | result | requests raw/openai | failed raw | failed openai | "
        "p50/p99 s (raw) | fault → phase (s) | fault → traffic moved (s) | recover (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.status == "skipped":
            lines.append(f"| {r.id} | skipped: {'; '.join(r.problems)} | | | | | | | |")
            continue
        plain, openai = r.summary.get("plain"), r.summary.get("openai")

        def failed(s: Any) -> str:
            if s is None or not s.failures:
                return "0"
            causes = ", ".join(f"{n} {cause}" for cause, n in sorted(s.causes.items()))
            return f"{s.failures} ({causes})"

        phases = ", ".join(f"{p['phase']} {_cell(p['seconds'], 1)}" for p in fault_to_phase(r))
        moved = ", ".join(_cell(m["endpoints_seconds"]) for m in traffic_moved(r))
        extra = ""
        if "spike" in r.summary:
            spike = r.summary["spike"]
            extra = f" + spike {spike.requests} ({failed(spike)})"
        lines.append(
            f"| {r.id} | {'✅ passed' if r.status == 'passed' else '❌ failed'} | "
            f"{plain.requests if plain else 0}/{openai.requests if openai else 0}{extra} | "
            f"{failed(plain)} | {failed(openai)} | "
            f"{_cell(plain.p50_seconds if plain else None)}/"
            f"{_cell(plain.p99_seconds if plain else None)} | {phases or '–'} | "
            f"{moved or '–'} | {_cell(r.recovery_seconds, 1)} |"
        )
    lines += ["", "## Goals", ""]
    pred = goal["predictive"]
    lines.append(
        f"* Predictive faults ({', '.join(pred['scenarios']) or 'none ran'}): "
        f"{pred['requests']['plain']} raw / {pred['requests']['openai']} openai requests, "
        f"{pred['failures']['plain']} / {pred['failures']['openai']} failed "
        f"(goal: 0 failed over ≥ {pred['requests_goal_per_client_kind']} per kind): "
        f"{'met' if pred['met'] else 'NOT met'}."
    )
    crash = goal["crash"]
    per = "; ".join(
        f"{k}: raw {v['plain_failures']} ({v['plain_in_flight_at_death']} in flight when the "
        f"pod died, {v['plain_sent_to_dead_pod']} sent before traffic moved), "
        f"openai {v['openai_failures']}{'' if v['within_budget'] else ' (over budget)'}"
        for k, v in crash["scenarios"].items()
    )
    lines.append(
        f"* Crash faults ({per or 'none ran'}). Budget asserted, raw client at most the "
        f"requests in flight on the dead pod or sent before traffic moved, openai none: "
        f"{'met' if crash['met'] else 'NOT met'}; the goal as worded, raw client only the "
        f"requests in flight: {'met' if crash['met_in_flight_only'] else 'NOT met'}."
    )
    moved = goal["traffic_moved"]
    lines.append(
        f"* Fault → traffic moved: p95 {_cell(moved['p95_seconds'])} s over "
        f"{moved['measurements']} measurements (goal ≤ window + 1 s = "
        f"{_cell(moved['limit_seconds'], 1)} s): {'met' if moved['met'] else 'NOT met'}."
    )
    left = goal["leftovers"]
    lines.append(
        "* Nothing left behind (processes, ports, namespaces, faults): "
        + ("met." if left["met"] else "NOT met: " + "; ".join(left["found"]))
        + ("" if left["teardown_checked"] else " (teardown not checked: not our cluster)")
    )
    failed_ones = [r for r in results if r.status == "failed"]
    if failed_ones:
        lines += ["", "## Problems", ""]
        for r in failed_ones:
            lines += [f"* **{r.id}**: " + "; ".join(r.problems)]
    if info.notes:
        lines += ["", "## Notes", ""] + [f"* {n}" for n in info.notes]
    shown = [r for r in results if r.status != "skipped"]
    if shown:
        lines += ["", "## Timelines", ""]
        lines += [f"![{r.id}](timeline-{r.id}.png)" for r in shown]
    return "\n".join(lines) + "\n"


def write_report(
    folder: Path,
    info: RunInfo,
    results: Sequence[ScenarioResult],
    timelines: dict[str, str],
) -> dict[str, Any]:
    """report.json and report.md in ``folder`` (the PNGs are written by the caller)."""
    folder.mkdir(parents=True, exist_ok=True)
    goal = goals(results, info.window_seconds, info.teardown_leftovers)
    document = {
        "run": asdict(info),
        "scenarios": [scenario_json(r, timelines.get(r.id)) for r in results],
        "goals": goal,
    }
    (folder / "report.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    (folder / "report.md").write_text(markdown(info, results, goal))
    return document
