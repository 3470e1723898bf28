"""Real clients against the API emulator: kopf (in a task and as `kopf run`) and kubeconfigs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from kubernetes_asyncio import client, config
from voiceops_sim.apiserver import KubeApiEmulator


async def test_both_clients_accept_the_kubeconfig(
    emulator: KubeApiEmulator, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configuration = client.Configuration()
    await config.load_kube_config(str(kubeconfig), client_configuration=configuration)
    assert configuration.host == emulator.url
    async with client.ApiClient(configuration) as api:
        version = await client.VersionApi(api).get_code()
    assert version.major == "1"
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    assert info.server == emulator.url
    assert info.token
    assert info.default_namespace == "default"


async def test_token_is_enforced_when_configured(tmp_path: Path) -> None:
    async with KubeApiEmulator(token="s3cret") as emu:
        good = emu.write_kubeconfig(tmp_path / "good")
        configuration = client.Configuration()
        await config.load_kube_config(str(good), client_configuration=configuration)
        async with client.ApiClient(configuration) as api:
            assert (await client.CoreV1Api(api).list_namespace()).items
        configuration.api_key = {"authorization": "Bearer wrong"}
        async with client.ApiClient(configuration) as api:
            with pytest.raises(client.ApiException) as error:
                await client.CoreV1Api(api).list_namespace()
        assert error.value.status == 401


@contextlib.asynccontextmanager
async def _running(registry: kopf.OperatorRegistry) -> AsyncIterator[None]:
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry, standalone=True, clusterwide=True, stop_flag=stop, ready_flag=ready
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


def _widget_registry(kubeconfig: Path) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.server_timeout = 5
        settings.posting.level = logging.INFO
        settings.persistence.finalizer = "example.com/kopf-finalizer"

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create("example.com", "v1", "widgets", id="create_child", registry=registry)
    async def create_child(
        body: kopf.Body, spec: kopf.Spec, namespace: str, name: str, **_: Any
    ) -> dict[str, Any]:
        child = {
            "metadata": {"name": f"{name}-child", "labels": {"widget": name}},
            "data": {"size": str(spec["size"])},
        }
        kopf.adopt(child, owner=body)
        configuration = client.Configuration()
        await config.load_kube_config(str(kubeconfig), client_configuration=configuration)
        async with client.ApiClient(configuration) as api:
            await client.CoreV1Api(api).create_namespaced_config_map(namespace, child)
        kopf.info(body, reason="ChildCreated", message=f"created {child['metadata']['name']}")
        return {"child": child["metadata"]["name"]}

    @kopf.on.event("", "v1", "configmaps", labels={"widget": kopf.PRESENT}, registry=registry)
    def child_seen(event: dict[str, Any], labels: dict[str, str], namespace: str, **_: Any) -> None:
        if event["type"] in (None, "ADDED"):
            seen_children.append((namespace, labels["widget"]))

    @kopf.on.delete("example.com", "v1", "widgets", registry=registry)
    def deleted(name: str, **_: Any) -> None:
        deletions.append(name)

    seen_children: list[tuple[str, str]] = []
    deletions: list[str] = []
    registry.seen_children = seen_children  # type: ignore[attr-defined]
    registry.deletions = deletions  # type: ignore[attr-defined]
    return registry


@pytest.mark.timeout(60)
async def test_kopf_operator_in_a_task_reconciles_through_the_emulator(
    emulator: KubeApiEmulator,
    kubeconfig: Path,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    registry = _widget_registry(kubeconfig)
    async with _running(registry):
        emulator.create(
            {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "metadata": {"name": "w1", "namespace": namespace},
                "spec": {"size": 4},
            }
        )

        def handled() -> dict[str, Any] | None:
            found = emulator.get("widgets", "w1", namespace) or {}
            return (found.get("status") or {}).get("create_child")

        assert await emulator.wait_for(handled, 15) == {"child": "w1-child"}
        child = emulator.get("configmaps", "w1-child", namespace)
        owner = emulator.get("widgets", "w1", namespace)
        assert child["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
        assert "example.com/kopf-finalizer" in owner["metadata"]["finalizers"]
        await emulator.wait_for(lambda: (namespace, "w1") in registry.seen_children, 10)
        events = await emulator.wait_for(
            lambda: [
                e for e in emulator.list("events", namespace) if e["involvedObject"]["name"] == "w1"
            ],
            10,
        )
        assert [(e["reason"], e["type"]) for e in events] == [("ChildCreated", "Normal")]
        assert events[0]["involvedObject"]["uid"] == owner["metadata"]["uid"]

        emulator.delete("widgets", "w1", namespace)  # the finalizer holds it for kopf
        await emulator.wait_for(lambda: emulator.get("widgets", "w1", namespace) is None, 15)
        assert registry.deletions == ["w1"]
        assert emulator.get("configmaps", "w1-child", namespace) is None  # garbage-collected
    assert emulator.request_counts()["watch"] >= 2


OPERATOR_SOURCE = textwrap.dedent(
    """
    import kopf

    @kopf.on.startup()
    def configure(settings, **_):
        settings.watching.server_timeout = 5

    @kopf.on.create("example.com", "v1", "widgets")
    def on_create(spec, patch, **_):
        patch.status["doubled"] = spec["size"] * 2
    """
)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_kopf_run_subprocess_patches_status(
    emulator: KubeApiEmulator, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    script = tmp_path / "widget_operator.py"
    script.write_text(OPERATOR_SOURCE)
    kopf_bin = Path(sys.executable).parent / "kopf"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    proc = await asyncio.create_subprocess_exec(
        str(kopf_bin),
        "run",
        "--standalone",
        "--all-namespaces",
        str(script),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        await emulator.wait_for(lambda: emulator.open_watches("widgets") >= 1, 30)
        emulator.create(
            {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "metadata": {"name": "w", "namespace": namespace},
                "spec": {"size": 5},
            }
        )

        def doubled() -> Any:
            return ((emulator.get("widgets", "w", namespace) or {}).get("status") or {}).get(
                "doubled"
            )

        assert await emulator.wait_for(doubled, 30) == 10
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
