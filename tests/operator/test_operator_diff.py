"""Desired-vs-actual comparison and the merge patches it produces."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from testsupport.manifests import manifest
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


@pytest.mark.parametrize(
    ("text", "value"),
    [("1E3", "1000"), ("2E", str(2 * 10**18)), ("3Ei", str(3 * 2**60)), ("1e-3", "0.001")],
)
def test_parse_quantity_reads_exponents_and_the_exa_suffix(text: str, value: str) -> None:
    assert diff.parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize(
    ("desired", "actual"),
    [
        ({"limits": {"cpu": "0.5"}}, {"limits": {"cpu": "500m"}}),
        ({"requests": {"memory": "1024Mi"}}, {"requests": {"memory": "1Gi"}}),
        (
            {"volume": {"emptyDir": {"sizeLimit": "1Gi"}}},
            {"volume": {"emptyDir": {"sizeLimit": "1024Mi"}}},
        ),
        (
            {"metric": {"target": {"averageValue": "0.5"}}},
            {"metric": {"target": {"averageValue": "500m"}}},
        ),
    ],
)
def test_quantities_compare_by_value_wherever_kubernetes_stores_them(
    desired: dict, actual: dict
) -> None:
    assert diff.matches(desired, actual)
    assert diff.merge_patch(desired, actual) == {}


def test_a_different_quantity_is_drift() -> None:
    desired = {"limits": {"cpu": "1"}}
    actual = {"limits": {"cpu": "2"}}
    assert not diff.matches(desired, actual)
    assert diff.merge_patch(desired, actual) == desired
    assert not diff.matches({"limits": {"cpu": "lots"}}, {"limits": {"cpu": "many"}})


@pytest.mark.parametrize("field", ["limits", "requests"])
def test_resource_lists_are_owned_whole(field: str) -> None:
    desired = {"resources": {field: {"cpu": "1"}}}
    actual = {"resources": {field: {"cpu": "1", "memory": "1Gi"}}}
    assert not diff.matches(desired, actual)
    assert diff.merge_patch(desired, actual) == {"resources": {field: {"memory": None}}}
    # Elsewhere a map called limits is not a resource list: extra keys are someone else's.
    other = {"quota": {field: {"cpu": "1"}}}
    assert diff.matches(other, {"quota": {field: {"cpu": "1", "memory": "1Gi"}}})
    claims = {"resources": {"claims": {"a": "1"}}}
    assert diff.matches(claims, {"resources": {"claims": {"a": "1", "b": "2"}}})


@pytest.mark.parametrize("value", [1, "x", True, [1], {"a": 1}])
def test_a_missing_field_with_a_value_is_drift(value: object) -> None:
    assert not diff.matches({"spec": {"field": value}}, {"spec": {}})
    assert diff.merge_patch({"spec": {"field": value}}, {"spec": {}}) == {"spec": {"field": value}}


@pytest.mark.parametrize("value", [None, False, 0, "", [], {}])
def test_a_missing_field_with_a_zero_value_is_no_drift(value: object) -> None:
    assert diff.matches({"spec": {"field": value}}, {"spec": {}})


def test_a_missing_zero_field_does_not_hide_drift_after_it() -> None:
    assert not diff.matches({"a": 0, "b": 1}, {"b": 2})


@pytest.mark.parametrize("desired", [{"a": 1}, [1]])
def test_nothing_stored_matches_only_nothing_wanted(desired: object) -> None:
    assert not diff.matches(desired, None)
    assert diff.matches(type(desired)(), None)
    assert not diff.matches(desired, "something else")


def test_against_nothing_stored_the_patch_is_the_whole_desired_object() -> None:
    desired = {"spec": {"replicas": 0, "paused": True, "selector": {"app": "x"}}}
    assert diff.merge_patch(desired, None) == desired  # type: ignore[arg-type]
    assert diff.merge_patch(desired, {}) == desired


def test_a_map_replaced_by_a_scalar_and_back_is_patched_whole() -> None:
    assert diff.merge_patch({"a": "x"}, {"a": {"b": 1}}) == {"a": "x"}
    assert diff.merge_patch({"a": {"b": 1, "c": 0}}, {"a": "x"}) == {"a": {"b": 1, "c": 0}}


def test_owned_view_enforces_labels_owner_references_and_tolerations() -> None:
    vs = parse_voiceservice(manifest({}) | {"metadata": {"name": "tts", "uid": "u-1"}})
    service = build.build_tier_service(vs, "gpu")
    view = diff.owned_view(service, replicas_owned=False)  # a Service has no replicas
    assert view["metadata"] == {
        "labels": service["metadata"]["labels"],
        "ownerReferences": service["metadata"]["ownerReferences"],
    }
    assert view["spec"] == service["spec"]
    bare = {"metadata": {"name": "x"}, "spec": {"a": 1}}
    assert diff.owned_view(bare, replicas_owned=False) == {
        "metadata": {"labels": {}},
        "spec": {"a": 1},
    }
    deployment = build.build_gpu_deployment(vs, OperatorSettings(_env_file=None))
    tolerated = copy.deepcopy(deployment)
    tolerated["spec"]["template"]["spec"]["tolerations"] = [{"operator": "Exists"}]
    assert not diff.matches(diff.owned_view(deployment, replicas_owned=True), tolerated)


def test_resource_lists_are_owned_whole_inside_a_pod_template() -> None:
    desired = {"spec": {"template": {"spec": {"resources": {"limits": {"cpu": "1"}}}}}}
    actual = {"spec": {"template": {"spec": {"resources": {"limits": {"cpu": "1", "x": "1"}}}}}}
    assert not diff.matches(desired, actual)
    patch = diff.merge_patch(desired, actual)
    assert patch == {"spec": {"template": {"spec": {"resources": {"limits": {"x": None}}}}}}


# --- the same merge patch for status writes: exact equality, None = absent -------------


def _status_patch(desired: dict, actual: dict, *, prune: bool) -> dict:
    return diff.merge_patch(desired, actual, same=diff.equal, owned_whole=lambda _path: prune)


def test_a_none_removes_a_key_that_is_there_and_costs_nothing_where_it_is_not() -> None:
    actual = {"healing": {"signals": {"pressure": "t1", "failure": "t2"}}}
    desired = {"healing": {"signals": {"pressure": "t1", "failure": None, "healthy": None}}}
    assert _status_patch(desired, actual, prune=False) == {
        "healing": {"signals": {"failure": None}}
    }
    assert _status_patch({"gpu": {"ratio": None}}, {"gpu": {}}, prune=False) == {}


def test_an_object_created_leaves_out_its_absent_keys_and_empty_objects_stay() -> None:
    desired = {"a": {"b": None, "c": 1, "d": {"e": None}, "f": {}}}
    assert _status_patch(desired, {}, prune=False) == {"a": {"c": 1, "f": {}}}
    # Nothing left of it: not created; where something else stands, it replaces it.
    assert _status_patch({"a": {"b": None}}, {}, prune=False) == {}
    assert _status_patch({"a": {"b": None}}, {"a": 1}, prune=False) == {"a": {}}
    assert diff.merge_patch({"a": {"b": None}}, {"a": 1}) == {"a": {}}


def test_status_values_compare_exactly_not_as_kubernetes_zero_values() -> None:
    # A child's zero matches an absent field; a status field of 0 is written.
    assert diff.merge_patch({"spec": {"n": 0}}, {"spec": {}}) == {"spec": {"n": 0}}
    assert _status_patch({"failovers": 0}, {}, prune=False) == {"failovers": 0}
    assert _status_patch({"failovers": 0}, {"failovers": 0}, prune=False) == {}
    assert _status_patch({"ratio": 1.0}, {"ratio": 1}, prune=False) == {}
    assert _status_patch({"gpu": {"ratio": 1.0}}, {"gpu": {"ratio": 1}}, prune=False) == {}
    assert diff.merge_patch({"spec": {"ratio": 1.0}}, {"spec": {"ratio": 1}}) == {
        "spec": {"ratio": 1.0}
    }
    conditions = [{"type": "Ready", "status": "True"}]
    assert _status_patch({"conditions": conditions}, {"conditions": []}, prune=False) == {
        "conditions": conditions
    }


def test_keys_gone_are_removed_only_where_the_writer_owns_the_map() -> None:
    actual = {"phase": "Serving", "gpu": {"replicas": 1, "x": 1}, "ready": "gpu 1/1"}
    desired = {"phase": "Serving", "gpu": {"replicas": 2}}
    assert _status_patch(desired, actual, prune=True) == {
        "gpu": {"replicas": 2, "x": None},
        "ready": None,
    }
    assert _status_patch(desired, actual, prune=False) == {"gpu": {"replicas": 2}}
    assert _status_patch({}, {"gone": None}, prune=True) == {"gone": None}
