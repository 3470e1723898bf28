"""The model update driver: moves the GPU pods to the spec's model version.

One kopf daemon per VoiceService (:func:`run_updates`) makes a pass every
``model_update_interval_seconds``. A pass reads the object, its GPU Deployment and
PodDisruptionBudget from the watches, and decides with
:mod:`~voiceops_operator.model_update`; only an InPlace update in progress talks
to pods: ``GET /admin/models`` on each ready GPU pod for the version it serves,
then at most one ``POST /admin/models`` (load aside, validate, swap) per pass,
authenticated by a JWT the operator signs for that pod. It is the one writer of
``status.model`` and the ModelUpdated condition, and posts an Event per pod swap
and per outcome; when what it wrote changes what pods start with (the ConfigMap,
the template's revision), it has the spec reconcile apply it at once.

A pass with nothing to do sends no request at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from voiceops_contract import pod as pod_contract

from voiceops_operator import diff, model_update, names, observe, reasons
from voiceops_operator import status as st
from voiceops_operator.events import EventSink, Note
from voiceops_operator.healing import PodSource
from voiceops_operator.kube import KubeApi, KubeError, write_status
from voiceops_operator.model_update import PodModel, Swap
from voiceops_operator.reconcile import ChildConflict, Reconciler
from voiceops_operator.routing_notices import sign_model_command
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import (
    API_VERSION,
    KIND,
    InvalidSpec,
    ModelRef,
    ModelStatus,
    ModelSwapRecord,
    VoiceService,
    parse_status,
    parse_voiceservice,
)
from voiceops_operator.watched import ObjectReader

log = logging.getLogger(__name__)

SETTLED = ("Updated", "Failed")  # states that wait for the spec to change


def _live_gpu_pods(pods: list[dict[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        p
        for p in observe.live_pods(pods)
        if (p["metadata"].get("labels") or {}).get(names.LABEL_TIER) == "gpu"
    ]


def rolled_out(deployment: Mapping[str, Any] | None, revision: str | None) -> bool:
    """The GPU Deployment runs only pods of the template with this model revision, all ready."""
    if deployment is None:
        return False
    template = (deployment.get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    if annotations.get(model_update.REVISION_ANNOTATION) != revision:
        return False
    return st.TierCounts.from_deployment(dict(deployment)).rolled_out


@dataclass
class ModelUpdater:
    """What every VoiceService's model daemon shares: clients, the signing key, the reconcile."""

    settings: OperatorSettings
    api: KubeApi
    reads: ObjectReader
    reconciler: Reconciler
    events: EventSink
    session: aiohttp.ClientSession
    key: Ed25519PrivateKey | None

    async def close(self) -> None:
        await self.session.close()

    # --- talking to one pod ---------------------------------------------------------------

    def _headers(self, pod_name: str) -> dict[str, str]:
        assert self.key is not None
        return {"Authorization": f"Bearer {sign_model_command(self.key, pod_name, time.time())}"}

    async def pod_version(self, pod_name: str, base_url: str) -> str | None:
        """The version the pod serves; None when it does not answer."""
        url = f"{base_url}{pod_contract.PATH_MODELS_ADMIN}"
        timeout = aiohttp.ClientTimeout(total=self.settings.scrape_timeout_seconds * 5)
        try:
            async with self.session.get(
                url, headers=self._headers(pod_name), timeout=timeout
            ) as response:
                if response.status != 200:
                    log.debug("%s: GET %s: %s", pod_name, url, response.status)
                    return None
                body = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.debug("%s: GET %s failed: %s", pod_name, url, exc)
            return None
        active = body.get("active") if isinstance(body, dict) else None
        return str(active["version"]) if isinstance(active, dict) else None

    async def swap(self, pod_name: str, base_url: str, to: ModelRef) -> ModelSwapRecord:
        """Ask the pod to load, validate and swap to ``to``; what it answered."""
        url = f"{base_url}{pod_contract.PATH_MODELS_ADMIN}"
        timeout = aiohttp.ClientTimeout(total=self.settings.model_swap_timeout_seconds)
        began = time.monotonic()
        try:
            async with self.session.post(
                url,
                json={"uri": to.uri, "version": to.version},
                headers=self._headers(pod_name),
                timeout=timeout,
            ) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            result, message = model_update.UNREACHABLE, str(exc) or type(exc).__name__
        else:
            if isinstance(body, dict) and "error" in body:
                error = body["error"] or {}
                result = str(error.get("code") or f"http_{response.status}")
                message = str(error.get("message") or "")
            elif isinstance(body, dict):
                result, message = str(body.get("result", "")), str(body.get("message") or "")
            else:
                result, message = f"http_{response.status}", ""
        return ModelSwapRecord(
            pod=pod_name,
            result=result,
            message=message[:1000],
            seconds=round(time.monotonic() - began, 3),
            time=st.now_rfc3339(),
        )

    # --- one pass ---------------------------------------------------------------------------

    async def pass_once(self, body: Mapping[str, Any], pods: PodSource) -> None:
        """Move the update one step.

        ``body``: the object as the watch last saw it. An idle pass decides from it
        alone; a pass with work reads the object first, so it never acts on a view
        older than its own last status write.
        """
        if await self._settled(body):
            return
        meta = body["metadata"]
        fresh = await self.api.get(API_VERSION, KIND, meta["namespace"], meta["name"])
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return
        try:
            vs = parse_voiceservice(fresh)
        except InvalidSpec:
            return  # the spec reconcile reports it
        before = parse_status(fresh.get("status")).model
        status = await self._next_status(vs, before)
        notes: list[Note] = []
        if model_update.goal_of(status) is not None:
            status = await self._swap_step(vs, status, pods, notes)
        if before is not None and status.state != before.state:
            notes.append(_state_note(status))
        await self._write(fresh, vs, before, status, notes)

    async def _settled(self, body: Mapping[str, Any]) -> bool:
        """Nothing to do for the object as seen: its model is where the spec wants it."""
        try:
            vs = parse_voiceservice(dict(body))
        except InvalidSpec:
            return True
        before = parse_status(body.get("status")).model
        if before is None or before.state not in SETTLED:
            return False
        return await self._next_status(vs, before) == before

    async def _next_status(self, vs: VoiceService, before: ModelStatus | None) -> ModelStatus:
        deployment = await self.reads.get(
            "apps/v1", "Deployment", vs.namespace, names.deployment_name(vs.name, "gpu")
        )
        model = vs.spec.model
        return model_update.next_status(
            model,
            before,
            rolled_out=rolled_out(deployment, model_update.template_revision(model, before)),
            can_command_pods=self.key is not None,
        )

    async def _swap_step(
        self, vs: VoiceService, status: ModelStatus, pods: PodSource, notes: list[Note]
    ) -> ModelStatus:
        live = _live_gpu_pods(pods())
        urls = {p["metadata"]["name"]: observe.pod_base_url(p) for p in live}

        async def view(pod: Mapping[str, Any]) -> PodModel:
            name = pod["metadata"]["name"]
            url = urls[name] if observe.pod_is_ready(pod) else None
            version = await self.pod_version(name, url) if url else None
            return PodModel(name=name, version=version)

        views = await asyncio.gather(*(view(p) for p in live))
        pdb = await self.reads.get(
            "policy/v1", "PodDisruptionBudget", vs.namespace, names.pdb_name(vs.name, "gpu")
        )
        allowed = (
            None if pdb is None else int((pdb.get("status") or {}).get("disruptionsAllowed") or 0)
        )
        action = model_update.next_action(vs.spec.model, status, views, allowed)
        if isinstance(action, Swap):
            url = urls[action.pod]
            assert url is not None  # only a pod that answered is asked to swap
            record = await self.swap(action.pod, url, action.to)
            notes.append(_swap_note(record, action.to))
            after = model_update.after_swap(status, record)
            if record.result in model_update.SWAPPED:
                done = len([v for v in views if v.version == action.to.version]) + 1
                after = after.model_copy(update={"pods_updated": done, "pods_total": len(views)})
            return after
        return action.status  # Finish or Wait

    async def _write(
        self,
        body: Mapping[str, Any],
        vs: VoiceService,
        before: ModelStatus | None,
        status: ModelStatus,
        notes: list[Note],
    ) -> None:
        wanted = status.model_dump(by_alias=True, exclude_none=True)
        condition = model_update.condition(status)

        def patch_for(current: dict[str, Any]) -> dict[str, Any]:
            conditions = st.set_condition(
                list(current.get("conditions") or []),
                model_update.MODEL_UPDATED,
                *condition,
                vs.generation,
                st.now_rfc3339(),
            )
            desired = {"model": wanted, "conditions": conditions}
            return diff.merge_patch(
                desired, current, same=diff.equal, owned_whole=lambda path: path[:1] == ("model",)
            )

        written = await write_status(self.api, body, patch_for)
        for note in notes:
            await self.events(body, note)
        if written is None or not written.patch:
            return
        if _starts_with(vs, before) != _starts_with(vs, status):
            # What new pods start with changed (ConfigMap, template): apply it now,
            # from the object as written (the watch may not have it yet).
            try:
                await self.reconciler.reconcile_body(written.obj)
            except (KubeError, ChildConflict, InvalidSpec) as exc:
                log.warning(
                    "%s/%s: reconcile after a model update step: %s", vs.namespace, vs.name, exc
                )


def _starts_with(vs: VoiceService, status: ModelStatus | None) -> tuple[ModelRef, str | None]:
    model = vs.spec.model
    return model_update.pods_start_with(model, status), model_update.template_revision(
        model, status
    )


def _swap_note(record: ModelSwapRecord, to: ModelRef) -> Note:
    if record.result in model_update.SWAPPED:
        return Note(
            "Normal",
            reasons.MODEL_SWAPPED,
            f"pod {record.pod} serves version {to.version} ({record.result} in "
            f"{record.seconds:.1f}s)",
            "ModelUpdate",
        )
    return Note(
        "Warning",
        reasons.MODEL_SWAP_FAILED,
        f"pod {record.pod} did not swap to version {to.version}: {record.result}: {record.message}",
        "ModelUpdate",
    )


def _state_note(status: ModelStatus) -> Note:
    _, reason, message = model_update.condition(status)
    if status.state == "Updated":
        return Note("Normal", reasons.MODEL_UPDATED, message, "ModelUpdate")
    warning = status.state in ("RollingBack", "Failed") or reason == reasons.IN_PLACE_REFUSED_MEMORY
    return Note("Warning" if warning else "Normal", reason, message, "ModelUpdate")


async def run_updates(
    updater: ModelUpdater,
    body: kopf.Body,
    pods: PodSource,
    stopped: kopf.DaemonStopped,
) -> None:
    """One VoiceService's model daemon: a pass per interval until stopped."""
    meta = body["metadata"]
    interval = updater.settings.model_update_interval_seconds
    while not stopped:
        try:
            await updater.pass_once(body, pods)
        except KubeError as exc:
            log.warning("%s/%s: model update pass: %s", meta["namespace"], meta["name"], exc)
        await stopped.wait(interval)
