"""Label keys and values in the spec are checked as Kubernetes checks them.

Each place a label key sits (gpu.nodeSelector, a selector's matchLabels and
matchExpressions[].key, a toleration's key) is refused by the CRD (OpenAPI
pattern + CEL, through the admission harness) and by pydantic alike, naming the
field; otherwise the API server would refuse the operator's NetworkPolicy or
Deployment later, at reconcile time.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from testsupport.crd_admission import admit
from testsupport.manifests import manifest
from voiceops_operator import build, spec
from voiceops_operator.settings import OperatorSettings

GOOD_KEYS = [
    "app",
    "kubernetes.io/metadata.name",
    "nvidia.com/gpu.product",
    "a.b-c/x_y.z",
    "App.Name_1",
    "x" * 63,
    "a" * 253 + "/" + "b" * 63,  # the longest: 317 characters
]
BAD_KEYS = [
    "-app",
    "app-",
    "_app",
    "app.",
    "Foo.com/x",  # an upper-case prefix
    "a/b/c",
    "/x",
    "x/",
    "x" * 64,  # a 64-character name
    "a" * 254 + "/x",  # a 254-character prefix
    "",
    "a..b/x",
    "a.-b/x",
    "-a.com/x",
    "a.com/-x",
    "has space",
    "tab\tkey",
    "ünïcode",
]
GOOD_VALUES = ["", "x", "NVIDIA-H100-80GB-HBM3", "a.b_c-d", "x" * 63]
BAD_VALUES = ["not ok", "-x", "x-", "x.", "_x", "a/b", "x" * 64]


def _peer(selector: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"networkPolicy": {"allowFrom": [{"podSelector": {}}, {selector: body}]}}


# Where a label key sits: (spec with that key, the field an error names).
KEY_PLACES: dict[str, tuple[Callable[[str], dict[str, Any]], str]] = {
    "nodeSelector": (lambda k: {"gpu": {"nodeSelector": {k: "x"}}}, "spec.gpu.nodeSelector"),
    "podSelector.matchLabels": (
        lambda k: _peer("podSelector", {"matchLabels": {k: "x"}}),
        "spec.networkPolicy.allowFrom[1].podSelector.matchLabels",
    ),
    "namespaceSelector.matchLabels": (
        lambda k: _peer("namespaceSelector", {"matchLabels": {k: "x"}}),
        "spec.networkPolicy.allowFrom[1].namespaceSelector.matchLabels",
    ),
    "matchExpressions.key": (
        lambda k: _peer("podSelector", {"matchExpressions": [{"key": k, "operator": "Exists"}]}),
        "spec.networkPolicy.allowFrom[1].podSelector.matchExpressions[0].key",
    ),
    "toleration.key": (
        lambda k: {"gpu": {"tolerations": [{"key": k, "operator": "Exists"}]}},
        "spec.gpu.tolerations[0].key",
    ),
}
VALUE_PLACES: dict[str, tuple[Callable[[str], dict[str, Any]], str]] = {
    "nodeSelector": (lambda v: {"gpu": {"nodeSelector": {"gpu": v}}}, "spec.gpu.nodeSelector.gpu"),
    "matchLabels": (
        lambda v: _peer("podSelector", {"matchLabels": {"app": v}}),
        "spec.networkPolicy.allowFrom[1].podSelector.matchLabels.app",
    ),
    "toleration.value": (
        lambda v: {"gpu": {"tolerations": [{"key": "gpu", "value": v}]}},
        "spec.gpu.tolerations[0].value",
    ),
}


def _dotted(path: str) -> str:
    """spec.a[1].b → spec.a.1.b: the harness's schema errors name paths with dots."""
    return re.sub(r"\[(\d+)\]", r".\1", path)


def _admit_errors(changes: dict[str, Any]) -> list[str]:
    _, errors = admit(manifest(copy.deepcopy(changes)))
    return errors


@pytest.mark.parametrize("place", KEY_PLACES)
@pytest.mark.parametrize("key", GOOD_KEYS, ids=lambda k: k[:40])
def test_good_label_keys_are_admitted_and_parsed(key: str, place: str) -> None:
    changes, _ = KEY_PLACES[place]
    assert _admit_errors(changes(key)) == []
    spec.parse_spec(changes(key))


# An empty toleration key is not a bad key: with operator Exists it matches every taint.
BAD_KEY_CASES = [
    (key, place)
    for place in KEY_PLACES
    for key in BAD_KEYS
    if (key, place) != ("", "toleration.key")
]


@pytest.mark.parametrize(("key", "place"), BAD_KEY_CASES, ids=lambda v: repr(v)[:40])
def test_bad_label_keys_are_refused_by_the_crd_and_the_operator(key: str, place: str) -> None:
    changes, field = KEY_PLACES[place]
    errors = _admit_errors(changes(key))
    # Each error names the field: a CEL rule's "<field>: Invalid value: <the rule>"
    # or, for the string fields, the OpenAPI schema's "<field, dotted>: ...".
    assert errors, f"admitted {key!r} at {place}"
    for error in errors:
        named = error.split(": ", 1)[0]
        assert named in (field, _dotted(field)), errors
        if named == field:  # CEL: the message is the rule
            assert "label key, [prefix/]name" in error, errors
    with pytest.raises(spec.InvalidSpec) as refused:
        spec.parse_spec(changes(key))
    assert [e.field for e in refused.value.errors] == [field]
    message = str(refused.value)
    assert message.startswith(field), message
    assert "label key" in message
    assert repr(key) in message  # names the offending key


def test_an_empty_toleration_key_is_admitted() -> None:
    changes, _ = KEY_PLACES["toleration.key"]
    assert _admit_errors(changes("")) == []
    assert spec.parse_spec(changes("")).gpu.tolerations[0].key == ""


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("-app", "name part must consist of alphanumerics"),
        ("x" * 64, "name part must be no more than 63 characters"),
        ("a" * 254 + "/x", "prefix part must be no more than 253 characters"),
        ("Foo.com/x", "prefix part must be a DNS-1123 subdomain"),
        ("/x", "prefix part must be non-empty"),
        ("x/", "name part must be non-empty"),
        ("", "name part must be non-empty"),
        ("a/b/c", "more than one '/'"),
        ("app\n", "name part must consist of alphanumerics"),  # RE2's $ is the very end
    ],
)
def test_the_operator_says_which_part_of_a_key_is_wrong(key: str, words: str) -> None:
    for place in ("nodeSelector", "matchExpressions.key"):
        changes, _ = KEY_PLACES[place]
        with pytest.raises(spec.InvalidSpec) as refused:
            spec.parse_spec(changes(key))
        assert words in str(refused.value), (place, str(refused.value))


def test_every_bad_key_of_a_map_is_named() -> None:
    changes = {"gpu": {"nodeSelector": {"-a": "x", "ok": "x", "b/": "x"}}}
    with pytest.raises(spec.InvalidSpec) as refused:
        spec.parse_spec(changes)
    message = str(refused.value)
    assert "'-a'" in message
    assert "'b/'" in message
    assert "'ok'" not in message


def test_a_long_prefix_is_refused_by_the_cel_rule_on_string_keys() -> None:
    # The OpenAPI pattern cannot bound the prefix (RE2: no lookahead); CEL does.
    changes, field = KEY_PLACES["matchExpressions.key"]
    errors = _admit_errors(changes("a" * 254 + "/x"))
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{field}: Invalid value: "), errors
    assert "longer than 253 characters" in errors[0]


@pytest.mark.parametrize("place", VALUE_PLACES)
@pytest.mark.parametrize("value", GOOD_VALUES, ids=repr)
def test_good_label_values_are_admitted_and_parsed(value: str, place: str) -> None:
    changes, _ = VALUE_PLACES[place]
    assert _admit_errors(changes(value)) == []
    spec.parse_spec(changes(value))


@pytest.mark.parametrize("place", VALUE_PLACES)
@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
def test_bad_label_values_are_refused_by_the_crd_and_the_operator(value: str, place: str) -> None:
    changes, field = VALUE_PLACES[place]
    errors = _admit_errors(changes(value))
    assert [e.split(": ", 1)[0] for e in errors] == [_dotted(field)], errors
    with pytest.raises(spec.InvalidSpec) as refused:
        spec.parse_spec(changes(value))
    assert [e.field for e in refused.value.errors] == [field]
    assert "is not a label value" in str(refused.value)


def test_the_gpu_placement_reaches_the_pods_unchanged(settings: OperatorSettings) -> None:
    selector = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "a.b-c/x_y.z": ""}
    vs = spec.parse_voiceservice(manifest({"gpu": {"nodeSelector": selector}}))
    deployment = build.build_gpu_deployment(vs, settings)
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == selector


# The CRD's regular expressions (OpenAPI pattern, CEL matches) and the operator's
# label_key_problems() agree on every key, including the awkward ones.
_key_chars = st.sampled_from("aZ09-_./")


@given(st.text(_key_chars, max_size=12) | st.sampled_from(GOOD_KEYS + BAD_KEYS))
def test_crd_patterns_and_pydantic_agree_on_label_keys(key: str) -> None:
    by_crd = bool(re.search(spec.LABEL_KEY_PATTERN, key)) and bool(
        re.search(spec.LABEL_KEY_PREFIX_PATTERN, key)
    )
    assert by_crd == (spec.label_key_problems(key) == []), key
