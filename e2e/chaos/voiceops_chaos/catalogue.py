"""The scenario catalogue: declared data, validated by pydantic.

A scenario has the shape of a chaostoolkit experiment:

* ``steady_state``: the hypothesis (phase, routed tier, ready pods) that must hold
  before the fault and again after the rollback;
* ``method``: steps, each an action (the fault) and what must then be observed
  (phases, routing, the operator's Events, pods restarted...);
* ``rollback``: steps that undo the fault (always run, also after a failed step);
* ``budget``: what users may lose (see :class:`Budget`).

Actions are named, typed records (``{action: gpu_memory, ratio: 0.99}``); how one
enters a cluster is the target's business (``targets.FaultTarget``), so one
definition drives the local control plane and kind alike. A catalogue that does not
validate fails with every problem listed by its path (``scenarios[3].method[0].do``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Phase = Literal["Pending", "Serving", "Degraded", "FailedOver", "Recovering"]
Tier = Literal["gpu", "fallback", "both"]
PodTier = Literal["gpu", "fallback"]
BudgetKind = Literal["zero_loss", "crash", "only_429", "report"]
# How the goals count a scenario: predictive faults (announced by the cluster:
# pressure, cordons, spec changes) and crash faults (a pod or node gone without notice).
FaultClass = Literal["predictive", "crash", "other"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- actions ---------------------------------------------------------------------------
class GpuMemory(_Data):
    """GPU memory in use on the GPU pods' GPUs (NVML locally, the fault endpoint elsewhere)."""

    action: Literal["gpu_memory"]
    ratio: float | None = Field(description="used/total; null: healthy again", ge=0, le=1)


class CudaOom(_Data):
    """The next ``calls`` engine calls on the GPU pods raise CUDA out-of-memory."""

    action: Literal["cuda_oom"]
    calls: int = Field(ge=1, le=1_000_000)


class ClearFaults(_Data):
    """Clear every fault-endpoint fault on the pods of ``tier``."""

    action: Literal["clear_faults"]
    tier: PodTier = "gpu"


class KillPods(_Data):
    """SIGKILL the pods' containers (locally); elsewhere delete them with no grace period."""

    action: Literal["kill_pods"]
    tier: PodTier


class KillJobWorker(_Data):
    """Start a long-text job of ``chars`` characters through the front Service, SIGKILL the
    pods of ``tier`` while they make its chunks (local: the container; elsewhere: delete
    with no grace period), and require the job to succeed within ``job_within`` seconds,
    every chunk once, the lost chunks made by other pods (docs/jobs.md). Needs
    ``spec.jobs`` and a Redis the pods reach."""

    action: Literal["kill_job_worker"]
    tier: PodTier = "gpu"
    chars: int = Field(20_000, ge=1_000, le=200_000)
    job_within: float = Field(180.0, gt=0, le=900)


class CrashLoop(_Data):
    """Crash the GPU pod's container ``times`` times, each time it is back up."""

    action: Literal["crash_loop"]
    times: int = Field(ge=1, le=10)


class HangEngine(_Data):
    """Every engine call on the GPU pods sleeps ``seconds``: alive, but no progress."""

    action: Literal["hang_engine"]
    seconds: float = Field(gt=0, le=600)


class GpusUnschedulable(_Data):
    """No GPU can take a new pod (local: nvidia.com/gpu capacity 0; elsewhere: cordon) and
    the GPU pods are evicted; ``false`` gives the capacity back."""

    action: Literal["gpus_unschedulable"]
    unschedulable: bool


class NodeLost(_Data):
    """The GPU pod's node stops (``lost: true``) or resumes its heartbeat."""

    action: Literal["node_lost"]
    lost: bool


class OperatorProcess(_Data):
    """Kill the operator (SIGKILL; elsewhere: delete its pod) or have it running again."""

    action: Literal["operator"]
    state: Literal["killed", "running"]


class ApiServerRestart(_Data):
    """Restart kube-apiserver: every watch drops."""

    action: Literal["apiserver_restart"]


class SlowNetwork(_Data):
    """Slow what the pods of ``tier`` send: ``delay_ms`` on every packet (tc netem) and/or
    at most ``rate_kbit`` (tc tbf). Both 0: the network as it was."""

    action: Literal["slow_network"]
    tier: PodTier = "gpu"
    delay_ms: int = Field(0, ge=0, le=10_000)
    rate_kbit: int = Field(0, ge=0, le=10_000_000)


class PatchSpec(_Data):
    """A merge patch of the VoiceService's spec (a rolling update, a scale change)."""

    action: Literal["patch_spec"]
    patch: dict[str, Any] = Field(min_length=1)


class RestoreSpec(_Data):
    """Undo every ``patch_spec`` of this scenario (the spec as it was before it)."""

    action: Literal["restore_spec"]


class Autoscale(_Data):
    """Turn the VoiceService's HPAs on (a spec patch: the GPU tier from its current count
    up to ``max_replicas`` on CPU utilisation); ``restore_spec`` turns them off again.
    Needs the ``metrics.k8s.io`` API (metrics-server)."""

    action: Literal["autoscale"]
    max_replicas: int = Field(2, ge=2, le=100)
    target_cpu_percent: int = Field(50, ge=1, le=100)


class LoadSpike(_Data):
    """More raw clients, back to back, for ``seconds``: ``clients`` of them, or (unset)
    ``capacity_factor`` times what the serving pods admit (maxConcurrency + maxQueue
    each, from the VoiceService's spec), so one definition is past capacity anywhere."""

    action: Literal["load_spike"]
    clients: int | None = Field(None, ge=1, le=2000)
    capacity_factor: float = Field(2.0, gt=1, le=20)
    seconds: float = Field(gt=0, le=600)


class Observe(_Data):
    """No fault: only wait for what the step expects."""

    action: Literal["observe"]


Action = Annotated[
    GpuMemory
    | CudaOom
    | ClearFaults
    | KillPods
    | KillJobWorker
    | CrashLoop
    | HangEngine
    | GpusUnschedulable
    | NodeLost
    | OperatorProcess
    | ApiServerRestart
    | SlowNetwork
    | PatchSpec
    | RestoreSpec
    | Autoscale
    | LoadSpike
    | Observe,
    Field(discriminator="action"),
]


# --- what must be observed ---------------------------------------------------------------
class Expect(_Data):
    """Conditions that must all hold at one moment, within ``within`` seconds of the step.

    Each field left out is not checked; at least one must be given.
    """

    phase: Phase | None = None
    tier: Tier | None = Field(None, description="the front Service's selected tier")
    reason: str | None = Field(None, description="status.lastTransition.reason")
    endpoints_on: Tier | None = Field(
        None, description="every ready endpoint of the front Service is on this tier"
    )
    ready_pods: dict[PodTier, int] | None = Field(None, description="at least this many ready")
    event: str | None = Field(None, description="an Event with this reason, newer than the step")
    restarted: PodTier | None = Field(
        None, description="a pod of this tier restarted or was replaced since the scenario began"
    )
    replaced: PodTier | None = Field(
        None, description="every pod of this tier is new since the scenario began, one ready"
    )
    unrestarted: PodTier | None = Field(
        None, description="no pod of this tier restarted or was replaced since the scenario began"
    )
    model_version: str | None = Field(
        None, description="status.model says every GPU pod runs this model version"
    )
    pods_exactly: dict[PodTier, int] | None = Field(
        None, description="exactly this many pods, terminating ones included"
    )
    crash_loop: PodTier | None = Field(None, description="a container of this tier in back-off")
    signal: Literal["pressure", "failure", "healthy"] | None = Field(
        None, description="status.healing.signals has this signal (the operator is timing it)"
    )
    status_seen: int | None = Field(None, description="some answer during the step had it")
    autoscaled: dict[PodTier, int] | None = Field(
        None, description="the tier's HPA wants at least this many replicas (desiredReplicas)"
    )
    within: float = Field(60.0, gt=0, le=900)

    @model_validator(mode="after")
    def _something(self) -> Expect:
        fields = set(self.model_fields_set) - {"within"}
        if not fields:
            raise ValueError("an expectation needs at least one condition besides 'within'")
        return self


class Step(_Data):
    do: Action
    expect: list[Expect] = Field(default_factory=list)
    # The fault → traffic moved measurement: when did the front Service's endpoints
    # (and each client) move to this tier after the action.
    traffic_moves_to: PodTier | None = None
    # Whether that measurement counts for the goal (fault → traffic moved within the
    # window plus a second): not where something else decides when the fault shows
    # (the node lifecycle controller's grace period, a liveness probe).
    traffic_goal: bool = True
    hold_seconds: float = Field(0.0, ge=0, le=600, description="load after the expectations")


class SteadyState(_Data):
    phase: Phase = "Serving"
    tier: Tier = "gpu"
    ready_pods: dict[PodTier, int] = Field(default_factory=lambda: {"gpu": 1, "fallback": 1})
    within: float = Field(180.0, gt=0, le=1800)


class Budget(_Data):
    """What users may lose.

    * ``zero_loss``: nothing, for either client kind;
    * ``crash``: the raw client at most what the dead pod cost: requests in flight when
      it died, and those sent before the front Service's endpoints had moved to a live
      pod; the openai client (retries) nothing;
    * ``only_429``: every failed request is a 429 that carries Retry-After (no 5xx, no
      refused or reset connection);
    * ``report``: only reported.
    """

    kind: BudgetKind


class Scenario(_Data):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=63)
    title: str = Field(min_length=1)
    budget: Budget
    fault_class: FaultClass = "other"
    # The phase must not come back to one it left between the fault and the rollback.
    forbid_flap: bool = False
    steady_state: SteadyState = Field(default_factory=SteadyState)
    method: list[Step] = Field(min_length=1)
    rollback: list[Step] = Field(default_factory=list)
    notes: str = ""

    def actions(self) -> list[Any]:
        return [step.do for step in (*self.method, *self.rollback)]


class Catalogue(_Data):
    scenarios: list[Scenario] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Catalogue:
        ids = [s.id for s in self.scenarios]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"scenario ids must be unique; repeated: {', '.join(twice)}")
        return self

    def select(self, wanted: list[str] | None) -> list[Scenario]:
        """The scenarios named in ``wanted`` (in that order); all when None."""
        if not wanted:
            return list(self.scenarios)
        by_id = {s.id: s for s in self.scenarios}
        unknown = [w for w in wanted if w not in by_id]
        if unknown:
            raise CatalogueError(
                f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(by_id)}"
            )
        return [by_id[w] for w in wanted]


class CatalogueError(ValueError):
    """A catalogue that cannot be used: every problem with the path of its field."""


def _path(loc: tuple[int | str, ...], data: Any) -> str:
    """``scenarios[3].method[0].do.gpu_memory.ratio`` for pydantic's location (a tagged
    action shows its tag), followed by the scenario's id when it has one."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    if len(loc) >= 2 and loc[0] == "scenarios" and isinstance(loc[1], int):
        scenarios = data.get("scenarios") if isinstance(data, dict) else None
        if isinstance(scenarios, list) and loc[1] < len(scenarios):
            scenario = scenarios[loc[1]]
            if isinstance(scenario, dict) and scenario.get("id"):
                out += f" (scenario {scenario['id']!r})"
    return out


def parse_catalogue(text: str, source: str = "catalogue") -> Catalogue:
    """Parse YAML text into a Catalogue; CatalogueError names every bad field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CatalogueError(f"{source}: not YAML: {error}") from error
    try:
        return Catalogue.model_validate(data)
    except ValidationError as error:
        lines = [
            f"  {_path(item['loc'], data) or '(top)'}: {item['msg']}" for item in error.errors()
        ]
        raise CatalogueError(f"{source}: {len(lines)} problem(s):\n" + "\n".join(lines)) from None


def load_catalogue(path: Path | None = None) -> Catalogue:
    """The given catalogue file, or the one shipped with the package."""
    if path is not None:
        return parse_catalogue(path.read_text(), str(path))
    text = resources.files("voiceops_chaos").joinpath("catalogue.yaml").read_text()
    return parse_catalogue(text, "voiceops_chaos/catalogue.yaml")
