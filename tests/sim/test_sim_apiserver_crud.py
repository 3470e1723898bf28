"""The API emulator over real HTTP with kubernetes_asyncio: CRUD, selectors, subresources."""

from __future__ import annotations

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from sim_objects import deployment, widget
from voiceops_sim.apiserver import KubeApiEmulator

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


async def test_discovery_lists_builtins_and_crds(emulator: KubeApiEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emulator.url}/version") as rsp:
            assert (await rsp.json())["major"] == "1"
        async with http.get(f"{emulator.url}/api") as rsp:
            assert (await rsp.json())["versions"] == ["v1"]
        async with http.get(f"{emulator.url}/apis") as rsp:
            groups = {g["name"]: g for g in (await rsp.json())["groups"]}
        assert {
            "apps",
            "autoscaling",
            "policy",
            "networking.k8s.io",
            "events.k8s.io",
            "coordination.k8s.io",
            "apiextensions.k8s.io",
            "example.com",
        } <= set(groups)
        assert groups["autoscaling"]["preferredVersion"]["version"] == "v2"
        async with http.get(f"{emulator.url}/apis/apps/v1") as rsp:
            resources = {r["name"]: r for r in (await rsp.json())["resources"]}
        assert resources["deployments"]["namespaced"] is True
        assert resources["deployments"]["shortNames"] == ["deploy"]
        assert "deployments/status" in resources
        assert "deployments/scale" in resources
        async with http.get(f"{emulator.url}/apis/example.com/v1") as rsp:
            widgets = {r["name"]: r for r in (await rsp.json())["resources"]}
        assert widgets["widgets"]["kind"] == "Widget"
        assert widgets["widgets"]["shortNames"] == ["wd"]
        assert "widgets/status" in widgets
        async with http.get(f"{emulator.url}/apis/nope.example/v1") as rsp:
            assert rsp.status == 404
            assert (await rsp.json())["kind"] == "Status"


async def test_create_get_list_and_already_exists(
    api_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    created = await apps.create_namespaced_deployment(namespace, deployment("web"))
    assert created.metadata.uid
    assert created.metadata.generation == 1
    assert created.metadata.creation_timestamp is not None
    assert created.spec.replicas == 1
    assert created.spec.strategy.type == "RollingUpdate"  # a server-side default
    fetched = await apps.read_namespaced_deployment("web", namespace)
    assert fetched.metadata.resource_version == created.metadata.resource_version
    with pytest.raises(ApiException) as error:
        await apps.create_namespaced_deployment(namespace, deployment("web"))
    assert error.value.status == 409
    assert "AlreadyExists" in error.value.body
    with pytest.raises(ApiException) as missing:
        await apps.read_namespaced_deployment("nope", namespace)
    assert missing.value.status == 404


async def test_generate_name_and_namespace_must_exist(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    body = {"metadata": {"generateName": "cfg-"}, "data": {"a": "b"}}
    made = await core.create_namespaced_config_map("default", body)
    assert made.metadata.name.startswith("cfg-")
    assert len(made.metadata.name) == 9
    with pytest.raises(ApiException) as error:
        await core.create_namespaced_config_map("no-such-ns", {"metadata": {"name": "x"}})
    assert error.value.status == 404


async def test_list_selectors_and_all_namespaces(
    api_client: client.ApiClient, emulator: KubeApiEmulator, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    other = emulator.ensure_namespace(f"{namespace}-b")["metadata"]["name"]
    for ns, name, labels in [
        (namespace, "a", {"tier": "gpu", "app": "tts"}),
        (namespace, "b", {"tier": "fallback", "app": "tts"}),
        (namespace, "c", {"app": "other"}),
        (other, "d", {"tier": "gpu", "app": "tts"}),
    ]:
        await core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})

    async def names(selector: str, ns: str | None = namespace) -> list[str]:
        if ns is None:
            result = await core.list_config_map_for_all_namespaces(label_selector=selector)
        else:
            result = await core.list_namespaced_config_map(ns, label_selector=selector)
        return [i.metadata.name for i in result.items]

    assert await names("tier=gpu") == ["a"]
    assert await names("app==tts,tier!=gpu") == ["b"]
    assert await names("tier in (gpu, fallback)") == ["a", "b"]
    assert await names("tier notin (gpu)") == ["b", "c"]
    assert await names("tier") == ["a", "b"]
    assert await names("!tier") == ["c"]
    assert await names("tier=gpu", None) == ["a", "d"]
    by_name = await core.list_namespaced_config_map(namespace, field_selector="metadata.name=b")
    assert [i.metadata.name for i in by_name.items] == ["b"]
    listed = await core.list_namespaced_config_map(namespace)
    assert int(listed.metadata.resource_version) == emulator.store.rv
    with pytest.raises(ApiException) as error:
        await core.list_namespaced_config_map(namespace, label_selector="tier in gpu")
    assert error.value.status == 400


async def test_list_pagination(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    for n in range(5):
        await core.create_namespaced_config_map(namespace, {"metadata": {"name": f"cm-{n}"}})
    first = await core.list_namespaced_config_map(namespace, limit=2)
    assert [i.metadata.name for i in first.items] == ["cm-0", "cm-1"]
    assert first.metadata._continue
    rest = await core.list_namespaced_config_map(
        namespace, limit=10, _continue=first.metadata._continue
    )
    assert [i.metadata.name for i in rest.items] == ["cm-2", "cm-3", "cm-4"]
    assert not rest.metadata._continue


async def test_update_conflict_and_generation(
    api_client: client.ApiClient, emulator: KubeApiEmulator, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    created = await apps.create_namespaced_deployment(namespace, deployment("web"))
    body = created.to_dict()
    stale = api_client.sanitize_for_serialization(created)
    body = stale | {"spec": {**stale["spec"], "replicas": 3}}
    updated = await apps.replace_namespaced_deployment("web", namespace, body)
    assert updated.metadata.generation == 2
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    with pytest.raises(ApiException) as error:  # same (now stale) resourceVersion again
        await apps.replace_namespaced_deployment("web", namespace, body)
    assert error.value.status == 409
    assert "the object has been modified" in error.value.body
    # A metadata-only change does not bump the generation.
    relabelled = await apps.patch_namespaced_deployment(
        "web", namespace, {"metadata": {"labels": {"x": "y"}}}
    )
    assert relabelled.metadata.generation == 2
    # An identical patch is a no-op: no new resourceVersion, no watch event.
    rv_before = emulator.store.rv
    same = await apps.patch_namespaced_deployment(
        "web", namespace, {"metadata": {"labels": {"x": "y"}}}
    )
    assert same.metadata.resource_version == relabelled.metadata.resource_version
    assert emulator.store.rv == rv_before


async def test_status_subresource_is_separate(api_client: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api_client)
    await apps.create_namespaced_deployment(namespace, deployment("web"))
    # Status in a main-resource write is ignored...
    patched = await apps.patch_namespaced_deployment(
        "web", namespace, {"spec": {"replicas": 2}, "status": {"replicas": 9}}
    )
    assert patched.spec.replicas == 2
    assert patched.status is None or patched.status.replicas is None
    # ...and a /status write touches only the status.
    status = await apps.patch_namespaced_deployment_status(
        "web", namespace, {"spec": {"replicas": 7}, "status": {"replicas": 2, "readyReplicas": 1}}
    )
    assert status.status.ready_replicas == 1
    assert status.spec.replicas == 2
    assert status.metadata.generation == patched.metadata.generation


async def test_custom_resource_status_and_patch_types(
    api_client: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api_client)
    args = ("example.com", "v1", namespace, "widgets")
    made = await custom.create_namespaced_custom_object(*args, widget("w", size=2))
    assert made["spec"] == {"size": 2, "color": "red", "low": 0.5, "high": 0.9}
    status = await custom.patch_namespaced_custom_object_status(
        *args, "w", {"status": {"phase": "Ready"}, "spec": {"size": 9}}, _content_type=MERGE
    )
    assert status["status"] == {"phase": "Ready"}
    assert status["spec"]["size"] == 2
    ops = [
        {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": status["metadata"]["resourceVersion"],
        },
        {"op": "replace", "path": "/spec/size", "value": 5},
        {"op": "add", "path": "/spec/tags", "value": {"team": "voice"}},
    ]
    patched = await custom.patch_namespaced_custom_object(*args, "w", ops, _content_type=JSON_PATCH)
    assert patched["spec"]["size"] == 5
    assert patched["spec"]["tags"] == {"team": "voice"}
    assert patched["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as failed_test:  # the same test op is now stale
        await custom.patch_namespaced_custom_object(*args, "w", ops, _content_type=JSON_PATCH)
    assert failed_test.value.status == 422
    with pytest.raises(ApiException) as smp:
        await custom.patch_namespaced_custom_object(
            *args,
            "w",
            {"spec": {"size": 1}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert smp.value.status == 415
    with pytest.raises(ApiException) as not_a_list:  # the client's default for a dict body
        await custom.patch_namespaced_custom_object(*args, "w", {"spec": {"size": 1}})
    assert not_a_list.value.status == 400


async def test_strategic_merge_patch_merges_containers_by_name(
    api_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    body = deployment("web")
    body["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "busybox:1"})
    await apps.create_namespaced_deployment(namespace, body)
    patch = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "main", "env": [{"name": "A", "value": "1"}]}]}
            }
        }
    }
    patched = await apps.patch_namespaced_deployment("web", namespace, patch)
    containers = {c.name: c for c in patched.spec.template.spec.containers}
    assert set(containers) == {"main", "side"}
    assert containers["main"].image == "voiceops/service:0.1.0"
    assert containers["main"].env[0].value == "1"
    with pytest.raises(ApiException) as error:  # a merge patch replaces the whole list
        await apps.patch_namespaced_deployment("web", namespace, patch, _content_type=MERGE)
    assert error.value.status == 422
    assert "spec.template.spec.containers[0].image: Required value" in error.value.body


async def test_server_side_apply_removes_fields_no_longer_applied(
    emulator: KubeApiEmulator, namespace: str
) -> None:
    url = f"{emulator.url}/api/v1/namespaces/{namespace}/configmaps/applied"
    headers = {"Content-Type": "application/apply-patch+yaml"}
    first = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: applied}\ndata: {a: '1', b: '2'}\n"
    second = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: applied}\ndata: {a: '3'}\n"
    async with aiohttp.ClientSession() as http:
        async with http.patch(url, data=first, headers=headers) as rsp:
            assert rsp.status == 400  # fieldManager is required
        params = {"fieldManager": "test"}
        async with http.patch(url, data=first, headers=headers, params=params) as rsp:
            assert rsp.status == 200
            assert (await rsp.json())["data"] == {"a": "1", "b": "2"}
        async with http.patch(url, data=second, headers=headers, params=params) as rsp:
            assert (await rsp.json())["data"] == {"a": "3"}
        async with http.patch(url, data="{}", headers={"Content-Type": "text/plain"}) as rsp:
            assert rsp.status == 415


async def test_scale_subresource(api_client: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api_client)
    await apps.create_namespaced_deployment(namespace, deployment("web"))
    scale = await apps.patch_namespaced_deployment_scale(
        "web", namespace, {"spec": {"replicas": 4}}
    )
    assert scale.spec.replicas == 4
    assert (await apps.read_namespaced_deployment("web", namespace)).spec.replicas == 4


async def test_service_defaults_and_immutable_selector(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    svc = await core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "tts"},
            "spec": {"selector": {"app": "x"}, "ports": [{"name": "http", "port": 80}]},
        },
    )
    assert svc.spec.cluster_ip.startswith("10.96.")
    assert svc.spec.ports[0].target_port == 80
    assert svc.spec.ports[0].protocol == "TCP"
    apps = client.AppsV1Api(api_client)
    await apps.create_namespaced_deployment(namespace, deployment("web"))
    with pytest.raises(ApiException) as error:
        await apps.patch_namespaced_deployment(
            "web", namespace, {"spec": {"selector": {"matchLabels": {"app": "other"}}}}
        )
    assert error.value.status == 422
    assert "spec.selector" in error.value.body


async def test_direct_store_access_and_request_log(
    emulator: KubeApiEmulator, namespace: str, api_client: client.ApiClient
) -> None:
    since = emulator.reset_request_log()
    core = client.CoreV1Api(api_client)
    await core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    await core.read_namespaced_config_map("x", namespace)
    await core.list_namespaced_config_map(namespace)
    counts = emulator.request_counts(since=since)
    assert counts["create"] == 1
    assert counts["get"] == 1
    assert counts["list"] == 1
    assert [r.resource for r in emulator.write_requests(since)] == ["configmaps"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running"},
    }
    emulator.put_object(pod)  # status kept as given: test setup bypasses admission
    assert emulator.get("pods", "p", namespace)["status"]["phase"] == "Running"
    assert emulator.get("po", "missing", namespace) is None
    assert [p["metadata"]["name"] for p in emulator.list("pods", namespace)] == ["p"]


async def test_secret_string_data_is_folded_into_data(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    made = await core.create_namespaced_secret(
        namespace, {"metadata": {"name": "s"}, "stringData": {"token": "abc"}}
    )
    assert made.data == {"token": "YWJj"}
    assert made.type == "Opaque"
    assert made.string_data is None


async def test_network_policies_are_served_defaulted_and_validated(
    api_client: client.ApiClient, namespace: str
) -> None:
    net = client.NetworkingV1Api(api_client)
    made = await net.create_namespaced_network_policy(
        namespace,
        {
            "metadata": {"name": "tts"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "x"}},
                "ingress": [{"ports": [{"port": 8000}], "from": [{"podSelector": {}}]}],
            },
        },
    )
    assert made.spec.policy_types == ["Ingress"]  # a server-side default: no egress rules
    assert made.spec.ingress[0].ports[0].protocol == "TCP"
    listed = await net.list_namespaced_network_policy(namespace)
    assert [p.metadata.name for p in listed.items] == ["tts"]
    for peer, message in (
        ({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}, "more than 1 peer type"),
        ({}, "must specify a peer"),
    ):
        with pytest.raises(ApiException) as error:
            await net.create_namespaced_network_policy(
                namespace,
                {
                    "metadata": {"name": "bad"},
                    "spec": {"podSelector": {}, "ingress": [{"from": [peer]}]},
                },
            )
        assert error.value.status == 422
        assert "spec.ingress[0].from[0]" in error.value.body
        assert message in error.value.body
    await net.delete_namespaced_network_policy("tts", namespace)
    assert (await net.list_namespaced_network_policy(namespace)).items == []
