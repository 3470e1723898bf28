"""The ``voiceops-sim apiserver`` command: prints its URL, serves, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_cli_serves_until_sigterm(widget_crd_file: Path, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    cli = Path(sys.executable).parent / "voiceops-sim"
    proc = await asyncio.create_subprocess_exec(
        str(cli),
        "apiserver",
        "--port",
        "0",
        "--crd",
        str(widget_crd_file),
        "--kubeconfig",
        str(kubeconfig),
        "--namespace",
        "demo",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        await asyncio.wait_for(proc.stdout.readline(), 5)  # the kubeconfig line
        configuration = client.Configuration()
        await config.load_kube_config(str(kubeconfig), client_configuration=configuration)
        async with client.ApiClient(configuration) as api:
            names = [n.metadata.name for n in (await client.CoreV1Api(api).list_namespace()).items]
            assert "demo" in names
            widgets = await client.CustomObjectsApi(api).list_namespaced_custom_object(
                "example.com", "v1", "demo", "widgets"
            )
            assert widgets["items"] == []
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_cluster_command_runs_pods(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    cli = Path(sys.executable).parent / "voiceops-sim"
    proc = await asyncio.create_subprocess_exec(
        str(cli),
        "cluster",
        "--port",
        "0",
        "--pod-mode",
        "inert",
        "--node",
        "gpu-a:1:4",
        "--kubeconfig",
        str(kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 20)
        await asyncio.wait_for(proc.stdout.readline(), 5)
        configuration = client.Configuration()
        await config.load_kube_config(str(kubeconfig), client_configuration=configuration)
        async with client.ApiClient(configuration) as api:
            nodes = await client.CoreV1Api(api).list_node()
            assert [n.metadata.name for n in nodes.items] == ["gpu-a"]
            assert nodes.items[0].status.allocatable["nvidia.com/gpu"] == "1"
            apps = client.AppsV1Api(api)
            await apps.create_namespaced_deployment(
                "default",
                {
                    "metadata": {"name": "web"},
                    "spec": {
                        "replicas": 2,
                        "selector": {"matchLabels": {"app": "web"}},
                        "template": {
                            "metadata": {"labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "c", "image": "x:1"}]},
                        },
                    },
                },
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            ready = None
            while loop.time() < deadline:
                ready = (await apps.read_namespaced_deployment("web", "default")).status
                if ready and ready.ready_replicas == 2:
                    break
                await asyncio.sleep(0.1)
            assert ready is not None
            assert ready.ready_replicas == 2
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
