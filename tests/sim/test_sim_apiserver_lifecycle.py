"""Deletion in the API emulator: finalizers, garbage collection, namespaces."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from sim_objects import deployment, widget
from voiceops_sim.apiserver import KubeApiEmulator

MERGE = "application/merge-patch+json"


def _owned_by(owner: dict, name: str, kind: str = "ConfigMap") -> dict:
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": owner["metadata"]["namespace"],
            "ownerReferences": [ref],
        },
    }


async def test_finalizers_hold_deletion_until_removed(
    api_client: client.ApiClient, emulator: KubeApiEmulator, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api_client)
    args = ("example.com", "v1", namespace, "widgets")
    body = widget("w")
    body["metadata"]["finalizers"] = ["example.com/cleanup"]
    await custom.create_namespaced_custom_object(*args, body)
    await custom.delete_namespaced_custom_object(*args, "w")
    marked = await custom.get_namespaced_custom_object(*args, "w")
    assert marked["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiException) as error:  # no new finalizers while deleting
        await custom.patch_namespaced_custom_object(
            *args,
            "w",
            {"metadata": {"finalizers": ["example.com/cleanup", "other"]}},
            _content_type=MERGE,
        )
    assert error.value.status == 422
    await custom.patch_namespaced_custom_object(
        *args, "w", {"metadata": {"finalizers": None}}, _content_type=MERGE
    )
    assert emulator.get("widgets", "w", namespace) is None


async def test_background_gc_cascades_through_owner_chain(
    emulator: KubeApiEmulator, api_client: client.ApiClient, namespace: str
) -> None:
    owner = emulator.create(
        {**widget("owner"), "metadata": {"name": "owner", "namespace": namespace}}
    )
    child = emulator.create(_owned_by(owner, "child"))
    emulator.create(_owned_by(child, "grandchild"))
    emulator.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "unrelated", "namespace": namespace},
        }
    )
    custom = client.CustomObjectsApi(api_client)
    await custom.delete_namespaced_custom_object("example.com", "v1", namespace, "widgets", "owner")
    remaining = [c["metadata"]["name"] for c in emulator.list("configmaps", namespace)]
    assert remaining == ["unrelated"]


async def test_dependent_with_a_live_second_owner_survives(
    emulator: KubeApiEmulator, namespace: str
) -> None:
    first = emulator.create({**widget("a"), "metadata": {"name": "a", "namespace": namespace}})
    second = emulator.create({**widget("b"), "metadata": {"name": "b", "namespace": namespace}})
    shared = _owned_by(first, "shared")
    shared["metadata"]["ownerReferences"].append(
        {**_owned_by(second, "x")["metadata"]["ownerReferences"][0], "controller": False}
    )
    emulator.create(shared)
    emulator.delete("widgets", "a", namespace)
    left = emulator.get("configmaps", "shared", namespace)
    assert [r["name"] for r in left["metadata"]["ownerReferences"]] == ["b"]


async def test_orphan_and_foreground_propagation(
    api_client: client.ApiClient, emulator: KubeApiEmulator, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    orphaned_owner = (await apps.create_namespaced_deployment(namespace, deployment("o"))).to_dict()
    orphaned_owner = emulator.get("deployments", "o", namespace)
    emulator.create(_owned_by(orphaned_owner, "kept"))
    await apps.delete_namespaced_deployment("o", namespace, propagation_policy="Orphan")
    kept = emulator.get("configmaps", "kept", namespace)
    assert kept is not None
    assert "ownerReferences" not in kept["metadata"]

    await apps.create_namespaced_deployment(namespace, deployment("f"))
    owner = emulator.get("deployments", "f", namespace)
    blocked = _owned_by(owner, "blocked")
    blocked["metadata"]["finalizers"] = ["test/hold"]
    emulator.create(blocked)
    await apps.delete_namespaced_deployment("f", namespace, propagation_policy="Foreground")
    waiting = emulator.get("deployments", "f", namespace)
    assert "foregroundDeletion" in waiting["metadata"]["finalizers"]
    assert emulator.get("configmaps", "blocked", namespace)["metadata"]["deletionTimestamp"]
    emulator.patch("configmaps", "blocked", namespace, {"metadata": {"finalizers": None}})
    assert emulator.get("configmaps", "blocked", namespace) is None
    assert emulator.get("deployments", "f", namespace) is None


async def test_namespace_deletion_removes_its_objects(
    api_client: client.ApiClient, emulator: KubeApiEmulator, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    await core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})
    await core.delete_namespace(namespace)
    assert emulator.list("configmaps", namespace) == []
    assert emulator.get("namespaces", namespace) is None


async def test_delete_precondition_conflict(
    api_client: client.ApiClient, emulator: KubeApiEmulator, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    await core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})
    with pytest.raises(ApiException) as error:
        await core.delete_namespaced_config_map(
            "a", namespace, body={"preconditions": {"uid": "not-the-uid"}}
        )
    assert error.value.status == 409
    assert emulator.get("configmaps", "a", namespace) is not None
