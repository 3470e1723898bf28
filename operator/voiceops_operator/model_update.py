"""Model updates of the GPU tier, Rolling or InPlace: the decisions. Pure: no I/O.

The model moved out of the GPU pod template so it can change without the
Deployment restarting pods (docs/hot-swap.md): each GPU pod reads its model path
and version from the ConfigMap ``<name>-model`` when its container starts, and
the template carries the model's revision in an annotation only where a change
must roll the pods. So:

* **Rolling**: the ConfigMap and the template's revision follow the spec; the
  Deployment replaces the pods, each starting with the new model.
* **InPlace**: the template's revision stays; the update driver
  (:mod:`~voiceops_operator.model_updater`) asks the running pods, one at a time,
  to load the new version aside, validate it and swap (``/admin/models``).
  The ConfigMap moves to the new version once a pod has validated it, so a pod
  started later (a scale-up, a replacement) comes up with it, and back when the
  update rolls back; a bad model never reaches a pod's start.

``status.model`` (:class:`ModelStatus`) records where an update is, written only by
the driver; the reconcile builds the ConfigMap and the template from it, so a
restarted operator resumes from the status. Every function here decides from
its arguments alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from voiceops_operator import reasons
from voiceops_operator.spec import (
    ModelRef,
    ModelSpec,
    ModelStatus,
    ModelSwapRecord,
    parse_model_uri,
)

# The GPU pod template's annotation holding the model revision pods started with.
REVISION_ANNOTATION = "voiceops.io/model-revision"
# The ConfigMap's keys (the GPU container reads them through configMapKeyRef).
KEY_MODEL_PATH = "modelPath"
KEY_MODEL_VERSION = "modelVersion"
KEY_MODEL_URI = "uri"
# A pod's answer to a swap, as /admin/models reports it, plus what the driver saw.
SWAPPED = ("swapped", "unchanged")
REFUSED = ("validation_failed", "load_failed")
REFUSED_MEMORY = "refused_memory"
UNREACHABLE = "unreachable"
# The condition the driver owns.
MODEL_UPDATED = "ModelUpdated"


def spec_ref(model: ModelSpec) -> ModelRef:
    """The version the spec asks for."""
    return ModelRef(version=model.version_name(), uri=model.uri)


def revision(ref: ModelRef) -> str:
    """A short, stable name for a model version (the template annotation's value)."""
    return hashlib.sha256(f"{ref.uri}\n{ref.version}".encode()).hexdigest()[:16]


def pods_start_with(model: ModelSpec, status: ModelStatus | None) -> ModelRef:
    """What a GPU pod starting now should load (the ConfigMap's content)."""
    wanted = spec_ref(model)
    if model.update_strategy == "Rolling" or status is None or status.current is None:
        return wanted
    if status.target is not None and status.state == "Rolling":
        return status.target
    if status.target is not None and status.state == "Updating" and (status.pods_updated or 0):
        return status.target  # validated on a pod already
    return status.current


def template_revision(model: ModelSpec, status: ModelStatus | None) -> str | None:
    """The GPU template's model revision annotation; None: no annotation."""
    if model.update_strategy == "Rolling":
        return revision(spec_ref(model))
    return status.template_revision if status is not None else None


# --- the update's progress: status transitions ---------------------------------------------


def _updated(status: ModelStatus, current: ModelRef, message: str) -> ModelStatus:
    return status.model_copy(
        update={
            "current": current,
            "target": None,
            "state": "Updated",
            "pods_updated": None,
            "pods_total": None,
            "message": message,
        }
    )


def next_status(
    model: ModelSpec,
    status: ModelStatus | None,
    *,
    rolled_out: bool,
    can_command_pods: bool,
) -> ModelStatus:
    """The update's state before any pod is asked: record, start, finish a roll.

    ``rolled_out``: the GPU Deployment runs only pods of the template revision this
    status asks for, all ready. ``can_command_pods``: the operator can sign commands
    to the pods (it has its key); without, an InPlace update rolls instead.
    """
    wanted = spec_ref(model)
    strategy = model.update_strategy
    if status is None or status.current is None:
        return ModelStatus(
            current=wanted,
            strategy=strategy,
            state="Updated",
            message=f"the GPU pods start with version {wanted.version}",
        )
    if status.state == "Rolling" and status.target is not None:
        if status.target == wanted and rolled_out:
            return _updated(status, wanted, f"every GPU pod runs version {wanted.version}")
        if status.target == wanted:
            return status
    if strategy == "Rolling":
        if status.current == wanted and status.state == "Updated":
            return status
        return status.model_copy(
            update={
                "target": wanted,
                "strategy": "Rolling",
                "state": "Rolling",
                "message": f"the Deployment replaces the GPU pods with version {wanted.version}",
            }
        )
    if status.current == wanted:
        if status.state == "Updated":
            return status
        if status.state == "Updating":  # the spec went back: undo what was swapped
            return status.model_copy(
                update={"state": "RollingBack", "message": "the spec went back; rolling back"}
            )
        if status.state == "RollingBack":
            return status
        return _updated(status, wanted, f"every GPU pod runs version {wanted.version}")
    if status.target == wanted and status.state in ("Updating", "RollingBack", "Failed"):
        return status
    why_roll = ""
    if not can_command_pods:
        why_roll = "InPlace needs the operator's signing key (routing_key)"
    elif _claim(wanted) != _claim(status.current):
        why_roll = "a model on another PersistentVolumeClaim needs new pods to mount it"
    if why_roll:
        return status.model_copy(
            update={
                "target": wanted,
                "strategy": "Rolling",
                "state": "Rolling",
                "template_revision": revision(wanted),
                "message": f"{why_roll}: the Deployment replaces the GPU pods instead",
            }
        )
    return status.model_copy(
        update={
            "target": wanted,
            "strategy": "InPlace",
            "state": "Updating",
            "pods_updated": 0,
            "message": f"swapping the GPU pods to version {wanted.version} one at a time",
        }
    )


def _claim(ref: ModelRef) -> str:
    return parse_model_uri(ref.uri).claim_name


# --- which pod next ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PodModel:
    """A live GPU pod and the version it serves (None: not ready, or it did not answer:
    not a pod to ask for a swap now)."""

    name: str
    version: str | None


@dataclass(frozen=True)
class Swap:
    """Ask ``pod`` to load and swap to ``to``."""

    pod: str
    to: ModelRef


@dataclass(frozen=True)
class Wait:
    """Nothing to do now; ``status`` says how far it got."""

    status: ModelStatus


@dataclass(frozen=True)
class Finish:
    """Every pod serves the goal: the update (or its roll back) is over."""

    status: ModelStatus


Action = Swap | Wait | Finish


def goal_of(status: ModelStatus) -> ModelRef | None:
    """The version the pods move to: the target while updating, the current while rolling back."""
    if status.state == "Updating":
        return status.target
    if status.state == "RollingBack":
        return status.current
    return None


def next_action(
    model: ModelSpec,
    status: ModelStatus,
    pods: Sequence[PodModel],
    disruptions_allowed: int | None,
) -> Action:
    """What to do next for an update that swaps pods (state Updating or RollingBack).

    One pod at a time, in name order, ready pods only, and only while the GPU tier's
    PodDisruptionBudget allows a disruption (``disruptions_allowed``; None: no PDB).
    """
    goal = goal_of(status)
    if goal is None:
        return Wait(status)
    at_goal = [p for p in pods if p.version == goal.version]
    progress = status.model_copy(update={"pods_updated": len(at_goal), "pods_total": len(pods)})
    behind = sorted((p for p in pods if p.version != goal.version), key=lambda p: p.name)
    if not behind:
        if status.state == "Updating" and status.target is not None:
            return Finish(
                _updated(progress, status.target, f"every GPU pod runs version {goal.version}")
            )
        wanted = spec_ref(model)
        if wanted == status.current:
            return Finish(_updated(progress, goal, f"back at version {goal.version}"))
        failed = progress.model_copy(
            update={
                "state": "Failed",
                "pods_updated": None,
                "pods_total": None,
                "message": f"rolled back to version {goal.version}: " + _refusal(status.last_swap),
            }
        )
        return Finish(failed)
    ready = [p for p in behind if p.version is not None]
    if not ready:
        return Wait(progress.model_copy(update={"message": "waiting for the GPU pods to be ready"}))
    if disruptions_allowed is not None and disruptions_allowed < 1:
        message = "waiting: the GPU tier's PodDisruptionBudget allows no disruption now"
        return Wait(progress.model_copy(update={"message": message}))
    return Swap(ready[0].name, goal)


def _refusal(swap: ModelSwapRecord | None) -> str:
    if swap is None:
        return "a pod refused the new version"
    return f"pod {swap.pod} answered {swap.result}: {swap.message}"


def after_swap(status: ModelStatus, record: ModelSwapRecord) -> ModelStatus:
    """The status after one pod's answer."""
    updated = status.model_copy(update={"last_swap": record})
    if record.result in SWAPPED:
        return updated
    if status.state != "Updating" or status.target is None:
        return updated  # rolling back: try again on the next pass
    if record.result in REFUSED:
        return updated.model_copy(
            update={
                "state": "RollingBack",
                "message": f"rolling back every GPU pod: {_refusal(record)}",
            }
        )
    if record.result == REFUSED_MEMORY:
        return updated.model_copy(
            update={
                "strategy": "Rolling",
                "state": "Rolling",
                "template_revision": revision(status.target),
                "message": f"pod {record.pod} has no GPU memory to load a second model "
                "beside the first: the Deployment replaces the pods instead",
            }
        )
    return updated  # busy, unreachable: the same pod again on the next pass


# --- what the condition and the Events say ------------------------------------------------------


def condition(status: ModelStatus) -> tuple[str, str, str]:
    """ModelUpdated: (status, reason, message)."""
    message = status.message or ""
    if status.state == "Updated":
        return "True", reasons.MODEL_CURRENT, message
    if status.state == "Updating":
        return "False", reasons.UPDATING_IN_PLACE, message
    if status.state == "RollingBack":
        return "False", reasons.MODEL_ROLLING_BACK, message
    if status.state == "Rolling":
        swap = status.last_swap
        memory = swap is not None and swap.result == REFUSED_MEMORY
        return (
            "False",
            reasons.IN_PLACE_REFUSED_MEMORY if memory else reasons.ROLLING_UPDATE,
            message,
        )
    swap = status.last_swap
    if swap is not None and swap.result == "load_failed":
        return "False", reasons.MODEL_LOAD_FAILED, message
    return "False", reasons.MODEL_VALIDATION_FAILED, message
