"""The exported permission list covers every API call the operator makes."""

from __future__ import annotations

from voiceops_operator import handlers, kube, permissions


def granted(group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for p in permissions.PERMISSIONS:
        if p.api_group == group and p.resource == resource:
            verbs |= set(p.verbs)
    return verbs


def test_children_are_fully_covered() -> None:
    for (api_version, _kind), plural in kube.RESOURCES.items():
        group = api_version.rpartition("/")[0]
        if plural == "voiceservices":
            assert {"get", "list", "watch", "patch"} <= granted(group, plural)
            assert {"get", "patch"} <= granted(group, "voiceservices/status")
        elif plural == "pods":  # not a child: observed, and deleted when its GPU fails
            assert {"get", "list", "watch", "delete"} <= granted(group, plural)
        elif plural == "events":  # what both loops say about a VoiceService
            assert "create" in granted(group, plural)
        else:
            assert {"get", "list", "watch", "create", "patch", "delete"} <= granted(group, plural)


def test_watched_children_are_listable() -> None:
    for group, _version, plural in handlers.CHILD_RESOURCES:
        assert {"list", "watch"} <= granted(group, plural)


def test_events_can_be_posted() -> None:
    assert "create" in granted("", "events")


def test_least_privilege_no_wildcards_no_secrets() -> None:
    for p in (*permissions.PERMISSIONS, *permissions.PEERING_PERMISSIONS):
        assert "*" not in p.verbs
        assert p.resource != "*"
        assert p.api_group != "*"
        assert p.resource != "secrets"  # pods read the fault token themselves
        assert p.why


def test_rbac_rules_shape() -> None:
    rules = permissions.as_rbac_rules()
    assert rules[0] == {
        "apiGroups": ["voiceops.io"],
        "resources": ["voiceservices"],
        "verbs": ["get", "list", "watch", "patch"],
    }
