"""Pure pieces of the emulator: patch formats and selectors."""

from __future__ import annotations

import pytest
from voiceops_sim.errors import ApiError
from voiceops_sim.patches import json_patch, merge_patch, strategic_merge_patch
from voiceops_sim.selectors import labels_match, parse_field_selector, parse_label_selector


def test_merge_patch_rfc7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "x": 1}
    assert merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3], "x": None}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
    }
    assert target == {"a": {"b": 1, "c": 2}, "l": [1, 2], "x": 1}  # input untouched


def test_strategic_merge_lists_by_key_and_directives() -> None:
    live = {
        "containers": [
            {"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]},
            {"name": "b", "image": "y"},
        ],
        "ports": [{"containerPort": 80, "name": "http"}],
        "finalizers": ["f1"],
    }
    patch = {
        "containers": [
            {"name": "a", "env": [{"name": "F", "value": "2"}]},
            {"name": "b", "$patch": "delete"},
        ],
        "ports": [{"containerPort": 81}],
        "finalizers": ["f2"],
        "$setElementOrder/containers": [{"name": "a"}],
    }
    result = strategic_merge_patch(live, patch)
    assert result["containers"] == [
        {
            "name": "a",
            "image": "x",
            "env": [{"name": "E", "value": "1"}, {"name": "F", "value": "2"}],
        }
    ]
    assert [p["containerPort"] for p in result["ports"]] == [80, 81]
    assert result["finalizers"] == ["f1", "f2"]
    assert strategic_merge_patch(live, {"ports": [{"$patch": "replace"}, {"containerPort": 9}]})[
        "ports"
    ] == [{"containerPort": 9}]
    assert strategic_merge_patch(
        {"tolerations": [{"key": "a"}]}, {"tolerations": [{"key": "b"}]}
    ) == {"tolerations": [{"key": "b"}]}


def test_json_patch_ops_and_failures() -> None:
    doc = {"a": [1, 2], "b": {"c": 1}}
    ops = [
        {"op": "add", "path": "/a/-", "value": 3},
        {"op": "add", "path": "/a/0", "value": 0},
        {"op": "remove", "path": "/b/c"},
        {"op": "copy", "from": "/a", "path": "/d"},
        {"op": "move", "from": "/d", "path": "/b/e"},
        {"op": "replace", "path": "/a/1", "value": 9},
        {"op": "test", "path": "/b/e/0", "value": 0},
        {"op": "add", "path": "/x~1y", "value": 1},
    ]
    assert json_patch(doc, ops) == {"a": [0, 9, 2, 3], "b": {"e": [0, 1, 2, 3]}, "x/y": 1}
    with pytest.raises(ApiError) as failed:
        json_patch(doc, [{"op": "test", "path": "/b/c", "value": 2}])
    assert failed.value.code == 422
    with pytest.raises(ApiError) as missing:
        json_patch(doc, [{"op": "remove", "path": "/nope"}])
    assert missing.value.code == 422
    with pytest.raises(ApiError) as not_list:
        json_patch(doc, {"op": "add"})
    assert not_list.value.code == 400


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("a=b", {"a": "b"}, True),
        ("a=b", {"a": "c"}, False),
        ("a!=b", {}, True),
        ("a in (b, c),d", {"a": "c", "d": ""}, True),
        ("a notin (b)", {"a": "b"}, False),
        ("!a", {"a": "x"}, False),
        (
            "app.kubernetes.io/instance=tts,voiceops.io/tier=gpu",
            {"app.kubernetes.io/instance": "tts", "voiceops.io/tier": "gpu"},
            True,
        ),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert labels_match(parse_label_selector(selector), labels) is expected


def test_bad_label_selector_is_a_400() -> None:
    with pytest.raises(ApiError) as error:
        parse_label_selector("a in b")
    assert error.value.code == 400


def test_field_selector_dotted_paths() -> None:
    pod = {"metadata": {"name": "p"}, "status": {"phase": "Running"}, "spec": {"nodeName": "n1"}}
    assert parse_field_selector("status.phase=Running,spec.nodeName!=n2")(pod)
    assert not parse_field_selector("metadata.name==q")(pod)
