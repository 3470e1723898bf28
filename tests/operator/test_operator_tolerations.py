"""GPU tolerations are checked as Kubernetes checks a pod's tolerations.

spec.gpu.tolerations[] are copied into the GPU Deployment's pod template. The
API server's ValidateTolerations (k8s.io/kubernetes/pkg/apis/core/validation)
refuses an empty key without operator Exists, a value with Exists and
tolerationSeconds without effect NoExecute; the CRD (CEL, through the admission
harness) and pydantic refuse the same VoiceService, naming the field, instead of
admitting it and failing the Deployment at reconcile time.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
from testsupport.crd_admission import admit
from testsupport.manifests import EXAMPLES, manifest, voiceservices_in
from voiceops_operator import build, spec
from voiceops_operator.settings import OperatorSettings

# What a toleration holds once the defaults are in (the API server's structural
# defaulting and pydantic's alike), and so what the Deployment gets.
DEFAULTS = {"key": "", "operator": "Equal", "value": "", "effect": ""}

A_GOOD_ONE = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _changes(*tolerations: dict[str, Any]) -> dict[str, Any]:
    return {"gpu": {"tolerations": [copy.deepcopy(t) for t in tolerations]}}


def _admit_errors(changes: dict[str, Any]) -> list[str]:
    _, errors = admit(manifest(copy.deepcopy(changes)))
    return errors


def kubernetes_problems(toleration: dict[str, Any]) -> list[str]:
    """ValidateTolerations of kube-apiserver, for one toleration of a pod spec.

    A port of the rules for the values this API can hold (a label key or "", a
    label value, operator Exists or Equal, a known effect): what the API server
    would answer when the operator creates the GPU Deployment.
    """
    t = {**DEFAULTS, **toleration}
    problems = []
    if t["key"] == "" and t["operator"] != "Exists":
        problems.append("operator must be Exists when `key` is empty")
    if t.get("tolerationSeconds") is not None and t["effect"] != "NoExecute":
        problems.append("effect must be 'NoExecute' when `tolerationSeconds` is set")
    if t["operator"] == "Exists" and t["value"] != "":
        problems.append("value must be empty when `operator` is 'Exists'")
    return problems


# Each breaks one rule: (toleration, the field an error names, words of its message).
REFUSED = [
    ({"effect": "NoSchedule"}, "operator", "must be Exists when key is empty"),
    ({}, "operator", "must be Exists when key is empty"),
    ({"operator": "Equal", "value": "tts"}, "operator", "must be Exists when key is empty"),
    ({"key": "", "effect": "NoExecute"}, "operator", "must be Exists when key is empty"),
    ({"operator": "Exists", "value": "x"}, "value", "must be empty when operator is Exists"),
    (
        {"key": "nvidia.com/gpu", "operator": "Exists", "value": "present", "effect": "NoSchedule"},
        "value",
        "must be empty when operator is Exists",
    ),
    (
        {"key": "k", "value": "v", "tolerationSeconds": 30},
        "effect",
        "must be NoExecute when tolerationSeconds is set",
    ),
    (
        {"key": "k", "value": "v", "effect": "NoSchedule", "tolerationSeconds": 0},
        "effect",
        "must be NoExecute when tolerationSeconds is set",
    ),
    (
        {"operator": "Exists", "effect": "PreferNoSchedule", "tolerationSeconds": 10},
        "effect",
        "must be NoExecute when tolerationSeconds is set",
    ),
]

ACCEPTED = [
    {"operator": "Exists"},
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute", "tolerationSeconds": 30},
    {"key": "k", "value": "v"},  # operator defaults to Equal
    {"key": "k"},  # Equal with an empty value
    {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0},
    {"key": "dedicated", "operator": "Exists", "effect": "PreferNoSchedule"},
]


@pytest.mark.parametrize(("toleration", "name", "words"), REFUSED, ids=repr)
def test_tolerations_kubernetes_refuses_are_refused_naming_the_field(
    toleration: dict[str, Any], name: str, words: str
) -> None:
    assert kubernetes_problems(toleration), "not a toleration the API server refuses"
    # At index 1, after a good one: the error names the indexed field.
    changes = _changes(A_GOOD_ONE, toleration)
    field = f"spec.gpu.tolerations[1].{name}"

    errors = _admit_errors(changes)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{field}: Invalid value: "), errors
    assert words in errors[0], errors

    with pytest.raises(spec.InvalidSpec) as refused:
        spec.parse_spec(changes)
    assert [e.field for e in refused.value.errors] == [field]
    message = str(refused.value)
    assert message.startswith(f"{field} {words}"), message


def test_the_crd_and_the_operator_say_the_same_thing() -> None:
    changes = _changes({"effect": "NoSchedule"})
    rule = (
        "must be Exists when key is empty (operator defaults to Equal, which needs a key): "
        "set key to the taint's key, or operator: Exists to tolerate every taint"
    )
    field = "spec.gpu.tolerations[0].operator"
    assert _admit_errors(changes) == [f"{field}: Invalid value: {rule}"]
    with pytest.raises(spec.InvalidSpec) as refused:
        spec.parse_spec(changes)
    assert str(refused.value) == f"{field} {rule}"


def test_a_toleration_breaking_two_rules_is_refused() -> None:
    # The CRD names every broken rule; pydantic stops at an object's first one.
    changes = _changes({"value": "v", "tolerationSeconds": 5})
    errors = _admit_errors(changes)
    assert sorted(e.split(":", 1)[0] for e in errors) == [
        "spec.gpu.tolerations[0].effect",
        "spec.gpu.tolerations[0].operator",
    ]
    with pytest.raises(spec.InvalidSpec) as refused:
        spec.parse_spec(changes)
    assert [e.field for e in refused.value.errors] == ["spec.gpu.tolerations[0].operator"]


def test_every_bad_toleration_of_the_list_is_named() -> None:
    changes = _changes({"effect": "NoSchedule"}, A_GOOD_ONE, {"operator": "Exists", "value": "x"})
    fields = ["spec.gpu.tolerations[0].operator", "spec.gpu.tolerations[2].value"]
    assert [e.split(":", 1)[0] for e in _admit_errors(changes)] == fields
    with pytest.raises(spec.InvalidSpec) as refused:
        spec.parse_spec(changes)
    assert [e.field for e in refused.value.errors] == fields


@pytest.mark.parametrize(
    ("toleration", "field"),
    [
        ({"key": "k", "operator": "Lt", "value": "1"}, "operator"),
        ({"key": "k", "operator": ""}, "operator"),  # Kubernetes' "" (= Equal): write Equal
        ({"key": "k", "effect": "NoEvict"}, "effect"),
        ({"key": "k", "effect": "NoExecute", "tolerationSeconds": -1}, "tolerationSeconds"),
    ],
    ids=repr,
)
def test_unknown_operators_effects_and_negative_seconds_are_refused_by_the_schema(
    toleration: dict[str, Any], field: str
) -> None:
    changes = _changes(toleration)
    errors = _admit_errors(changes)
    assert [e.split(":", 1)[0] for e in errors] == [f"spec.gpu.tolerations.0.{field}"], errors
    with pytest.raises(spec.InvalidSpec) as refused:
        spec.parse_spec(changes)
    assert [e.field for e in refused.value.errors] == [f"spec.gpu.tolerations[0].{field}"]


@pytest.mark.parametrize("toleration", ACCEPTED, ids=repr)
def test_valid_tolerations_are_admitted_and_reach_the_gpu_pods_unchanged(
    toleration: dict[str, Any], settings: OperatorSettings
) -> None:
    assert kubernetes_problems(toleration) == []
    changes = _changes(A_GOOD_ONE, toleration)
    defaulted, errors = admit(manifest(copy.deepcopy(changes)))
    assert errors == []
    # What the API server stores, the operator parses to the same values.
    assert spec.parse_spec(defaulted["spec"]) == spec.parse_spec(changes)

    vs = spec.parse_voiceservice(manifest(copy.deepcopy(changes)))
    pod_spec = build.build_gpu_deployment(vs, settings)["spec"]["template"]["spec"]
    assert pod_spec["tolerations"] == [{**DEFAULTS, **t} for t in (A_GOOD_ONE, toleration)]
    # ... as the API server stores them, and nothing it would refuse.
    assert pod_spec["tolerations"] == defaulted["spec"]["gpu"]["tolerations"]
    assert all(kubernetes_problems(t) == [] for t in pod_spec["tolerations"])


# Every combination of a few keys, operators, values, effects and seconds ("absent"
# leaves the field out): the CRD and the operator accept exactly what Kubernetes does.
_ABSENT = object()
_COMBINATIONS = [
    {
        name: part
        for name, part in zip(
            ("key", "operator", "value", "effect", "tolerationSeconds"), parts, strict=True
        )
        if part is not _ABSENT
    }
    for parts in itertools.product(
        (_ABSENT, "", "nvidia.com/gpu"),
        (_ABSENT, "Exists", "Equal"),
        (_ABSENT, "", "v"),
        (_ABSENT, "", "NoSchedule", "PreferNoSchedule", "NoExecute"),
        (_ABSENT, 0, 300),
    )
]


def test_the_crd_and_the_operator_accept_exactly_what_kubernetes_accepts(
    settings: OperatorSettings,
) -> None:
    expected = [kubernetes_problems(t) == [] for t in _COMBINATIONS]
    assert any(expected)
    assert not all(expected)

    by_crd = []
    for start in range(0, len(_COMBINATIONS), 32):  # 32 tolerations at most per spec
        chunk = _COMBINATIONS[start : start + 32]
        errors = _admit_errors(_changes(*chunk))
        refused = {int(e.split("[", 1)[1].split("]", 1)[0]) for e in errors}
        by_crd.extend(index not in refused for index in range(len(chunk)))
    assert by_crd == expected

    for toleration, ok in zip(_COMBINATIONS, expected, strict=True):
        try:
            vs = spec.parse_voiceservice(manifest(_changes(toleration)))
        except spec.InvalidSpec:
            assert not ok, toleration
            continue
        assert ok, toleration
        (rendered,) = build.build_gpu_deployment(vs, settings)["spec"]["template"]["spec"][
            "tolerations"
        ]
        assert rendered == {**DEFAULTS, **toleration}


def test_the_examples_tolerations_are_valid() -> None:
    found = [
        t
        for path in EXAMPLES
        for vs in voiceservices_in(path)
        for t in vs.get("spec", {}).get("gpu", {}).get("tolerations", [])
    ]
    assert found, "no example has a toleration"
    for toleration in found:
        assert kubernetes_problems(toleration) == [], toleration
