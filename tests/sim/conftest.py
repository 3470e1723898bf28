"""Fixtures for the cluster test doubles: a running API emulator and clients for it."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config
from voiceops_sim.apiserver import KubeApiEmulator

WIDGET_CRD = textwrap.dedent(
    """
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.example.com
    spec:
      group: example.com
      scope: Namespaced
      names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
      versions:
      - name: v1
        served: true
        storage: true
        subresources: {status: {}}
        schema:
          openAPIV3Schema:
            type: object
            properties:
              spec:
                type: object
                x-kubernetes-validations:
                - rule: "self.low < self.high"
                  message: "low must be below high"
                  fieldPath: ".low"
                properties:
                  size: {type: integer, minimum: 0, maximum: 10, default: 3}
                  color: {type: string, enum: [red, blue], default: red}
                  low: {type: number, default: 0.5}
                  high: {type: number, default: 0.9}
                  tags:
                    type: object
                    additionalProperties: {type: string}
              status:
                type: object
                x-kubernetes-preserve-unknown-fields: true
    """
)


@pytest.fixture
def widget_crd_file(tmp_path: Path) -> Path:
    path = tmp_path / "widget-crd.yaml"
    path.write_text(WIDGET_CRD)
    return path


@pytest.fixture
async def emulator(widget_crd_file: Path) -> AsyncIterator[KubeApiEmulator]:
    emu = KubeApiEmulator(crd_files=[widget_crd_file], bookmark_interval=0.5)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
def namespace(emulator: KubeApiEmulator) -> str:
    name = f"test-{uuid.uuid4().hex[:8]}"
    emulator.ensure_namespace(name)
    return name


@pytest.fixture
def kubeconfig(emulator: KubeApiEmulator, tmp_path: Path) -> Path:
    return emulator.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
async def api_client(kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(str(kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        yield api
