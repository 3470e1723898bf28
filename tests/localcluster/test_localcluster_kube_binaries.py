"""Finding or building the control plane's binaries: pins, the cache, and what a user reads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from voiceops_localcluster import kube_binaries
from voiceops_localcluster.kube_binaries import COMPONENTS, BinariesError


def test_every_staging_module_is_pinned_to_the_matching_version() -> None:
    text = kube_binaries.go_mod()
    minor = kube_binaries.KUBERNETES_VERSION.split(".", 1)[1]
    for module in kube_binaries.STAGING:
        assert f"k8s.io/{module} => k8s.io/{module} v0.{minor}\n" in text
    assert f"k8s.io/kubernetes v{kube_binaries.KUBERNETES_VERSION}" in text
    assert f"go.etcd.io/etcd/server/v3 v{kube_binaries.ETCD_VERSION}" in text


def _fake_binaries(folder: Path, names: tuple[str, ...] = COMPONENTS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = folder / name
        path.write_text("#!/bin/sh\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_binaries_a_user_already_has_are_used_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_binaries(tmp_path)
    monkeypatch.setenv(kube_binaries.ENV_BIN_DIR, str(tmp_path))
    found = kube_binaries.build()  # found, so nothing is built
    assert found.folder == tmp_path


def test_an_incomplete_binaries_folder_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_binaries(tmp_path, ("etcd", "kube-apiserver"))
    monkeypatch.setenv(kube_binaries.ENV_BIN_DIR, str(tmp_path))
    with pytest.raises(BinariesError, match="kube-controller-manager, kube-scheduler"):
        kube_binaries.find()


def test_the_cache_is_keyed_by_version_and_a_built_cache_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(kube_binaries.ENV_BIN_DIR, raising=False)
    monkeypatch.setenv(kube_binaries.ENV_CACHE, str(tmp_path))
    folder = kube_binaries.build_folder()
    assert f"v{kube_binaries.KUBERNETES_VERSION}" in folder.name
    assert f"v{kube_binaries.ETCD_VERSION}" in folder.name
    assert kube_binaries.find() is None
    _fake_binaries(folder / "bin")
    assert kube_binaries.build().folder == folder / "bin"


def test_without_go_the_message_says_what_to_install_or_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(kube_binaries.ENV_BIN_DIR, raising=False)
    monkeypatch.setenv(kube_binaries.ENV_CACHE, str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no go here
    with pytest.raises(BinariesError) as error:
        kube_binaries.build()
    assert "install Go >= 1.26" in str(error.value)
    assert kube_binaries.ENV_BIN_DIR in str(error.value)


def test_an_old_go_is_refused_with_the_version_it_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(kube_binaries.ENV_BIN_DIR, raising=False)
    monkeypatch.setenv(kube_binaries.ENV_CACHE, str(tmp_path / "cache"))
    go = tmp_path / "go"
    go.write_text("#!/bin/sh\necho go version go1.22.3 linux/amd64\n")
    go.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin:/bin")
    with pytest.raises(BinariesError, match=r"go1\.22\.3.*Go >= 1\.26"):
        kube_binaries.build()


def test_metrics_server_is_found_beside_given_binaries_else_in_its_own_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(kube_binaries.ENV_CACHE, str(tmp_path / "cache"))
    given = tmp_path / "given"
    given.mkdir()
    monkeypatch.setenv(kube_binaries.ENV_BIN_DIR, str(given))
    assert kube_binaries.find_metrics_server() is None
    folder = kube_binaries.metrics_server_folder()
    assert folder.name == f"metrics-server-v{kube_binaries.METRICS_SERVER_VERSION}"
    _fake_binaries(folder / "bin", ("metrics-server",))
    assert kube_binaries.build_metrics_server() == folder / "bin" / "metrics-server"
    _fake_binaries(given, ("metrics-server",))
    assert kube_binaries.find_metrics_server() == given / "metrics-server"
