"""Model updates, Rolling and InPlace: the pure decisions (model_update) and what build makes."""

from __future__ import annotations

from typing import Any

import pytest
from voiceops_contract import pod
from voiceops_operator import build, model_update, reasons
from voiceops_operator.model_update import Finish, PodModel, Swap, Wait
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import (
    ModelRef,
    ModelSpec,
    ModelStatus,
    ModelSwapRecord,
    parse_spec,
    parse_voiceservice,
)

V1 = ModelRef(version="v1", uri="file:///models/v1")
V2 = ModelRef(version="v2", uri="file:///models/v2")


def model(ref: ModelRef = V2, strategy: str = "InPlace") -> ModelSpec:
    return parse_spec(
        {"model": {"uri": ref.uri, "version": ref.version, "updateStrategy": strategy}}
    ).model


def settled(ref: ModelRef = V1) -> ModelStatus:
    return ModelStatus(current=ref, strategy="InPlace", state="Updated")


def updating(pods_updated: int = 0) -> ModelStatus:
    return ModelStatus(
        current=V1, target=V2, strategy="InPlace", state="Updating", pods_updated=pods_updated
    )


def record(result: str, pod_name: str = "tts-gpu-a") -> ModelSwapRecord:
    return ModelSwapRecord(pod=pod_name, result=result, message="m", time="2026-12-05T00:00:00Z")


def next_status(spec: ModelSpec, status: ModelStatus | None, **kwargs: Any) -> ModelStatus:
    return model_update.next_status(
        spec,
        status,
        rolled_out=kwargs.get("rolled_out", False),
        can_command_pods=kwargs.get("can_command_pods", True),
    )


PODS = [
    PodModel("tts-gpu-c", version="v1"),
    PodModel("tts-gpu-a", version="v1"),
    PodModel("tts-gpu-b", version="v1"),
]


# --- versions and spec ---------------------------------------------------------------------


def test_a_version_name_is_given_or_derived_from_the_uri() -> None:
    assert parse_spec({}).model.version_name() == "bundled"
    assert parse_spec({"model": {"version": "joe-2"}}).model.version_name() == "joe-2"
    derived = parse_spec({"model": {"uri": "file:///m/a"}}).model.version_name()
    assert derived.startswith("uri-")
    assert derived != parse_spec({"model": {"uri": "file:///m/b"}}).model.version_name()


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"model": {"engine": "espeak", "updateStrategy": "InPlace"}}, "updateStrategy"),
        ({"model": {"version": "-bad"}}, "version"),
        ({"model": {"version": "a b"}}, "version"),
        ({"model": {"updateStrategy": "Sometimes"}}, "updateStrategy"),
    ],
)
def test_bad_model_fields_are_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(Exception, match=f"spec.model.{field}"):
        parse_spec(spec)


# --- what pods start with and when the template changes ------------------------------------


def test_rolling_puts_the_spec_model_in_the_config_map_and_its_revision_in_the_template() -> None:
    spec = model(V2, "Rolling")
    assert model_update.pods_start_with(spec, settled()) == V2
    assert model_update.template_revision(spec, settled()) == model_update.revision(V2)
    assert model_update.revision(V1) != model_update.revision(V2)


def test_in_place_keeps_the_template_and_starts_new_pods_on_a_validated_version_only() -> None:
    spec = model(V2)
    assert model_update.template_revision(spec, settled()) is None
    assert model_update.pods_start_with(spec, None) == V2  # a new VoiceService
    assert model_update.pods_start_with(spec, settled()) == V1
    assert model_update.pods_start_with(spec, updating(0)) == V1  # nothing validated yet
    assert model_update.pods_start_with(spec, updating(1)) == V2  # one pod validated it
    back = updating(2).model_copy(update={"state": "RollingBack"})
    assert model_update.pods_start_with(spec, back) == V1


def test_build_reads_the_model_from_the_config_map_and_turns_the_admin_api_on_for_in_place(
    settings: OperatorSettings,
) -> None:
    manifest = {
        "apiVersion": "voiceops.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": "tts", "namespace": "ns", "uid": "u"},
        "spec": {"model": {"uri": V2.uri, "version": "v2", "updateStrategy": "InPlace"}},
    }
    vs = parse_voiceservice(manifest)
    objects = build.build_all(vs, build.Routing(), settings, updating(1))
    config_map = next(o for o in objects if o["kind"] == "ConfigMap")
    assert config_map["metadata"]["name"] == "tts-model"
    assert config_map["data"] == {"modelPath": "/models/v2", "modelVersion": "v2", "uri": V2.uri}
    gpu = next(
        o for o in objects if o["metadata"]["name"] == "tts-gpu" and o["kind"] == "Deployment"
    )
    env = {e["name"]: e for e in gpu["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name, key in ((pod.ENV_MODEL_PATH, "modelPath"), (pod.ENV_MODEL_VERSION, "modelVersion")):
        assert env[name]["valueFrom"]["configMapKeyRef"] == {"name": "tts-model", "key": key}
    assert env[pod.ENV_MODEL_ADMIN]["value"] == "true"
    critical = str(vs.spec.failover.memory_critical_ratio)
    assert env[pod.ENV_MODEL_SWAP_MEMORY_CRITICAL_RATIO]["value"] == critical
    assert pod.ENV_MODEL_ADMIN_TOKEN not in env  # the operator signs its commands instead
    annotations = gpu["spec"]["template"]["metadata"]["annotations"]
    assert model_update.REVISION_ANNOTATION not in annotations
    # The same template whatever the update's progress: InPlace never rolls the pods.
    again = build.build_gpu_deployment(vs, settings, settled(V1))
    assert again["spec"]["template"] == gpu["spec"]["template"]


# --- the update's states ------------------------------------------------------------------------


def test_a_new_voice_service_records_its_model_as_current() -> None:
    first = next_status(model(V2), None)
    assert (first.current, first.state, first.target) == (V2, "Updated", None)


def test_a_rolling_change_waits_for_the_deployment_then_is_current() -> None:
    spec = model(V2, "Rolling")
    rolling = next_status(spec, settled())
    assert (rolling.state, rolling.target, rolling.current) == ("Rolling", V2, V1)
    assert next_status(spec, rolling, rolled_out=False) == rolling
    done = next_status(spec, rolling, rolled_out=True)
    assert (done.state, done.current, done.target) == ("Updated", V2, None)


def test_an_in_place_change_starts_an_update_and_keeps_it() -> None:
    started = next_status(model(V2), settled())
    assert (started.state, started.target, started.pods_updated) == ("Updating", V2, 0)
    assert next_status(model(V2), started) == started


def test_without_a_signing_key_or_on_another_claim_an_in_place_change_rolls() -> None:
    no_key = next_status(model(V2), settled(), can_command_pods=False)
    assert no_key.state == "Rolling"
    assert no_key.template_revision == model_update.revision(V2)
    assert "signing key" in (no_key.message or "")
    on_claim = settled(ModelRef(version="a", uri="pvc://one/joe"))
    moved = next_status(model(ModelRef(version="b", uri="pvc://two/joe")), on_claim)
    assert moved.state == "Rolling"
    assert "PersistentVolumeClaim" in (moved.message or "")
    same_claim = next_status(model(ModelRef(version="b", uri="pvc://one/joe2")), on_claim)
    assert same_claim.state == "Updating"


def test_pods_swap_one_at_a_time_in_name_order_while_the_pdb_allows() -> None:
    action = model_update.next_action(model(V2), updating(), PODS, disruptions_allowed=1)
    assert action == Swap("tts-gpu-a", V2)
    waiting = model_update.next_action(model(V2), updating(), PODS, disruptions_allowed=0)
    assert isinstance(waiting, Wait)
    assert "PodDisruptionBudget" in (waiting.status.message or "")
    assert waiting.status.pods_total == 3
    some = [PodModel("tts-gpu-a", "v2"), PodModel("tts-gpu-b", None), PODS[0]]
    assert model_update.next_action(model(V2), updating(1), some, None) == Swap("tts-gpu-c", V2)
    only_unready = [PodModel("tts-gpu-a", "v2"), PodModel("tts-gpu-b", None)]
    assert isinstance(model_update.next_action(model(V2), updating(1), only_unready, 1), Wait)


def test_all_pods_at_the_target_finish_the_update() -> None:
    done = [PodModel(n, "v2") for n in ("tts-gpu-a", "tts-gpu-b")]
    action = model_update.next_action(model(V2), updating(2), done, 1)
    assert isinstance(action, Finish)
    assert (action.status.state, action.status.current, action.status.target) == (
        "Updated",
        V2,
        None,
    )


def test_a_refused_version_rolls_every_pod_back_then_fails() -> None:
    refused = model_update.after_swap(updating(1), record("validation_failed", "tts-gpu-b"))
    assert refused.state == "RollingBack"
    mixed = [PodModel("tts-gpu-a", "v2"), PodModel("tts-gpu-b", "v1")]
    assert model_update.next_action(model(V2), refused, mixed, 1) == Swap("tts-gpu-a", V1)
    back = [PodModel("tts-gpu-a", "v1"), PodModel("tts-gpu-b", "v1")]
    action = model_update.next_action(model(V2), refused, back, 1)
    assert isinstance(action, Finish)
    assert (action.status.state, action.status.current, action.status.target) == (
        "Failed",
        V1,
        V2,
    )
    assert model_update.condition(action.status)[:2] == (
        "False",
        reasons.MODEL_VALIDATION_FAILED,
    )
    # The spec keeps the failed version: nothing more happens until it changes.
    assert next_status(model(V2), action.status) == action.status
    fixed = next_status(model(ModelRef(version="v3", uri="file:///models/v3")), action.status)
    assert (fixed.state, fixed.target.version if fixed.target else None) == ("Updating", "v3")
    reverted = next_status(model(V1), action.status)
    assert (reverted.state, reverted.target) == ("Updated", None)


def test_a_load_failure_says_so_in_the_condition() -> None:
    failed = updating().model_copy(update={"state": "Failed", "last_swap": record("load_failed")})
    assert model_update.condition(failed)[1] == reasons.MODEL_LOAD_FAILED


def test_a_pod_refusing_for_memory_turns_the_update_into_a_roll() -> None:
    rolled = model_update.after_swap(updating(1), record("refused_memory"))
    assert (rolled.state, rolled.strategy) == ("Rolling", "Rolling")
    assert rolled.template_revision == model_update.revision(V2)
    assert model_update.template_revision(model(V2), rolled) == model_update.revision(V2)
    assert model_update.pods_start_with(model(V2), rolled) == V2
    assert model_update.condition(rolled)[1] == reasons.IN_PLACE_REFUSED_MEMORY
    done = next_status(model(V2), rolled, rolled_out=True)
    assert (done.state, done.current) == ("Updated", V2)
    # The template keeps that revision: the pods do not restart again.
    assert model_update.template_revision(model(V2), done) == model_update.revision(V2)


def test_busy_or_unreachable_pods_are_asked_again() -> None:
    for result in ("busy", model_update.UNREACHABLE):
        again = model_update.after_swap(updating(1), record(result))
        assert again.state == "Updating"
        assert again.last_swap is not None
        assert again.last_swap.result == result


def test_a_spec_that_goes_back_mid_update_rolls_back_to_current() -> None:
    back = next_status(model(V1), updating(1))
    assert back.state == "RollingBack"
    pods = [PodModel("tts-gpu-a", "v1")]
    action = model_update.next_action(model(V1), back, pods, 1)
    assert isinstance(action, Finish)
    assert (action.status.state, action.status.current) == ("Updated", V1)
