"""Desired-vs-actual comparison and the merge patches it produces."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from operator_helpers import manifest
from voiceops_operator import build, diff
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import parse_voiceservice


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", "0.5"),
        ("1", "1"),
        ("2Gi", str(2 * 2**30)),
        ("1e3", "1000"),
        (2, "2"),
        ("1k", "1000"),
    ],
)
def test_parse_quantity(text: object, value: str) -> None:
    assert diff.parse_quantity(text) == Decimal(value)


def test_parse_quantity_refuses_non_quantities() -> None:
    assert diff.parse_quantity("lots") is None
    assert diff.parse_quantity(True) is None


def test_server_added_fields_do_not_count_as_drift() -> None:
    desired = {"spec": {"a": 1, "list": [{"x": 1}]}}
    actual = {"spec": {"a": 1, "b": 2, "list": [{"x": 1, "defaulted": "y"}]}, "status": {}}
    assert diff.matches(desired, actual)
    assert diff.merge_patch(desired, actual) == {}


def test_zero_values_match_absent_fields() -> None:
    # Go's omitempty drops them; the stored object never has them.
    desired = {"probe": {"initialDelaySeconds": 0, "value": "", "flag": False, "list": []}}
    assert diff.matches(desired, {"probe": {}})


def test_quantities_compare_by_value_in_resource_lists() -> None:
    desired = {"resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}}}
    actual = {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}
    assert diff.matches(desired, actual)
    assert not diff.matches({"env": [{"value": "0.5"}]}, {"env": [{"value": "500m"}]})


def test_changed_scalars_and_lists_are_patched() -> None:
    desired = {"spec": {"image": "b", "env": [{"name": "X", "value": "2"}]}}
    actual = {"spec": {"image": "a", "env": [{"name": "X", "value": "1"}], "other": 1}}
    assert not diff.matches(desired, actual)
    assert diff.merge_patch(desired, actual) == desired


def test_owned_maps_drop_keys_we_no_longer_set() -> None:
    desired = {"spec": {"selector": {"app": "x"}}}
    actual = {"spec": {"selector": {"app": "x", "voiceops.io/tier": "gpu"}}}
    assert not diff.matches(desired, actual)
    assert diff.merge_patch(desired, actual) == {"spec": {"selector": {"voiceops.io/tier": None}}}
    # Elsewhere extra keys are someone else's (annotations added by kubectl, say).
    other = {"metadata": {"annotations": {"a": "1"}}}
    assert diff.matches(other, {"metadata": {"annotations": {"a": "1", "b": "2"}}})


def test_owned_view_leaves_hpa_replicas_alone() -> None:
    vs = parse_voiceservice(manifest({}))
    deployment = build.build_gpu_deployment(vs, OperatorSettings(_env_file=None))
    assert "replicas" not in diff.owned_view(deployment, replicas_owned=False)["spec"]
    assert diff.owned_view(deployment, replicas_owned=True)["spec"]["replicas"] == 1


def test_owned_view_claims_placement_of_every_tier() -> None:
    vs = parse_voiceservice(manifest({}))
    fallback = build.build_fallback_deployment(
        vs, build.Routing(), OperatorSettings(_env_file=None)
    )
    view = diff.owned_view(fallback, replicas_owned=True)
    actual = {**fallback, "spec": {**fallback["spec"]}}
    actual["spec"]["template"] = {
        **fallback["spec"]["template"],
        "spec": {**fallback["spec"]["template"]["spec"], "nodeSelector": {"hand": "edit"}},
    }
    assert not diff.matches(view, actual)
    patch = diff.merge_patch(view, actual)
    assert patch == {"spec": {"template": {"spec": {"nodeSelector": {"hand": None}}}}}
    assert diff.matches(view, fallback)


def test_built_objects_match_themselves() -> None:
    vs = parse_voiceservice(manifest({"model": {"uri": "pvc://m/x"}}))
    for obj in build.build_all(vs, build.Routing(), OperatorSettings(_env_file=None)):
        view = diff.owned_view(obj, replicas_owned=True)
        assert diff.matches(view, obj)
        assert diff.merge_patch(view, obj) == {}


def _apply_merge_patch(target: dict, patch: dict) -> dict:
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _apply_merge_patch(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # A stale `from` would keep refusing the sources we now allow.
        ({"allowFrom": [{"namespaceSelector": {}}]}, {"allowFrom": []}),
        # Stale DNS-only ports would keep egress closed.
        ({"allowEgress": False}, {"allowEgress": True}),
        # `podSelector: {}` (every pod here) is not a zero value that matches anything.
        ({"allowFrom": [{"namespaceSelector": {}}]}, {"allowFrom": [{"podSelector": {}}]}),
        # A label we stop requiring must go ({} = every namespace).
        (
            {"allowFrom": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]},
            {"allowFrom": [{"namespaceSelector": {}}]},
        ),
        (
            {"allowFrom": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]},
            {"allowFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
        ),
    ],
)
def test_network_policy_rules_are_owned_whole(before: dict, after: dict) -> None:
    def policy(network_policy: dict) -> dict:
        vs = parse_voiceservice(manifest({"networkPolicy": network_policy}))
        return build.build_network_policy(vs)

    stored, desired = policy(before), policy(after)
    view = diff.owned_view(desired, replicas_owned=True)
    assert not diff.matches(view, stored)
    patched = _apply_merge_patch(stored, diff.merge_patch(view, stored))
    assert patched["spec"] == desired["spec"]
    assert diff.matches(view, patched)


def test_hand_added_pod_selector_labels_are_drift() -> None:
    desired = build.build_network_policy(parse_voiceservice(manifest()))
    view = diff.owned_view(desired, replicas_owned=True)
    narrowed = copy.deepcopy(desired)
    narrowed["spec"]["podSelector"]["matchLabels"]["voiceops.io/tier"] = "gpu"
    assert not diff.matches(view, narrowed)
    patch = diff.merge_patch(view, narrowed)
    assert patch["spec"]["podSelector"]["matchLabels"] == {"voiceops.io/tier": None}
