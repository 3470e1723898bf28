"""CRD handling in the API emulator: runtime CRDs, defaults, pruning, validation, CEL."""

from __future__ import annotations

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from sim_objects import widget
from voiceops_sim.apiserver import KubeApiEmulator

ARGS = ("example.com", "v1")


async def _create(custom: client.CustomObjectsApi, namespace: str, body: dict) -> dict:
    return await custom.create_namespaced_custom_object(*ARGS, namespace, "widgets", body)


async def _rejection(custom: client.CustomObjectsApi, namespace: str, body: dict) -> dict:
    with pytest.raises(ApiException) as error:
        await _create(custom, namespace, body)
    assert error.value.status == 422
    import json

    return json.loads(error.value.body)


async def test_defaults_applied_and_unknown_fields_pruned(
    api_client: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api_client)
    made = await _create(custom, namespace, widget("w", size=1, unknown="dropped"))
    assert made["spec"] == {"size": 1, "color": "red", "low": 0.5, "high": 0.9}
    assert "status" not in made  # status is only written through /status


@pytest.mark.parametrize(
    ("spec", "field", "text"),
    [
        ({"size": 11}, "spec.size", "should be less than or equal to 10"),
        ({"size": -1}, "spec.size", "should be greater than or equal to 0"),
        ({"size": "big"}, "spec.size", "must be of type integer"),
        ({"color": "green"}, "spec.color", 'supported values: "red", "blue"'),
        ({"tags": {"a": 1}}, "spec.tags.a", "must be of type string"),
    ],
)
async def test_schema_violations_name_the_field(
    api_client: client.ApiClient, namespace: str, spec: dict, field: str, text: str
) -> None:
    status = await _rejection(client.CustomObjectsApi(api_client), namespace, widget("w", **spec))
    assert status["reason"] == "Invalid"
    causes = status["details"]["causes"]
    assert [c["field"] for c in causes] == [field]
    assert text in causes[0]["message"]
    assert field in status["message"]


async def test_cel_rule_rejects_with_its_message(
    api_client: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api_client)
    status = await _rejection(custom, namespace, widget("w", low=0.9, high=0.5))
    assert status["details"]["causes"][0]["field"] == "spec.low"
    assert "low must be below high" in status["message"]
    await _create(custom, namespace, widget("ok", low=0.1, high=0.2))


async def test_updates_are_validated_too(
    api_client: client.ApiClient, emulator: KubeApiEmulator, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api_client)
    await _create(custom, namespace, widget("w"))
    with pytest.raises(ApiException) as error:
        await custom.patch_namespaced_custom_object(
            *ARGS,
            namespace,
            "widgets",
            "w",
            {"spec": {"size": 99}},
            _content_type="application/merge-patch+json",
        )
    assert error.value.status == 422
    assert emulator.get("widgets", "w", namespace)["spec"]["size"] == 3  # nothing half-applied


async def test_crd_posted_at_runtime_is_served(
    api_client: client.ApiClient, emulator: KubeApiEmulator, namespace: str
) -> None:
    ext = client.ApiextensionsV1Api(api_client)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.org"},
        "spec": {
            "group": "example.org",
            "scope": "Cluster",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {
                    "name": "v1beta1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    created = await ext.create_custom_resource_definition(crd)
    conditions = {c.type: c.status for c in created.status.conditions}
    assert conditions["Established"] == "True"
    custom = client.CustomObjectsApi(api_client)
    made = await custom.create_cluster_custom_object(
        "example.org",
        "v1beta1",
        "gadgets",
        {
            "apiVersion": "example.org/v1beta1",
            "kind": "Gadget",
            "metadata": {"name": "g"},
            "anything": {"goes": True},
        },
    )
    assert made["anything"] == {"goes": True}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{emulator.url}/apis/example.org/v1beta1") as rsp,
    ):
        assert (await rsp.json())["resources"][0]["namespaced"] is False
    await ext.delete_custom_resource_definition("gadgets.example.org")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{emulator.url}/apis/example.org/v1beta1/gadgets") as rsp,
    ):
        assert rsp.status == 404


def test_crd_file_without_a_crd_is_refused(tmp_path) -> None:
    path = tmp_path / "not-a-crd.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(ValueError, match="no CustomResourceDefinition"):
        KubeApiEmulator(crd_files=[path])
