"""Watch streams of the API emulator: initial state, resume, 410 Gone, bookmarks, selectors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from kubernetes_asyncio import client, watch
from voiceops_sim.apiserver import KubeApiEmulator


async def _collect(
    url: str, params: dict[str, str], count: int, deadline_s: float = 5.0
) -> list[dict[str, Any]]:
    """Read ``count`` watch events (or until the server closes the stream)."""
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http, http.get(url, params=params) as rsp:
        assert rsp.status == 200

        async def read() -> None:
            async for line in rsp.content:
                events.append(json.loads(line))
                if len(events) >= count:
                    return

        await asyncio.wait_for(read(), deadline_s)
    return events


async def test_watch_resumes_from_resource_version(
    emulator: KubeApiEmulator, namespace: str
) -> None:
    emulator.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": namespace}}
    )
    start_rv = emulator.store.rv
    emulator.patch("configmaps", "a", namespace, {"data": {"k": "v"}})
    emulator.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": namespace}}
    )
    emulator.delete("configmaps", "a", namespace)
    url = f"{emulator.url}/api/v1/namespaces/{namespace}/configmaps"
    events = await _collect(url, {"watch": "true", "resourceVersion": str(start_rv)}, 3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs)
    assert rvs[0] > start_rv


async def test_watch_without_version_sends_current_state_then_changes(
    emulator: KubeApiEmulator, namespace: str
) -> None:
    emulator.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": namespace}}
    )
    url = f"{emulator.url}/api/v1/namespaces/{namespace}/configmaps"
    reader = asyncio.create_task(_collect(url, {"watch": "1"}, 2))
    await emulator.wait_for(lambda: emulator.open_watches() >= 1)
    emulator.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": namespace}}
    )
    events = await reader
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]


async def test_watch_too_old_gets_410_gone(emulator: KubeApiEmulator, namespace: str) -> None:
    old_rv = emulator.store.rv
    emulator.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": namespace}}
    )
    emulator.compact()
    url = f"{emulator.url}/api/v1/namespaces/{namespace}/configmaps"
    events = await _collect(url, {"watch": "true", "resourceVersion": str(old_rv)}, 1)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"


async def test_watch_bookmarks_and_timeout(emulator: KubeApiEmulator, namespace: str) -> None:
    url = f"{emulator.url}/api/v1/namespaces/{namespace}/configmaps"
    params = {
        "watch": "true",
        "resourceVersion": str(emulator.store.rv),
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "2",
    }
    events = await _collect(url, params, 100, deadline_s=10)  # ends when the server times out
    assert events
    assert all(e["type"] == "BOOKMARK" for e in events)
    assert events[-1]["object"]["metadata"]["resourceVersion"] == str(emulator.store.rv)


async def test_watch_label_selector_turns_relabel_into_added_and_deleted(
    emulator: KubeApiEmulator, namespace: str
) -> None:
    emulator.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": namespace}}
    )
    start = emulator.store.rv
    emulator.patch("configmaps", "a", namespace, {"metadata": {"labels": {"tier": "gpu"}}})
    emulator.patch("configmaps", "a", namespace, {"data": {"x": "1"}})
    emulator.patch("configmaps", "a", namespace, {"metadata": {"labels": {"tier": "cpu"}}})
    url = f"{emulator.url}/api/v1/namespaces/{namespace}/configmaps"
    params = {"watch": "true", "resourceVersion": str(start), "labelSelector": "tier=gpu"}
    events = await _collect(url, params, 3)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


async def test_kubernetes_asyncio_watch_across_namespaces(
    emulator: KubeApiEmulator, api_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        async with watch.Watch() as stream:
            async for event in stream.stream(
                apps.list_deployment_for_all_namespaces, timeout_seconds=5
            ):
                seen.append((event["type"], event["object"].metadata.name))
                if len(seen) == 2:
                    return

    task = asyncio.create_task(consume())
    await emulator.wait_for(lambda: emulator.open_watches() >= 1)
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "w"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i:1"}]},
            },
        },
    }
    await apps.create_namespaced_deployment(namespace, body)
    await apps.patch_namespaced_deployment("w", namespace, {"spec": {"replicas": 2}})
    await asyncio.wait_for(task, 5)
    assert seen == [("ADDED", "w"), ("MODIFIED", "w")]


async def test_stop_closes_open_watches(emulator: KubeApiEmulator, namespace: str) -> None:
    url = f"{emulator.url}/api/v1/namespaces/{namespace}/configmaps"
    reader = asyncio.create_task(_collect(url, {"watch": "true"}, 100, deadline_s=5))
    await emulator.wait_for(lambda: emulator.open_watches() >= 1)
    await emulator.stop()
    assert await reader == []
